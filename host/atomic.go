package host

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// WriteFileAtomic replaces path with data durably: a temporary file in the
// same directory is written, synced, closed and renamed over path, then the
// directory is synced. A crash leaves either the old or the new content, and
// at worst a stray ".NAME.tmp-*" file, which a later write removes once it
// is older than staleTemp.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	defer removeStaleTemps(path)
	if err := writeFileAtomic(path, data, perm); err != nil {
		// Every step's error names the file written, not the temporary.
		var pe *os.PathError
		var le *os.LinkError
		if errors.As(err, &pe) {
			err = pe.Err
		} else if errors.As(err, &le) {
			err = le.Err
		}
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// staleTemp is how old a temporary of WriteFileAtomic must be before
// another write takes it for one a crash left: no write of ours takes that
// long, so one still under way is never removed.
const staleTemp = 10 * time.Minute

// removeStaleTemps removes the temporaries of path that crashed writes
// left (best effort: they are only litter).
func removeStaleTemps(path string) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	temps, _ := filepath.Glob(filepath.Join(dir, "."+globEscape(name)+".tmp-*"))
	for _, t := range temps {
		if fi, err := os.Lstat(t); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTemp {
			os.Remove(t)
		}
	}
}

// globEscape quotes the pattern characters of a file name.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync directory %s: %w", dir, err)
	}
	return nil
}

// RemoveDurable removes path (absent is fine) and syncs its directory.
func RemoveDurable(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// maxSmallFile bounds what ReadSmallFile reads: configuration and account
// files are far smaller.
const maxSmallFile = 16 << 20

// ErrNotRegular is the error of OpenRegular and its users for anything but
// a regular file.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens an input file for reading and refuses anything but a
// regular file before a read can block: it opens without waiting
// (O_NONBLOCK, so a FIFO with no writer does not hang the open) and checks
// the type on the open file. A link is followed; the error for another
// type is a *os.PathError with ErrNotRegular.
func OpenRegular(path string) (*os.File, error) {
	return openInput(path, false)
}

// OpenImage is OpenRegular that also takes a block device (an image on a
// disc or a partition): never a FIFO, a socket or a character device.
func OpenImage(path string) (*os.File, error) {
	return openInput(path, true)
}

func openInput(path string, blockDevice bool) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() && !(blockDevice && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0) {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: ErrNotRegular}
	}
	return f, nil
}

// ReadRegularFile reads a whole regular file (a state record), refusing
// anything else as OpenRegular does.
func ReadRegularFile(path string) ([]byte, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// ReadSmallFile reads a configuration-sized regular file. Anything else (a
// device such as /dev/zero where a system image has a link, a FIFO, a
// file over 16 MiB) is an error rather than an endless read.
func ReadSmallFile(path string) ([]byte, error) {
	f, err := OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// The size first saves reading a large file; the limit holds for
	// one that grows meanwhile.
	if fi.Size() > maxSmallFile {
		return nil, tooLarge(path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSmallFile+1))
	if err == nil && len(b) > maxSmallFile {
		err = tooLarge(path)
	}
	return b, err
}

func tooLarge(path string) error {
	return &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %s", FormatSize(maxSmallFile))}
}
