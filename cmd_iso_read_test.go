package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"upgradectl/host/hosttest"
)

// isoReadImage builds a small real image with xorriso.
func isoReadImage(t *testing.T) string {
	t.Helper()
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "src")
	for name, content := range map[string]string{
		"README": "read me\n", ".treeinfo": "[general]\n", "sub/aaaaaaaa": "x\n",
		"upgradectl.toml": "product = \"policy\"\ntype = \"cmp\"\nversion = \"12.1.2\"\narch = \"x86_64\"\n",
	} {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("README", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "sub/aaaaaaaa"), filepath.Join(src, "sub/hardlink")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "cmp-12.1.2-x86_64.iso")
	hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "CMP_12", "-o", img, src)
	return img
}

func isoRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(append([]string{"upgradectl", "--state-dir", t.TempDir()}, args...), &o, &e)
	return code, o.String(), e.String()
}

func TestISOReadCommands(t *testing.T) {
	img := isoReadImage(t)

	code, out, errs := isoRun(t, "iso", "info", "--json", img)
	var info struct {
		VolumeID  string `json:"volume_id"`
		RockRidge bool   `json:"rock_ridge"`
		Joliet    bool   `json:"joliet"`
		Identity  struct {
			Type, Version, Source string
		} `json:"identity"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info.VolumeID != "CMP_12" || !info.RockRidge ||
		!info.Joliet || info.Identity.Type != "cmp" || info.Identity.Source != "manifest" {
		t.Fatalf("info: %d %q %q %+v", code, out, errs, info)
	}
	code, out, _ = isoRun(t, "iso", "info", img)
	if code != 0 || !strings.Contains(out, "volume id:     CMP_12") || !strings.Contains(out, "product:       type cmp, version 12.1.2, arch x86_64 (from the manifest)") {
		t.Fatalf("info: %d %q", code, out)
	}

	code, out, _ = isoRun(t, "iso", "ls", img)
	if code != 0 || out != ".treeinfo\nREADME\nlink\nsub\nupgradectl.toml\n" {
		t.Fatalf("ls: %d %q", code, out)
	}
	code, out, _ = isoRun(t, "iso", "ls", "-l", "-R", img, "/")
	if code != 0 || !strings.Contains(out, "link -> README\n") || !strings.Contains(out, " sub/aaaaaaaa\n") ||
		!strings.HasPrefix(strings.Join(strings.Fields(out), " "), "-rw-r--r-- 1 0 0 10 ") {
		t.Fatalf("ls -l -R: %d %q", code, out)
	}
	code, out, _ = isoRun(t, "--json", "iso", "ls", img, "link")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0]["target"] != "README" || rows[0]["type"] != "symlink" {
		t.Fatalf("ls --json: %d %q", code, out)
	}

	code, out, _ = isoRun(t, "iso", "cat", img, "link", "/sub/aaaaaaaa")
	if code != 0 || out != "read me\nx\n" {
		t.Fatalf("cat: %d %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"cat", img, "nope"}, 1, "cannot read nope in " + img + ": not in the image\n"},
		{[]string{"cat", img, "sub"}, 1, "cannot read sub in " + img + ": not a regular file (dir)\n"},
		{[]string{"cat", img}, 2, "iso cat takes ISO PATH..., not 1 argument(s)\n"},
		{[]string{"ls", img, "../x"}, 2, "not a valid path in an image"},
		{[]string{"info", img + ".nope"}, 2, "cannot open image " + img + ".nope: no such file\n"},
	} {
		code, _, errs := isoRun(t, append([]string{"iso"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.msg) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: %d %q, want %d %q", tc.args, code, errs, tc.code, tc.msg)
		}
	}

	dest := filepath.Join(t.TempDir(), "dest")
	code, out, errs = isoRun(t, "iso", "extract", img, dest)
	// The hard link's data is written (and counted) once.
	if want := "extracted 7 entries (87B of file data, 1 hard link(s)) to " + dest + "\n"; code != 0 || out != want {
		t.Fatalf("extract: %d %q %q", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "sub/aaaaaaaa")); err != nil || string(b) != "x\n" {
		t.Fatalf("extracted: %q %v", b, err)
	}
	code, _, errs = isoRun(t, "iso", "extract", img, dest, "README")
	if code != 2 || !strings.Contains(errs, "README: file exists\nhint: files already in DEST are never overwritten") {
		t.Fatalf("extract over an existing file: %d %q", code, errs)
	}

	// With --root, absolute paths are inside the root.
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(img, filepath.Join(root, "images", "cmp.iso")); err != nil {
		t.Fatal(err)
	}
	code, out, errs = isoRun(t, "--root", root, "iso", "extract", "/images/cmp.iso", "/dest", "README")
	if code != 0 || !strings.Contains(out, "to "+filepath.Join(root, "dest")) {
		t.Fatalf("extract with --root: %d %q %q", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(root, "dest", "README")); err != nil || string(b) != "read me\n" {
		t.Fatalf("extracted with --root: %q %v", b, err)
	}
}

// TestISOReadBadImages: a truncated, corrupt or hostile image is one line
// of error and exit 1 for every command.
func TestISOReadBadImages(t *testing.T) {
	img := isoReadImage(t)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hostile := bytes.Clone(data)
	i := bytes.Index(hostile, []byte("aaaaaaaa"+"PX")) // the Rock Ridge NM of sub/aaaaaaaa, before its PX
	if i < 0 {
		i = bytes.LastIndex(hostile, []byte("aaaaaaaa"))
	}
	copy(hostile[i:], "../../xx")
	zeroed := bytes.Clone(data)
	clear(zeroed[16*2048 : 17*2048])
	for _, tc := range []struct{ name, path, msg string }{
		{"truncated", write("cut.iso", data[:len(data)/2]), "truncated: the file has"},
		{"no descriptors", write("zero.iso", zeroed), "not an ISO 9660 image"},
		{"not an image", write("text.iso", bytes.Repeat([]byte("hello\n"), 10000)), "not an ISO 9660 image"},
		{"hostile", write("hostile.iso", hostile), `entry "../../xx" is not a valid file name`},
	} {
		for _, args := range [][]string{
			{"iso", "ls", "-R", tc.path},
			{"iso", "cat", tc.path, "sub/aaaaaaaa"},
			{"iso", "extract", tc.path, filepath.Join(dir, "dest-"+tc.name)},
		} {
			if tc.name != "hostile" && args[1] != "ls" {
				continue // Open fails the same way for all
			}
			code, _, errs := isoRun(t, args...)
			if code != 1 || !strings.Contains(errs, tc.msg) || strings.Count(errs, "\n") != 1 {
				t.Errorf("%s %v: %d %q", tc.name, args[:2], code, errs)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "xx")); err == nil {
		t.Error("hostile image wrote outside its destination")
	}
}

// TestISOLsLong: iso ls -l writes what ls -l writes for the same tree
// (type letter, permissions with s, S, t and T, size or major, minor),
// in aligned columns; a name with a newline and one with a backslash and
// an n are told apart.
func TestISOLsLong(t *testing.T) {
	hosttest.RequireRoot(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	syscall.Chmod(filepath.Join(src, "d"), 0o1777)
	os.WriteFile(filepath.Join(src, "suid"), []byte("x\n"), 0o644)
	syscall.Chmod(filepath.Join(src, "suid"), 0o4755)
	os.WriteFile(filepath.Join(src, "sgid"), []byte("yy\n"), 0o644)
	syscall.Chmod(filepath.Join(src, "sgid"), 0o2640)
	os.WriteFile(filepath.Join(src, "a\nb"), nil, 0o644)
	os.WriteFile(filepath.Join(src, `a\nb`), nil, 0o644)
	os.Symlink("suid", filepath.Join(src, "l"))
	if err := syscall.Mknod(filepath.Join(src, "tty"), syscall.S_IFCHR|0o620, int(unix.Mkdev(4, 5))); err != nil {
		t.Fatal(err)
	}
	syscall.Chmod(filepath.Join(src, "tty"), 0o620)
	img := filepath.Join(t.TempDir(), "t.iso")
	hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", img, src)
	code, out, errs := isoRun(t, "iso", "ls", "-l", img)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := map[string]string{ // name: mode and size as ls -l has them
		`a\nb`: "-rw-r--r-- 0", `a\\nb`: "-rw-r--r-- 0", "d": "drwxrwxrwt 2048", "l -> suid": "lrwxrwxrwx 4",
		"sgid": "-rw-r-S--- 3", "suid": "-rwsr-xr-x 2", "tty": "crw--w---- 4, 5",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	date := regexp.MustCompile(` \d{4}-\d\d-\d\d \d\d:\d\d `)
	col := date.FindStringIndex(lines[0])[0] // the date starts in one column
	for _, l := range lines {
		f := strings.Fields(l)
		name := strings.Join(f[7:], " ")
		size := f[4]
		if strings.HasSuffix(size, ",") {
			size += " " + f[5]
			name = strings.Join(f[8:], " ")
		}
		if got := f[0] + " " + size; want[name] != got {
			t.Errorf("%q: %q, want %q", name, got, want[name])
		}
		if date.FindStringIndex(l)[0] != col {
			t.Errorf("columns not aligned:\n%s", out)
		}
	}
	// Plain listing: the two names differ.
	_, out, _ = isoRun(t, "iso", "ls", img)
	if !strings.Contains(out, "a\\nb\n") || !strings.Contains(out, "a\\\\nb\n") {
		t.Errorf("plain listing:\n%s", out)
	}
}
