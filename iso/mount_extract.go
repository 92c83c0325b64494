package iso

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"upgradectl/host"
)

// noFUSE is a FUSE mount that cannot be done here (no /dev/fuse): Mount
// extracts the image instead where it may (MountOptions.Extract).
type noFUSE struct{ Err error }

func (e *noFUSE) Error() string { return e.Err.Error() }
func (e *noFUSE) Unwrap() error { return e.Err }

// extractInstead makes the image available on rec.Dir by extracting it:
// the record says so (partial) before the first file is written, so that
// an extraction cut short is emptied by the next mount or unmount. The
// directory is closed to everyone but root while it holds the image: what
// a mount would keep nodev and nosuid (device nodes, set-user-id files)
// is not reachable by other users. ms are the other records.
func extractInstead(rec *MountRecord, o MountOptions, ms []MountRecord) error {
	state, err := filepath.EvalSymlinks(o.StateDir)
	if err != nil || !strings.HasPrefix(rec.Dir, state+"/") {
		return host.CannotRun("cannot mount %s on %s: neither the kernel nor FUSE can mount it here (%s), and it is extracted only into the state directory", rec.Image, rec.Dir, rec.Why)
	}
	rec.Partial = true
	if err := writeMounts(o.StateDir, append(ms[:len(ms):len(ms)], *rec)); err != nil {
		return err
	}
	if err := emptyDir(rec.Dir); err != nil {
		return err
	}
	if err := os.Chmod(rec.Dir, 0o700); err != nil {
		return host.CannotRun("cannot extract %s into %s: %v", rec.Image, rec.Dir, unwrapPath(err))
	}
	err = func() error {
		im, err := Open(rec.Image)
		if err != nil {
			return err
		}
		defer im.Close()
		return Extract(im, rec.Dir, nil)
	}()
	if err == nil {
		err = os.Chmod(rec.Dir, 0o700) // the image's root directory mode was applied
	}
	if err != nil {
		emptyDir(rec.Dir)
		return fmt.Errorf("cannot extract %s into %s (neither the kernel nor FUSE can mount it here): %w", rec.Image, rec.Dir, err)
	}
	rec.Partial = false
	return nil
}

// extractState is the state of an extracted image.
func extractState(m MountRecord) string {
	if m.Partial {
		return StatePartial
	}
	if fi, err := os.Lstat(m.Dir); err != nil || !fi.IsDir() {
		return StateStale
	}
	return StateMounted
}

// emptyDir removes everything in dir (an extracted image), leaving dir.
// Nothing may be mounted below it: a mount there is refused, not crossed.
func emptyDir(dir string) error {
	table, err := mountTable()
	if err != nil {
		return err
	}
	for p := range table {
		if strings.HasPrefix(p, dir+"/") {
			return host.WithHint(host.Busy("cannot remove the image extracted into %s: %s is mounted inside it", dir, p),
				"unmount it first")
		}
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return host.CannotRun("cannot remove the image extracted into %s: %v", dir, unwrapPath(err))
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return host.CannotRun("cannot remove the image extracted into %s: %v", dir, unwrapPath(err))
		}
	}
	return nil
}
