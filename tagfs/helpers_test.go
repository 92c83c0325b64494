package tagfs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// newTestTags returns the tagged files of a root at dir, with the state
// directory inside it.
func newTestTags(t testing.TB, dir string) *Tags {
	t.Helper()
	root, err := host.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	tg := New(root, host.DefaultConfig(), filepath.Join(dir, "var/lib/upgradectl"))
	t.Cleanup(func() { tg.Close() })
	return tg
}

// meta is everything about a file that tagging must keep or copy.
type meta struct {
	Mode         uint32
	UID, GID     uint32
	Size         int64
	Mtime        int64
	Atime, Ctime int64
	Ino          uint64
	Xattrs       map[string]string
	Content      string // digest of the data, or the symlink target
}

func snap(t testing.TB, p string) meta {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	m := meta{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Size: st.Size, Mtime: st.Mtim.Nano(),
		Atime: st.Atim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino, Xattrs: map[string]string{}}
	names, err := xattr.LList(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		v, err := xattr.LGet(p, n)
		if err != nil {
			t.Fatal(err)
		}
		m.Xattrs[n] = string(v)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		m.Content, err = os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	m.Content = hex.EncodeToString(h.Sum(nil))
	return m
}

// sameCopy compares what a tagged copy or a restored file must share with
// the original: not the inode, ctime or atime.
func sameCopy(a, b meta, ignoreAttr string) string {
	var d []string
	if a.Mode != b.Mode {
		d = append(d, fmt.Sprintf("mode %o != %o", a.Mode, b.Mode))
	}
	if a.UID != b.UID || a.GID != b.GID {
		d = append(d, fmt.Sprintf("owner %d:%d != %d:%d", a.UID, a.GID, b.UID, b.GID))
	}
	if a.Size != b.Size || a.Content != b.Content {
		d = append(d, "content differs")
	}
	if a.Mtime != b.Mtime {
		d = append(d, fmt.Sprintf("mtime %v != %v", time.Unix(0, a.Mtime), time.Unix(0, b.Mtime)))
	}
	ax, bx := without(a.Xattrs, ignoreAttr), without(b.Xattrs, ignoreAttr)
	if fmt.Sprint(ax) != fmt.Sprint(bx) {
		d = append(d, fmt.Sprintf("xattrs %q != %q", ax, bx))
	}
	return strings.Join(d, "; ")
}

func without(m map[string]string, k string) map[string]string {
	out := map[string]string{}
	for n, v := range m {
		if n != k {
			out[n] = v
		}
	}
	return out
}

func writeFile(t testing.TB, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// makeTree builds the sample tree under root and returns the host paths
// of its regular files and symlinks: set-id bits, other owners, old
// timestamps, ACLs, a file capability, user and trusted attributes, an
// empty file, hard links, a symlink with an attribute, a larger file and
// a file without an ACL in a directory with a default ACL.
func makeTree(t testing.TB, root string) []string {
	t.Helper()
	hosttest.RequireCommand(t, "setcap", "setfacl")
	p := func(h string) string { return filepath.Join(root, h) }
	writeFile(t, p("/usr/bin/prog"), append([]byte("#!/bin/sh\necho prog v1\n#"), randBytes(1, 200<<10)...), 0o755)
	if err := unix.Chmod(p("/usr/bin/prog"), 0o4755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("/usr/bin/pinger"), randBytes(2, 50<<10), 0o755)
	hosttest.Run(t, "setcap", "cap_net_raw+ep", p("/usr/bin/pinger"))
	writeFile(t, p("/usr/lib/libx.so"), randBytes(3, 100<<10), 0o640)
	if err := os.Lchown(p("/usr/lib/libx.so"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	hosttest.Run(t, "setfacl", "-m", "u:4321:rw,g:8765:r", p("/usr/lib/libx.so"))
	if err := xattr.LSet(p("/usr/lib/libx.so"), "user.note", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := xattr.LSet(p("/usr/lib/libx.so"), "trusted.other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("/usr/lib/empty"), nil, 0o644)
	writeFile(t, p("/usr/lib/hard1"), []byte("linked\n"), 0o644)
	if err := os.Link(p("/usr/lib/hard1"), p("/usr/lib/hard2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("prog", p("/usr/bin/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p("/usr/bin/link"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := xattr.LSet(p("/usr/bin/link"), "trusted.sym", []byte("s")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("/usr/share/big"), randBytes(4, 3<<20), 0o644)
	// A directory with a default ACL, which a new file in it inherits,
	// and a file there that has had its ACL removed: its copy must not
	// have one either.
	writeFile(t, p("/usr/share/doc/plain"), []byte("no acl\n"), 0o644)
	hosttest.Run(t, "setfacl", "-d", "-m", "u:4321:rwx", p("/usr/share/doc"))
	hosttest.Run(t, "setfacl", "-b", p("/usr/share/doc/plain"))
	old := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	paths := []string{"/usr/bin/link", "/usr/bin/pinger", "/usr/bin/prog", "/usr/lib/empty", "/usr/lib/hard1",
		"/usr/lib/hard2", "/usr/lib/libx.so", "/usr/share/big", "/usr/share/doc/plain"}
	for _, h := range paths {
		ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p(h), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

func snapAll(t testing.TB, root string, paths []string) map[string]meta {
	t.Helper()
	m := map[string]meta{}
	for _, h := range paths {
		m[h] = snap(t, filepath.Join(root, h))
	}
	return m
}

// leftovers lists the temporary files and tagged copies below root.
func leftovers(t testing.TB, root string) (temps, tagged []string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		switch {
		case IsTemp(d.Name()):
			temps = append(temps, p)
		case strings.HasPrefix(d.Name(), Prefix):
			tagged = append(tagged, p)
		}
		return nil
	})
	sort.Strings(temps)
	sort.Strings(tagged)
	return temps, tagged
}

// install replaces each regular file as a package manager does (a new
// file renamed over it) and each symlink by another target.
func install(t testing.TB, root string, paths []string) {
	t.Helper()
	for i, h := range paths {
		p := filepath.Join(root, h)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		tmp := p + ".dpkg-new"
		if fi.Mode()&os.ModeSymlink != 0 {
			if err := os.Symlink("elsewhere-v2", tmp); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(tmp, []byte(fmt.Sprintf("version 2 of %s %d\n", h, i)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
}

func hasErrText(err error, want string) bool {
	return err != nil && strings.Contains(err.Error(), want)
}

func mustKind(t testing.TB, err error, k host.Kind, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", want)
	}
	if host.KindOf(err) != k || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q (kind %d), want kind %d with %q", err, host.KindOf(err), k, want)
	}
}

// recordPaths loads the record and lists its paths in order.
func recordPaths(t testing.TB, tg *Tags) (*Record, []string) {
	t.Helper()
	rec, err := tg.Load()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range rec.Files {
		paths = append(paths, e.Path)
	}
	return rec, paths
}
