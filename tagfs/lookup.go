package tagfs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// Status is the tagged set and version lookup as status shows them.
type Status struct {
	Version  string `json:"version,omitempty"`
	Files    int    `json:"files"`
	Complete bool   `json:"complete"` // false: a tag create was interrupted
	Lookup   bool   `json:"lookup"`   // this member runs on tagged files
	Bind     bool   `json:"bind"`     // through bind mounts
	// Mounted counts the originals that have their tagged copy
	// bind-mounted over them in this mount namespace.
	Mounted int `json:"mounted"`
	// Busy is the process holding the state lock (a tag create or a
	// stage at work), 0 when none: an incomplete set is then being made,
	// not interrupted.
	Busy int `json:"busy,omitempty"`
}

// State returns the status of the tagged set and of version lookup.
func (t *Tags) State() (*Status, error) {
	rec, err := t.Load()
	if err != nil {
		return nil, err
	}
	return &Status{Version: rec.Version, Files: len(rec.Files), Complete: rec.Complete, Lookup: rec.Lookup, Bind: rec.Bind,
		Mounted: t.mounted(rec), Busy: host.LockHolder(t.stateDir)}, nil
}

// mounted counts the originals of rec that show their tagged copy here.
func (t *Tags) mounted(rec *Record) int {
	n := 0
	c := t.cursor()
	defer c.close()
	for _, e := range rec.Files {
		dp, name := splitHost(e.Path)
		if d, err := c.open(dp); err == nil && bound(d, name) {
			n++
		}
	}
	return n
}

// bound reports whether name in d shows its tagged copy: the same inode,
// which is what a bind mount of the copy over it looks like.
func bound(d *dir, name string) bool {
	a, err1 := lstatAt(d, name)
	b, err2 := lstatAt(d, TaggedName(name))
	return err1 == nil && err2 == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// BindReport says what Enable or Disable did with bind mounts.
type BindReport struct {
	Lookup  bool     `json:"lookup"`
	Bind    bool     `json:"bind"`
	Mounted []string `json:"mounted,omitempty"` // bind mounts made (originals)
	Already []string `json:"already,omitempty"` // bound already
	Skipped []string `json:"skipped,omitempty"` // not bindable: symlinks, missing
	Removed []string `json:"removed,omitempty"` // bind mounts removed
}

// Enable switches this member to run on tagged files (the rolls_ver_lookup
// of the design this follows). With bind, each tagged copy is also
// bind-mounted read-only over its original, which makes the diversion
// transparent; running it again re-applies what an install undid.
func (t *Tags) Enable(bind bool) (*BindReport, error) {
	rec, err := t.Load()
	if err != nil {
		return nil, err
	}
	if !rec.Complete {
		return nil, host.WithHint(host.Refused("cannot enable version lookup: the tagged set is incomplete (an interrupted tag create)"),
			"run the same 'upgradectl tag create' again first")
	}
	was := *rec
	rec.Lookup = true
	rec.Bind = rec.Bind || bind
	// Persist before acting: a crash leaves a record a rerun completes.
	if err := t.save(rec); err != nil {
		return nil, err
	}
	rep := &BindReport{Lookup: true, Bind: rec.Bind}
	if !rec.Bind {
		return rep, nil
	}
	var probs problems
	c := t.cursor()
	defer c.close()
	for _, e := range rec.Files {
		dp, name := splitHost(e.Path)
		d, err := c.open(dp)
		if err != nil {
			probs.add("%s: %v", e.Path, err)
			continue
		}
		switch done, err := t.bindOne(d, name, e); {
		case errors.Is(err, errNotBindable):
			rep.Skipped = append(rep.Skipped, e.Path)
		case err != nil:
			probs.add("%s: %v", e.Path, err)
		case done:
			rep.Mounted = append(rep.Mounted, e.Path)
		default:
			rep.Already = append(rep.Already, e.Path)
		}
	}
	if err := probs.err("bind-mount the tagged copy over"); err != nil {
		// Back to how it was: the mounts this run made come off, and the
		// switch is as before.
		for _, p := range rep.Mounted {
			dp, name := splitHost(p)
			if d, derr := c.open(dp); derr == nil && bound(d, name) {
				unix.Unmount(t.at(d, name), unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
			}
		}
		rec.Lookup, rec.Bind = was.Lookup, was.Bind
		if serr := t.save(rec); serr != nil {
			return rep, serr
		}
		return &BindReport{Lookup: was.Lookup, Bind: was.Bind}, err
	}
	return rep, nil
}

var errNotBindable = errors.New("not a regular file")

// bindOne mounts the tagged copy of name read-only over it, with the mount
// API that never follows a symlink at either end (open_tree, move_mount).
func (t *Tags) bindOne(d *dir, name string, e Entry) (bool, error) {
	if e.Type != typeFile {
		return false, errNotBindable
	}
	old := TaggedName(name)
	if _, err := lstatAt(d, old); errors.Is(err, unix.ENOENT) {
		return false, fmt.Errorf("its tagged copy %s is missing", d.hostPath(old))
	}
	if state, _, err := t.taggedState(d, old); err != nil || state != stateOurs {
		if err == nil {
			err = fmt.Errorf("%s is not a tagged file", d.hostPath(old))
		}
		return false, err
	}
	st, err := lstatAt(d, name)
	if errors.Is(err, unix.ENOENT) {
		return false, errNotBindable // the original is gone: nothing to mount over
	}
	if err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, errNotBindable
	}
	if bound(d, name) {
		return false, nil
	}
	fd, err := unix.OpenTree(d.fd, old, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return false, fmt.Errorf("cannot open %s for a bind mount: %v", d.hostPath(old), err)
	}
	defer unix.Close(fd)
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return false, fmt.Errorf("cannot make the bind mount of %s read-only: %v", d.hostPath(old), err)
	}
	if err := unix.MoveMount(fd, "", d.fd, name, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return false, fmt.Errorf("cannot bind-mount %s: %v", d.hostPath(old), err)
	}
	return true, nil
}

