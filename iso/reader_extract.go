package iso

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// ExtractOption changes what Extract does.
type ExtractOption func(*extractConfig)

type extractConfig struct {
	owners   bool
	progress func(rel string, e *Entry)
}

// KeepOwners sets whether extracted files get the image's owners (the
// default as root, where it is possible).
func KeepOwners(on bool) ExtractOption { return func(c *extractConfig) { c.owners = on } }

// Progress calls f after each file, directory or symlink is extracted,
// with its slash path relative to the destination.
func Progress(f func(rel string, e *Entry)) ExtractOption {
	return func(c *extractConfig) { c.progress = f }
}

// Extract copies the files at paths in the image (all of it when paths is
// empty) into the directory dest, keeping their image paths under dest
// ("a/b" goes to dest/a/b), with their modes, modification times, symlinks
// and (see KeepOwners) owners. dest is created if it does not exist; an
// existing file is never overwritten.
//
// Nothing is ever written outside dest, whatever names the image holds:
// names are checked again here, every directory is opened relative to its
// parent with O_NOFOLLOW, files are created with O_EXCL|O_NOFOLLOW, and a
// symlink that was extracted is never followed. A file that cannot be
// written whole is removed. Names of one file (hard links in the image)
// are extracted as hard links of one file.
func Extract(im *Image, dest string, paths []string, opts ...ExtractOption) error {
	cfg := extractConfig{owners: os.Geteuid() == 0}
	for _, o := range opts {
		o(&cfg)
	}
	sel, err := im.selection(paths)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dest, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot extract to %s: %w", dest, err)
	}
	fd, err := unix.Open(dest, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot extract to %s: %w", dest, &fs.PathError{Op: "open", Path: dest, Err: err})
	}
	defer unix.Close(fd)
	x := &extractor{im: im, cfg: cfg, dest: dest, destfd: fd, sel: sel, jobs: make(chan fileJob, 64), links: map[uint64]*firstName{}}
	// File data is copied by a few workers while the tree is walked.
	var workers sync.WaitGroup
	n := max(1, min(runtime.GOMAXPROCS(0), 4))
	defer host.SyscallWorkers(n + 1)() // and the walk
	for range n {
		workers.Go(func() {
			c := &copier{buf: make([]byte, 1<<20)}
			for j := range x.jobs {
				var err error
				if err = x.failed(); err == nil {
					err = x.file(c, j.dirfd, j.e, j.rel)
					x.setErr(err)
				}
				if j.first != nil {
					j.first.ok = err == nil
					close(j.first.written)
				}
				j.done.Done()
			}
		})
	}
	x.setErr(x.dir(fd, im.root, "", sel == nil))
	close(x.jobs)
	workers.Wait()
	err = x.failed()
	switch {
	case errors.Is(err, unix.EEXIST):
		// DEST given is not one to extract into: a usage error, as before.
		err = host.WithHint(host.Usage("%w", err), "files already in DEST are never overwritten: remove that one, or extract into an empty directory")
	case errors.Is(err, unix.ENOSPC):
		err = host.WithHint(err, "free some space, then extract into an empty directory (or remove what this run extracted): files already in DEST are never overwritten")
	}
	return err
}

// fileJob is a regular file to write into the open directory dirfd; done
// tells the directory's walker that it is finished.
type fileJob struct {
	dirfd int
	e     *Entry
	rel   string
	done  *sync.WaitGroup
	first *firstName // set for the first name of a file with hard links
}

// firstName is the first name extracted of a file with several (hard
// links): the others are linked to it once it is written.
type firstName struct {
	rel     string
	written chan struct{} // closed when the file is written, or failed
	ok      bool          // written whole (set before written is closed)
}

// setErr keeps the first error.
func (x *extractor) setErr(err error) {
	if err == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.err == nil {
		x.err = err
	}
}

// failed is the first error so far.
func (x *extractor) failed() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// done reports an extracted entry to the progress function.
func (x *extractor) done(rel string, e *Entry) {
	if x.cfg.progress != nil {
		x.mu.Lock()
		defer x.mu.Unlock()
		x.cfg.progress(rel, e)
	}
}

