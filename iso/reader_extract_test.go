package iso

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// rtCompareDirs checks that the tree got has what want has: names, types,
// modes, mtimes, owners (when owners), symlink targets and content.
func rtCompareDirs(t *testing.T, got, want string, owners bool) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		seen[rel] = true
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gp := filepath.Join(got, rel)
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if gi.Mode() != wi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		if rel != "." && !gi.ModTime().Equal(wi.ModTime().Truncate(time.Second)) {
			t.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
		}
		gs, ws := gi.Sys().(*syscall.Stat_t), wi.Sys().(*syscall.Stat_t)
		if owners && rel != "." && (gs.Uid != ws.Uid || gs.Gid != ws.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, gs.Uid, gs.Gid, ws.Uid, ws.Gid)
		}
		switch {
		case wi.Mode()&fs.ModeDevice != 0:
			if gs.Rdev != ws.Rdev {
				t.Errorf("%s: device %x, want %x", rel, gs.Rdev, ws.Rdev)
			}
		case wi.Mode()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(gp)
			b, _ := os.Readlink(p)
			if a != b {
				t.Errorf("%s: target %q, want %q", rel, a, b)
			}
		case wi.Mode().IsRegular():
			a, _ := os.ReadFile(gp)
			b, _ := os.ReadFile(p)
			if !bytes.Equal(a, b) {
				t.Errorf("%s: content differs", rel)
			}
		}
		return nil
	})
	rtMust(t, err)
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(got, p)
		if err == nil && !seen[rel] {
			t.Errorf("extracted %s, not in the source", rel)
		}
		return nil
	})
}

func TestExtractXorrisoImage(t *testing.T) {
	src := rtTree(t, 50)
	img := rtMkisofs(t, src)
	im, err := Open(img)
	rtMust(t, err)
	defer im.Close()
	dest := filepath.Join(t.TempDir(), "dest") // created by Extract
	n := 0
	rtMust(t, Extract(im, dest, nil, Progress(func(string, *Entry) { n++ })))
	rtCompareDirs(t, dest, src, os.Geteuid() == 0)
	if n < 70 {
		t.Errorf("progress called %d times", n)
	}
	// The hard link of the image is one file with two names again.
	rtSameFile(t, filepath.Join(dest, "README"), filepath.Join(dest, "sub/hardlink"), 2)
	// A second extraction never overwrites.
	err = Extract(im, dest, []string{"README"})
	if err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Errorf("extracting over an existing file: %v", err)
	}

	// Some paths only, with their parent directories.
	part := filepath.Join(t.TempDir(), "part")
	rtMust(t, Extract(im, part, []string{"sub/deeper", "/README", "link-dir/"}))
	var got []string
	filepath.WalkDir(part, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(part, p)
		got = append(got, rel)
		return nil
	})
	want := ".,README,link-dir,sub,sub/deeper,sub/deeper/deepest,sub/deeper/deepest/file"
	if strings.Join(got, ",") != want {
		t.Errorf("extracted %v, want %s", got, want)
	}
	// One name of a hard link alone is a file of its own.
	one := filepath.Join(t.TempDir(), "one")
	rtMust(t, Extract(im, one, []string{"sub/hardlink"}))
	if b, err := os.ReadFile(filepath.Join(one, "sub/hardlink")); err != nil || string(b) != "read me\n" {
		t.Errorf("one name of a hard link: %q %v", b, err)
	}
	// Every missing path is reported, and nothing is extracted.
	none := filepath.Join(t.TempDir(), "none")
	err = Extract(im, none, []string{"nope", "sub/nope", "README/x", "link-dir/deepest"})
	if host.KindOf(err) != host.KindBad || !strings.Contains(err.Error(), "nope (not in the image), sub/nope") ||
		!strings.Contains(err.Error(), "link-dir/deepest (link-dir is not a directory)") {
		t.Errorf("missing paths: %v", err)
	}
	if _, err := os.Lstat(none); !os.IsNotExist(err) {
		t.Errorf("destination made for a failed extraction: %v", err)
	}
}

// rtSameFile checks that a and b are one file with nlink names.
func rtSameFile(t *testing.T, a, b string, nlink uint64) {
	t.Helper()
	ai, err := os.Lstat(a)
	rtMust(t, err)
	bi, err := os.Lstat(b)
	rtMust(t, err)
	as, bs := ai.Sys().(*syscall.Stat_t), bi.Sys().(*syscall.Stat_t)
	if as.Ino != bs.Ino || as.Nlink != nlink {
		t.Errorf("%s and %s: inodes %d and %d with %d links, want one with %d", a, b, as.Ino, bs.Ino, as.Nlink, nlink)
	}
}

// rtListAll lists every path under dir.
func rtListAll(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		out = append(out, p)
		return nil
	})
	return out
}