// Disable switches this member off tagged files and removes every bind
// mount of a tagged copy over its original in this mount namespace.
func (t *Tags) Disable() (*BindReport, error) {
	rec, err := t.Load()
	if err != nil {
		return nil, err
	}
	rep := &BindReport{}
	var probs problems
	c := t.cursor()
	for _, e := range rec.Files {
		dp, name := splitHost(e.Path)
		d, err := c.open(dp)
		if err != nil {
			continue // nothing can be mounted in a directory that is gone
		}
		// Mounts may be stacked (enable --bind raced with itself).
		for i := 0; i < 16 && bound(d, name); i++ {
			if err := unix.Unmount(t.at(d, name), unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH); err != nil {
				probs.add("%s: cannot unmount: %v", e.Path, err)
				break
			}
			if i == 0 {
				rep.Removed = append(rep.Removed, e.Path)
			}
		}
	}
	c.close()
	// A tagged copy still mounted where the record no longer leads to it
	// (its directory renamed, the copy removed under the mount): found by
	// its source in the mount table, a ".Old..NAME" over a "NAME".
	ms, err := host.ReadMountInfo()
	if err != nil {
		return rep, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		hp, err := t.root.Rel(m.Dir)
		if err != nil || hp == "/" {
			continue // not under the root
		}
		src := path.Base(strings.TrimSuffix(m.Root, "//deleted"))
		if !strings.HasPrefix(src, Prefix) || strings.TrimPrefix(src, Prefix) != path.Base(m.Dir) {
			continue
		}
		if err := unix.Unmount(m.Dir, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH); err != nil {
			probs.add("%s: cannot unmount: %v", hp, err)
			continue
		}
		if !slices.Contains(rep.Removed, hp) {
			rep.Removed = append(rep.Removed, hp)
		}
	}
	if err := probs.err("disable version lookup on"); err != nil {
		return rep, err
	}
	rec.Lookup, rec.Bind = false, false
	return rep, t.save(rec)
}

