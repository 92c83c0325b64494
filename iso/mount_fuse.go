package iso

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// An image never changes while it is mounted: the kernel may cache names
// and attributes for long.
const fuseCacheTime = time.Hour

// ServeCommand is the hidden command line that serves one FUSE mount:
// EXE iso serve-fuse --ready-fd 3 IMAGE DIR.
var ServeCommand = []string{"iso", "serve-fuse"}

// fuseServeLog is where the FUSE servers write their errors, in the state
// directory.
const fuseServeLog = "iso-fuse.log"

// startFUSE starts a detached FUSE server for image on dir (a new session
// of o.Exe, so it outlives the command), waits until the mount is there or
// the server failed, and returns the server's pid and start time.
// fuseStartTimeout is how long a FUSE server may take to mount.
const fuseStartTimeout = 2 * time.Minute

func startFUSE(image, dir string, o MountOptions, started func(pid int, start uint64)) (int, uint64, error) {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return 0, 0, &noFUSE{host.CannotRun("cannot mount %s with FUSE: no /dev/fuse (load the fuse module)", image)}
	}
	exe := o.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return 0, 0, host.CannotRun("cannot find the upgradectl binary to serve %s: %v", image, err)
		}
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return 0, 0, host.CannotRun("cannot create state directory %s: %v", o.StateDir, unwrapPath(err))
	}
	logPath := path.Join(o.StateDir, fuseServeLog)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return 0, 0, host.CannotRun("cannot open %s: %v", logPath, unwrapPath(err))
	}
	defer logf.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return 0, 0, err
	}
	defer rd.Close()
	args := append(append([]string{}, ServeCommand...), "--ready-fd", "3", image, dir)
	cmd := exec.Command(exe, args...)
	cmd.Dir = "/"
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		wr.Close()
		return 0, 0, host.CannotRun("cannot start the FUSE server for %s: %v", image, err)
	}
	wr.Close()
	pid := cmd.Process.Pid
	start, _, _ := processStart(pid)
	started(pid, start)
	// Reap it if this process lives longer than the server (tests, a
	// long-running caller); a command that exits leaves it to init.
	go cmd.Wait()

	// The server writes "ok" once the mount is there, or an error; a
	// server that dies closes the pipe. A server that hangs is killed.
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := bufio.NewReader(rd).ReadString('\n')
		ch <- answer{strings.TrimSpace(line), err}
	}()
	var a answer
	select {
	case a = <-ch:
	case <-time.After(fuseStartTimeout):
		syscall.Kill(pid, syscall.SIGKILL)
		return 0, 0, host.CannotRun("cannot mount %s with FUSE: the server did not answer in %s", image, fuseStartTimeout)
	}
	switch {
	case a.line == "ok":
		return pid, start, nil
	case a.line != "":
		return 0, 0, host.Bad("cannot mount %s with FUSE: %s", image, a.line)
	}
	return 0, 0, host.CannotRun("cannot mount %s with FUSE: the server exited (see %s)", image, logPath)
}

// openImage opens an image file as a file system for the FUSE server.
var openImage = func(path string) (fs.FS, io.Closer, error) {
	im, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	return im, im, nil
}

// ServeFUSE is the FUSE server process: it mounts image on dir, writes
// "ok\n" (or the error) to ready, and serves until the mount goes away or
// it is told to stop (SIGTERM, SIGINT: it unmounts and returns).
func ServeFUSE(image, dir string, ready io.WriteCloser) error {
	fail := func(err error) error {
		fmt.Fprintf(ready, "%s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		ready.Close()
		return err
	}
	fsys, closer, err := openImage(image)
	if err != nil {
		return fail(err)
	}
	defer closer.Close()
	srv, err := MountFS(fsys, image, dir)
	if err != nil {
		return fail(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		if srv.Unmount() != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	}()
	fmt.Fprintln(ready, "ok")
	ready.Close()
	srv.Wait()
	return nil
}

// MountFS mounts fsys read-only (ro, nodev, nosuid) on dir with FUSE,
// mounting directly as root (no fusermount), and returns the running
// server. source is what the mount table shows as the source.
func MountFS(fsys fs.FS, source, dir string) (*fuse.Server, error) {
	root := &fuseNode{fuseStats: &fuseStats{}}
	var buildErr error
	timeout := fuseCacheTime
	opts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            source,
			Name:              strings.TrimPrefix(fuseType, "fuse."),
			Options:           []string{"ro", "default_permissions"},
			DirectMountStrict: true,
			DirectMountFlags:  unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID,
			AllowOther:        true,
			MaxReadAhead:      1 << 20,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// go-fuse gives an entry of mode 0000 mode 0644 (0755 for a
		// directory) unless told not to; with allow_other that made what
		// the image keeps from everyone readable by everyone.
		// TestFUSEModeZero shows it.
		NullPermissions: true,
		OnAdd: func(ctx context.Context) {
			buildErr = buildTree(ctx, fsys, root)
		},
	}
	// Build before mounting: OnAdd runs inside Mount, and an image that
	// cannot be read must not appear mounted.
	srv, err := gofs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot mount on %s: %v", dir, err)
	}
	if buildErr != nil {
		srv.Unmount()
		return nil, buildErr
	}
	return srv, nil
}

