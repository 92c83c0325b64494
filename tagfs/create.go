package tagfs

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// CreateOptions tune Create.
type CreateOptions struct {
	// Force tags in directories that users other than root can write to.
	Force bool
	// NoSpaceCheck skips the free space and inode check (tests use it to
	// run into a real ENOSPC).
	NoSpaceCheck bool
	// Digest records a digest of each copy's content for 'check
	// --content', which reads every file once more (on a reflink set, the
	// only data tagging reads). Without it, check tells a changed copy by
	// its inode change time, which every write, truncate, chmod, chown or
	// attribute change through the filesystem moves.
	Digest bool
}

// Report says what an operation did. Paths are host paths of originals.
type Report struct {
	Action  string   `json:"action"`
	Version string   `json:"version,omitempty"`
	Done    []string `json:"done"`              // acted on by this run
	Already []string `json:"already,omitempty"` // already in the wanted state
	Foreign []string `json:"foreign,omitempty"` // .Old.. files without our attribute, left alone
	Temps   []string `json:"temps,omitempty"`   // temporary files removed
	Cloned  int      `json:"cloned,omitempty"`  // reflink clones made
	Copied  int      `json:"copied,omitempty"`  // data copies made
	Linked  int      `json:"linked,omitempty"`  // hard links made to a copy of another name of the same inode
	Bytes   int64    `json:"bytes,omitempty"`   // bytes copied (not cloned)
	// Warnings are what the caller should know but did not stop the run.
	Warnings []string `json:"warnings,omitempty"`
}

// maxVersion bounds a version: it is written in an attribute of every copy.
const maxVersion = 256

// Create tags the files at the given host paths (a directory stands for
// the regular files and symlinks below it) with version: each gets a
// complete .Old.. copy carrying version in the attribute. Files already
// tagged with version are left as they are, so that running Create again
// after a crash completes the set.
func (t *Tags) Create(version string, paths []string, opt CreateOptions) (*Report, error) {
	rep := &Report{Action: "create", Version: version}
	if version == "" {
		return rep, host.WithHint(host.Usage("cannot tag: no version given"), "give the version installed now: --version V")
	}
	if len(version) > maxVersion || strings.IndexFunc(version, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '/' }) >= 0 {
		return rep, host.Usage("cannot tag: version %q is not a version (at most %d bytes, no control characters or '/')",
			version[:min(len(version), 64)], maxVersion)
	}
	if len(paths) == 0 {
		return rep, host.Usage("cannot tag: no paths given")
	}
	rec, err := t.Load()
	if err != nil {
		return rep, err
	}
	if rec.Version != "" && rec.Version != version && len(rec.Files) > 0 {
		return rep, host.WithHint(host.Refused("cannot tag for version %s: %d files are tagged for version %s", version, len(rec.Files), rec.Version),
			"restore or clean them first: 'upgradectl tag restore' or 'upgradectl tag clean'")
	}
	// Remove what an interrupted run left, in every directory it planned.
	if !rec.Complete {
		if err := t.removeTemps(rec.Files, rep); err != nil {
			return rep, err
		}
	}
	items, err := t.expand(paths, opt.Force)
	if err != nil {
		return rep, err
	}
	idx := rec.index()
	if err := t.prepare(items, idx, rec, version); err != nil {
		return rep, err
	}
	rep.Warnings = append(rep.Warnings, splitLinks(items)...)
	// Persist the plan before writing anything, the space probe included:
	// a crash leaves a record that names every file this run may have
	// touched, so a rerun or a clean finds every temporary.
	before, wasComplete, wasVersion := append([]Entry(nil), rec.Files...), rec.Complete, rec.Version
	rec.Version = version
	rec.Complete = false
	for _, it := range items {
		if _, ok := idx[it.path()]; !ok {
			idx[it.path()] = len(rec.Files)
			rec.Files = append(rec.Files, Entry{Path: it.path()})
		}
	}
	if err := t.save(rec); err != nil {
		return rep, err
	}
	// save sorted the entries by path: the index is made again.
	idx = rec.index()
	if !opt.NoSpaceCheck {
		if err := t.checkSpace(items); err != nil {
			// Refused: the record goes back to what it was.
			rec.Files, rec.Complete, rec.Version = before, wasComplete, wasVersion
			if serr := t.save(rec); serr != nil {
				return rep, serr
			}
			return rep, err
		}
	}
	runErr := t.createAll(items, rec, idx, version, opt, rep)
	if runErr == nil {
		rec.Complete = true
		for _, e := range rec.Files {
			if e.Type == "" {
				rec.Complete = false
			}
		}
	}
	if err := t.save(rec); err != nil && runErr == nil {
		runErr = err
	}
	return rep, runErr
}

