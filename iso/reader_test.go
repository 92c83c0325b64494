package iso

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// mkisofs builds an image of src with xorriso's mkisofs emulation (Rock
// Ridge and Joliet unless args say otherwise) and returns its path.
func rtMkisofs(t testing.TB, src string, args ...string) string {
	t.Helper()
	hosttest.RequireCommand(t, "xorriso")
	if len(args) == 0 {
		args = []string{"-R", "-J"}
	}
	out := filepath.Join(t.TempDir(), "test.iso")
	all := append([]string{"-as", "mkisofs", "-quiet", "-V", "TEST_VOL"}, args...)
	hosttest.Run(t, "xorriso", append(all, "-o", out, src)...)
	return out
}

var rtTime = time.Date(2023, 4, 5, 6, 7, 8, 0, time.UTC)

// rtTree writes a source tree with subdirectories, symlinks, a hard
// link, odd names, modes, owners (as root), old timestamps and a directory
// of bigDir files, and returns its path.
func rtTree(t testing.TB, bigDir int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	files := map[string]string{
		"README":                          "read me\n",
		".treeinfo":                       "[general]\nname = test\n",
		".discinfo":                       "1700000000.0\ntest\nx86_64\n",
		"sub/deeper/deepest/file":         strings.Repeat("deep ", 1000),
		"sub/with space & ümlaut":         "odd\n",
		"sub/trailing.":                   "trailing dot\n",
		"sub/semi;1":                      "semicolon\n",
		"sub/" + strings.Repeat("L", 200): "long name\n",
		"Packages/big.rpm":                strings.Repeat("0123456789abcdef", 300000), // 4.8 MB
		"empty":                           "",
	}
	for name, content := range files {
		p := filepath.Join(src, name)
		rtMust(t, os.MkdirAll(filepath.Dir(p), 0o755))
		rtMust(t, os.WriteFile(p, []byte(content), 0o644))
	}
	rtMust(t, os.Chmod(filepath.Join(src, "sub/trailing."), 0o600))
	rtMust(t, os.Chmod(filepath.Join(src, "sub/deeper"), 0o710))
	rtMust(t, os.Symlink("README", filepath.Join(src, "link-rel")))
	rtMust(t, os.Symlink("/etc/passwd", filepath.Join(src, "link-abs")))
	rtMust(t, os.Symlink("../Packages/big.rpm", filepath.Join(src, "sub/link-up")))
	rtMust(t, os.Symlink("sub/deeper", filepath.Join(src, "link-dir")))
	rtMust(t, os.Symlink("does/not/exist", filepath.Join(src, "link-dangling")))
	rtMust(t, os.Link(filepath.Join(src, "README"), filepath.Join(src, "sub/hardlink")))
	rtMust(t, unix.Mkfifo(filepath.Join(src, "sub/fifo"), 0o640))
	if os.Geteuid() == 0 {
		rtMust(t, unix.Mknod(filepath.Join(src, "sub/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		rtMust(t, os.Lchown(filepath.Join(src, "sub/with space & ümlaut"), 1234, 5678))
		rtMust(t, os.Chmod(filepath.Join(src, "sub/with space & ümlaut"), 0o4750))
	}
	if bigDir > 0 {
		big := filepath.Join(src, "big")
		rtMust(t, os.Mkdir(big, 0o755))
		for i := range bigDir {
			p := filepath.Join(big, fmt.Sprintf("file-%05d-with-a-longer-name.txt", i))
			rtMust(t, os.WriteFile(p, []byte(fmt.Sprint(i)), 0o600))
			// Each file gets its own mode so that a mix-up shows.
			rtMust(t, os.Chmod(p, fs.FileMode(0o400|i%0o400)))
		}
	}
	// Old timestamps, set last, deepest first.
	var paths []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for i, p := range paths {
		ts := rtTime.Add(time.Duration(i) * time.Minute)
		tv := []unix.Timeval{unix.NsecToTimeval(ts.UnixNano()), unix.NsecToTimeval(ts.UnixNano())}
		rtMust(t, unix.Lutimes(p, tv))
	}
	return src
}

func rtMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rtCompareTree checks that every file of src is in the image with the same
// name, type, mode, owner, mtime, symlink target and content, and that the
// image has nothing else. Content is compared for files of up to maxContent
// bytes.
func rtCompareTree(t *testing.T, im *Image, src string, owners bool) {
	t.Helper()
	want := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		want[rel] = true
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e, err := im.Lstat(rel)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if rel != "." && e.Name != fi.Name() {
			t.Errorf("%s: name %q, want %q", rel, e.Name, fi.Name())
		}
		if e.Mode != fi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, e.Mode, fi.Mode())
		}
		if !e.ModTime.Equal(fi.ModTime().Truncate(time.Second)) {
			t.Errorf("%s: mtime %v, want %v", rel, e.ModTime, fi.ModTime())
		}
		st := fi.Sys().(*syscall.Stat_t)
		if owners && (e.UID != st.Uid || e.GID != st.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, e.UID, e.GID, st.Uid, st.Gid)
		}
		switch {
		case fi.Mode()&fs.ModeDevice != 0:
			if e.Rdev != st.Rdev {
				t.Errorf("%s: device %x, want %x", rel, e.Rdev, st.Rdev)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			if e.Target != target {
				t.Errorf("%s: target %q, want %q", rel, e.Target, target)
			}
			if got, err := im.ReadLink(rel); err != nil || got != target {
				t.Errorf("%s: ReadLink %q %v, want %q", rel, got, err, target)
			}
		case fi.Mode().IsRegular():
			if e.Size != fi.Size() {
				t.Errorf("%s: size %d, want %d", rel, e.Size, fi.Size())
			}
			wantData, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got, err := im.ReadFile(rel)
			if err != nil || !bytes.Equal(got, wantData) {
				t.Errorf("%s: content differs (%d bytes, %v)", rel, len(got), err)
			}
		}
		return nil
	})
	rtMust(t, err)
	err = fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !want[p] {
			t.Errorf("image has %s, the source has not", p)
		}
		return nil
	})
	rtMust(t, err)
}