// buildTree makes the whole directory tree of fsys under root. Images are
// small in names (thousands) and never change, so everything is made up
// front and lookups and directory listings need no further reading. It
// also fills in the statfs answer that every node shares with root.
func buildTree(ctx context.Context, fsys fs.FS, root *fuseNode) error {
	dirs := map[string]*gofs.Inode{".": root.EmbeddedInode()}
	links := map[uint64]*gofs.Inode{} // hard links by inode number
	stats := root.fuseStats
	var files, blocks uint64 // inodes, and 2048-byte blocks of file data
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("cannot read %s in the image: %v", name, unwrapPath(err))
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("cannot read %s in the image: %v", name, unwrapPath(err))
		}
		attr := fuseAttr(fi)
		if name == "." {
			root.attr = attr
			files++
			return nil
		}
		parent := dirs[path.Dir(name)]
		if parent == nil {
			return nil
		}
		var child *gofs.Inode
		switch {
		case fi.IsDir():
			child = parent.NewPersistentInode(ctx, &fuseNode{fuseStats: stats, attr: attr}, gofs.StableAttr{Mode: fuse.S_IFDIR})
			dirs[name] = child
			blocks += (attr.Size + sectorSize - 1) / sectorSize
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := readLink(fsys, name, fi)
			if err != nil {
				return fmt.Errorf("cannot read symlink %s in the image: %v", name, unwrapPath(err))
			}
			attr.Size = uint64(len(target))
			link := &fuseLink{fuseStats: stats}
			link.Attr, link.Data = attr, []byte(target)
			child = parent.NewPersistentInode(ctx, link, gofs.StableAttr{Mode: fuse.S_IFLNK})
		case fi.Mode().IsRegular():
			if attr.Nlink > 1 && attr.Ino != 0 {
				child = links[attr.Ino]
			}
			if child == nil {
				ff := &fuseFile{fuseStats: stats, fsys: fsys, name: name, attr: attr}
				if im, ok := fsys.(*Image); ok {
					if e, ok := fi.Sys().(*Entry); ok {
						// Read by extent: no path lookup per open.
						ff.open = func() io.ReaderAt { return im.OpenEntry(e) }
					}
				}
				child = parent.NewPersistentInode(ctx, ff, gofs.StableAttr{Mode: fuse.S_IFREG})
				if attr.Nlink > 1 && attr.Ino != 0 {
					links[attr.Ino] = child
				}
				blocks += (attr.Size + sectorSize - 1) / sectorSize
			} else {
				files-- // another name of a file already counted
			}
		default:
			// Devices, fifos and sockets are listed and stat'ed as the
			// kernel's isofs shows them; the mount is nodev, so a device
			// cannot be opened through it.
			child = parent.NewPersistentInode(ctx, &fuseNode{fuseStats: stats, attr: attr}, gofs.StableAttr{Mode: attr.Mode & syscall.S_IFMT})
		}
		parent.AddChild(path.Base(name), child, false)
		files++
		return nil
	})
	if err != nil {
		return err
	}
	if im, ok := fsys.(*Image); ok {
		// The whole volume, as the kernel's isofs reports it.
		blocks = uint64(im.Info().VolumeBlocks)
	}
	stats.out = fuse.StatfsOut{
		Blocks:  blocks,
		Files:   files,
		Bsize:   sectorSize,
		Frsize:  sectorSize,
		NameLen: fuseNameMax,
	}
	return nil
}

// fuseNameMax is the longest name the mount reports (statfs f_namelen):
// NAME_MAX, as the kernel's isofs reports; Rock Ridge names are no longer
// on any real image.
const fuseNameMax = 255

// fuseStats is the statfs answer of one mount, shared by all its nodes:
// the image's size, nothing free, since an image is read-only.
type fuseStats struct{ out fuse.StatfsOut }

var _ gofs.NodeStatfser = (*fuseStats)(nil)

// Statfs is answered by every node: statfs(2) names a path, and the kernel
// asks the node at that path.
func (s *fuseStats) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = s.out
	return 0
}

// readLink returns a symlink's target, from fs.ReadLinkFS when fsys has it.
func readLink(fsys fs.FS, name string, fi fs.FileInfo) (string, error) {
	if t, ok := linkTarget(fi); ok {
		return t, nil
	}
	return fs.ReadLink(fsys, name)
}