// prepare marks the items that are tagged with version already and refuses
// (all problems together) the ones whose .Old.. name is taken by something
// that is not ours, or that are tagged with another version.
func (t *Tags) prepare(items []item, idx map[string]int, rec *Record, version string) error {
	var probs problems
	c := t.cursor()
	defer c.close()
	for i := range items {
		it := &items[i]
		if it.untagged {
			continue // stateAbsent
		}
		d, err := c.open(it.dir)
		if err != nil {
			probs.add("%s: %v", it.path(), err)
			continue
		}
		state, v, err := t.taggedState(d, TaggedName(it.name))
		if err == nil && state == stateLeftover {
			state, err = stateAbsent, dropLeftover(d, TaggedName(it.name))
		}
		switch {
		case err != nil:
			probs.add("%s: %v", it.path(), err)
		case state == stateForeign:
			probs.add("%s: %s exists and is not a tagged file (left alone)", it.path(), d.hostPath(TaggedName(it.name)))
		case state == stateOurs && v != version:
			probs.add("%s: already tagged for version %s", it.path(), v)
		case state == stateOurs:
			it.state = stateOurs
			j, recorded := idx[it.path()]
			switch {
			case recorded && rec.Files[j].Type != "":
				it.done = true // created and synced by an earlier run
			case t.sameAsOriginal(d, it):
				it.done = true
			case recorded:
				// Planned by an interrupted run and not what the original
				// is: written but lost in a power cut. Made again.
			default:
				probs.add("%s: %s is tagged for %s but differs from the original and is not in the record (left alone)",
					it.path(), d.hostPath(TaggedName(it.name)), v)
			}
		}
	}
	return probs.err("tag")
}

// splitLinks warns about a file tagged under some of its names only: its
// other hard links are not tagged with it, so a restore puts back a file
// of its own under the tagged names and the link between them is gone.
func splitLinks(items []item) []string {
	type devIno struct{ dev, ino uint64 }
	type group struct {
		names []string
		nlink uint64
	}
	groups := map[devIno]*group{}
	var order []devIno
	for _, it := range items {
		if it.st.Mode&unix.S_IFMT != unix.S_IFREG || it.st.Nlink < 2 {
			continue
		}
		k := devIno{it.st.Dev, it.st.Ino}
		if groups[k] == nil {
			groups[k] = &group{nlink: uint64(it.st.Nlink)}
			order = append(order, k)
		}
		groups[k].names = append(groups[k].names, it.path())
	}
	var out []string
	for _, k := range order {
		g := groups[k]
		if n := uint64(len(g.names)); n < g.nlink {
			out = append(out, fmt.Sprintf("%s has %d more hard link(s) that are not tagged with it: a restore gives it back as a file of its own (tag every name to keep them linked)",
				strings.Join(g.names, ", "), g.nlink-n))
		}
	}
	return out
}

// Tagged-name states.
const (
	stateAbsent  = iota
	stateOurs    // carries our attribute
	stateForeign // exists without our attribute
	// stateLeftover: exists without our attribute as another link to the
	// original itself (what a restore or a create interrupted between
	// two hard-linked names can leave): ours to remove, no data is in it.
	stateLeftover
)

// taggedState says whether name in d is absent, ours (with its version) or
// someone else's.
func (t *Tags) taggedState(d *dir, name string) (int, string, error) {
	st, err := lstatAt(d, name)
	if err != nil {
		if err == unix.ENOENT {
			return stateAbsent, "", nil
		}
		return 0, "", err
	}
	v, ok, err := t.getAttr(d, name)
	switch {
	case err != nil:
		return 0, "", err
	case !ok:
		if orig, found := strings.CutPrefix(name, Prefix); found && orig != "" {
			if ost, err := lstatAt(d, orig); err == nil && ost.Ino == st.Ino && ost.Dev == st.Dev {
				return stateLeftover, "", nil
			}
		}
		return stateForeign, "", nil
	}
	return stateOurs, v, nil
}

// dropLeftover removes a .Old.. name that is only another link to its
// original (stateLeftover): no data goes with it.
func dropLeftover(d *dir, name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("cannot remove %s, a leftover link to its original: %v", d.hostPath(name), err)
	}
	return nil
}

// stillOurs checks again, just before it is replaced, that name in d is
// absent or ours (as prepare found it), and says which.
func (t *Tags) stillOurs(d *dir, name string) (int, error) {
	state, _, err := t.taggedState(d, name)
	if err == nil && state == stateForeign {
		err = fmt.Errorf("%s exists and is not a tagged file (left alone)", d.hostPath(name))
	}
	return state, err
}

