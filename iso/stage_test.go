package iso

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"upgradectl/checksum"
	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// stImage builds a small real image named name holding files (path ->
// content) in a directory of its own, and writes md5sum.out beside it in
// the seed procedure's form (the digest directly followed by the build
// machine's path). It returns the image path and its MD5.
func stImage(t *testing.T, name string, files map[string]string) (string, string) {
	t.Helper()
	src := t.TempDir()
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755)
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := mtMakeISO(t, src, name)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", md5.Sum(data))
	sums := sum + "/home/build/build/PLATFORM-70/iso/" + name + "\n"
	if err := os.WriteFile(filepath.Join(filepath.Dir(img), "md5sum.out"), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	return img, sum
}

func stOptions(t *testing.T, dir string) StageOptions {
	return StageOptions{StagingDir: dir, Log: host.OpenLog(filepath.Join(filepath.Dir(dir), "state"), "")}
}

func stNames(t *testing.T, dir string) []string {
	t.Helper()
	des, _ := os.ReadDir(dir)
	var n []string
	for _, d := range des {
		n = append(n, d.Name())
	}
	return n
}

func TestStage(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	ctx := context.Background()
	cmp, cmpSum := stImage(t, "cmp-12.1.2.0.0_22.1.0-x86_64.iso", map[string]string{"upgrade/x": "cmp"})
	cmp2, _ := stImage(t, "cmp-12.1.3.0.0_22.1.0-x86_64.iso", map[string]string{"upgrade/x": "cmp2"})
	mra, _ := stImage(t, "anything.iso", map[string]string{ManifestName: "type = \"mra\"\nversion = \"2.0\"\nupgrades_from = [\"1.*\"]\ninstall = \"i.sh\"\n", "i.sh": "#!/bin/sh"})
	dir := filepath.Join(t.TempDir(), "staging")
	o := stOptions(t, dir)

	rec, err := Stage(ctx, cmp, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Type != "cmp" || rec.Version != "12.1.2.0.0_22.1.0" || rec.Arch != "x86_64" || rec.Source != FromFileName || rec.Digest.String() != cmpSum || rec.VerifiedAt.IsZero() {
		t.Errorf("staged %+v", rec)
	}
	a, _ := os.ReadFile(cmp)
	b, err := os.ReadFile(filepath.Join(dir, filepath.Base(cmp)))
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("staged copy differs from the source: %v", err)
	}
	if n := stNames(t, dir); strings.Join(n, " ") != "cmp-12.1.2.0.0_22.1.0-x86_64.iso "+StagedIndex {
		t.Errorf("staging directory holds %v", n)
	}
	// The same image again is nothing to do.
	if _, err := Stage(ctx, cmp, o); err != nil {
		t.Errorf("staging the same image again: %v", err)
	}
	// A staged copy damaged since (same size) is copied again.
	staged := filepath.Join(dir, filepath.Base(cmp))
	f, err := os.OpenFile(staged, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("XX"), 40000)
	f.Close()
	if _, err := Stage(ctx, cmp, o); err != nil {
		t.Errorf("staging the same image over a damaged copy: %v", err)
	}
	if b, _ := os.ReadFile(staged); !bytes.Equal(a, b) {
		t.Errorf("the damaged staged copy was kept")
	}
	// A second image of the same type is refused.
	_, err = Stage(ctx, cmp2, o)
	if host.KindOf(err) != host.KindRefused || !strings.Contains(err.Error(), "cmp-12.1.2.0.0_22.1.0-x86_64.iso of type cmp is already staged") {
		t.Errorf("second cmp image: %v (kind %d)", err, host.KindOf(err))
	}
	// The manifest wins over the file name, and its upgrades_from is checked.
	o2 := o
	o2.HostVersion = "3.0"
	if _, err := Stage(ctx, mra, o2); err == nil || !strings.Contains(err.Error(), "upgrades from 1.*, not from this host's 3.0") {
		t.Errorf("mra for a 3.0 host: %v", err)
	}
	o2.HostVersion = "1.5"
	rec, err = Stage(ctx, mra, o2)
	if err != nil || rec.Type != "mra" || rec.Source != FromManifest || rec.Manifest == nil || rec.Manifest.Install != "i.sh" {
		t.Fatalf("mra: %+v, %v", rec, err)
	}

	imgs, err := StagedImages(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Name != "anything.iso" || imgs[1].Type != "cmp" || imgs[0].State != StagedOK || imgs[1].State != StagedOK {
		t.Errorf("list: %+v", imgs)
	}

	// Leftovers of a crash: an unfinished copy and an image put there by
	// hand are listed; remove --all clears them with the rest.
	os.WriteFile(filepath.Join(dir, ".x.iso"+partialMark+"123"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(dir, "mpe-1.0-x86_64.iso"), []byte("hand"), 0o644)
	imgs, _ = StagedImages(dir)
	states := map[string]string{}
	for _, im := range imgs {
		states[im.Name] = im.State
	}
	if states[".x.iso"+partialMark+"123"] != StagedPartial || states["mpe-1.0-x86_64.iso"] != StagedUnrecorded {
		t.Errorf("leftovers: %v", states)
	}

	if removed, err := RemoveStaged(dir, "cmp-12.1.2.0.0_22.1.0-x86_64.iso", false, o.Log); err != nil || len(removed) != 1 {
		t.Fatalf("remove: %v %v", removed, err)
	}
	// Now the other cmp image can be staged.
	if _, err := Stage(ctx, cmp2, o); err != nil {
		t.Errorf("cmp after removing the first: %v", err)
	}
	if _, err := RemoveStaged(dir, "../etc", false, o.Log); host.KindOf(err) != host.KindUsage {
		t.Errorf("remove ../etc: %v", err)
	}
	if _, err := RemoveStaged(dir, "nope.iso", false, o.Log); host.KindOf(err) != host.KindBad {
		t.Errorf("remove nope.iso: %v", err)
	}
	removed, err := RemoveStaged(dir, "", true, o.Log)
	if err != nil || len(removed) != 4 {
		t.Errorf("remove --all: %v %v", removed, err)
	}
	if n := stNames(t, dir); strings.Join(n, " ") != StagedIndex {
		t.Errorf("after remove --all: %v", n)
	}
	entries, _, _ := o.Log.Read()
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Action+":"+e.Result)
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "iso stage:success") || !strings.Contains(got, "iso stage:failed") || !strings.Contains(got, "iso remove:success") {
		t.Errorf("log: %s", got)
	}
}

