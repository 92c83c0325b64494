package tagfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host/hosttest"
)

// noTmpfileNode is a loopback node that answers O_TMPFILE as a filesystem
// without it does (ENOSYS, which the kernel turns into EOPNOTSUPP for the
// whole mount).
type noTmpfileNode struct{ gofs.LoopbackNode }

func (n *noTmpfileNode) Tmpfile(context.Context, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.ENOSYS
}

// TestWithoutTmpfile tags files on a filesystem that has no O_TMPFILE (and
// no reflink): a FUSE loopback of a directory, served by go-fuse, whose
// nodes refuse O_TMPFILE as many FUSE filesystems do. Each copy is then written under its temporary name and
// renamed, and must come out the same as on the other filesystems.
func TestWithoutTmpfile(t *testing.T) {
	hosttest.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (modprobe fuse)")
	}
	under, mnt := t.TempDir(), t.TempDir()
	var st syscall.Stat_t
	if err := syscall.Stat(under, &st); err != nil {
		t.Fatal(err)
	}
	lb := &gofs.LoopbackRoot{Path: under, Dev: st.Dev,
		NewNode: func(r *gofs.LoopbackRoot, _ *gofs.Inode, _ string, _ *syscall.Stat_t) gofs.InodeEmbedder {
			return &noTmpfileNode{gofs.LoopbackNode{RootData: r}}
		}}
	lb.RootNode = lb.NewNode(lb, nil, "", &st)
	srv, err := gofs.Mount(mnt, lb.RootNode, &gofs.Options{MountOptions: fuse.MountOptions{
		FsName: "tagtest", DirectMountStrict: true, AllowOther: true,
	}})
	if err != nil {
		t.Skipf("cannot mount a FUSE loopback here: %v", err)
	}
	t.Cleanup(func() { srv.Unmount() })

	fd, err := unix.Open(mnt, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err == nil {
		unix.Close(fd)
		t.Fatal("O_TMPFILE works on a FUSE filesystem that refuses it")
	}
	if err != unix.EOPNOTSUPP {
		t.Fatalf("O_TMPFILE on FUSE: %v, want EOPNOTSUPP", err)
	}

	p := func(h string) string { return filepath.Join(mnt, h) }
	writeFile(t, p("/usr/bin/prog"), randBytes(1, 300<<10), 0o755)
	if err := unix.Chmod(p("/usr/bin/prog"), 0o4755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("/usr/lib/libx.so"), randBytes(2, 10<<10), 0o640)
	if err := os.Lchown(p("/usr/lib/libx.so"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := xattr.LSet(p("/usr/lib/libx.so"), "user.note", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("prog", p("/usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	paths := []string{"/usr/bin/link", "/usr/bin/prog", "/usr/lib/libx.so"}
	before := snapAll(t, mnt, paths)

	tg := newTestTags(t, mnt)
	rep, err := tg.Create("1", []string{"/usr"}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Done) != len(paths) || rep.Cloned != 0 || rep.Copied != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, h := range paths {
		cp := snap(t, p(TaggedPath(h)))
		if d := sameCopy(cp, before[h], tg.Attribute()); d != "" {
			t.Errorf("%s: copy differs: %s", h, d)
		}
		if cp.Xattrs[tg.Attribute()] != "1" {
			t.Errorf("%s: version attribute %q", h, cp.Xattrs[tg.Attribute()])
		}
	}
	filepath.Walk(mnt, func(q string, _ os.FileInfo, _ error) error {
		if strings.HasSuffix(q, tmpSuffix) {
			t.Errorf("temporary left: %s", q)
		}
		return nil
	})
	if _, err := tg.Check(true); err != nil {
		t.Fatal(err)
	}
	// The backout puts the copies back.
	writeFile(t, p("/usr/bin/prog"), []byte("v2"), 0o755)
	if _, err := tg.Restore(nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range paths {
		if d := sameCopy(snap(t, p(h)), before[h], ""); d != "" {
			t.Errorf("%s: restored file differs: %s", h, d)
		}
	}
}