// sameAsOriginal reports whether the tagged copy of it has the original's
// type, size, mode, owner and modification time (and a symlink its target).
func (t *Tags) sameAsOriginal(d *dir, it *item) bool {
	ost, err := lstatAt(d, TaggedName(it.name))
	if err != nil {
		return false
	}
	st := it.st
	if ost.Mode != st.Mode || ost.Size != st.Size || ost.Uid != st.Uid || ost.Gid != st.Gid || ost.Mtim != st.Mtim {
		return false
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		a, err1 := readlinkAt(d, it.name)
		b, err2 := readlinkAt(d, TaggedName(it.name))
		return err1 == nil && err2 == nil && a == b
	}
	return true
}

// removeTemps removes the temporary names of the given entries.
func (t *Tags) removeTemps(entries []Entry, rep *Report) error {
	c := t.cursor()
	defer c.close()
	for _, e := range entries {
		dp, name := splitHost(e.Path)
		d, err := c.open(dp)
		if err != nil {
			continue // the directory is gone: nothing of ours is in it
		}
		tmp := tmpName(name)
		if _, err := lstatAt(d, tmp); err != nil {
			continue
		}
		if err := removeTemp(d, tmp); err != nil {
			return host.CannotRun("cannot remove temporary file %v", err)
		}
		rep.Temps = append(rep.Temps, d.hostPath(tmp))
	}
	return nil
}

// workers is how many files are tagged at once: one a CPU (at least two,
// so that one waiting for the disk does not stop the other; at most
// eight). Tagging a clone set is kernel work for the filesystem, bound by
// the CPUs; more workers than CPUs only contend for its locks (btrfs, 2
// CPUs, 20,000 files: 1.36 s with two workers, 1.57 s with four, 1.61 s
// with one; xfs and ext4 the same with two, four or eight).
func workers() int {
	return min(max(runtime.NumCPU(), 2), 8)
}

// outcome is what happened to one item.
type outcome struct {
	e      Entry
	res    copyResult
	made   bool // an entry to record
	linked bool // a hard link to the copy of another name of the same inode
	err    error
}

// createAll makes the tagged copies, a directory at a time on each of a
// few workers, stopping at the first error. Every filesystem written to is
// synced before the record says the copies exist.
func (t *Tags) createAll(items []item, rec *Record, idx map[string]int, version string, opt CreateOptions, rep *Report) error {
	if _, err := t.openRoot(); err != nil {
		return err
	}
	// Runs of items in one directory.
	var runs [][2]int
	for i := range items {
		if i == 0 || items[i].dir != items[i-1].dir {
			runs = append(runs, [2]int{i, i})
		}
		runs[len(runs)-1][1] = i + 1
	}
	// Every filesystem that may be written to is opened for its sync
	// before the first copy is made.
	sy := t.syncer()
	defer sy.close()
	for i := range items {
		if !items[i].done {
			sy.watch(items[i].st.Dev, items[i].dir)
		}
	}
	group, linkTo := hardLinks(items)
	out := make([]outcome, len(items))
	nw := min(workers(), len(runs)) // no more than there are directories
	parts := spread(runs, items, nw)
	defer host.SyscallWorkers(nw)()
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < nw; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := t.cursor()
			defer c.close()
			for !failed.Load() {
				r := parts.take(w)
				if r < 0 {
					return
				}
				for i := runs[r][0]; i < runs[r][1] && !failed.Load(); i++ {
					if linkTo[i] >= 0 {
						continue // linked below, once its first name is copied
					}
					out[i] = t.createItem(c, &items[i], rec.Files[idx[items[i].path()]].Type != "", version, opt.Digest)
					if out[i].err != nil {
						failed.Store(true)
					}
				}
			}
		}()
	}
	wg.Wait()
	if !failed.Load() {
		lc, fc := t.cursor(), t.cursor()
		for i, l := range linkTo {
			if l < 0 {
				continue
			}
			le := out[l].e
			if !out[l].made {
				le = rec.Files[idx[items[l].path()]] // tagged and recorded by an earlier run
			}
			out[i] = t.linkItem(lc, fc, &items[l], &items[i], le, version, opt.Digest)
			if out[i].err != nil {
				break
			}
		}
		lc.close()
		fc.close()
	}

	// Every filesystem written to is synced before anything is recorded
	// or reported: the copies on one whose sync failed are removed first.
	written := map[uint64]string{} // a directory of each
	for i := range items {
		if out[i].made && out[i].err == nil {
			written[items[i].st.Dev] = items[i].dir
		}
	}
	serr := t.dropUnsynced(items, out, sy.sync(written))

	var failedAt *item
	var firstErr error
	done := 0
	for i := range items {
		it, o := &items[i], &out[i]
		if o.made {
			rec.Files[idx[it.path()]] = o.e
		}
		switch {
		case o.err != nil:
			if firstErr == nil {
				failedAt, firstErr = it, o.err
			}
		case it.done:
			rep.Already = append(rep.Already, it.path())
		case o.made:
			rep.Done = append(rep.Done, it.path())
			done++
			if o.linked {
				rep.Linked++
			} else if o.res.cloned {
				rep.Cloned++
			} else if o.e.Type == typeFile {
				rep.Copied++
				rep.Bytes += o.e.Size
			}
		}
	}
	// Linking moved the change time of the copies the links were made
	// to: every entry of such a copy takes the new one.
	c := t.cursor()
	ctimes := map[int]Entry{} // group -> the copy's inode and change time now
	for i, l := range linkTo {
		if l < 0 || !out[i].made {
			continue
		}
		if _, ok := ctimes[l]; ok {
			continue
		}
		d, err := c.open(items[l].dir)
		if err != nil {
			continue
		}
		if st, err := lstatAt(d, TaggedName(items[l].name)); err == nil {
			ctimes[l] = Entry{Ino: st.Ino, Ctime: st.Ctim.Nano()}
		}
	}
	c.close()
	for i, l := range group {
		if now, ok := ctimes[l]; ok {
			if e := &rec.Files[idx[items[i].path()]]; e.Ino == now.Ino {
				e.Ctime = now.Ctime
			}
		}
	}
	if firstErr != nil {
		return t.createError(failedAt, firstErr, done, len(items)-len(rep.Already))
	}
	return serr
}

