package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Root is the directory that stands for "/" of the system being worked on:
// "/" on the live host, a mounted system image in rescue, a temporary
// directory in tests. Every host path goes through it.
type Root struct {
	dir string // absolute, clean
}

// NewRoot returns a Root for dir, which must be an existing directory.
func NewRoot(dir string) (Root, error) {
	if dir == "" {
		dir = "/"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Root{}, Usage("cannot use root %s: %v", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Root{}, Usage("cannot use root %s: %v", dir, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return Root{}, Usage("cannot use root %s: not a directory", dir)
	}
	return Root{dir: abs}, nil
}

// Dir is the root directory on the running system.
func (r Root) Dir() string {
	if r.dir == "" {
		return "/"
	}
	return r.dir
}

// IsLive reports whether the root is the running system's own "/".
func (r Root) IsLive() bool { return r.Dir() == "/" }

// Path joins a host path (absolute, as seen from inside the root) to the root
// lexically: ".." cannot climb above the root. Symlinks are not resolved; use
// Resolve where a symlink on the way must stay inside the root.
func (r Root) Path(p string) string {
	clean := filepath.Clean("/" + p)
	if r.Dir() == "/" {
		return clean
	}
	if clean == "/" {
		return r.Dir()
	}
	return r.Dir() + clean
}

// Rel turns a path on the running system back into a host path as seen from
// inside the root ("/etc/x"). It fails if p is outside the root.
func (r Root) Rel(p string) (string, error) {
	p = filepath.Clean(p)
	if r.Dir() == "/" {
		return p, nil
	}
	if p == r.Dir() {
		return "/", nil
	}
	if !strings.HasPrefix(p, r.Dir()+"/") {
		return "", fmt.Errorf("%s is outside the root %s", p, r.Dir())
	}
	return p[len(r.Dir()):], nil
}

const maxSymlinks = 255

// Resolve returns the path on the running system of host path p, following
// symlinks as the system under the root would see them: an absolute link
// target starts again at the root and ".." stops at the root, so the result
// never leaves the root, as the kernel resolves under RESOLVE_IN_ROOT.
// The final component is followed too. A component that does not exist yet
// is taken as a directory to be made, and the rest is resolved one
// component at a time all the same ("missing/../link" follows link inside
// the root), so that creating the missing part later cannot lead out.
func (r Root) Resolve(p string) (string, error) {
	return r.resolve(p, true)
}

// ResolveParent is Resolve for everything but the last component, which is
// returned as is (not followed): the path to use with O_NOFOLLOW, Lstat or
// the L* xattr calls.
func (r Root) ResolveParent(p string) (string, error) {
	return r.resolve(p, false)
}

func (r Root) resolve(p string, followLast bool) (string, error) {
	rest := strings.Split(filepath.Clean("/"+p), "/")
	var done []string // resolved components inside the root
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		if len(rest) == 0 && !followLast {
			done = append(done, c)
			break
		}
		cur := r.Path("/" + strings.Join(append(done, c), "/"))
		fi, err := os.Lstat(cur)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				// A part not there yet stands for the directory that
				// will be made; the rest is still resolved one part at
				// a time: a ".." after it comes back to what exists,
				// and a symlink there is followed inside the root.
				done = append(done, c)
				continue
			}
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		links++
		if links > maxSymlinks {
			return "", &os.PathError{Op: "resolve", Path: p, Err: errors.New("too many levels of symbolic links")}
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			done = nil
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return r.Path("/" + strings.Join(done, "/")), nil
}
