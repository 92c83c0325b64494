package tagfs

import (
	"errors"
	"fmt"
	"sort"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// selectEntries returns the record's entries for the given host paths (an
// original or its .Old.. copy), or all of them when paths is empty. A path
// not in the record is taken as it is when its .Old.. copy or temporary is
// there (for a record that was lost); with neither it is refused, as not
// tagged (a mistyped path, or one a finished run already restored or
// removed), and nothing is done.
func (t *Tags) selectEntries(rec *Record, paths []string, what string) ([]Entry, error) {
	if len(paths) == 0 {
		out := append([]Entry(nil), rec.Files...)
		return out, nil
	}
	idx := rec.index()
	var probs problems
	var out []Entry
	seen := map[string]bool{}
	for _, p := range paths {
		dp, name, err := t.resolve(p)
		if err != nil {
			probs.add("%v", err)
			continue
		}
		orig := dp + "/" + name
		if dp == "/" {
			orig = "/" + name
		}
		if o := OriginalPath(orig); o != "" {
			orig = o
		} else if IsTemp(name) {
			probs.add("%s: is a temporary file (removed by 'tag clean')", p)
			continue
		}
		if seen[orig] {
			continue
		}
		seen[orig] = true
		if i, ok := idx[orig]; ok {
			out = append(out, rec.Files[i])
		} else if t.hasCopy(orig) {
			out = append(out, Entry{Path: orig})
		} else {
			probs.add("%s: not tagged (the record does not name it and there is no %s)", p, TaggedPath(orig))
		}
	}
	if err := probs.err(what); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// hasCopy says whether the original at host path orig has a .Old.. name or
// a temporary of ours beside it (whoever's it is).
func (t *Tags) hasCopy(orig string) bool {
	dp, name := splitHost(orig)
	d, err := t.openDir(dp)
	if err != nil {
		return false
	}
	defer d.close()
	for _, n := range []string{TaggedName(name), tmpName(name)} {
		if _, err := lstatAt(d, n); err == nil {
			return true
		}
	}
	return false
}

// Restore is the backout: each selected original (all of the record when
// paths is empty) is replaced atomically by its tagged copy, which is
// renamed over it and so keeps all its metadata; the version attribute is
// then dropped from it. Run again after a crash, it completes what is left.
func (t *Tags) Restore(paths []string) (*Report, error) {
	rep := &Report{Action: "restore"}
	rec, err := t.Load()
	if err != nil {
		return rep, err
	}
	rep.Version = rec.Version
	// Refused while a copy is mounted over its original here; the record
	// may say bind with nothing mounted (after a reboot).
	if rec.Bind && t.mounted(rec) > 0 {
		return rep, host.WithHint(host.Refused("cannot restore tagged files: they are bind-mounted over the originals (version lookup with --bind is on)"),
			"run 'upgradectl tag disable' first")
	}
	entries, err := t.selectEntries(rec, paths, "restore")
	if err != nil {
		return rep, err
	}
	gone := map[string]bool{}
	sy := t.syncer()
	defer sy.close()
	written := map[uint64]string{}
	var probs problems
	// The version attribute stays on a restored inode while another
	// .Old.. name of the record is still linked to it (hard links tagged
	// together share one copy): dropped, it would make that name look
	// like someone else's file. The rename moved that name's change time.
	// The copies' inodes are looked up as they are now, not as recorded:
	// a system copied or restored from a backup has other inode numbers.
	type devIno struct{ dev, ino uint64 }
	byIno := map[devIno][]int{}
	lc := t.cursor()
	for i, e := range rec.Files {
		if e.Type == "" {
			continue
		}
		dp, n := splitHost(e.Path)
		d, err := lc.open(dp)
		if err != nil {
			continue
		}
		if st, err := lstatAt(d, TaggedName(n)); err == nil && st.Nlink > 1 {
			k := devIno{st.Dev, st.Ino}
			byIno[k] = append(byIno[k], i)
		}
	}
	lc.close()
	keep := func(d *dir, name string) bool {
		st, err := lstatAt(d, name)
		if err != nil || st.Nlink < 2 {
			return false
		}
		kept := false
		for _, j := range byIno[devIno{st.Dev, st.Ino}] {
			o := &rec.Files[j]
			if gone[o.Path] || o.Path == d.hostPath(name) {
				continue
			}
			dp, n := splitHost(o.Path)
			od, err := t.openDir(dp)
			if err != nil {
				continue
			}
			ost, err := lstatAt(od, TaggedName(n))
			od.close()
			if err == nil && ost.Ino == st.Ino && ost.Dev == st.Dev {
				o.Ctime = ost.Ctim.Nano()
				kept = true
			}
		}
		return kept
	}
	c := t.cursor()
	for _, e := range entries {
		dp, name := splitHost(e.Path)
		d, err := c.open(dp)
		if err != nil {
			probs.add("%s: %v", e.Path, err)
			continue
		}
		sy.watch(d.st.Dev, dp)
		written[d.st.Dev] = dp
		done, err := t.restoreOne(d, name, e, keep, !rec.Complete)
		switch {
		case errors.Is(err, errForeign):
			rep.Foreign = append(rep.Foreign, e.Tagged())
			probs.add("%s: %v", e.Path, err)
		case err != nil:
			probs.add("%s: %v", e.Path, err)
		case done:
			rep.Done = append(rep.Done, e.Path)
			gone[e.Path] = true
		default:
			rep.Already = append(rep.Already, e.Path)
			gone[e.Path] = true
		}
	}
	c.close()
	err = syncErr(sy.sync(written))
	rec.drop(gone)
	if serr := t.save(rec); serr != nil && err == nil {
		err = serr
	}
	if perr := probs.err("restore"); perr != nil {
		return rep, perr
	}
	return rep, err
}

var errForeign = errors.New("the .Old.. file is not a tagged file (left alone)")

// restoreOne puts the tagged copy of name back and drops the version
// attribute from it unless keep says it must stay. It reports false when
// there was nothing left to do.
func (t *Tags) restoreOne(d *dir, name string, e Entry, keep func(*dir, string) bool, interrupted bool) (bool, error) {
	old := TaggedName(name)
	state, _, err := t.taggedState(d, old)
	if err != nil {
		return false, err
	}
	release := func() error {
		if keep(d, name) {
			return nil
		}
		return t.dropAttr(d, name)
	}
	switch state {
	case stateForeign:
		return false, errForeign
	case stateLeftover:
		// The copy was put back and a link of it stayed: finish.
		if err := dropLeftover(d, old); err != nil {
			return false, err
		}
	case stateOurs:
		if interrupted && t.unchangedSinceCopy(d, name) {
			// A create was interrupted and the original was never
			// replaced: renaming the copy over it would split it from
			// its other hard links (whose copies may not be linked
			// yet), so the copy goes instead.
			if err := unix.Unlinkat(d.fd, old, 0); err != nil && err != unix.ENOENT {
				return false, fmt.Errorf("cannot remove %s, a copy of the unchanged original: %v", old, err)
			}
			return false, nil
		}
		if err := unix.Renameat(d.fd, old, d.fd, name); err != nil {
			return false, fmt.Errorf("cannot rename %s over it: %v", old, err)
		}
		return true, release()
	}
	// No tagged copy: restored already (perhaps up to dropping the
	// attribute), never created, or lost.
	if _, ok, err := t.getAttr(d, name); err == nil && ok {
		return true, release()
	}
	if e.Type == "" {
		return false, nil // planned, never created
	}
	st, err := lstatAt(d, name)
	if err == nil && st.Mode == e.Mode && st.Size == e.Size && st.Mtim.Nano() == e.Mtime {
		return false, nil // the original is the old file already
	}
	return false, fmt.Errorf("its tagged copy %s is missing", old)
}

// unchangedSinceCopy reports whether the original name in d is still what
// its tagged copy was made from: the same type, size, mode, owner and
// modification time, and no change to its inode since the copy was made
// (its change time is not later than the copy's).
func (t *Tags) unchangedSinceCopy(d *dir, name string) bool {
	st, err := lstatAt(d, name)
	if err != nil || !t.sameAsOriginal(d, &item{name: name, st: st}) {
		return false
	}
	cst, err := lstatAt(d, TaggedName(name))
	return err == nil && st.Ctim.Nano() <= cst.Ctim.Nano()
}

func (t *Tags) dropAttr(d *dir, name string) error {
	if err := xattr.LRemove(t.at(d, name), t.attr); err != nil && !errors.Is(err, xattr.ENOATTR) {
		return fmt.Errorf("cannot remove the attribute %s: %v", t.attr, errors.Unwrap(err))
	}
	return nil
}

// Remove deletes the tagged copies of the given host paths (originals or
// .Old.. paths). A .Old.. file without our attribute is never deleted, only
// reported. Refused while version lookup is on.
func (t *Tags) Remove(paths []string) (*Report, error) {
	if len(paths) == 0 {
		return &Report{Action: "remove"}, host.Usage("cannot remove tagged files: no paths given")
	}
	return t.remove("remove", paths, nil)
}

// CleanOptions tune Clean.
type CleanOptions struct {
	// Scan also removes the tagged files found below these host
	// directories (for a lost record).
	Scan []string
}

// Clean deletes every tagged copy of the record (and, with Scan, every one
// found below the given directories) and the temporary files of
// interrupted runs. Refused while version lookup is on.
func (t *Tags) Clean(opt CleanOptions) (*Report, error) {
	var extra []Entry
	for _, s := range opt.Scan {
		found, err := t.Scan(s)
		if err != nil {
			return &Report{Action: "clean"}, err
		}
		for _, f := range found {
			if f.Original != "" {
				extra = append(extra, Entry{Path: f.Original})
			}
		}
	}
	return t.remove("clean", nil, extra)
}

func (t *Tags) remove(action string, paths []string, extra []Entry) (*Report, error) {
	rep := &Report{Action: action}
	rec, err := t.Load()
	if err != nil {
		return rep, err
	}
	rep.Version = rec.Version
	if rec.Lookup || rec.Bind {
		return rep, host.WithHint(host.Refused("cannot %s tagged files: version lookup is on, this member runs on them", action),
			"run 'upgradectl tag disable' first")
	}
	entries, err := t.selectEntries(rec, paths, action)
	if err != nil {
		return rep, err
	}
	if len(extra) > 0 {
		entries = append(entries, extra...)
		sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	}
	gone := map[string]bool{}
	var probs problems
	c := t.cursor()
	defer c.close()
	for i, e := range entries {
		if i > 0 && entries[i-1].Path == e.Path {
			continue
		}
		dp, name := splitHost(e.Path)
		d, err := c.open(dp)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				gone[e.Path] = true // the directory is gone, and its files
				continue
			}
			probs.add("%s: %v", e.Tagged(), err)
			continue
		}
		tmp := tmpName(name)
		if _, err := lstatAt(d, tmp); err == nil {
			if err := removeTemp(d, tmp); err != nil {
				probs.add("%v", err)
				continue
			}
			rep.Temps = append(rep.Temps, d.hostPath(tmp))
		}
		state, _, err := t.taggedState(d, TaggedName(name))
		switch {
		case err != nil:
			probs.add("%s: %v", e.Tagged(), err)
		case state == stateForeign:
			rep.Foreign = append(rep.Foreign, e.Tagged())
			gone[e.Path] = true // not ours: not in our set either
		case state == stateLeftover:
			if err := dropLeftover(d, TaggedName(name)); err != nil {
				probs.add("%v", err)
				continue
			}
			rep.Already = append(rep.Already, e.Path)
			gone[e.Path] = true
		case state == stateAbsent:
			rep.Already = append(rep.Already, e.Path)
			gone[e.Path] = true
		default:
			if err := unix.Unlinkat(d.fd, TaggedName(name), 0); err != nil && err != unix.ENOENT {
				probs.add("%s: %v", e.Tagged(), err)
				continue
			}
			rep.Done = append(rep.Done, e.Path)
			gone[e.Path] = true
		}
	}
	rec.drop(gone)
	err = t.save(rec)
	if perr := probs.err(action); perr != nil {
		return rep, perr
	}
	return rep, err
}