func TestReadXorrisoImage(t *testing.T) {
	src := rtTree(t, 100)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"rockridge+joliet", []string{"-R", "-J"}},
		{"rockridge", []string{"-R"}},
		{"rockridge-iso-level-3", []string{"-R", "-J", "-iso-level", "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := rtMkisofs(t, src, tc.args...)
			im, err := Open(img)
			rtMust(t, err)
			defer im.Close()
			info := im.Info()
			fi, _ := os.Stat(img)
			if info.VolumeID != "TEST_VOL" || !info.RockRidge || info.Tree != "rockridge" ||
				info.FileSize != fi.Size() || info.VolumeSize != fi.Size() || info.EmbeddedMD5 {
				t.Errorf("info %+v", info)
			}
			if info.Joliet != strings.Contains(strings.Join(tc.args, " "), "-J") {
				t.Errorf("Joliet %v for %v", info.Joliet, tc.args)
			}
			if time.Since(info.Created) > time.Hour || time.Since(info.Created) < 0 {
				t.Errorf("created %v", info.Created)
			}
			rtCompareTree(t, im, src, os.Geteuid() == 0)

			// Symlinks are followed inside the image by Stat, Open and
			// ReadFile, not by Lstat.
			b, err := im.ReadFile("sub/link-up")
			if err != nil || len(b) != 4800000 {
				t.Errorf("ReadFile through ../ symlink: %d bytes, %v", len(b), err)
			}
			if fi, err := im.Stat("link-dir/deepest/file"); err != nil || fi.Size() != 5000 {
				t.Errorf("Stat through a directory symlink: %v %v", fi, err)
			}
			if _, err := im.Stat("link-abs"); !os.IsNotExist(err) {
				t.Errorf("Stat of link to /etc/passwd (absent in the image): %v", err)
			}
			if _, err := im.Stat("nope"); !os.IsNotExist(err) {
				t.Errorf("Stat(nope): %v", err)
			}
			if _, err := im.Open("../x"); err == nil {
				t.Error("Open(../x) works")
			}
			// Hard links share Ino.
			a, _ := im.Lstat("README")
			h, _ := im.Lstat("sub/hardlink")
			if a == nil || h == nil || a.Ino != h.Ino || a.Nlink != 2 {
				t.Errorf("hard links: %+v %+v", a, h)
			}
		})
	}
}

