package tagfs

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// dir is a directory inside the root, opened without following any symlink
// below the root.
type dir struct {
	f    *os.File // owns fd
	fd   int
	host string // host path, as seen inside the root
	real string // path on the running system
	st   unix.Stat_t
}

func (d *dir) close() {
	if d != nil && d.f != nil {
		d.f.Close()
		d.f, d.fd = nil, -1
	}
}

func newDir(fd int, hostPath, real string) *dir {
	return &dir{f: os.NewFile(uintptr(fd), hostPath), fd: fd, host: hostPath, real: real}
}

// at is a path on the running system for name in d, good for the L* xattr
// calls: the directory is reached through its descriptor, name is not
// followed by them.
func (t *Tags) at(d *dir, name string) string {
	if t.procOK {
		return "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + name
	}
	return d.real + "/" + name
}

// hostPath joins a directory's host path and a name.
func (d *dir) hostPath(name string) string { return path.Join(d.host, name) }

func (t *Tags) openRoot() (int, error) {
	if t.rootFD >= 0 {
		return t.rootFD, nil
	}
	fd, err := unix.Open(t.root.Dir(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, host.CannotRun("cannot open root %s: %v", t.root.Dir(), err)
	}
	t.rootFD = fd
	return fd, nil
}

// openDir opens the directory at host path p (already resolved) without
// following symlinks and without leaving the root.
func (t *Tags) openDir(p string) (*dir, error) {
	rfd, err := t.openRoot()
	if err != nil {
		return nil, err
	}
	rel := strings.TrimPrefix(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := host.OpenDirBeneath(rfd, rel)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	d := newDir(fd, path.Clean("/"+p), t.root.Path(p))
	if err := unix.Fstat(fd, &d.st); err != nil {
		d.close()
		return nil, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return d, nil
}

// writableByOthers says who other than root can write to a directory, or "".
func writableByOthers(st *unix.Stat_t) string {
	m := st.Mode
	switch {
	case m&0o002 != 0:
		return "everyone"
	case m&0o020 != 0 && st.Gid != 0:
		return fmt.Sprintf("group %d", st.Gid)
	case m&0o200 != 0 && st.Uid != 0:
		return fmt.Sprintf("user %d", st.Uid)
	}
	return ""
}

func lstatAt(d *dir, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// lockedFlag names the inode flag of name in d (dirfd with name "") that
// stops it being replaced or put back: immutable or append-only, which
// root cannot get past either. "" when neither is set or the filesystem
// does not say.
func lockedFlag(dirfd int, name string) string {
	var sx unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_DONT_SYNC
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if unix.Statx(dirfd, name, flags, 0, &sx) != nil {
		return ""
	}
	return lockedOf(&sx)
}

func lockedOf(sx *unix.Statx_t) string {
	switch a := sx.Attributes & sx.Attributes_mask; {
	case a&unix.STATX_ATTR_IMMUTABLE != 0:
		return "immutable (chattr +i)"
	case a&unix.STATX_ATTR_APPEND != 0:
		return "append-only (chattr +a)"
	}
	return ""
}

// statxAt is lstatAt and lockedFlag in one call (the walk makes one for
// every file of a tree).
func statxAt(d *dir, name string) (unix.Stat_t, string, error) {
	var sx unix.Statx_t
	if err := unix.Statx(d.fd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &sx); err != nil {
		return unix.Stat_t{}, "", err
	}
	if sx.Mask&unix.STATX_BASIC_STATS != unix.STATX_BASIC_STATS {
		st, err := lstatAt(d, name)
		return st, lockedOf(&sx), err
	}
	ts := func(t unix.StatxTimestamp) unix.Timespec { return unix.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)} }
	return unix.Stat_t{
		Dev:     unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		Ino:     sx.Ino,
		Nlink:   uint64(sx.Nlink),
		Mode:    uint32(sx.Mode),
		Uid:     sx.Uid,
		Gid:     sx.Gid,
		Rdev:    unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size:    int64(sx.Size),
		Blksize: int64(sx.Blksize),
		Blocks:  int64(sx.Blocks),
		Atim:    ts(sx.Atime),
		Mtim:    ts(sx.Mtime),
		Ctim:    ts(sx.Ctime),
	}, lockedOf(&sx), nil
}

// getAttr returns the version attribute of name in d (not followed).
func (t *Tags) getAttr(d *dir, name string) (string, bool, error) {
	v, err := xattr.LGet(t.at(d, name), t.attr)
	if err != nil {
		if errors.Is(err, xattr.ENOATTR) {
			return "", false, nil
		}
		return "", false, errors.Unwrap(err)
	}
	return string(v), true, nil
}

// removeTemp removes a temporary name of ours if it is there.
func removeTemp(d *dir, tmp string) error {
	err := unix.Unlinkat(d.fd, tmp, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	return &os.PathError{Op: "remove", Path: d.hostPath(tmp), Err: err}
}

// copyResult says how a copy was made.
type copyResult struct {
	cloned bool
	sum    string
}

// copyData fills dst with src's content: a reflink clone when the
// filesystem can, else copy_file_range (in-kernel), else read and write.
// A sparse src (fewer blocks than its size needs) keeps its holes.
func copyData(dst, src *os.File, st *unix.Stat_t) (cloned bool, err error) {
	err = unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
	if err == nil {
		return true, nil
	}
	switch err {
	case unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS, unix.EPERM:
	default:
		return false, err
	}
	if sparse(st) {
		return false, copySparse(dst, src, st.Size)
	}
	return false, copyRange(dst, src, 0, st.Size)
}

// sparse says whether a file has holes: fewer 512-byte blocks than its
// size. (A file with its data inline in the inode has none: not sparse.)
func sparse(st *unix.Stat_t) bool {
	return st.Blocks > 0 && st.Blocks*512 < st.Size
}

// copySparse copies the data of src into the empty dst a run at a time,
// found with SEEK_DATA and SEEK_HOLE, and leaves the holes as holes.
func copySparse(dst, src *os.File, size int64) error {
	sfd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole is left
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if err := copyRange(dst, src, data, hole); err != nil {
			return err
		}
		off = hole
	}
	return dst.Truncate(size)
}

// copyRange copies bytes [from, to) of src to the same place in dst, in
// the kernel where it can, else through a buffer (OffsetWriter and
// SectionReader leave io.Copy no in-kernel path to try again).
func copyRange(dst, src *os.File, from, to int64) error {
	in, out := from, from
	for in < to {
		n, err := unix.CopyFileRange(int(src.Fd()), &in, int(dst.Fd()), &out, int(min(to-in, 1<<30)), 0)
		if err != nil {
			if err == unix.EXDEV || err == unix.ENOSYS || err == unix.EINVAL || err == unix.EOPNOTSUPP {
				_, err = io.Copy(io.NewOffsetWriter(dst, in), io.NewSectionReader(src, in, to-in))
			}
			return err
		}
		if n == 0 {
			return nil // the file shrank: the caller's check finds it
		}
	}
	return nil
}

// copyXattrs gives dst exactly the extended attributes of src, except
// skip: ACLs (system.posix_acl_*), file capabilities (security.capability)
// and the rest are copied, and what dst has that src has not (an ACL
// inherited from the directory's default ACL) is removed. Call it after
// chown and chmod, which clear capabilities.
func copyXattrs(dst, src xattrOps, skip string) error {
	names, err := src.list()
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return errors.Unwrap(err)
	}
	have := make(map[string]bool, len(names))
	for _, n := range names {
		if n == skip {
			continue
		}
		have[n] = true
		v, err := src.get(n)
		if err != nil {
			if errors.Is(err, xattr.ENOATTR) {
				continue
			}
			return fmt.Errorf("attribute %s: %w", n, errors.Unwrap(err))
		}
		if err := dst.set(n, v); err != nil {
			return fmt.Errorf("attribute %s: %w", n, errors.Unwrap(err))
		}
	}
	extra, err := dst.list()
	if err != nil {
		return fmt.Errorf("attributes: %w", errors.Unwrap(err))
	}
	for _, n := range extra {
		if have[n] || n == skip {
			continue
		}
		// Removing one name can remove another (xfs shows an ACL under
		// two names): one already gone is fine.
		if err := dst.remove(n); err != nil && !errors.Is(err, xattr.ENOATTR) {
			return fmt.Errorf("attribute %s: cannot remove the inherited one: %w", n, errors.Unwrap(err))
		}
	}
	return nil
}

// xattrOps are the extended-attribute calls on one file: by path, not
// following a symlink (pathXattrs), or on an open file (fileXattrs).
type xattrOps struct {
	list   func() ([]string, error)
	get    func(name string) ([]byte, error)
	set    func(name string, v []byte) error
	remove func(name string) error
}

func pathXattrs(p string) xattrOps {
	return xattrOps{
		list:   func() ([]string, error) { return xattr.LList(p) },
		get:    func(n string) ([]byte, error) { return xattr.LGet(p, n) },
		set:    func(n string, v []byte) error { return xattr.LSet(p, n, v) },
		remove: func(n string) error { return xattr.LRemove(p, n) },
	}
}

func fileXattrs(f *os.File) xattrOps {
	return xattrOps{
		list:   func() ([]string, error) { return xattr.FList(f) },
		get:    func(n string) ([]byte, error) { return xattr.FGet(f, n) },
		set:    func(n string, v []byte) error { return xattr.FSet(f, n, v) },
		remove: func(n string) error { return xattr.FRemove(f, n) },
	}
}

// Digests tell whether a tagged copy still has the content it had when it
// was tagged: XXH64, a 64-bit hash that reads at memory speed (SHA-256
// would make tagging a reflink set several times slower; the record and
// the copies are root's alone, so the hash guards against accidents, not
// against an attacker).
const digestPrefix = "xxh64:"

var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// sumFile is the digest of an open file's content, read from the start.
func sumFile(f *os.File) (string, error) {
	h := xxhash.New()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, 1<<62), *bp); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%016x", digestPrefix, h.Sum64()), nil
}

