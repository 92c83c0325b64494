package iso

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host/hosttest"
)

// mtMakeSpecialTree writes a small tree with a fifo, a character device
// (1:3, like /dev/null), a block device with a minor above 255, owners and
// fixed mtimes, beside a few files and directories. It needs root (mknod).
func mtMakeSpecialTree(t *testing.T) string {
	t.Helper()
	hosttest.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "special")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "dev/sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "README"), []byte(strings.Repeat("read me\n", 1000)), 0o644))
	must(os.WriteFile(filepath.Join(dir, "dev/sub/file"), []byte("x"), 0o600))
	must(unix.Mkfifo(filepath.Join(dir, "dev/fifo"), 0o640))
	must(unix.Mknod(filepath.Join(dir, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(dir, "dev/blk"), unix.S_IFBLK|0o660, int(unix.Mkdev(259, 300))))
	must(os.Lchown(filepath.Join(dir, "dev/blk"), 0, 6))
	must(os.Lchown(filepath.Join(dir, "dev/fifo"), 1234, 5678))
	// Umask must not decide the modes that are compared.
	must(os.Chmod(filepath.Join(dir, "dev/fifo"), 0o640))
	must(os.Chmod(filepath.Join(dir, "dev/null"), 0o666))
	must(os.Chmod(filepath.Join(dir, "dev/blk"), 0o660))
	base := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for i, p := range []string{"dev/sub/file", "dev/fifo", "dev/null", "dev/blk", "README", "dev/sub", "dev", "."} {
		mt := base.Add(time.Duration(i) * time.Hour)
		must(os.Chtimes(filepath.Join(dir, p), mt, mt))
	}
	return dir
}

// mtCountInodes counts the distinct inodes under dir, itself included.
func mtCountInodes(t *testing.T, dir string) uint64 {
	t.Helper()
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		seen[st.Ino] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return uint64(len(seen))
}

// TestFUSEMountSpecialFiles mounts a real xorriso image of a tree with a
// fifo and devices through the built binary: they list with their type and
// stat with their mode, owners, device number and mtime as in the source;
// statfs on the mount (and on a device in it) and df report the image's
// volume size in 2048-byte blocks, nothing free, and the number of files.
func TestFUSEMountSpecialFiles(t *testing.T) {
	mtRequireFUSE(t)
	hosttest.RequireCommand(t, "df")
	src := mtMakeSpecialTree(t)
	img := mtMakeISO(t, src, "special.iso")
	// The volume space size straight from the primary volume descriptor,
	// not through the reader under test.
	pvd := make([]byte, 2048)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(pvd, 16*2048)
	f.Close()
	if err != nil || pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		t.Fatalf("no primary volume descriptor in %s: %v", img, err)
	}
	volBlocks := uint64(binary.LittleEndian.Uint32(pvd[80:]))

	root, mnt := mtRootWith(t, img)
	if out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", "/special.iso", "/mnt"); err != nil {
		t.Fatalf("iso mount: %v\n%s", err, out)
	}
	defer mtRun(t, root, "iso", "umount", "/mnt")

	mtCompareTrees(t, src, mnt)
	// The listing (readdir) gives the types too, not only stat.
	ents, err := os.ReadDir(filepath.Join(mnt, "dev"))
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]fs.FileMode{}
	for _, e := range ents {
		types[e.Name()] = e.Type()
	}
	for name, typ := range map[string]fs.FileMode{
		"fifo": fs.ModeNamedPipe,
		"null": fs.ModeDevice | fs.ModeCharDevice,
		"blk":  fs.ModeDevice,
		"sub":  fs.ModeDir,
	} {
		if types[name] != typ {
			t.Errorf("readdir type of dev/%s: %v, want %v", name, types[name], typ)
		}
	}
	// The mount is nodev: a device on it cannot be opened.
	if f, err := os.Open(filepath.Join(mnt, "dev/null")); err == nil {
		f.Close()
		t.Errorf("opened a device on a nodev mount")
	}

	files := mtCountInodes(t, src)
	for _, p := range []string{mnt, filepath.Join(mnt, "README"), filepath.Join(mnt, "dev/null")} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks != volBlocks || st.Bsize != 2048 || st.Frsize != 2048 || st.Bfree != 0 || st.Bavail != 0 ||
			st.Files != files || st.Ffree != 0 || st.Namelen != 255 {
			t.Errorf("statfs %s: blocks=%d bsize=%d frsize=%d bfree=%d bavail=%d files=%d ffree=%d namelen=%d; "+
				"want blocks=%d bsize=frsize=2048, nothing free, files=%d, namelen=255",
				p, st.Blocks, st.Bsize, st.Frsize, st.Bfree, st.Bavail, st.Files, st.Ffree, st.Namelen, volBlocks, files)
		}
	}
	out, err := exec.Command("df", "-B", "2048", "--output=size,used,avail,itotal,iused,iavail", mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("df: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	wantDF := fmt.Sprintf("%d %d 0 %d %d 0", volBlocks, volBlocks, files, files)
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != wantDF {
		t.Errorf("df says:\n%s\nwant size, used, avail, inodes, used, free: %s", out, wantDF)
	}
}

// TestMountFSSpecialFilesDirFS serves the same tree, with a hard link,
// straight from the directory (fs.FS with *syscall.Stat_t): devices and
// fifos show as in the source, and statfs counts a hard-linked file once.
func TestMountFSSpecialFilesDirFS(t *testing.T) {
	mtRequireFUSE(t)
	src := mtMakeSpecialTree(t)
	if err := os.Link(filepath.Join(src, "README"), filepath.Join(src, "dev/README-link")); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	srv, err := MountFS(os.DirFS(src), "special-tree", mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Unmount()
		srv.Wait()
	}()
	mtCompareTrees(t, src, mnt)
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(mnt, "dev/fifo"), &st); err != nil {
		t.Fatal(err)
	}
	if n := mtCountInodes(t, src); st.Files != n || st.Bsize != 2048 || st.Blocks == 0 || st.Bfree != 0 {
		t.Errorf("statfs: files=%d bsize=%d blocks=%d bfree=%d; want files=%d, bsize 2048, some blocks, none free",
			st.Files, st.Bsize, st.Blocks, st.Bfree, n)
	}
}