// ImagePath is a path inside an image as the commands take it, the one
// rule for all of them: from the image root whether or not it starts with
// "/", empty and "." parts dropped, ".." refused (it would name nothing
// the image has). The image root is ".".
func ImagePath(p string) (string, error) {
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			return "", errors.New(`".." is not a path inside an image`)
		default:
			parts = append(parts, c)
		}
	}
	if len(parts) == 0 {
		return ".", nil
	}
	return strings.Join(parts, "/"), nil
}

// selection checks the paths to extract, reporting every one that is not
// in the image, and returns them with their parent directories (nil for
// the whole image). Paths are taken literally: a symlink on the way is
// not followed.
func (im *Image) selection(paths []string) (map[string]bool, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	sel := map[string]bool{}
	var bad, invalid []string
	for _, arg := range paths {
		p, err := ImagePath(arg)
		if err != nil {
			invalid = append(invalid, fmt.Sprintf("%s (%v)", arg, err))
			continue
		}
		if p == "." {
			return nil, nil
		}
		e := im.root
		parts := strings.Split(p, "/")
		for i, c := range parts {
			var err error
			if !e.IsDir() {
				bad = append(bad, fmt.Sprintf("%s (%s is not a directory)", p, strings.Join(parts[:i], "/")))
				break
			}
			if e, err = im.Child(e, c); err != nil {
				return nil, err
			}
			if e == nil {
				bad = append(bad, p+" (not in the image)")
				break
			}
			if i == len(parts)-1 {
				sel[p] = true
			} else if !sel[strings.Join(parts[:i+1], "/")] {
				sel[strings.Join(parts[:i+1], "/")] = false // a parent only
			}
		}
	}
	if len(invalid) > 0 {
		return nil, host.Usage("cannot extract from %s: %s", im.name, strings.Join(append(invalid, bad...), ", "))
	}
	if len(bad) > 0 {
		return nil, host.Bad("cannot extract from %s: %s", im.name, strings.Join(bad, ", "))
	}
	return sel, nil
}

type extractor struct {
	im     *Image
	cfg    extractConfig
	dest   string
	destfd int
	sel    map[string]bool // selected paths (true) and their parents (false)
	jobs   chan fileJob

	mu    sync.Mutex // guards err, links and calls to cfg.progress
	err   error
	links map[uint64]*firstName // files with hard links by inode, once one name is extracted
}

// copier copies file data; one per worker.
type copier struct {
	buf []byte
	// kernelCopy is the kernel copy method to try first.
	kernelCopy int
}

// where is a destination path for messages.
func (x *extractor) where(rel string) string { return x.dest + "/" + rel }

func (x *extractor) fail(rel string, err error) error {
	if errors.Is(err, unix.EEXIST) {
		err = unix.EEXIST // "file exists", without the call that met it
	}
	return fmt.Errorf("cannot extract %s to %s: %w", rel, x.where(rel), err)
}

// dir extracts the children of directory d into the open directory fd;
// all says that everything below is selected. It returns when the files
// written by the workers into fd are finished too.
func (x *extractor) dir(fd int, d *Entry, rel string, all bool) error {
	l, err := x.im.list(d, "/"+rel)
	if err != nil {
		return err
	}
	var pending sync.WaitGroup
	defer pending.Wait()
	for _, c := range l.entries {
		if err := x.failed(); err != nil {
			return err
		}
		crel := c.Name
		if rel != "" {
			crel = rel + "/" + c.Name
		}
		sub := all
		if !all {
			s, ok := x.sel[crel]
			if !ok {
				continue
			}
			sub = s
		}
		if !validName(c.Name) { // the reader refuses these; never trust one
			return x.fail(crel, errors.New("not a valid file name"))
		}
		if c.Mode.IsRegular() {
			var first *firstName
			if c.Nlink > 1 {
				x.mu.Lock()
				f := x.links[c.Ino]
				if f == nil {
					first = &firstName{rel: crel, written: make(chan struct{})}
					x.links[c.Ino] = first
				}
				x.mu.Unlock()
				if f != nil {
					if err := x.link(f, fd, c, crel); err != nil {
						return err
					}
					continue
				}
			}
			pending.Add(1)
			x.jobs <- fileJob{dirfd: fd, e: c, rel: crel, done: &pending, first: first}
			continue
		}
		if err := x.entry(fd, c, crel, sub); err != nil {
			return err
		}
		x.done(crel, c)
	}
	pending.Wait()
	return x.failed()
}