// dropUnsynced removes the copies this run made on the filesystems whose
// sync failed (failed: the sync's error for each) and marks them not made.
// Their data may never reach the disk, and the kernel reports that once: a
// later sync would succeed and a rerun would take them for complete. Not
// made, their entries stay planned and they are not reported, so that a
// rerun makes them again.
func (t *Tags) dropUnsynced(items []item, out []outcome, failed map[uint64]error) error {
	if len(failed) == 0 {
		return nil
	}
	c := t.cursor()
	defer c.close()
	dropped := 0
	var cerr error
	for i := range items {
		it := &items[i]
		if !out[i].made || failed[it.st.Dev] == nil {
			continue
		}
		d, err := c.open(it.dir)
		if err == nil {
			err = unix.Unlinkat(d.fd, TaggedName(it.name), 0)
		}
		if err != nil && err != unix.ENOENT && cerr == nil {
			cerr = fmt.Errorf("cannot remove %s, a copy that may not be on disk: %v", path.Join(it.dir, TaggedName(it.name)), err)
		}
		out[i].made = false
		dropped++
	}
	err := syncErr(failed)
	if cerr != nil {
		return host.CannotRun("%v; %v", err, cerr)
	}
	return host.WithHint(host.CannotRun("%v; the %d copies made on that filesystem were removed", err, dropped),
		"run the command again once the filesystem can be written")
}

// parts hands out directory runs to workers: each worker takes from the
// front of a part of its own and, once that is done, from the back of the
// part with the most left, so that two workers meet in a part only at its
// end.
type parts struct {
	mu     sync.Mutex
	runs   []int // run indexes, in the order handed out
	lo, hi []int // part w is runs[lo[w]:hi[w]]
}

// spread orders the runs by the inode number of their first file and cuts
// them into n parts of about the same number of files, so that the workers
// work far apart in inode numbers: on xfs in different allocation groups,
// on ext4 in different block groups, on btrfs in different leaves of the
// tree, where each filesystem takes its locks.
func spread(runs [][2]int, items []item, n int) *parts {
	p := &parts{runs: make([]int, len(runs)), lo: make([]int, n), hi: make([]int, n)}
	for i := range p.runs {
		p.runs[i] = i
	}
	slices.SortStableFunc(p.runs, func(a, b int) int {
		return cmp.Compare(items[runs[a][0]].st.Ino, items[runs[b][0]].st.Ino)
	})
	w, acc := 0, 0
	for i, r := range p.runs {
		for w+1 < n && acc >= len(items)*(w+1)/n {
			p.hi[w] = i
			w++
			p.lo[w] = i
		}
		acc += runs[r][1] - runs[r][0]
	}
	for ; w < n; w++ {
		p.hi[w] = len(p.runs)
		if w+1 < n {
			p.lo[w+1] = len(p.runs)
		}
	}
	return p
}

// take gives worker w its next run, or -1 when none is left.
func (p *parts) take(w int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lo[w] < p.hi[w] {
		p.lo[w]++
		return p.runs[p.lo[w]-1]
	}
	most := -1
	for v := range p.lo {
		if left := p.hi[v] - p.lo[v]; left > 0 && (most < 0 || left > p.hi[most]-p.lo[most]) {
			most = v
		}
	}
	if most < 0 {
		return -1
	}
	p.hi[most]--
	return p.runs[p.hi[most]]
}