// TestReadJolietOnly: without Rock Ridge the Joliet names are used, with
// their leading and trailing dots.
func TestReadJolietOnly(t *testing.T) {
	src := rtTree(t, 0)
	im, err := Open(rtMkisofs(t, src, "--norock", "-J"))
	rtMust(t, err)
	defer im.Close()
	if in := im.Info(); in.RockRidge || !in.Joliet || in.Tree != "joliet" {
		t.Fatalf("info %+v", in)
	}
	for _, name := range []string{".treeinfo", ".discinfo", "sub/with space & ümlaut", "sub/trailing.", "Packages/big.rpm"} {
		want, _ := os.ReadFile(filepath.Join(src, name))
		got, err := im.ReadFile(name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
}

// TestReadPlainISO9660: without Rock Ridge or Joliet the ISO 9660 names
// are used without ";1" and a trailing dot.
func TestReadPlainISO9660(t *testing.T) {
	src := rtTree(t, 0)
	im, err := Open(rtMkisofs(t, src, "--norock", "-iso-level", "2"))
	rtMust(t, err)
	defer im.Close()
	if in := im.Info(); in.RockRidge || in.Joliet || in.Tree != "iso9660" {
		t.Fatalf("info %+v", in)
	}
	got, err := im.ReadFile("README")
	if err != nil || string(got) != "read me\n" {
		t.Fatalf("README: %q %v", got, err)
	}
	e, err := im.Lstat("PACKAGES/BIG.RPM")
	if err != nil || e.Size != 4800000 || e.Mode != 0o444 {
		t.Fatalf("PACKAGES/BIG.RPM: %+v %v", e, err)
	}
}

// TestTruncatedImage: an image cut short is refused at Open, and a file
// shortened after Open gives read errors, never short content (both
// libraries read such images as "OK" with wrong content).
func TestTruncatedImage(t *testing.T) {
	img := rtMkisofs(t, rtTree(t, 0))
	data, err := os.ReadFile(img)
	rtMust(t, err)
	for _, cut := range []int{len(data) / 2, len(data) - 1, 17 * 2048, 100} {
		p := filepath.Join(t.TempDir(), "cut.iso")
		rtMust(t, os.WriteFile(p, data[:cut], 0o644))
		im, err := Open(p)
		if err == nil {
			im.Close()
			t.Errorf("cut at %d: Open works", cut)
			continue
		}
		if host.KindOf(err) != host.KindBad || !strings.Contains(err.Error(), "cannot read "+p) {
			t.Errorf("cut at %d: %v (kind %d)", cut, err, host.KindOf(err))
		}
	}
	// Cut after Open: reading the big file fails.
	p := filepath.Join(t.TempDir(), "shrinks.iso")
	rtMust(t, os.WriteFile(p, data, 0o644))
	im, err := Open(p)
	rtMust(t, err)
	defer im.Close()
	e, err := im.Lstat("Packages/big.rpm")
	rtMust(t, err)
	rtMust(t, os.Truncate(p, e.extents[0].off+e.Size/2))
	if b, err := im.ReadFile("Packages/big.rpm"); err == nil {
		t.Fatalf("read %d bytes of a file cut in half without error", len(b))
	}
	if n, err := io.Copy(io.Discard, im.OpenEntry(e)); err == nil || err == io.EOF {
		t.Fatalf("copied %d bytes of a file cut in half: %v", n, err)
	}
	// Extraction fails and leaves no partial file.
	dest := t.TempDir()
	if err := Extract(im, dest, []string{"Packages/big.rpm"}); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("extracting a file cut in half: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "Packages/big.rpm")); !os.IsNotExist(err) {
		t.Fatalf("partial file left: %v", err)
	}
}

// TestRelocatedDirectories: directories deeper than ISO 9660 allows,
// which xorriso relocates to rr_moved with Rock Ridge CL and RE entries
// when asked to, read at their real place (and rr_moved is hidden, as
// xorriso itself shows the image).
func TestRelocatedDirectories(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "src")
	deep := filepath.Join(src, "1/2/3/4/5/6/7/8/9/10")
	rtMust(t, os.MkdirAll(deep, 0o755))
	rtMust(t, os.WriteFile(filepath.Join(deep, "file"), []byte("bottom\n"), 0o644))
	img := filepath.Join(t.TempDir(), "deep.iso")
	hosttest.Run(t, "xorriso", "-compliance", "deep_paths_off:long_paths_off", "-as", "mkisofs", "-quiet", "-R",
		"-rr_reloc_dir", "rr_moved", "-o", img, src)
	raw, err := os.ReadFile(img)
	rtMust(t, err)
	if !bytes.Contains(raw, []byte("CL\x0c\x01")) || !bytes.Contains(raw, []byte("RE\x04\x01")) {
		t.Fatal("xorriso did not relocate the deep directory")
	}
	im, err := Open(img)
	rtMust(t, err)
	defer im.Close()
	if b, err := im.ReadFile("1/2/3/4/5/6/7/8/9/10/file"); err != nil || string(b) != "bottom\n" {
		t.Fatalf("file in a relocated directory: %q %v", b, err)
	}
	var all []string
	rtMust(t, fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		all = append(all, p)
		return err
	}))
	if len(all) != 12 || all[10] != "1/2/3/4/5/6/7/8/9/10" {
		t.Fatalf("walk: %v", all)
	}
}

// TestAssociatedFilesHidden: an associated file (a resource fork next to
// its file, of the same name) is hidden, as Linux hides it.
func TestAssociatedFilesHidden(t *testing.T) {
	fork := twFile("FILE", "fork")
	fork.xflags = flagAssociated
	data := twBuild(twDir("", fork, twFile("FILE", "data")), false)
	im, err := OpenReaderAt(bytes.NewReader(data), int64(len(data)))
	rtMust(t, err)
	if b, err := im.ReadFile("FILE"); err != nil || string(b) != "data" {
		t.Fatalf("FILE: %q %v", b, err)
	}
	if ents, err := im.ReadDir("."); err != nil || len(ents) != 1 {
		t.Fatalf("root: %v %v", ents, err)
	}
}

// TestConcurrentReads: one Image serves many readers at once (the FUSE
// server does); run with -race.
func TestConcurrentReads(t *testing.T) {
	src := rtTree(t, 300)
	im, err := Open(rtMkisofs(t, src))
	rtMust(t, err)
	defer im.Close()
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			errs <- fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return err
				}
				want, err := os.ReadFile(filepath.Join(src, p))
				if err != nil {
					return err
				}
				got, err := im.ReadFile(p)
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("%s: content differs", p)
				}
				return err
			})
		}()
	}
	for range 8 {
		rtMust(t, <-errs)
	}
}
