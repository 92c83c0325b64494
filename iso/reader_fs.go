package iso

import (
	"errors"
	"io"
	"io/fs"
	"strings"
	"syscall"
	"time"
)

// Image implements these with slash paths relative to the image root.
var (
	_ fs.FS         = (*Image)(nil)
	_ fs.ReadDirFS  = (*Image)(nil)
	_ fs.StatFS     = (*Image)(nil)
	_ fs.ReadFileFS = (*Image)(nil)
)

// lookup finds the entry at name, following symlinks on the way (with
// absolute targets starting again at the image root and ".." stopping at
// it) and the final one when follow is set.
func (im *Image) lookup(op, name string, follow bool) (*Entry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	stack := []*Entry{im.root} // the directories walked, for ".."
	var rest []string
	if name != "." {
		rest = strings.Split(name, "/")
	}
	hops := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		dir := stack[len(stack)-1]
		if !dir.IsDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
		}
		l, err := im.list(dir, dirPath(stack))
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		e := l.byName[c]
		if e == nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		if e.Mode&fs.ModeSymlink != 0 && (len(rest) > 0 || follow) {
			if hops++; hops > maxLinkHops {
				return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ELOOP}
			}
			if strings.HasPrefix(e.Target, "/") {
				stack = stack[:1]
			}
			rest = append(strings.Split(e.Target, "/"), rest...)
			continue
		}
		stack = append(stack, e)
	}
	return stack[len(stack)-1], nil
}

// dirPath is the path of the last directory of a lookup stack, for
// messages.
func dirPath(stack []*Entry) string {
	if len(stack) == 1 {
		return "/"
	}
	var b strings.Builder
	for _, e := range stack[1:] {
		b.WriteString("/")
		b.WriteString(e.Name)
	}
	return b.String()
}

// Lstat returns the entry at name without following a final symlink.
func (im *Image) Lstat(name string) (*Entry, error) { return im.lookup("lstat", name, false) }

// ReadLink returns the target of the symlink at name.
func (im *Image) ReadLink(name string) (string, error) {
	e, err := im.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if e.Mode&fs.ModeSymlink == 0 {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return e.Target, nil
}

// Stat returns information about the file at name, following symlinks.
func (im *Image) Stat(name string) (fs.FileInfo, error) {
	e, err := im.lookup("stat", name, true)
	if err != nil {
		return nil, err
	}
	return fileInfo{e}, nil
}

// ReadDir returns the entries of the directory at name, sorted by name.
func (im *Image) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := im.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !e.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	kids, err := im.Children(e)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	return dirEntries(kids), nil
}

func dirEntries(kids []*Entry) []fs.DirEntry {
	out := make([]fs.DirEntry, len(kids))
	for i, k := range kids {
		out[i] = fs.FileInfoToDirEntry(fileInfo{k})
	}
	return out
}

// ReadFile returns the content of the file at name.
func (im *Image) ReadFile(name string) ([]byte, error) {
	e, err := im.lookup("read", name, true)
	if err != nil {
		return nil, err
	}
	if e.IsDir() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	}
	b := make([]byte, e.Size)
	if _, err := im.OpenEntry(e).ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && e.Size == 0) {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return b, nil
}

// Open opens the file or directory at name, following symlinks.
func (im *Image) Open(name string) (fs.File, error) {
	e, err := im.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	if e.IsDir() {
		kids, err := im.Children(e)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &dirFile{e: e, kids: kids}, nil
	}
	return &file{SectionReader: im.OpenEntry(e), e: e}, nil
}

// OpenEntry returns a reader of e's content, all its extents in order. A
// read that the image cannot satisfy (the file was cut short after Open)
// is an error, never a short file.
func (im *Image) OpenEntry(e *Entry) *io.SectionReader {
	if e.IsDir() || len(e.extents) == 0 {
		return io.NewSectionReader(strings.NewReader(""), 0, 0)
	}
	if e.zf != nil {
		raw := io.NewSectionReader(&extentReader{im: im, ext: e.extents}, 0, e.rawSize)
		return io.NewSectionReader(newZisofsReader(raw, e.rawSize, *e.zf), 0, e.Size)
	}
	return io.NewSectionReader(&extentReader{im: im, ext: e.extents}, 0, e.Size)
}

// extentReader reads a file's extents as one.
type extentReader struct {
	im  *Image
	ext []extent
}

func (x *extentReader) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	start := int64(0)
	for _, ex := range x.ext {
		if len(p) == 0 {
			break
		}
		if off >= start+ex.n {
			start += ex.n
			continue
		}
		in := off - start
		n := min(int64(len(p)), ex.n-in)
		if err := x.im.readFull(p[:n], ex.off+in); err != nil {
			return done, err
		}
		done += int(n)
		p, off = p[n:], off+n
		start += ex.n
	}
	if len(p) > 0 {
		return done, io.EOF
	}
	return done, nil
}

type fileInfo struct{ e *Entry }

func (fi fileInfo) Name() string       { return fi.e.Name }
func (fi fileInfo) Size() int64        { return fi.e.Size }
func (fi fileInfo) Mode() fs.FileMode  { return fi.e.Mode }
func (fi fileInfo) ModTime() time.Time { return fi.e.ModTime }
func (fi fileInfo) IsDir() bool        { return fi.e.IsDir() }
func (fi fileInfo) Sys() any           { return fi.e }

// FileInfo returns e as an fs.FileInfo (whose Sys() is e).
func FileInfo(e *Entry) fs.FileInfo { return fileInfo{e} }

type file struct {
	*io.SectionReader
	e *Entry
}

func (f *file) Stat() (fs.FileInfo, error) { return fileInfo{f.e}, nil }
func (f *file) Close() error               { return nil }

type dirFile struct {
	e    *Entry
	kids []*Entry
	pos  int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return fileInfo{d.e}, nil }
func (d *dirFile) Close() error               { return nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.e.Name, Err: syscall.EISDIR}
}

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.kids[d.pos:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(n, len(rest))]
	}
	d.pos += len(rest)
	return dirEntries(rest), nil
}