// hardLinks groups the names of one inode (hard links) in the set: the
// first name in the set is copied, the others are linked to that copy, so
// that a restore gives back one inode with all its names. group[i] is the
// first item of item i's inode, or -1 for an inode with one name; linkTo[i]
// is that item for a name still to tag that is not the first, or -1.
func hardLinks(items []item) (group, linkTo []int) {
	group, linkTo = make([]int, len(items)), make([]int, len(items))
	first := map[[2]uint64]int{}
	for i := range items {
		group[i], linkTo[i] = -1, -1
		it := &items[i]
		if it.st.Mode&unix.S_IFMT != unix.S_IFREG || it.st.Nlink < 2 {
			continue
		}
		k := [2]uint64{it.st.Dev, it.st.Ino}
		l, ok := first[k]
		if !ok {
			first[k], l = i, i
		}
		group[i] = l
		if l != i && !it.done {
			linkTo[i] = l
		}
	}
	return group, linkTo
}

// linkItem tags f, a hard link of l's original, by linking f's .Old.. name
// to l's copy (le is l's entry). Where the filesystem refuses another link
// (EMLINK), f gets a copy of its own.
func (t *Tags) linkItem(lc, fc *cursor, l, f *item, le Entry, version string, digest bool) outcome {
	dl, err := lc.open(l.dir)
	if err != nil {
		return outcome{err: err}
	}
	df, err := fc.open(f.dir)
	if err != nil {
		return outcome{err: err}
	}
	src, old := TaggedName(l.name), TaggedName(f.name)
	name := old
	if f.state == stateOurs {
		// An earlier copy of ours is replaced: linked as the temporary,
		// then renamed over it.
		if _, err := t.stillOurs(df, old); err != nil {
			return outcome{err: err}
		}
		name = tmpName(f.name)
		if err := removeTemp(df, name); err != nil {
			return outcome{err: err}
		}
	}
	if err := unix.Linkat(dl.fd, src, df.fd, name, 0); err != nil {
		if err == unix.EMLINK {
			e, res, err := t.createOne(df, f, version, digest)
			return outcome{e: e, res: res, made: err == nil, err: err}
		}
		if err == unix.EEXIST {
			return outcome{err: fmt.Errorf("%s appeared while the copies were made (left alone)", df.hostPath(name))}
		}
		return outcome{err: fmt.Errorf("cannot link %s to %s: %w", df.hostPath(name), dl.hostPath(src), err)}
	}
	if name != old {
		if err := unix.Renameat(df.fd, name, df.fd, old); err != nil {
			unix.Unlinkat(df.fd, name, 0)
			return outcome{err: fmt.Errorf("cannot rename %s to %s: %w", name, old, err)}
		}
	}
	st, err := lstatAt(df, old)
	if err != nil {
		return outcome{err: err}
	}
	if le.Ino != 0 && st.Ino != le.Ino {
		return outcome{err: fmt.Errorf("%s changed while the copies were made", dl.hostPath(src))}
	}
	e := le
	e.Path = f.path()
	e.Ino, e.Ctime = st.Ino, st.Ctim.Nano()
	e.Created = true
	return outcome{e: e, made: true, linked: true}
}

// createItem tags one item: a copy, or for one already tagged by an
// interrupted run, its entry (recorded says the record has it already).
func (t *Tags) createItem(c *cursor, it *item, recorded bool, version string, digest bool) outcome {
	if it.done && recorded {
		return outcome{}
	}
	d, err := c.open(it.dir)
	if err != nil {
		return outcome{err: err}
	}
	if it.done {
		e, err := t.describe(d, it, digest)
		return outcome{e: e, made: err == nil, err: err}
	}
	e, res, err := t.createOne(d, it, version, digest)
	return outcome{e: e, res: res, made: err == nil, err: err}
}

// syncer syncs each filesystem written to once, at the end (syncfs, what
// sync does), so that what was written is on disk before the record says
// it exists. syncfs reports a writeback error only to a descriptor opened
// before the error happened (the kernel samples the filesystem's error
// state when a file is opened), so a filesystem's descriptor is opened
// before anything is written to it: the writeback of a copy that failed
// while later copies were still being made (create starts a large copy's
// writeback at once) is reported too, not only what fails during the sync.
type syncer struct {
	t    *Tags
	dirs map[uint64]*dir
}

func (t *Tags) syncer() *syncer { return &syncer{t: t, dirs: map[uint64]*dir{}} }

