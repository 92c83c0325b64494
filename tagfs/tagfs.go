// Package tagfs keeps tagged copies of the files an upgrade replaces: before
// the install, every such file NAME gets a copy DIR/.Old..NAME (a reflink
// clone where the filesystem can, otherwise a copy) with the same owner,
// mode, timestamps and extended attributes, carrying the old version in an
// extended attribute (tag.attribute, trusted.upgradectl.version by default).
// The copies let a member that has not rolled keep running the old version
// (version lookup, optionally made transparent with read-only bind mounts)
// and let a backout put the old files back exactly.
//
// The tagged set is recorded in the state directory. Every operation is
// idempotent and resumable: a crash or kill -9 at any moment leaves either a
// complete .Old.. file or none, and at worst a temporary file with a
// recognisable name (.Old..NAME.upgradectl-tmp) that the next run removes.
//
// Symlinks are never followed below the root except in the paths an operator
// gives, which are resolved once, inside the root, when they are planned;
// from then on every directory is opened with openat2(RESOLVE_NO_SYMLINKS)
// and every file with O_NOFOLLOW or the L* xattr calls.
//
// The caller holds the state directory lock (host.LockStateDir).
package tagfs

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// Prefix is what a tagged copy's name starts with.
const Prefix = ".Old.."

// tmpSuffix ends the name of a tagged copy being written.
const tmpSuffix = ".upgradectl-tmp"

// Tags works on the tagged files of one root.
type Tags struct {
	root     host.Root
	attr     string   // the version attribute
	stateDir string   // the state directory on the running system
	rootFD   int      // -1 until opened
	procOK   bool     // /proc/self/fd works, so xattr calls can use dirfd paths
	unnamed  sync.Map // device -> whether copies there are unnamed files (unnamedFor)
}

// New returns the tagged files of root, with the version attribute of cfg
// and the record in stateDir (a path on the running system, as env.State()).
func New(root host.Root, cfg *host.Config, stateDir string) *Tags {
	attr := host.DefaultConfig().Tag.Attribute
	if cfg != nil && cfg.Tag.Attribute != "" {
		attr = cfg.Tag.Attribute
	}
	_, err := os.Stat("/proc/self/fd")
	return &Tags{root: root, attr: attr, stateDir: filepath.Clean(stateDir), rootFD: -1, procOK: err == nil}
}

// Attribute is the name of the version attribute.
func (t *Tags) Attribute() string { return t.attr }

// Close releases the root directory descriptor.
func (t *Tags) Close() error {
	if t.rootFD >= 0 {
		err := unix.Close(t.rootFD)
		t.rootFD = -1
		return err
	}
	return nil
}

// TaggedName is the name of the tagged copy of name.
func TaggedName(name string) string { return Prefix + name }

// TaggedPath is the host path of the tagged copy of host path p.
func TaggedPath(p string) string {
	dir, name := path.Split(path.Clean(p))
	return dir + TaggedName(name)
}

// tmpName is the name under which the tagged copy of name is written. It is
// fixed, so that a rerun finds and removes what a crash left; names too long
// for it get a digest instead.
func tmpName(name string) string {
	n := Prefix + name + tmpSuffix
	if len(n) <= 255 {
		return n
	}
	return fmt.Sprintf("%s%x%s", Prefix, shortHash(name), tmpSuffix)
}

// IsTemp reports whether a file name is one of our temporary names.
func IsTemp(name string) bool {
	return len(name) >= len(Prefix)+len(tmpSuffix) && strings.HasPrefix(name, Prefix) && strings.HasSuffix(name, tmpSuffix)
}

// isTagged reports whether name is the name of a tagged copy.
func isTagged(name string) bool {
	return strings.HasPrefix(name, Prefix) && len(name) > len(Prefix) && !IsTemp(name)
}

// OriginalPath is the host path a tagged copy stands for, or "" when p is
// not the name of a tagged copy.
func OriginalPath(p string) string {
	dir, name := path.Split(path.Clean(p))
	if !isTagged(name) {
		return ""
	}
	return dir + strings.TrimPrefix(name, Prefix)
}