// link makes e (rel) in the open directory dirfd another name of the file
// already extracted as f, as it is in the image (a hard link), once that
// is written.
func (x *extractor) link(f *firstName, dirfd int, e *Entry, rel string) error {
	<-f.written
	if !f.ok {
		return x.failed()
	}
	// The first name's directory is reached from dest without following
	// any symlink.
	dir, name := path.Split(f.rel)
	ffd := x.destfd
	if dir != "" {
		var err error
		ffd, err = host.OpenDirBeneath(x.destfd, strings.TrimSuffix(dir, "/"))
		if err != nil {
			return x.fail(rel, fmt.Errorf("cannot open the directory of %s to link to it: %w", f.rel, err))
		}
		defer unix.Close(ffd)
	}
	if err := unix.Linkat(ffd, name, dirfd, e.Name, 0); err != nil {
		return x.fail(rel, err)
	}
	x.done(rel, e)
	return nil
}

func (x *extractor) entry(dirfd int, e *Entry, rel string, all bool) error {
	switch t := e.Mode.Type(); {
	case t == fs.ModeDir:
		if err := unix.Mkdirat(dirfd, e.Name, 0o700); err != nil && err != unix.EEXIST {
			return x.fail(rel, err)
		}
		// An existing symlink (or file) of that name is refused here.
		fd, err := unix.Openat(dirfd, e.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if err == unix.ELOOP {
				err = errors.New("a symlink is in the way")
			}
			return x.fail(rel, err)
		}
		defer unix.Close(fd)
		if err := x.dir(fd, e, rel, all); err != nil {
			return err
		}
		return x.attrs(fd, dirfd, e, rel)
	case t == fs.ModeSymlink:
		if err := unix.Symlinkat(e.Target, dirfd, e.Name); err != nil {
			return x.fail(rel, err)
		}
		return x.attrs(-1, dirfd, e, rel)
	case t&(fs.ModeDevice|fs.ModeNamedPipe) != 0:
		mode := uint32(unix.S_IFIFO)
		if t&fs.ModeCharDevice != 0 {
			mode = unix.S_IFCHR
		} else if t&fs.ModeDevice != 0 {
			mode = unix.S_IFBLK
		}
		if mode != unix.S_IFIFO && os.Geteuid() != 0 {
			return nil // only root makes device files; skipped
		}
		if err := unix.Mknodat(dirfd, e.Name, mode|0o600, int(unix.Mkdev(e.Device()))); err != nil {
			return x.fail(rel, err)
		}
		return x.attrsPath(dirfd, e, rel)
	}
	return nil // sockets: nothing to extract
}

// file writes a regular file whole or not at all.
func (x *extractor) file(c *copier, dirfd int, e *Entry, rel string) (err error) {
	fd, err := unix.Openat(dirfd, e.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return x.fail(rel, err)
	}
	defer func() {
		if cerr := unix.Close(fd); err == nil && cerr != nil {
			err = x.fail(rel, cerr)
		}
		if err != nil {
			unix.Unlinkat(dirfd, e.Name, 0)
		}
	}()
	if err := x.copyData(c, fd, e, rel); err != nil {
		return err
	}
	if err := x.attrs(fd, dirfd, e, rel); err != nil {
		return err
	}
	x.done(rel, e)
	return nil
}