// watch opens directory p, of filesystem dev, to sync that filesystem
// later; only the first directory of a filesystem that opens is kept (one
// that cannot be opened is left to the work on it to report).
func (s *syncer) watch(dev uint64, p string) {
	if s.dirs[dev] != nil {
		return
	}
	if d, err := s.t.openDir(p); err == nil {
		s.dirs[dev] = d
	}
}

// sync syncs the filesystems written (a directory of each) and gives the
// error of each that failed. A filesystem none of whose directories could
// be watched is opened now, through the directory given.
func (s *syncer) sync(written map[uint64]string) map[uint64]error {
	failed := map[uint64]error{}
	for dev, p := range written {
		d := s.dirs[dev]
		if d == nil {
			var err error
			if d, err = s.t.openDir(p); err != nil {
				failed[dev] = fmt.Errorf("cannot sync %s: %v", p, err)
				continue
			}
			s.dirs[dev] = d
		}
		if err := unix.Syncfs(d.fd); err != nil {
			failed[dev] = fmt.Errorf("cannot sync the filesystem of %s: %v", d.host, err)
		}
	}
	return failed
}

// syncErr is one of the sync's errors, as a cannot-run error.
func syncErr(failed map[uint64]error) error {
	for _, err := range failed {
		return host.CannotRun("%v", err)
	}
	return nil
}

func (s *syncer) close() {
	for _, d := range s.dirs {
		d.close()
	}
}

func (t *Tags) createError(it *item, err error, done, total int) error {
	what := fmt.Sprintf("cannot tag %s: %v (%d of %d files tagged by this run)", it.path(), err, done, total)
	hint := "fix the cause and run the same command again to complete the set, or 'upgradectl tag clean' to drop it"
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		hint = "free some space on that filesystem and run the same command again, or 'upgradectl tag clean' to drop the set"
	}
	return host.WithHint(host.CannotRun("%s", what), hint)
}

// describe records an existing tagged copy (left by an interrupted run and
// found complete) in an entry.
func (t *Tags) describe(d *dir, it *item, digest bool) (Entry, error) {
	e := entryOf(it.path(), &it.st)
	ost, err := lstatAt(d, TaggedName(it.name))
	if err != nil {
		return e, err
	}
	e.Ino, e.Ctime = ost.Ino, ost.Ctim.Nano()
	if digest || e.Type == typeSymlink {
		if e.Digest, err = t.digest(d, TaggedName(it.name), e.Type); err != nil {
			return e, host.CannotRun("cannot read %s: %v", d.hostPath(TaggedName(it.name)), err)
		}
	}
	return e, nil
}

// digest is the digest of the content of name in d (of a symlink's target).
func (t *Tags) digest(d *dir, name, typ string) (string, error) {
	if typ == typeSymlink {
		target, err := readlinkAt(d, name)
		if err != nil {
			return "", err
		}
		return sumString(target), nil
	}
	f, err := openAt(d, name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return sumFile(f)
}

func entryOf(p string, st *unix.Stat_t) Entry {
	e := Entry{Path: p, Type: typeFile, Size: st.Size, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano()}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		e.Type = typeSymlink
	}
	return e
}

