package check

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"

	"upgradectl/host"
)

// rootGlob expands a host path pattern (path.Match syntax in each
// component) inside the root: every directory on the way is resolved with
// root.Resolve, so a symlink in the image never leads out of it. It returns
// host paths, sorted; a directory it cannot read is an error, a missing one
// is not.
func rootGlob(root host.Root, pattern string) ([]string, error) {
	pattern = path.Clean("/" + pattern)
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, err
	}
	paths := []string{"/"}
	var firstErr error
	for _, comp := range strings.Split(pattern, "/")[1:] {
		var next []string
		for _, p := range paths {
			if !hasMeta(comp) {
				next = append(next, path.Join(p, comp))
				continue
			}
			real, err := root.Resolve(p)
			if err == nil {
				var ents []os.DirEntry
				ents, err = os.ReadDir(real)
				for _, e := range ents {
					if ok, _ := path.Match(comp, e.Name()); ok {
						next = append(next, path.Join(p, e.Name()))
					}
				}
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) && firstErr == nil {
				firstErr = err
			}
		}
		paths = next
	}
	// The last component may be literal: keep only what exists.
	out := paths[:0]
	for _, p := range paths {
		real, err := root.Resolve(p)
		if err != nil {
			continue
		}
		if _, err := os.Lstat(real); err == nil {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, firstErr
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// unwrapPath drops the *fs.PathError wrapper, whose path is the one on the
// running system; messages name the host path instead.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