// Lookuper answers version lookups with one read of the record. It keeps
// the directories it resolved, so it is meant for one batch of lookups.
type Lookuper struct {
	t    *Tags
	on   bool
	dirs map[string]string // host directory -> resolved directory on the running system
}

// Lookuper reads the version lookup switch once for many lookups.
func (t *Tags) Lookuper() (*Lookuper, error) {
	rec, err := t.Load()
	if err != nil {
		return nil, err
	}
	return &Lookuper{t: t, on: rec.Lookup, dirs: map[string]string{}}, nil
}

// Lookup returns the host path that applies on this member for host path
// p: its tagged copy when version lookup is on and the copy exists with a
// version attribute, else p itself. Directories on the way are resolved
// inside the root; the name itself is not followed.
func (l *Lookuper) Lookup(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", host.Usage("cannot look up %s: not an absolute path", p)
	}
	if !l.on {
		return p, nil
	}
	dir, name := path.Split(path.Clean(p))
	if name == "" || strings.HasPrefix(name, Prefix) {
		return p, nil
	}
	// On the live system the kernel resolves the directories as the
	// system does; under another root they are resolved inside it, once.
	real := dir
	if !l.t.root.IsLive() {
		var ok bool
		if real, ok = l.dirs[dir]; !ok {
			r, err := l.t.root.Resolve(dir)
			if err != nil {
				return "", host.CannotRun("cannot look up %s: %v", p, errors.Unwrap(err))
			}
			real = r + "/"
			l.dirs[dir] = real
		}
	}
	tagged := real + Prefix + name
	var buf [256]byte
	if _, err := unix.Lgetxattr(tagged, l.t.attr, buf[:]); err != nil && err != unix.ERANGE {
		return p, nil
	}
	return l.t.root.Rel(tagged)
}

// Command finds a command as this member would run it: name is searched in
// the directories of pathList (host paths, like $PATH) unless it holds a
// slash, then looked up. It returns the path on the running system to
// execute.
func (l *Lookuper) Command(name, pathList string) (string, error) {
	var p string
	if strings.Contains(name, "/") {
		if !strings.HasPrefix(name, "/") {
			wd, err := os.Getwd()
			if err != nil {
				return "", err
			}
			rel, err := l.t.root.Rel(path.Join(wd, name))
			if err != nil {
				return "", host.Usage("cannot run %s: %v", name, err)
			}
			name = rel
		}
		p = name
	} else {
		for _, dir := range strings.Split(pathList, ":") {
			if !strings.HasPrefix(dir, "/") {
				continue
			}
			real, err := l.t.root.Resolve(path.Join(dir, name))
			if err != nil {
				continue
			}
			if fi, err := os.Stat(real); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				p = path.Join(dir, name)
				break
			}
		}
		if p == "" {
			return "", host.Bad("cannot run %s: not found in %s", name, pathList)
		}
	}
	// The command's symlinks are followed inside the root, each hop looked
	// up: /usr/local/bin/acme -> /opt/acme/bin/acme runs the tagged acme,
	// and a tagged symlink leads to the tagged file it named.
	for hops := 0; hops < 40; hops++ {
		got, err := l.Lookup(p)
		if err != nil {
			return "", err
		}
		real, err := l.t.root.ResolveParent(got)
		if err != nil {
			return "", host.CannotRun("cannot run %s: %v", name, err)
		}
		fi, err := os.Lstat(real)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return real, nil
		}
		target, err := os.Readlink(real)
		if err != nil {
			return "", host.CannotRun("cannot run %s: %v", name, err)
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(got), target)
		}
		p = path.Clean(target)
	}
	return "", host.Bad("cannot run %s: too many levels of symbolic links", name)
}