// createOne makes the tagged copy of it and puts it in place complete:
// data (a clone where possible), owner, mode, extended attributes, the
// version attribute, then timestamps. The copy gets its .Old.. name only
// when complete: a regular file is copied into an unnamed file (O_TMPFILE)
// that is then linked in, or, where that costs more than a temporary name
// (see unnamedFor) or the filesystem has no O_TMPFILE, it is written under
// the temporary name and renamed, as a symlink always is. A crash leaves no
// .Old.. file incomplete, at most a temporary that the next run removes. A
// name taken since prepare is never replaced: the link and the rename both
// refuse to.
func (t *Tags) createOne(d *dir, it *item, version string, digest bool) (Entry, copyResult, error) {
	var res copyResult
	tmp := tmpName(it.name)
	old := TaggedName(it.name)
	// An earlier copy of ours (left by a power cut) is replaced: it must
	// still be ours.
	if it.state == stateOurs {
		state, err := t.stillOurs(d, old)
		if err != nil {
			return Entry{}, res, err
		}
		it.state = state
	}
	named := false // the copy is at tmp
	defer func() {
		if named {
			unix.Unlinkat(d.fd, tmp, 0)
		}
	}()
	// atTmp makes tmp with create. A temporary found there (left by an
	// interrupted run; the name is kept for ours) is removed first.
	atTmp := func(create func() error) error {
		named = true
		err := create()
		if err == unix.EEXIST {
			if err = removeTemp(d, tmp); err == nil {
				err = create()
			}
		}
		return err
	}
	var (
		st   = it.st
		made *os.File // the complete copy of a regular file, at tmp when named, else unnamed
		err  error
	)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		made, res, err = t.copyFile(d, it.name, tmp, &st, version, digest, atTmp)
	case unix.S_IFLNK:
		if st, err = lstatAt(d, it.name); err == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			err = errors.New("the file changed while it was being tagged (run the command again)")
		}
		if err == nil {
			res, err = t.copySymlink(d, it.name, tmp, &st, version, atTmp)
		}
	default:
		err = errors.New("not a regular file or symlink")
	}
	if made != nil {
		defer made.Close()
	}
	if err != nil {
		return Entry{}, res, err
	}
	if made != nil && !named {
		name := old
		if it.state == stateOurs {
			// Linked as the temporary, then renamed over the old copy.
			err = atTmp(func() error { return linkUnnamed(d, made, tmp, t.procOK) })
			name = tmp
		} else {
			err = linkUnnamed(d, made, old, t.procOK)
		}
		if err != nil {
			named = false // nothing of ours is at the name
			if err == unix.EEXIST {
				return Entry{}, res, fmt.Errorf("%s appeared while the copy was made (left alone)", d.hostPath(name))
			}
			return Entry{}, res, fmt.Errorf("cannot link the copy as %s: %w", d.hostPath(name), err)
		}
	}
	if named {
		if it.state == stateOurs {
			err = unix.Renameat(d.fd, tmp, d.fd, old)
		} else {
			err = unix.Renameat2(d.fd, tmp, d.fd, old, unix.RENAME_NOREPLACE)
		}
		if err != nil {
			return Entry{}, res, fmt.Errorf("cannot rename %s to %s: %w", tmp, old, err)
		}
		named = false
	}
	// The inode and its change time after it got its name, for check.
	var placed unix.Stat_t
	if made != nil {
		err = unix.Fstat(int(made.Fd()), &placed)
	} else {
		placed, err = lstatAt(d, old)
	}
	e := entryOf(it.path(), &st)
	e.Cloned = res.cloned
	e.Digest = res.sum
	if err == nil {
		e.Ino, e.Ctime = placed.Ino, placed.Ctim.Nano()
	}
	e.Created = true
	return e, res, nil
}

// unnamedFor says whether copies in d are made as unnamed files (O_TMPFILE)
// and linked in, rather than under the temporary name and renamed: both put
// a copy in place complete. It is decided once a filesystem. On btrfs the
// unnamed file is quicker; on xfs and ext4 the temporary name is, because
// an unnamed file goes on a list that every worker updates under one lock
// when it is made and again when it is linked (xfs: the allocation group's
// unlinked list; ext4: the orphan list in the superblock), where a rename
// stays in its directory (10,000 clones or copies, two workers, medians of
// five: xfs 315 ms against 354, ext4 750 against 829, btrfs 568 against
// 750 the other way). Other filesystems keep the unnamed file, which leaves
// nothing behind a crash.
func (t *Tags) unnamedFor(d *dir) bool {
	if v, ok := t.unnamed.Load(d.st.Dev); ok {
		return v.(bool)
	}
	use := true
	var fs unix.Statfs_t
	if unix.Fstatfs(d.fd, &fs) == nil {
		switch fs.Type {
		case unix.XFS_SUPER_MAGIC, unix.EXT4_SUPER_MAGIC: // ext2, ext3 and ext4 share it
			use = false
		}
	}
	t.unnamed.Store(d.st.Dev, use)
	return use
}

// earlyWriteback is the size from which a data copy's writeback is started
// as soon as it is made. Smaller copies are left to the final syncfs, which
// writes them out together (BenchmarkCreateUsr/ext4: about 8% quicker than
// starting every copy's writeback, 1 MiB about 50% slower).
const earlyWriteback = 64 << 10

// euid and egid own the files this process creates (but in a set-group-ID
// directory).
var euid, egid = uint32(os.Geteuid()), uint32(os.Getegid())

