package iso

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"upgradectl/checksum"
	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// vtSink records what Verify told the progress.
type vtSink struct {
	total, added atomic.Int64
	started      atomic.Bool
	done         atomic.Bool
}

func (s *vtSink) Start(total int64) { s.total.Store(total); s.started.Store(true) }
func (s *vtSink) Add(n int)         { s.added.Add(int64(n)) }
func (s *vtSink) Done()             { s.done.Store(true) }

// vtDir puts copies of the implanted image under names in a new directory.
func vtDir(t *testing.T, image string, names ...string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return dir, paths
}

func vtMD5sum(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return vtTool(t, dir, "md5sum", args...)
}

// vtTool runs a checksum tool (md5sum, sha256sum, openssl...) in dir and
// returns its output.
func vtTool(t *testing.T, dir, tool string, args ...string) string {
	t.Helper()
	hosttest.RequireCommand(t, tool)
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return string(out)
}

func vtWrite(t *testing.T, p, text string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func vtCorrupt(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x80
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestVerifySumsBeside verifies images in parallel against the checksum
// files found beside them, one in each dialect, written by the real md5sum.
func TestVerifySumsBeside(t *testing.T) {
	implanted, _, _ := vtBuildImages(t)
	state := t.TempDir()
	log := host.OpenLog(state, host.ModeManual)

	gnuNames := []string{"cmp-12.1.2-x86_64.iso", "mpe 12.1.2.iso", "back\\slash.iso", "new\nline.iso"}
	gnuDir, gnu := vtDir(t, implanted, gnuNames...)
	vtWrite(t, filepath.Join(gnuDir, "md5sum.out"), vtMD5sum(t, gnuDir, gnuNames...))
	bsdDir, bsd := vtDir(t, implanted, "mra.iso")
	vtWrite(t, filepath.Join(bsdDir, "MD5SUMS"), strings.ReplaceAll(vtMD5sum(t, bsdDir, "--tag", "mra.iso"), "\n", "\r\n"))
	seedDir, seed := vtDir(t, implanted, "cmp-12.1.2.x.x.x.iso")
	sum := vtMD5sum(t, seedDir, "cmp-12.1.2.x.x.x.iso")[:32]
	vtWrite(t, filepath.Join(seedDir, "md5sum.out"), sum+"/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso\n")
	bareDir, bare := vtDir(t, implanted, "x.iso")
	vtWrite(t, filepath.Join(bareDir, "x.iso.md5"), strings.ToUpper(sum)+"\n")

	files := append(append(append(gnu, bsd...), seed...), bare...)
	sink := &vtSink{}
	rep, err := Verify(t.Context(), VerifyOptions{Files: files, Jobs: 2, Progress: sink, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Failed != 0 {
		t.Fatalf("report not OK: %+v", rep)
	}
	wantDialect := []string{"gnu", "gnu", "gnu", "gnu", "bsd", "seed", "bare"}
	var size int64
	for i, r := range rep.Results {
		size += r.Size
		if r.Status != StatusOK || r.Digest != sum || r.Expected != sum || r.Dialect != wantDialect[i] {
			t.Errorf("%s: %+v", filepath.Base(r.File), r)
		}
	}
	if !sink.started.Load() || !sink.done.Load() || sink.total.Load() != size || sink.added.Load() != size {
		t.Errorf("progress: total %d added %d, want %d", sink.total.Load(), sink.added.Load(), size)
	}

	// A corrupt image among good ones: only it fails.
	vtCorrupt(t, gnu[1], 5000)
	rep, err = Verify(t.Context(), VerifyOptions{Files: gnu, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Failed != 1 || rep.Results[1].Status != StatusMismatch || rep.Results[0].Status != StatusOK {
		t.Fatalf("corrupt image: %+v", rep)
	}
	if p := rep.Results[1].Problems; len(p) != 1 || !strings.Contains(p[0], "expected "+sum) {
		t.Errorf("problem %q", p)
	}

	entries, _, err := log.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Result != host.ResultSuccess || entries[1].Result != host.ResultFailed ||
		entries[1].Action != "iso verify" || !strings.Contains(entries[1].Message, "mpe 12.1.2.iso mismatch") {
		t.Errorf("log entries %+v", entries)
	}
}

func TestVerifyEmbeddedAndSums(t *testing.T) {
	implanted, plain, _ := vtBuildImages(t)
	dir, imgs := vtDir(t, implanted, "good.iso", "bad-early.iso", "bad-late.iso")
	sums := vtMD5sum(t, dir, "good.iso", "bad-early.iso", "bad-late.iso")
	vtWrite(t, filepath.Join(dir, "list.md5"), sums)
	fi, _ := os.Stat(imgs[0])
	vtCorrupt(t, imgs[1], 40000)
	vtCorrupt(t, imgs[2], fi.Size()-2048) // in the skipped sectors: only the plain MD5 sees it

	rep, err := Verify(t.Context(), VerifyOptions{Files: imgs, Sums: filepath.Join(dir, "list.md5"), Embedded: true})
	if err != nil {
		t.Fatal(err)
	}
	good, early, late := rep.Results[0], rep.Results[1], rep.Results[2]
	if !good.OK || good.Embedded == nil || good.Embedded.Status != EmbeddedPass || good.Digest == "" {
		t.Errorf("good: %+v", good)
	}
	if early.OK || early.Status != StatusEmbedded || early.Embedded.Fragment == 0 || early.Digest != "" ||
		early.Embedded.Checked >= early.Size/2 {
		t.Errorf("bad early: not stopped early at a fragment: %+v %+v", early, early.Embedded)
	}
	if late.OK || late.Status != StatusMismatch || late.Embedded.Status != EmbeddedPass {
		t.Errorf("bad late: %+v %+v", late, late.Embedded)
	}

	// --embedded alone: no checksum file needed; an image without an
	// embedded MD5 fails.
	_, plainCopy := vtDir(t, plain, "plain.iso")
	_, goodCopy := vtDir(t, implanted, "alone.iso")
	rep, err = Verify(t.Context(), VerifyOptions{Files: append(goodCopy, plainCopy...), Embedded: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Results[0].OK || rep.Results[1].OK || rep.Results[1].Embedded.Status != EmbeddedAbsent {
		t.Errorf("embedded alone: %+v", rep.Results)
	}

	// --md5.
	rep, err = Verify(t.Context(), VerifyOptions{Files: imgs[:1], MD5: strings.ToUpper(good.Digest)})
	if err != nil || !rep.OK {
		t.Errorf("--md5: %+v %v", rep, err)
	}
	rep, err = Verify(t.Context(), VerifyOptions{Files: imgs[:1], MD5: strings.Repeat("0", 32)})
	if err != nil || rep.OK || rep.Results[0].Status != StatusMismatch {
		t.Errorf("--md5 wrong: %+v %v", rep, err)
	}
}

func TestVerifyProblems(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "cmp.iso")
	vtWrite(t, img, "not really an image")
	d, _, err := sumFile(t.Context(), checksum.MD5, img, nil)
	if err != nil {
		t.Fatal(err)
	}

	fifo := filepath.Join(t.TempDir(), "fifo.md5")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// Usage problems: nothing is read, nothing logged.
	for _, o := range []VerifyOptions{
		{},
		{Files: []string{img, img}, MD5: d.String()},
		{Files: []string{img}, MD5: "xyz"},
		{Files: []string{img}, MD5: d.String(), Sums: img},
		{Files: []string{img}, Sums: filepath.Join(dir, "nothere")},
		{Files: []string{img}, Sums: dir},  // a directory
		{Files: []string{img}, Sums: fifo}, // would block the read
	} {
		if _, err := Verify(t.Context(), o); host.KindOf(err) != host.KindUsage {
			t.Errorf("%+v: %v is not a usage error", o, err)
		}
	}

	// Per-image problems.
	other := filepath.Join(t.TempDir(), "mpe.iso")
	vtWrite(t, other, "x")
	rep, err := Verify(t.Context(), VerifyOptions{Files: []string{filepath.Join(dir, "gone.iso"), other, dir}})
	if err != nil {
		t.Fatal(err)
	}
	if st := []string{rep.Results[0].Status, rep.Results[1].Status, rep.Results[2].Status}; st[0] != StatusMissing ||
		st[1] != StatusNoReference || st[2] != StatusError {
		t.Errorf("statuses %v", st)
	}
	if !strings.Contains(rep.Results[1].Hint, "--sums") {
		t.Errorf("no hint for a missing checksum file: %+v", rep.Results[1])
	}

	// A bad checksum file names its bad line; an image it does not list is
	// not verified.
	vtWrite(t, filepath.Join(dir, "md5sum.out"), d.String()+"  cmp.iso\nrubbish\n")
	rep, _ = Verify(t.Context(), VerifyOptions{Files: []string{img}})
	if rep.OK || !strings.Contains(strings.Join(rep.Results[0].Problems, ""), "md5sum.out: line 2: not a checksum line") {
		t.Errorf("bad checksum file: %+v", rep.Results[0])
	}
	vtWrite(t, filepath.Join(dir, "md5sum.out"), d.String()+"  other.iso\n")
	rep, _ = Verify(t.Context(), VerifyOptions{Files: []string{img}})
	if rep.OK || !strings.Contains(strings.Join(rep.Results[0].Problems, ""), "cmp.iso is not listed in") {
		t.Errorf("not listed: %+v", rep.Results[0])
	}
	// A FIFO beside the image where its checksum file would be: an error
	// for that image, at once.
	if err := syscall.Mkfifo(filepath.Join(dir, "cmp.iso.md5"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _ = Verify(t.Context(), VerifyOptions{Files: []string{img}})
	if rep.OK || !strings.Contains(strings.Join(rep.Results[0].Problems, ""), "not a regular file") {
		t.Errorf("a FIFO beside: %+v", rep.Results[0])
	}
	os.Remove(filepath.Join(dir, "cmp.iso.md5"))
	// IMAGE.md5 comes before md5sum.out. An upgrade log that cannot be
	// written (its state directory is a file here) does not change the
	// verdict; the report says why.
	vtWrite(t, filepath.Join(dir, "cmp.md5"), "MD5 (cmp.iso) = "+d.String()+"\n")
	rep, _ = Verify(t.Context(), VerifyOptions{Files: []string{img}, Log: host.OpenLog(img, host.ModeManual)})
	if !rep.OK || rep.Results[0].Dialect != "bsd" {
		t.Errorf("cmp.md5: %+v", rep.Results[0])
	}
	if !strings.Contains(rep.LogProblem, "cannot") {
		t.Errorf("log problem %q", rep.LogProblem)
	}
}

// TestVerifySHA verifies images against SHA-256 and SHA-512 checksum files
// written by the real sha256sum, sha512sum and openssl beside them, a file
// mixing all three algorithms (the SHA-512 is checked), and --sha256.
func TestVerifySHA(t *testing.T) {
	implanted, _, _ := vtBuildImages(t)

	aDir, a := vtDir(t, implanted, "a.iso")
	vtWrite(t, filepath.Join(aDir, "SHA256SUMS"), vtTool(t, aDir, "sha256sum", "a.iso"))
	bDir, b := vtDir(t, implanted, "b b.iso")
	vtWrite(t, filepath.Join(bDir, "SHA512SUMS"), strings.ReplaceAll(vtTool(t, bDir, "sha512sum", "--tag", "b b.iso"), "\n", "\r\n"))
	cDir, c := vtDir(t, implanted, "c.iso")
	vtWrite(t, filepath.Join(cDir, "md5sum.out"), vtMD5sum(t, cDir, "c.iso")+
		vtTool(t, cDir, "openssl", "dgst", "-sha256", "-r", "c.iso")+vtTool(t, cDir, "sha512sum", "-b", "c.iso"))
	// SHA256SUMS comes before md5sum.out.
	dDir, d := vtDir(t, implanted, "d.iso")
	vtWrite(t, filepath.Join(dDir, "md5sum.out"), vtMD5sum(t, dDir, "d.iso"))
	vtWrite(t, filepath.Join(dDir, "SHA256SUMS"), vtTool(t, dDir, "openssl", "dgst", "-sha256", "d.iso"))
	// A bare digest: its length tells its algorithm.
	eDir, e := vtDir(t, implanted, "e.iso")
	sha256 := vtTool(t, eDir, "sha256sum", "e.iso")[:64]
	sha512 := vtTool(t, eDir, "sha512sum", "e.iso")[:128]
	vtWrite(t, filepath.Join(eDir, "e.iso.md5"), "\xef\xbb\xbf"+strings.ToUpper(sha256)+"\r\n")

	files := []string{a[0], b[0], c[0], d[0], e[0]}
	rep, err := Verify(t.Context(), VerifyOptions{Files: files, Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ alg, digest, source, dialect string }{
		{"sha256", sha256, "SHA256SUMS line 1", "gnu"},
		{"sha512", sha512, "SHA512SUMS line 1", "bsd"},
		{"sha512", sha512, "md5sum.out line 3", "gnu"},
		{"sha256", sha256, "SHA256SUMS line 1", "bsd"},
		{"sha256", sha256, "e.iso.md5 line 1", "bare"},
	}
	for i, r := range rep.Results {
		w := want[i]
		if !r.OK || r.Algorithm != w.alg || r.Digest != w.digest || r.Expected != w.digest ||
			filepath.Base(r.Source) != w.source || r.Dialect != w.dialect {
			t.Errorf("%s: %+v, want %+v", filepath.Base(r.File), r, w)
		}
	}

	// A corrupt image fails against the SHA-512 of the mixed file.
	vtCorrupt(t, c[0], 5000)
	rep, err = Verify(t.Context(), VerifyOptions{Files: c})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Results[0]; r.OK || r.Status != StatusMismatch || len(r.Problems) != 1 ||
		!strings.HasPrefix(r.Problems[0], "SHA-512 ") || !strings.Contains(r.Problems[0], ", expected "+sha512+" (") {
		t.Errorf("corrupt image: %+v", r)
	}

	// --sha256, in either case; a wrong one is a mismatch.
	for _, tc := range []struct {
		hex    string
		status string
	}{{strings.ToUpper(sha256), StatusOK}, {strings.Repeat("0", 64), StatusMismatch}} {
		rep, err = Verify(t.Context(), VerifyOptions{Files: a, SHA256: tc.hex})
		if err != nil {
			t.Fatal(err)
		}
		if r := rep.Results[0]; r.Status != tc.status || r.Source != "--sha256" || r.Algorithm != "sha256" {
			t.Errorf("--sha256 %s: %+v", tc.hex, r)
		}
	}
	for _, tc := range []struct {
		o    VerifyOptions
		want string
	}{
		{VerifyOptions{Files: a, SHA256: sha256[:32]}, `cannot verify with --sha256: "` + sha256[:32] + `" is not a SHA-256 digest (64 hex digits)`},
		{VerifyOptions{Files: a, MD5: sha256}, "cannot verify with --md5: "},
		{VerifyOptions{Files: a, MD5: sha256[:32], SHA256: sha256}, "cannot verify with --md5 and --sha256: give one of them"},
		{VerifyOptions{Files: a, SHA256: sha256, Sums: filepath.Join(aDir, "SHA256SUMS")}, "give either --sha256 or --sums, not both"},
		{VerifyOptions{Files: append(a, b...), SHA256: sha256}, "cannot verify 2 images against one --sha256 digest"},
	} {
		_, err := Verify(t.Context(), tc.o)
		if host.KindOf(err) != host.KindUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want a usage error %q", tc.o, err, tc.want)
		}
	}

	// A wrong length in a checksum file names the file and the line.
	vtWrite(t, filepath.Join(aDir, "SHA256SUMS"), "# sums\nSHA256 (a.iso) = "+sha512+"\n")
	rep, err = Verify(t.Context(), VerifyOptions{Files: a})
	if err != nil {
		t.Fatal(err)
	}
	wantProblem := "cannot read " + filepath.Join(aDir, "SHA256SUMS") + ": line 2: \"" + sha512 + "\" is not a SHA-256 digest (64 hex digits)"
	if r := rep.Results[0]; r.Status != StatusNoReference || len(r.Problems) != 1 || r.Problems[0] != wantProblem {
		t.Errorf("wrong length: %+v, want %q", r, wantProblem)
	}
}
