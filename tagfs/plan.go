package tagfs

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// item is one file to tag: a name in a directory (host paths, resolved).
type item struct {
	dir   string
	name  string
	hp    string // dir/name, made once: every step looks items up by it
	st    unix.Stat_t
	done  bool // already tagged with this version
	state int  // of the .Old.. name when planned: stateAbsent or stateOurs
	// untagged: the walk's listing of the directory had no .Old.. name for
	// it, so prepare need not look (one taken since is refused by the
	// link that puts the copy in place).
	untagged bool
}

func (it item) path() string {
	if it.hp != "" {
		return it.hp
	}
	return path.Join(it.dir, it.name)
}

// problems collects every problem of an input before anything is done.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err(what string) error {
	if len(p) == 0 {
		return nil
	}
	if len(p) == 1 {
		return host.Bad("cannot %s %s", what, p[0])
	}
	const show = 10
	msg := strings.Join(p[:min(len(p), show)], "; ")
	if len(p) > show {
		msg += fmt.Sprintf("; and %d more", len(p)-show)
	}
	return host.Bad("cannot %s %d paths: %s", what, len(p), msg)
}

// resolve turns an operator's host path into the resolved host path of its
// parent directory and its name: symlinks in the directories are followed
// inside the root (as the system under the root sees them), the name is not.
func (t *Tags) resolve(p string) (dirPath, name string, err error) {
	if !strings.HasPrefix(p, "/") {
		return "", "", fmt.Errorf("%s: not an absolute path", p)
	}
	real, err := t.root.ResolveParent(p)
	if err != nil {
		return "", "", fmt.Errorf("%s: %v", p, errors.Unwrap(err))
	}
	hp, err := t.root.Rel(real)
	if err != nil {
		return "", "", fmt.Errorf("%s: %v", p, err)
	}
	if hp == "/" {
		return "", "", fmt.Errorf("%s: is the root", p)
	}
	return path.Dir(hp), path.Base(hp), nil
}

// resolveIn is resolve that resolves each parent directory once: parents
// maps the parents (as given) of the clean paths resolved so far to their
// resolved host paths. The name is not looked at in resolving, so paths
// with the same parent have the same resolved directory.
func (t *Tags) resolveIn(p string, parents map[string]string) (dirPath, name string, err error) {
	clean := strings.HasPrefix(p, "/") && p != "/" && path.Clean(p) == p
	if clean {
		parent, base := path.Split(p)
		if dp, ok := parents[parent]; ok {
			return dp, base, nil
		}
		if dirPath, name, err = t.resolve(p); err == nil && name == base {
			parents[parent] = dirPath
		}
		return dirPath, name, err
	}
	return t.resolve(p)
}

// expand plans the files to tag for the given host paths: a directory
// stands for the regular files and symlinks below it (on the same
// filesystem, tagged copies and temporaries left out). Every problem is
// reported together.
func (t *Tags) expand(paths []string, force bool) ([]item, error) {
	var probs problems
	var items []item
	seen := map[string]bool{}
	checked := map[string]bool{}
	// checkDir says whether copies can be made in the directory at host
	// path dp (stat st, immutable or append-only flag locked).
	checkDir := func(dp string, st *unix.Stat_t, locked string) bool {
		if checked[dp] {
			return true
		}
		if who := writableByOthers(st); who != "" && !force {
			probs.add("in %s: the directory is writable by %s (use --force to tag there anyway)", dp, who)
			return false
		}
		if locked != "" {
			probs.add("in %s: the directory is %s: no tagged copy can be made or put back there", dp, locked)
			return false
		}
		checked[dp] = true
		return true
	}
	// add plans name in the directory at host path dp; locked is its
	// immutable or append-only flag.
	add := func(dp, name string, st unix.Stat_t, locked string, untagged bool) {
		p := path.Join(dp, name)
		if seen[p] {
			return
		}
		seen[p] = true
		if st.Mode&unix.S_IFMT == unix.S_IFREG && locked != "" {
			probs.add("%s: the file is %s: the upgrade could not replace it, nor a backout put it back", p, locked)
			return
		}
		items = append(items, item{dir: dp, name: name, hp: p, st: st, untagged: untagged})
	}
	// A list of files (--list, --iso) names many in one directory: each
	// directory is resolved and opened once for a run of them.
	c := t.cursor()
	defer c.close()
	parents := map[string]string{} // a path's parent as given -> resolved
	for _, p := range paths {
		dp, name, err := t.resolveIn(p, parents)
		if err != nil {
			probs.add("%v", err)
			continue
		}
		if strings.HasPrefix(name, Prefix) {
			probs.add("%s: is a tagged copy itself", p)
			continue
		}
		if strings.HasSuffix(name, tmpSuffix) {
			probs.add("%s: the name ends in %s, kept for temporary files", p, tmpSuffix)
			continue
		}
		d, err := c.open(dp)
		if err != nil {
			probs.add("%s: %v", p, err)
			continue
		}
		st, locked, err := statxAt(d, name)
		switch {
		case err != nil:
			probs.add("%s: %v", p, err)
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			sub, err := openSubdir(d, name)
			if err != nil {
				probs.add("%s: %v", p, err)
				break
			}
			done := host.SyscallWorkers(workers())
			tree := t.readTree(sub, st.Dev, make(chan struct{}, workers()-1))
			done()
			sub.close()
			tree.walk(func(w *walked) bool {
				ok := checkDir(w.host, &w.st, w.locked)
				if !ok {
					probs.add("in %s: stopped there", w.host)
				}
				return ok
			}, add, &probs)
		case st.Mode&unix.S_IFMT == unix.S_IFREG, st.Mode&unix.S_IFMT == unix.S_IFLNK:
			if checked[d.host] || checkDir(d.host, &d.st, lockedFlag(d.fd, "")) {
				add(d.host, name, st, locked, false)
			}
		default:
			probs.add("%s: not a regular file, symlink or directory", p)
		}
	}
	if len(probs) > 0 {
		// One line per directory refusal is enough.
		return nil, dedupe(probs).err("tag")
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].dir != items[j].dir {
			return items[i].dir < items[j].dir
		}
		return items[i].name < items[j].name
	})
	return items, nil
}

