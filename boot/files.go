package boot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"upgradectl/host"
)

// SavedFile is a file as it was before maintenance mode changed it: absent,
// a symlink (the default.target link) or a regular file with its bytes,
// permission bits and owner. Restore puts back exactly that.
type SavedFile struct {
	Kind string      `json:"kind"` // "absent", "symlink" or "file"
	Link string      `json:"link,omitempty"`
	Data []byte      `json:"data,omitempty"`
	Mode os.FileMode `json:"mode,omitempty"`
	UID  int         `json:"uid,omitempty"`
	GID  int         `json:"gid,omitempty"`
}

const (
	kindAbsent  = "absent"
	kindSymlink = "symlink"
	kindFile    = "file"
)

func (f SavedFile) valid() error {
	switch f.Kind {
	case kindAbsent, kindFile:
	case kindSymlink:
		if f.Link == "" {
			return errors.New("symlink without a target")
		}
	default:
		return fmt.Errorf("unknown kind %q", f.Kind)
	}
	if f.Mode&^os.ModePerm&^(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		return fmt.Errorf("mode %v is not a permission", f.Mode)
	}
	return nil
}

// hostPath is where host path p is on the running system, with every
// directory on the way resolved inside the root and the last component not
// followed.
func hostPath(r host.Root, p string) (string, error) {
	real, err := r.ResolveParent(p)
	if err != nil {
		return "", fmt.Errorf("cannot resolve %s: %w", p, err)
	}
	return real, nil
}

// lstatIn is os.Lstat of host path p under the root: the directories on
// the way resolved inside it.
func lstatIn(r host.Root, p string) (os.FileInfo, error) {
	real, err := hostPath(r, p)
	if err != nil {
		return nil, err
	}
	return os.Lstat(real)
}

// saveFile records host path p as it is now. Only regular files, symlinks
// and absence are understood: anything else is refused rather than lost.
func saveFile(r host.Root, p string) (SavedFile, error) {
	real, err := hostPath(r, p)
	if err != nil {
		return SavedFile{}, err
	}
	fi, err := os.Lstat(real)
	if errors.Is(err, os.ErrNotExist) {
		return SavedFile{Kind: kindAbsent}, nil
	}
	if err != nil {
		return SavedFile{}, fmt.Errorf("cannot save %s: %w", p, err)
	}
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		l, err := os.Readlink(real)
		if err != nil {
			return SavedFile{}, fmt.Errorf("cannot save %s: %w", p, err)
		}
		return SavedFile{Kind: kindSymlink, Link: l}, nil
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(real)
		if err != nil {
			return SavedFile{}, fmt.Errorf("cannot save %s: %w", p, err)
		}
		sf := SavedFile{Kind: kindFile, Data: b, Mode: fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			sf.UID, sf.GID = int(st.Uid), int(st.Gid)
		}
		return sf, nil
	}
	return SavedFile{}, fmt.Errorf("cannot save %s: not a regular file or symlink (%v)", p, fi.Mode().Type())
}

// restoreFile puts host path p back as f recorded it. It is idempotent.
func restoreFile(r host.Root, p string, f SavedFile) error {
	real, err := hostPath(r, p)
	if err != nil {
		return err
	}
	switch f.Kind {
	case kindAbsent:
		fi, err := os.Lstat(real)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err == nil && fi.IsDir() {
			return fmt.Errorf("cannot remove %s: a directory is there", p)
		}
		if err := host.RemoveDurable(real); err != nil {
			return fmt.Errorf("cannot remove %s: %w", p, err)
		}
		return nil
	case kindSymlink:
		return symlinkAtomic(f.Link, real)
	case kindFile:
		if err := writeFile(real, f.Data, f.Mode, f.UID, f.GID); err != nil {
			return fmt.Errorf("cannot restore %s: %w", p, err)
		}
		return nil
	}
	return fmt.Errorf("cannot restore %s: unknown kind %q", p, f.Kind)
}

// writeFile replaces real (a path on the running system) with data, mode
// and owner, durably, unless it already is exactly that.
func writeFile(real string, data []byte, mode os.FileMode, uid, gid int) error {
	if fi, err := os.Lstat(real); err == nil && fi.Mode().IsRegular() &&
		fi.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky) == mode {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
			if b, err := os.ReadFile(real); err == nil && bytes.Equal(b, data) {
				return nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		return err
	}
	if err := host.WriteFileAtomic(real, data, mode); err != nil {
		return err
	}
	if uid != 0 || gid != 0 {
		if err := os.Lchown(real, uid, gid); err != nil {
			return err
		}
		// chown clears setuid/setgid: put the mode back.
		return os.Chmod(real, mode)
	}
	return nil
}

// symlinkAtomic makes real a symlink to target: a symlink under a temporary
// name in the same directory renamed over it, then the directory synced.
func symlinkAtomic(target, real string) error {
	if l, err := os.Readlink(real); err == nil && l == target {
		return nil
	}
	dir, name := filepath.Split(real)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if fi, err := os.Lstat(real); err == nil && fi.IsDir() {
		return fmt.Errorf("cannot link %s: a directory is there", real)
	}
	for i := 0; ; i++ {
		tmp := filepath.Join(dir, fmt.Sprintf(".%s.tmp-%d-%d", name, os.Getpid(), i))
		err := os.Symlink(target, tmp)
		if errors.Is(err, os.ErrExist) && i < 100 {
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot link %s: %w", real, err)
		}
		if err := os.Rename(tmp, real); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("cannot link %s: %w", real, err)
		}
		return host.SyncDir(dir)
	}
}