// copyData writes e's content to fd: in the kernel (copy_file_range,
// else sendfile) when the image is a file, else through a buffer.
func (x *extractor) copyData(c *copier, fd int, e *Entry, rel string) error {
	if e.zf != nil {
		// zisofs: decompressed through the reader.
		r := x.im.OpenEntry(e)
		for off := int64(0); off < e.Size; {
			n, err := r.ReadAt(c.buf, off)
			if n == 0 && err != nil {
				return x.fail(rel, err)
			}
			if err := writeAll(fd, c.buf[:n]); err != nil {
				return x.fail(rel, err)
			}
			off += int64(n)
		}
		return nil
	}
	for _, ex := range e.extents {
		off, end := ex.off, ex.off+ex.n
		if x.im.f != nil && c.kernelCopy != copyNone {
			if err := x.copyKernel(c, fd, &off, end, rel); err != nil {
				return err
			}
		}
		for off < end {
			b := c.buf[:min(int64(len(c.buf)), end-off)]
			if err := x.im.readFull(b, off); err != nil {
				return err
			}
			if err := writeAll(fd, b); err != nil {
				return x.fail(rel, err)
			}
			off += int64(len(b))
		}
	}
	return nil
}

// writeAll writes all of b to fd.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// Kernel copy methods, tried in this order; a method the kernel refuses
// for these two files is not tried again.
const (
	copyFileRange = iota
	copySendfile
	copyNone
)

// copyKernel copies the image's bytes from *off to end into fd without
// passing them through user space, advancing *off. It stops early, without
// an error, where the kernel cannot do it; the caller copies the rest.
func (x *extractor) copyKernel(c *copier, fd int, off *int64, end int64, rel string) error {
	src := int(x.im.f.Fd())
	for *off < end {
		chunk := int(min(end-*off, 1<<30))
		var n int
		var err error
		switch c.kernelCopy {
		case copyFileRange:
			n, err = unix.CopyFileRange(src, off, fd, nil, chunk, 0)
		case copySendfile:
			n, err = unix.Sendfile(fd, src, off, chunk)
		default:
			return nil
		}
		switch {
		case err == unix.EINTR || err == unix.EAGAIN:
			continue
		case err == unix.EXDEV || err == unix.EINVAL || err == unix.ENOSYS || err == unix.EOPNOTSUPP ||
			err == unix.EBADF || err == unix.EPERM:
			if n <= 0 {
				c.kernelCopy++
				continue
			}
		case err != nil:
			return x.fail(rel, err)
		case n == 0: // the image ends early: the buffered copy says so
			c.kernelCopy = copyNone
			return nil
		}
	}
	return nil
}

// attrs sets owner, mode and times: through fd where there is one (files,
// directories), else on the name in dirfd without following it.
func (x *extractor) attrs(fd, dirfd int, e *Entry, rel string) error {
	if fd < 0 {
		return x.attrsPath(dirfd, e, rel)
	}
	if x.cfg.owners {
		if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
			return x.fail(rel, err)
		}
	}
	// After chown, which clears set-user-ID bits.
	if err := unix.Fchmod(fd, unixMode(e.Mode)); err != nil {
		return x.fail(rel, err)
	}
	// Nanoseconds through utimensat: NsecToTimeval rounded a time before
	// 1970 up by a microsecond.
	mt := e.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	ts := timespec(mt)
	if err := unix.UtimesNanoAt(fd, "", []unix.Timespec{ts, ts}, unix.AT_EMPTY_PATH); err != nil {
		return x.fail(rel, err)
	}
	return nil
}

// attrsPath sets attributes on a symlink or special file by name, never
// following it.
func (x *extractor) attrsPath(dirfd int, e *Entry, rel string) error {
	if x.cfg.owners {
		if err := unix.Fchownat(dirfd, e.Name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return x.fail(rel, err)
		}
	}
	if e.Mode&fs.ModeSymlink == 0 {
		// fchmodat cannot refuse to follow on Linux; the name was just
		// made by mknodat and is not a symlink.
		if err := unix.Fchmodat(dirfd, e.Name, unixMode(e.Mode), 0); err != nil {
			return x.fail(rel, err)
		}
	}
	ts := timespec(e.ModTime)
	if err := unix.UtimesNanoAt(dirfd, e.Name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return x.fail(rel, err)
	}
	return nil
}

// timespec is t as utimensat takes it, without a trip through int64
// nanoseconds (which rounding and range would distort).
func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// unixMode is the permission part of a mode as chmod takes it.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}