// fuseAttr turns a FileInfo into FUSE attributes. Owners, link counts and
// inode numbers come from FileInfo.Sys() when it has them.
func fuseAttr(fi fs.FileInfo) fuse.Attr {
	m := fi.Mode()
	a := fuse.Attr{Size: uint64(fi.Size()), Nlink: 1}
	a.Mode = uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		a.Mode |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		a.Mode |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		a.Mode |= syscall.S_ISVTX
	}
	switch {
	case m.IsDir():
		a.Mode |= syscall.S_IFDIR
		a.Nlink = 2
	case m&fs.ModeSymlink != 0:
		a.Mode |= syscall.S_IFLNK
	case m&fs.ModeCharDevice != 0:
		a.Mode |= syscall.S_IFCHR
	case m&fs.ModeDevice != 0:
		a.Mode |= syscall.S_IFBLK
	case m&fs.ModeNamedPipe != 0:
		a.Mode |= syscall.S_IFIFO
	case m&fs.ModeSocket != 0:
		a.Mode |= syscall.S_IFSOCK
	default:
		a.Mode |= syscall.S_IFREG
	}
	t := fi.ModTime()
	a.SetTimes(&t, &t, &t)
	a.Blksize = 2048
	a.Blocks = (a.Size + 511) / 512
	sysAttr(fi.Sys(), &a)
	return a
}

// sysAttr fills owners, link count, inode number and device number from a
// FileInfo's Sys.
func sysAttr(sys any, a *fuse.Attr) {
	isDev := a.Mode&syscall.S_IFMT == syscall.S_IFCHR || a.Mode&syscall.S_IFMT == syscall.S_IFBLK
	switch s := sys.(type) {
	case *Entry:
		a.Uid, a.Gid, a.Ino = s.UID, s.GID, s.Ino
		if s.Nlink > 0 {
			a.Nlink = s.Nlink
		}
		if isDev {
			a.Rdev = fuseRdev(s.Device())
		}
	case *syscall.Stat_t:
		a.Uid, a.Gid, a.Nlink, a.Ino = s.Uid, s.Gid, uint32(s.Nlink), s.Ino
		if isDev {
			a.Rdev = fuseRdev(unix.Major(s.Rdev), unix.Minor(s.Rdev))
		}
	}
}

// fuseRdev encodes a device number as the FUSE protocol carries it (the
// kernel's 32-bit new_encode_dev).
func fuseRdev(major, minor uint32) uint32 {
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// linkTarget is a symlink's target when FileInfo.Sys() carries it.
func linkTarget(fi fs.FileInfo) (string, bool) {
	if e, ok := fi.Sys().(*Entry); ok {
		return e.Target, true
	}
	return "", false
}

// fuseNode is a node whose attributes are all there is to it: a
// directory (its children are Inode's), a device, a fifo or a socket.
type fuseNode struct {
	gofs.Inode
	*fuseStats
	attr fuse.Attr
}

var _ gofs.NodeGetattrer = (*fuseNode)(nil)

func (d *fuseNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr = d.attr
	out.Ino = d.StableAttr().Ino
	return 0
}

// fuseLink is a symlink.
type fuseLink struct {
	gofs.MemSymlink
	*fuseStats
}

type fuseFile struct {
	gofs.Inode
	*fuseStats
	fsys fs.FS
	name string
	attr fuse.Attr
	// open, when set, reads the file without opening it by name.
	open func() io.ReaderAt
}

var (
	_ gofs.NodeGetattrer = (*fuseFile)(nil)
	_ gofs.NodeOpener    = (*fuseFile)(nil)
	_ gofs.NodeReader    = (*fuseFile)(nil)
)

func (f *fuseFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr = f.attr
	out.Ino = f.StableAttr().Ino
	return 0
}

func (f *fuseFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	if f.open != nil {
		return &fuseHandle{ra: f.open()}, fuse.FOPEN_KEEP_CACHE, 0
	}
	file, err := f.fsys.Open(f.name)
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	return &fuseHandle{f: file}, fuse.FOPEN_KEEP_CACHE, 0
}

func (f *fuseFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := fh.(*fuseHandle)
	if !ok {
		return nil, syscall.EBADF
	}
	n, err := h.readAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, errnoOf(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// fuseHandle is one open file of the image.
type fuseHandle struct {
	ra io.ReaderAt // set for files read by extent
	mu sync.Mutex  // for files that can only Seek and Read
	f  fs.File
}

var _ gofs.FileReleaser = (*fuseHandle)(nil)

func (h *fuseHandle) readAt(p []byte, off int64) (int, error) {
	if h.ra != nil {
		return h.ra.ReadAt(p, off)
	}
	if ra, ok := h.f.(io.ReaderAt); ok {
		return ra.ReadAt(p, off)
	}
	s, ok := h.f.(io.Seeker)
	if !ok {
		return 0, errors.New("file cannot seek")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := s.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := io.ReadFull(h.f, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (h *fuseHandle) Release(ctx context.Context) syscall.Errno {
	if h.f != nil {
		h.f.Close()
	}
	return 0
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case errors.As(err, &en):
		return en
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, io.ErrUnexpectedEOF):
		return syscall.EIO
	}
	return syscall.EIO
}