func TestStageRefuses(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	ctx := context.Background()
	cmp, sum := stImage(t, "cmp-1.0-x86_64.iso", map[string]string{"a": "a"})
	dir := filepath.Join(t.TempDir(), "staging")
	for _, tc := range []struct {
		name string
		edit func(o *StageOptions, img string) string
		kind host.Kind
		want string
	}{
		{"other type", func(o *StageOptions, img string) string { o.HostType = "mpe"; return img }, host.KindBad, "it is a cmp image and this host is mpe"},
		{"wrong md5", func(o *StageOptions, img string) string { o.MD5 = strings.Repeat("0", 32); return img }, host.KindBad, "its MD5 is " + sum + ", the checksum says 0000"},
		{"bad --md5", func(o *StageOptions, img string) string { o.MD5 = "xyz"; return img }, host.KindUsage, "not an MD5 digest"},
		{"no checksum", func(o *StageOptions, img string) string {
			os.Remove(filepath.Join(filepath.Dir(img), "md5sum.out"))
			return img
		}, 0, "no checksum file"},
		{"not listed", func(o *StageOptions, img string) string {
			p := filepath.Join(t.TempDir(), "MD5SUMS")
			os.WriteFile(p, []byte(sum+"  other.iso\n"), 0o644)
			o.Sums = p
			return img
		}, host.KindBad, "not listed"},
		{"not an image", func(o *StageOptions, img string) string {
			p := filepath.Join(t.TempDir(), "cmp-1.0-x86_64.iso")
			os.WriteFile(p, bytes.Repeat([]byte("x"), 64<<10), 0o644)
			o.MD5 = sum
			return p
		}, host.KindBad, "cannot stage"},
		{"no name identity", func(o *StageOptions, img string) string {
			p := filepath.Join(t.TempDir(), "image.iso")
			data, _ := os.ReadFile(img)
			os.WriteFile(p, data, 0o644)
			o.MD5 = sum
			return p
		}, host.KindBad, "expected TYPE-VERSION-ARCH.iso"},
		{"directory", func(o *StageOptions, img string) string { return t.TempDir() }, host.KindUsage, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), filepath.Base(cmp))
			data, _ := os.ReadFile(cmp)
			os.WriteFile(src, data, 0o644)
			os.WriteFile(filepath.Join(filepath.Dir(src), "md5sum.out"), []byte(sum+"/b/"+filepath.Base(cmp)+"\n"), 0o644)
			o := stOptions(t, dir)
			src = tc.edit(&o, src)
			_, err := Stage(ctx, src, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.kind != 0 && host.KindOf(err) != tc.kind) {
				t.Errorf("got %v (kind %d), want %q (kind %d)", err, host.KindOf(err), tc.want, tc.kind)
			}
			if n := stNames(t, dir); len(n) != 0 {
				t.Errorf("staging directory holds %v after a refusal", n)
			}
		})
	}
}