func dedupe(p problems) problems {
	seen := map[string]bool{}
	var out problems
	for _, s := range p {
		if strings.HasSuffix(s, ": stopped there") {
			continue
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// openSubdir opens directory name in d without following a symlink.
func openSubdir(d *dir, name string) (*dir, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ELOOP || err == unix.ENOTDIR {
			return nil, host.ErrSymlinkOnWay
		}
		return nil, err
	}
	sd := newDir(fd, d.hostPath(name), d.real+"/"+name)
	if err := unix.Fstat(fd, &sd.st); err != nil {
		sd.close()
		return nil, err
	}
	return sd, nil
}

// walked is a directory read by readTree, what the walk needs of it.
type walked struct {
	host    string
	st      unix.Stat_t
	locked  string // its immutable or append-only flag
	entries []walkedEntry
}

// walkedEntry is a regular file or symlink in a walked directory, a
// directory below it, or a problem found there.
type walkedEntry struct {
	name     string
	st       unix.Stat_t
	locked   string
	untagged bool    // the directory has no .Old.. name for it
	sub      *walked // a directory below
	prob     string
}

// readTree reads d and the directories below it on device dev (not the
// state directory), in name order, skipping tagged copies and
// temporaries. Directories below are read on up to cap(sem) more
// goroutines (a walk is one statx a file, work that runs in parallel).
func (t *Tags) readTree(d *dir, dev uint64, sem chan struct{}) *walked {
	w := &walked{host: d.host, st: d.st, locked: lockedFlag(d.fd, "")}
	prob := func(format string, args ...any) {
		w.entries = append(w.entries, walkedEntry{prob: fmt.Sprintf(format, args...)})
	}
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		prob("%s: %v", d.host, errors.Unwrap(err))
		return w
	}
	sort.Strings(names)
	var tagged map[string]bool // the .Old.. names here, usually none
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			if tagged == nil {
				tagged = map[string]bool{}
			}
			tagged[n] = true
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, n := range names {
		if strings.HasPrefix(n, Prefix) {
			continue
		}
		if strings.HasSuffix(n, tmpSuffix) {
			prob("%s: the name ends in %s, kept for temporary files", d.hostPath(n), tmpSuffix)
			continue
		}
		st, locked, err := statxAt(d, n)
		if err != nil {
			if err != unix.ENOENT {
				prob("%s: %v", d.hostPath(n), err)
			}
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFLNK:
			w.entries = append(w.entries, walkedEntry{name: n, st: st, locked: locked, untagged: !tagged[TaggedName(n)]})
		case unix.S_IFDIR:
			if st.Dev != dev || d.real+"/"+n == t.stateDir {
				continue // another filesystem mounted here, or our own state
			}
			sd, err := openSubdir(d, n)
			if err != nil {
				prob("%s: %v", d.hostPath(n), err)
				continue
			}
			sub := new(walked)
			w.entries = append(w.entries, walkedEntry{sub: sub})
			select {
			case sem <- struct{}{}:
				wg.Add(1)
				go func() {
					defer wg.Done()
					*sub = *t.readTree(sd, dev, sem)
					sd.close()
					<-sem
				}()
			default:
				*sub = *t.readTree(sd, dev, sem)
				sd.close()
			}
		}
	}
	return w
}

// walk calls file for every regular file and symlink of the tree read, in
// name order, and adds the problems found reading it. enter decides
// whether a directory is walked.
func (w *walked) walk(enter func(*walked) bool, file func(dir, name string, st unix.Stat_t, locked string, untagged bool), probs *problems) {
	if !enter(w) {
		return
	}
	for _, e := range w.entries {
		switch {
		case e.prob != "":
			*probs = append(*probs, e.prob)
		case e.sub != nil:
			e.sub.walk(enter, file, probs)
		default:
			file(w.host, e.name, e.st, e.locked, e.untagged)
		}
	}
}