func sumString(s string) string {
	return fmt.Sprintf("%s%016x", digestPrefix, xxhash.Sum64String(s))
}

func shortHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:12]
}

// readlinkAt reads the target of symlink name in d.
func readlinkAt(d *dir, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// openAt opens name in d for reading without following a symlink and
// without touching its access time.
func openAt(d *dir, name string) (*os.File, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.hostPath(name)), nil
}

func timespecs(st *unix.Stat_t) []unix.Timespec {
	return []unix.Timespec{st.Atim, st.Mtim}
}

// cursor keeps the directory of the current path open while a sorted list
// of paths is worked through, one directory after the other.
type cursor struct {
	t   *Tags
	d   *dir
	p   string
	err error
}

func (t *Tags) cursor() *cursor { return &cursor{t: t, p: "\x00"} }

// open returns the open directory at host path p (an earlier error for the
// same directory is returned again).
func (c *cursor) open(p string) (*dir, error) {
	if p == c.p {
		return c.d, c.err
	}
	c.d.close()
	c.p = p
	c.d, c.err = c.t.openDir(p)
	return c.d, c.err
}

func (c *cursor) close() {
	c.d.close()
	c.d, c.p = nil, "\x00"
}

// linkUnnamed gives the unnamed file f (opened with O_TMPFILE) the name
// name in d. It fails with EEXIST if the name is taken: nothing is
// replaced.
func linkUnnamed(d *dir, f *os.File, name string, procOK bool) error {
	err := unix.Linkat(int(f.Fd()), "", d.fd, name, unix.AT_EMPTY_PATH)
	if (err == unix.ENOENT || err == unix.EPERM) && procOK {
		// Without CAP_DAC_READ_SEARCH the descriptor is named through /proc.
		err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), d.fd, name, unix.AT_SYMLINK_FOLLOW)
	}
	return err
}

// futimens sets the access and modification times of an open file.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