// TestHostileNames: names that would climb out of the destination, or are
// not names at all, make the image unreadable and the extraction fail
// with nothing written outside the destination (kdomanski's
// ExtractImageToDirectory writes "../../x" outside its target).
func TestHostileNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		rr   bool
		evil string
	}{
		{"rockridge-dotdot", true, "../../x"},
		{"rockridge-dotdot-only", true, ".."},
		{"rockridge-dot", true, "."},
		{"rockridge-absolute", true, "/tmp/x"},
		{"rockridge-slash", true, "a/b"},
		{"rockridge-nul", true, "a\x00b"},
		{"rockridge-empty", true, ""},
		{"rockridge-huge", true, strings.Repeat("x", 2000)}, // damaged Rock Ridge data: skipped
		{"iso9660-dotdot", false, "../../x"},
		{"iso9660-slash", false, "/x"},
		{"iso9660-dotdot-version", false, "..;1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, where := range []string{"root", "deep"} {
				evil := &twNode{name: tc.evil, mode: 0o100644, data: []byte("pwned\n")}
				if tc.evil == "" {
					evil.id = "EMPTY.;1" // an ISO identifier, an empty NM
				}
				root := twDir("", twFile("ok", "fine\n"), evil)
				if where == "deep" {
					root = twDir("", twFile("ok", "fine\n"), twDir("a", twDir("b", evil)))
				}
				img := filepath.Join(t.TempDir(), "evil.iso")
				rtMust(t, os.WriteFile(img, twBuild(root, tc.rr), 0o644))
				im, err := Open(img)
				if tc.name == "rockridge-huge" {
					// A Rock Ridge name over the limit is damaged Rock
					// Ridge data: the entry is skipped with a warning.
					rtMust(t, err)
					outer := t.TempDir()
					rtMust(t, Extract(im, filepath.Join(outer, "dest"), nil))
					w := im.Warnings()
					im.Close()
					if len(w) != 1 || !strings.Contains(w[0], "Rock Ridge name longer than") {
						t.Fatalf("%s: warnings %q", where, w)
					}
					for _, p := range rtListAll(outer) {
						if strings.Contains(p, "xxx") {
							t.Errorf("%s: extracted %s", where, p)
						}
					}
					continue
				}
				if where == "root" {
					t.Logf("%s: %v", where, err)
					if err == nil {
						im.Close()
						t.Fatalf("%s: image with entry %q opens", where, tc.evil)
					}
					if host.KindOf(err) != host.KindBad {
						t.Fatalf("%s: %v", where, err)
					}
					continue
				}
				rtMust(t, err)
				outer := t.TempDir()
				dest := filepath.Join(outer, "x1", "x2", "dest")
				rtMust(t, os.MkdirAll(dest, 0o755))
				err = Extract(im, dest, nil)
				t.Logf("%s: %v", where, err)
				im.Close()
				if err == nil || host.KindOf(err) != host.KindBad {
					t.Errorf("%s: extract: %v", where, err)
				}
				for _, p := range rtListAll(outer) {
					if !strings.HasPrefix(p, dest) && p != outer && p != filepath.Join(outer, "x1") && p != filepath.Join(outer, "x1", "x2") {
						t.Errorf("%s: written outside: %s", where, p)
					}
				}
			}
		})
	}
}