// copyFile copies the regular file name in d (st is what the walk saw; it
// becomes what the copy was made from) into a new file, returned open: an
// unnamed one, or at tmp, made through atTmp, where unnamedFor says so or
// the filesystem has no O_TMPFILE. The copy is complete either way.
func (t *Tags) copyFile(d *dir, name, tmp string, st *unix.Stat_t, version string, digest bool, atTmp func(func() error) error) (made *os.File, res copyResult, err error) {
	src, err := openAt(d, name)
	if err != nil {
		return nil, res, err
	}
	defer src.Close()
	var sst unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &sst); err != nil {
		return nil, res, err
	}
	if sst.Ino != st.Ino || sst.Dev != st.Dev {
		return nil, res, errors.New("the file changed while it was being tagged (run the command again)")
	}
	*st = sst
	// Where the owner is ours the copy is made with the original's
	// permissions, so that chmod is needed only for set-id bits (or a
	// umask); otherwise it is private until its owner is set.
	perm := uint32(0o600)
	if st.Uid == euid && st.Gid == egid {
		perm = st.Mode & 0o777
	}
	fd := -1
	if t.unnamedFor(d) {
		fd, err = unix.Openat(d.fd, ".", unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, perm)
		if err == unix.EOPNOTSUPP || err == unix.EISDIR || err == unix.EINVAL {
			// No O_TMPFILE on this filesystem.
			t.unnamed.Store(d.st.Dev, false)
		} else if err != nil {
			return nil, res, err
		}
	}
	if fd < 0 {
		err = atTmp(func() (err error) {
			fd, err = unix.Openat(d.fd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
			return err
		})
		if err != nil {
			return nil, res, err
		}
	}
	dst := os.NewFile(uintptr(fd), d.hostPath(tmp))
	if err = t.fillCopy(dst, src, st, version, digest, &res); err != nil {
		dst.Close()
		return nil, res, err
	}
	return dst, res, nil
}

// fillCopy gives dst the content, owner, mode, attributes and timestamps of
// src (whose stat is st) and the version attribute.
func (t *Tags) fillCopy(dst, src *os.File, st *unix.Stat_t, version string, digest bool, res *copyResult) (err error) {
	fd := int(dst.Fd())
	// The digest is read from the original, whose pages are the ones
	// likely cached; that it did not change until the copy was made is
	// checked after.
	if digest {
		if res.sum, err = sumFile(src); err != nil {
			return err
		}
	}
	if res.cloned, err = copyData(dst, src, st); err != nil {
		return err
	}
	if !res.cloned && st.Size >= earlyWriteback {
		// Start writing the copied pages out now, as the kernel does for
		// a large cp on its own: the syncfs before the record is written
		// then finds little left to do, instead of a whole tree's worth of
		// dirty pages at once. Only a hint (it does not wait); the syncfs
		// still makes the copy durable and reports any write error.
		_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &after); err != nil {
		return err
	}
	if after.Mtim != st.Mtim || after.Ctim != st.Ctim || after.Size != st.Size {
		return errors.New("the file changed while it was being tagged (run the command again)")
	}
	// Owner first: chown clears set-id bits and capabilities, which the
	// chmod and the attribute copy then put back. Each is left out where
	// the new file has it already (each is a transaction of its own).
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return err
	}
	if now.Uid != st.Uid || now.Gid != st.Gid {
		if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		now.Mode = 0 // chmod again, whatever chown cleared
	}
	if now.Mode&0o7777 != st.Mode&0o7777 {
		if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
			return err
		}
	}
	if err := copyXattrs(fileXattrs(dst), fileXattrs(src), t.attr); err != nil {
		return err
	}
	if err := xattr.FSet(dst, t.attr, []byte(version)); err != nil {
		return t.attrError(err)
	}
	if err := futimens(fd, timespecs(st)); err != nil {
		return err
	}
	return nil
}

func (t *Tags) copySymlink(d *dir, name, tmp string, st *unix.Stat_t, version string, atTmp func(func() error) error) (copyResult, error) {
	var res copyResult
	target, err := readlinkAt(d, name)
	if err != nil {
		return res, err
	}
	res.sum = sumString(target)
	if err := atTmp(func() error { return unix.Symlinkat(target, d.fd, tmp) }); err != nil {
		return res, err
	}
	if err := unix.Fchownat(d.fd, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return res, err
	}
	if err := copyXattrs(pathXattrs(t.at(d, tmp)), pathXattrs(t.at(d, name)), t.attr); err != nil {
		return res, err
	}
	if err := xattr.LSet(t.at(d, tmp), t.attr, []byte(version)); err != nil {
		return res, t.attrError(err)
	}
	if err := unix.UtimesNanoAt(d.fd, tmp, timespecs(st), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return res, err
	}
	return res, nil
}

// attrError explains a refused version attribute.
func (t *Tags) attrError(err error) error {
	err = errors.Unwrap(err)
	switch {
	case errors.Is(err, unix.ENOTSUP):
		return fmt.Errorf("the filesystem does not support the attribute %s", t.attr)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("the filesystem refuses the attribute %s (%v; trusted.* needs root, user.* cannot be set on symlinks)", t.attr, err)
	}
	return fmt.Errorf("cannot set the attribute %s: %w", t.attr, err)
}

// splitHost splits an absolute host path into its directory and name.
func splitHost(p string) (string, string) {
	i := strings.LastIndexByte(p, '/')
	switch {
	case i < 0:
		return "/", p
	case i == 0:
		return "/", p[1:]
	}
	return p[:i], p[i+1:]
}