// TestStageNoSpace stages into a filesystem too small for the image: the
// free-space check refuses it before copying; and one just big enough for
// the check but filled meanwhile gets a real ENOSPC, leaving nothing behind.
func TestStageNoSpace(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	small := hosttest.LoopFS(t, "tmpfs", 256<<10)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	img, sum := stImage(t, "cmp-1.0-x86_64.iso", map[string]string{"big": string(big)})
	_, err := Stage(context.Background(), img, StageOptions{StagingDir: small, MD5: sum})
	if host.KindOf(err) != host.KindCannotRun || !strings.Contains(err.Error(), "free") || host.HintOf(err) == "" {
		t.Errorf("staging into 256KiB: %v", err)
	}
	if n := stNames(t, small); len(n) != 0 {
		t.Errorf("left behind: %v", n)
	}

	// Room at the check, none at the copy: the copy itself hits ENOSPC.
	fi, _ := os.Stat(img)
	fs2 := hosttest.LoopFS(t, "tmpfs", fi.Size()+64<<10)
	filler := filepath.Join(fs2, "filler")
	origFree := checkFreeHook
	checkFreeHook = func() { os.WriteFile(filler, make([]byte, 200<<10), 0o644) }
	defer func() { checkFreeHook = origFree }()
	_, err = Stage(context.Background(), img, StageOptions{StagingDir: fs2, MD5: sum})
	if host.KindOf(err) != host.KindCannotRun || !strings.Contains(err.Error(), "is full") {
		t.Errorf("copy into a filling filesystem: %v", err)
	}
	if n := stNames(t, fs2); strings.Join(n, " ") != "filler" {
		t.Errorf("left behind: %v", n)
	}
}

func TestStageDigestIsOfCopy(t *testing.T) {
	// The digest compared is the one of the bytes written: a sums file
	// listing the image's real MD5 in upper case (another dialect) is
	// accepted, and the stored record carries it in lower case.
	hosttest.RequireCommand(t, "xorriso")
	img, sum := stImage(t, "mra-2-x86_64.iso", map[string]string{"a": "b"})
	p := filepath.Join(t.TempDir(), "sums")
	os.WriteFile(p, []byte("MD5 (mra-2-x86_64.iso) = "+strings.ToUpper(sum)+"\r\n"), 0o644)
	dir := filepath.Join(t.TempDir(), "s")
	rec, err := Stage(context.Background(), img, StageOptions{StagingDir: dir, Sums: p})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Digest.String() != sum {
		t.Errorf("digest %s, want %s", rec.Digest, sum)
	}
}

