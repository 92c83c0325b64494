package iso

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"upgradectl/host/hosttest"
)

func requireFUSE(t *testing.T) {
	t.Helper()
	hosttest.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (modprobe fuse)")
	}
}

// TestMountFSServesTree serves a directory tree through the FUSE server
// (the same code that serves images) and reads it all back.
func TestMountFSServesTree(t *testing.T) {
	requireFUSE(t)
	src := makeTree(t)
	mnt := t.TempDir()
	srv, err := MountFS(os.DirFS(src), "test-tree", mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	compareTrees(t, src, mnt)

	table, err := mountTable()
	if err != nil {
		t.Fatal(err)
	}
	e, ok := table[mnt]
	if !ok || e.FSType != fuseType || e.Source != "test-tree" {
		t.Errorf("mount table entry for %s: %+v", mnt, e)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&(syscall.MS_RDONLY|syscall.MS_NODEV|syscall.MS_NOSUID) != syscall.MS_RDONLY|syscall.MS_NODEV|syscall.MS_NOSUID {
		t.Errorf("mount flags %#x, want ro,nodev,nosuid", st.Flags)
	}
	for _, f := range []func() error{
		func() error { return os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644) },
		func() error {
			f, err := os.OpenFile(filepath.Join(mnt, "big.bin"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		func() error { return os.Remove(filepath.Join(mnt, "big.bin")) },
		func() error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) },
	} {
		if err := f(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write to the mount: %v, want EROFS", err)
		}
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted", mnt)
	}
}

func TestParseMountInfo(t *testing.T) {
	in := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:32 / /mnt/with\040blank rw - iso9660 /dev/loop0 ro
37 22 0:33 / /mnt/x rw,nosuid,nodev master:1 - fuse.upgradectl-iso /var/x\040y.iso ro
38 22 0:33 / /mnt/x rw - tmpfs tmpfs rw
bad line
`
	tab, err := parseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if e := tab["/mnt/with blank"]; e.FSType != "iso9660" || e.Source != "/dev/loop0" {
		t.Errorf("escaped mount point: %+v", e)
	}
	if e := tab["/mnt/x"]; e.FSType != "tmpfs" {
		t.Errorf("stacked mount: %+v, want the last one (tmpfs)", e)
	}
	if len(tab) != 3 {
		t.Errorf("%d entries, want 3: %v", len(tab), tab)
	}
}

func TestModuleDeps(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/fs/isofs/isofs.ko.xz: kernel/drivers/cdrom/cdrom.ko.xz kernel/lib/x.ko\nkernel/drivers/block/loop.ko:\nkernel/fs/fat/vfat-x.ko: kernel/fs/fat/fat.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want string
	}{
		{"isofs", "kernel/fs/isofs/isofs.ko.xz kernel/drivers/cdrom/cdrom.ko.xz kernel/lib/x.ko"},
		{"loop", "kernel/drivers/block/loop.ko"},
		{"vfat_x", "kernel/fs/fat/vfat-x.ko kernel/fs/fat/fat.ko"},
		{"vfat-x", "kernel/fs/fat/vfat-x.ko kernel/fs/fat/fat.ko"},
	} {
		got, err := moduleDeps(dir, tc.name)
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("moduleDeps(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := moduleDeps(dir, "udf"); err == nil || !strings.Contains(err.Error(), "does not list udf") {
		t.Errorf("missing module: %v", err)
	}
	if _, err := moduleDeps(t.TempDir(), "udf"); err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Errorf("missing modules.dep: %v", err)
	}
}
