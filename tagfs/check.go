package tagfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// Problem is something wrong with one tagged file.
type Problem struct {
	Path    string `json:"path"` // the tagged copy
	Problem string `json:"problem"`
}

// CheckReport is the result of Check.
type CheckReport struct {
	Version string `json:"version,omitempty"`
	Checked int    `json:"checked"`
	Content bool   `json:"content"` // contents were checked
	// ByCtime counts the copies whose content was checked by their inode
	// change time only (no digest recorded: tag create --digest).
	ByCtime  int       `json:"by_ctime,omitempty"`
	Problems []Problem `json:"problems"`
}

// Check verifies that every tagged file of the record exists, is what was
// tagged (type, size, owner, mode) and carries the record's version; with
// content, that its content still has the digest taken when it was tagged,
// or, where none was taken, that its inode change time has not moved.
// Problems are reported in the CheckReport and as a KindBad error.
func (t *Tags) Check(content bool) (*CheckReport, error) {
	rec, err := t.Load()
	if err != nil {
		return nil, err
	}
	rep := &CheckReport{Version: rec.Version, Content: content}
	c := t.cursor()
	defer c.close()
	for _, e := range rec.Files {
		rep.Checked++
		if msg := t.checkOne(c, rec, e, content, rep); msg != "" {
			rep.Problems = append(rep.Problems, Problem{Path: e.Tagged(), Problem: msg})
		}
	}
	if n := len(rep.Problems); n > 0 {
		return rep, host.Bad("tagged files: %d of %d have problems", n, rep.Checked)
	}
	return rep, nil
}

func (t *Tags) checkOne(c *cursor, rec *Record, e Entry, content bool, rep *CheckReport) string {
	dp, name := splitHost(e.Path)
	d, err := c.open(dp)
	if err != nil {
		return err.Error()
	}
	old := TaggedName(name)
	if _, err := lstatAt(d, tmpName(name)); err == nil {
		return "a temporary file of an interrupted run is left: run the same 'tag create' again or 'tag clean'"
	}
	if e.Type == "" {
		return "not created yet: 'tag create' was interrupted, run it again"
	}
	state, v, err := t.taggedState(d, old)
	switch {
	case err != nil:
		return err.Error()
	case state == stateAbsent:
		return "missing"
	case state == stateForeign:
		return fmt.Sprintf("has no %s attribute", t.attr)
	case state == stateLeftover:
		return "is only another link to the original (an interrupted restore): 'tag restore' or 'tag clean' removes it"
	case v != rec.Version:
		return fmt.Sprintf("carries version %q, the record says %q", v, rec.Version)
	}
	st, err := lstatAt(d, old)
	if err != nil {
		return err.Error()
	}
	var diffs []string
	if st.Mode != e.Mode {
		diffs = append(diffs, fmt.Sprintf("mode %o (was %o)", st.Mode, e.Mode))
	}
	if st.Uid != e.UID || st.Gid != e.GID {
		diffs = append(diffs, fmt.Sprintf("owner %d:%d (was %d:%d)", st.Uid, st.Gid, e.UID, e.GID))
	}
	if st.Size != e.Size {
		diffs = append(diffs, fmt.Sprintf("size %d (was %d)", st.Size, e.Size))
	}
	if len(diffs) > 0 {
		return "changed: " + strings.Join(diffs, ", ")
	}
	if !content {
		return ""
	}
	if e.Digest == "" {
		// No digest: nothing may have changed the copy through the
		// filesystem since it was put in place.
		rep.ByCtime++
		if e.Ctime != 0 && (st.Ino != e.Ino || st.Ctim.Nano() != e.Ctime) {
			return "changed since it was tagged (its inode change time moved)"
		}
		return ""
	}
	sum, err := t.digest(d, old, e.Type)
	if err != nil {
		return err.Error()
	}
	if sum != e.Digest {
		return "content changed since it was tagged"
	}
	return ""
}

// Found is a file found by Scan.
type Found struct {
	Path     string `json:"path"`               // host path of the .Old.. file
	Original string `json:"original,omitempty"` // what it stands for
	Version  string `json:"version,omitempty"`  // its attribute ("" when not ours)
	Ours     bool   `json:"ours"`               // carries our attribute
	Temp     bool   `json:"temp,omitempty"`     // a temporary file of an interrupted run
}

// Scan finds the .Old.. files and temporaries below the host directory
// root (symlinks are not followed, other filesystems are not entered): for
// rescue use, when the record is lost.
func (t *Tags) Scan(root string) ([]Found, error) {
	d, err := t.openResolved(root)
	if err != nil {
		return nil, host.Bad("cannot scan %s: %v", root, err)
	}
	defer d.close()
	var out []Found
	var probs problems
	t.scanDir(d, d.st.Dev, &out, &probs)
	if len(probs) > 0 {
		return out, probs.err("scan")
	}
	return out, nil
}

func (t *Tags) scanDir(d *dir, dev uint64, out *[]Found, probs *problems) {
	ents, err := d.f.ReadDir(-1)
	if err != nil {
		probs.add("%s: %v", d.host, errors.Unwrap(err))
		return
	}
	for _, de := range ents {
		n := de.Name()
		if de.Type() == fs.ModeDir {
			sd, err := openSubdir(d, n)
			if err != nil {
				probs.add("%s: %v", d.hostPath(n), err)
				continue
			}
			if sd.st.Dev == dev {
				t.scanDir(sd, dev, out, probs)
			}
			sd.close()
			continue
		}
		if !strings.HasPrefix(n, Prefix) {
			continue
		}
		f := Found{Path: d.hostPath(n)}
		if IsTemp(n) {
			f.Temp = true
			if orig := strings.TrimSuffix(strings.TrimPrefix(n, Prefix), tmpSuffix); tmpName(orig) == n {
				f.Original = d.hostPath(orig)
			}
			*out = append(*out, f)
			continue
		}
		f.Original = d.hostPath(strings.TrimPrefix(n, Prefix))
		v, ok, err := t.getAttr(d, n)
		if err != nil && err != unix.ENOTSUP {
			probs.add("%s: %v", f.Path, err)
			continue
		}
		f.Version, f.Ours = v, ok
		*out = append(*out, f)
	}
}

// openResolved opens the directory at an operator's host path: symlinks on
// the way are followed inside the root, the directory itself must not be
// one.
func (t *Tags) openResolved(p string) (*dir, error) {
	if path.Clean("/"+p) == "/" {
		return t.openDir("/")
	}
	dp, name, err := t.resolve(p)
	if err != nil {
		return nil, err
	}
	parent, err := t.openDir(dp)
	if err != nil {
		return nil, err
	}
	defer parent.close()
	return openSubdir(parent, name)
}