// TestHostileSymlinks: symlinks pointing out of the destination are
// extracted as symlinks and never followed, also not by a later image
// whose directory has the symlink's name.
func TestHostileSymlinks(t *testing.T) {
	outer := t.TempDir()
	outside := filepath.Join(outer, "outside")
	rtMust(t, os.Mkdir(outside, 0o755))
	dest := filepath.Join(outer, "dest")

	first := twDir("",
		twLink("up", "../outside"),
		twLink("abs", outside),
		twLink("deep", "../../../../../../../../.."+outside),
		twDir("d", twLink("loop", "../d/loop")),
	)
	im, err := OpenReaderAt(bytes.NewReader(twBuild(first, true)), int64(len(twBuild(first, true))))
	rtMust(t, err)
	rtMust(t, Extract(im, dest, nil))
	for name, want := range map[string]string{"up": "../outside", "abs": outside, "deep": "../../../../../../../../.." + outside, "d/loop": "../d/loop"} {
		if got, err := os.Readlink(filepath.Join(dest, name)); err != nil || got != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	// Reading through the loop is an error, not a hang.
	if _, err := im.ReadFile("d/loop"); err == nil {
		t.Error("reading a symlink loop works")
	}

	// A later image with directories named like those symlinks.
	second := twDir("",
		twDir("up", twFile("pwned", "x")),
		twDir("abs", twFile("pwned", "x")),
		twFile("deep", "x"),
	)
	data := twBuild(second, true)
	im2, err := OpenReaderAt(bytes.NewReader(data), int64(len(data)))
	rtMust(t, err)
	for _, p := range []string{"up", "abs", "deep"} {
		if err := Extract(im2, dest, []string{p}); err == nil {
			t.Errorf("extracting %s over a symlink works", p)
		}
	}
	if ls := rtListAll(outside); len(ls) != 1 {
		t.Errorf("written outside: %v", ls)
	}

	// Two entries of one name in one directory (a symlink and a
	// directory using it) are refused.
	dup := twDir("", twLink("x", outside), twDir("x", twFile("pwned", "x")))
	data = twBuild(dup, true)
	if _, err := OpenReaderAt(bytes.NewReader(data), int64(len(data))); err == nil || !strings.Contains(err.Error(), `two entries named "x"`) {
		t.Errorf("duplicate names: %v", err)
	}
}

// TestLongNames: names up to the Rock Ridge limit work through
// continuation areas; a name the destination filesystem cannot hold is an
// error.
func TestLongNames(t *testing.T) {
	long := strings.Repeat("n", 255)
	tooLong := strings.Repeat("m", 600)
	root := twDir("", twFile(long, "long\n"), twDir("z", twFile(tooLong, "too long\n")))
	data := twBuild(root, true)
	im, err := OpenReaderAt(bytes.NewReader(data), int64(len(data)))
	rtMust(t, err)
	if b, err := im.ReadFile(long); err != nil || string(b) != "long\n" {
		t.Fatalf("255-byte name: %q %v", b, err)
	}
	if b, err := im.ReadFile("z/" + tooLong); err != nil || string(b) != "too long\n" {
		t.Fatalf("600-byte name: %q %v", b, err)
	}
	dest := t.TempDir()
	err = Extract(im, dest, nil)
	if err == nil || !strings.Contains(err.Error(), "file name too long") {
		t.Fatalf("extracting a 600-byte name: %v", err)
	}
	dest = t.TempDir()
	rtMust(t, Extract(im, dest, []string{long}))
	if b, err := os.ReadFile(filepath.Join(dest, long)); err != nil || string(b) != "long\n" {
		t.Fatalf("255-byte name extracted: %q %v", b, err)
	}
}

// TestExtractNoSpace: a destination that fills up gives ENOSPC (exit code
// "cannot run here") and leaves no partial file.
func TestExtractNoSpace(t *testing.T) {
	im, err := Open(rtMkisofs(t, rtTree(t, 0)))
	rtMust(t, err)
	defer im.Close()
	mnt := hosttest.LoopFS(t, "tmpfs", 1<<20)
	err = Extract(im, mnt, []string{"Packages"})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "cannot extract Packages/big.rpm to "+mnt+"/Packages/big.rpm") {
		t.Fatalf("extract to a full filesystem: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "Packages/big.rpm")); !os.IsNotExist(err) {
		t.Fatalf("partial file left: %v", err)
	}
}

// TestExtractDevicesAndOldTimes: device numbers as xorriso and genisoimage
// write them in Rock Ridge PN (genisoimage puts the major number in the
// high half, which extract handed to mknod as high<<32|low), and a time
// before 1970, which came back a microsecond late.
func TestExtractDevicesAndOldTimes(t *testing.T) {
	hosttest.RequireRoot(t)
	src := filepath.Join(t.TempDir(), "src")
	rtMust(t, os.MkdirAll(src, 0o755))
	rtMust(t, unix.Mknod(filepath.Join(src, "tty"), unix.S_IFCHR|0o620, int(unix.Mkdev(4, 5))))
	rtMust(t, unix.Mknod(filepath.Join(src, "disk"), unix.S_IFBLK|0o660, int(unix.Mkdev(259, 70000))))
	old := filepath.Join(src, "old")
	rtMust(t, os.WriteFile(old, []byte("1965"), 0o644))
	when := time.Date(1965, 3, 4, 5, 6, 7, 0, time.UTC)
	rtMust(t, os.Chtimes(old, when, when))
	makers := map[string]func() string{"xorriso": func() string { return rtMkisofs(t, src, "-R") }}
	if _, err := exec.LookPath("genisoimage"); err == nil {
		makers["genisoimage"] = func() string {
			p := filepath.Join(t.TempDir(), "g.iso")
			hosttest.Run(t, "genisoimage", "-quiet", "-R", "-o", p, src)
			return p
		}
	} else {
		t.Log("no genisoimage: only xorriso's images")
	}
	for maker, mk := range makers {
		im, err := Open(mk())
		rtMust(t, err)
		dest := filepath.Join(t.TempDir(), "dest")
		rtMust(t, Extract(im, dest, nil))
		im.Close()
		for name, want := range map[string]uint64{"tty": unix.Mkdev(4, 5), "disk": unix.Mkdev(259, 70000)} {
			var st unix.Stat_t
			rtMust(t, unix.Lstat(filepath.Join(dest, name), &st))
			if st.Rdev != want {
				t.Errorf("%s: %s is %d:%d, want %d:%d", maker, name, unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(want), unix.Minor(want))
			}
		}
		fi, err := os.Stat(filepath.Join(dest, "old"))
		rtMust(t, err)
		if !fi.ModTime().Equal(when) {
			t.Errorf("%s: the 1965 file has time %v, want %v", maker, fi.ModTime().UTC(), when)
		}
	}
}