// TestStageInPlace stages an image that was copied into the staging
// directory by hand: it is verified where it is, not copied again, and a
// bad one is left alone but not recorded.
func TestStageInPlace(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	img, sum := stImage(t, "mpe-li-1.0-x86_64.iso", map[string]string{"a": "b"})
	dir := filepath.Dir(img)
	fi, _ := os.Stat(img)
	ino := fi.Sys().(*syscall.Stat_t).Ino
	if _, err := Stage(context.Background(), img, StageOptions{StagingDir: dir, MD5: strings.Repeat("1", 32)}); host.KindOf(err) != host.KindBad {
		t.Errorf("bad digest in place: %v", err)
	}
	if imgs, _ := StagedImages(dir); len(imgs) != 1 || imgs[0].State != StagedUnrecorded {
		t.Errorf("after a failed stage in place: %+v", imgs)
	}
	rec, err := Stage(context.Background(), img, StageOptions{StagingDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Type != "mpe-li" || rec.Digest.String() != sum || rec.State != StagedOK {
		t.Errorf("staged in place: %+v", rec)
	}
	fi, _ = os.Stat(img)
	if fi.Sys().(*syscall.Stat_t).Ino != ino {
		t.Error("the image was copied, not verified in place")
	}
	if imgs, _ := StagedImages(dir); len(imgs) != 1 || imgs[0].State != StagedOK {
		t.Errorf("list: %+v", imgs)
	}
}

// TestStageSHA stages an image whose SHA256SUMS (written by the real
// sha256sum) lies beside md5sum.out: the SHA-256 is checked and recorded,
// and the record reads back. A record written with "md5" (before SHA-256
// was read) still reads, and counts as staged.
func TestStageSHA(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso", "sha256sum")
	ctx := context.Background()
	img, md5sum := stImage(t, "cmp-1.0-x86_64.iso", map[string]string{"a": "a"})
	srcDir := filepath.Dir(img)
	out, err := exec.Command("sha256sum", img).Output()
	if err != nil {
		t.Fatal(err)
	}
	sha256 := string(out[:64])
	if err := os.WriteFile(filepath.Join(srcDir, "SHA256SUMS"), []byte(sha256+"  "+filepath.Base(img)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "staging")
	o := stOptions(t, dir)

	bad := o
	bad.SHA256 = strings.Repeat("0", 64)
	if _, err := Stage(ctx, img, bad); host.KindOf(err) != host.KindBad || !strings.Contains(err.Error(), "its SHA-256 is "+sha256+", the checksum says 0000") {
		t.Errorf("wrong --sha256: %v", err)
	}
	bad.SHA256 = md5sum
	if _, err := Stage(ctx, img, bad); host.KindOf(err) != host.KindUsage || !strings.Contains(err.Error(), "is not a SHA-256 digest") {
		t.Errorf("--sha256 with an MD5: %v", err)
	}

	rec, err := Stage(ctx, img, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Digest.Algorithm() != checksum.SHA256 || rec.Digest.String() != sha256 {
		t.Errorf("staged with %s %s, want SHA-256 %s", rec.Digest.Algorithm(), rec.Digest, sha256)
	}
	index, _ := os.ReadFile(filepath.Join(dir, StagedIndex))
	if !strings.Contains(string(index), `"digest": "`+sha256+`"`) {
		t.Errorf("index: %s", index)
	}
	imgs, err := StagedImages(dir)
	if err != nil || len(imgs) != 1 || imgs[0].Digest != rec.Digest {
		t.Errorf("list: %+v %v", imgs, err)
	}

	// The record as an older upgradectl wrote it.
	old := strings.Replace(string(index), `"digest": "`+sha256+`"`, `"md5": "`+md5sum+`"`, 1)
	if err := os.WriteFile(filepath.Join(dir, StagedIndex), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	imgs, err = StagedImages(dir)
	if err != nil || len(imgs) != 1 || imgs[0].Digest.Algorithm() != checksum.MD5 || imgs[0].Digest.String() != md5sum {
		t.Fatalf("old record: %+v %v", imgs, err)
	}
	o.MD5 = md5sum
	if again, err := Stage(ctx, img, o); err != nil || again.Digest != imgs[0].Digest || !again.VerifiedAt.Equal(imgs[0].VerifiedAt) {
		t.Errorf("staged again with --md5 over an old record: %+v %v", again, err)
	}
}
