package iso

import (
	"encoding/binary"
	"time"
)

// A small ISO 9660 + Rock Ridge writer for tests: it writes exactly the
// names, targets, modes and locations it is given, hostile or corrupt, which
// xorriso would refuse or repair.

// tnode is one file of a test image.
type tnode struct {
	name   string // Rock Ridge name (NM); the ISO identifier too unless id is set
	id     string
	mode   uint32 // POSIX mode with its type; 0 means 0644 file or 0755 directory
	data   []byte
	target string // symlink target, written as SL components
	kids   []*tnode
	uid    uint32
	gid    uint32
	mtime  time.Time
	// Corruptions: the extent location (blocks) and data length written
	// instead of the real ones, when not zero.
	loc, size uint32

	// layout
	su     [][]byte // system use entries
	inRec  int      // how many fit in the record, the rest go to a CE area
	ce     uint32   // block of the continuation area
	at     uint32   // data or directory block
	length uint32   // data or directory length
}

func (n *tnode) isDir() bool {
	return n.mode&0o170000 == 0o040000 || (n.mode == 0 && n.kids != nil)
}

// dir and file make nodes.
func tdir(name string, kids ...*tnode) *tnode {
	return &tnode{name: name, mode: 0o040755, kids: append([]*tnode{}, kids...)}
}
func tfile(name, data string) *tnode { return &tnode{name: name, mode: 0o100644, data: []byte(data)} }
func tlink(name, target string) *tnode {
	return &tnode{name: name, mode: 0o120777, target: target}
}

func both32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

func both16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func suEntry(sig string, data ...byte) []byte {
	return append([]byte{sig[0], sig[1], byte(4 + len(data)), 1}, data...)
}

// rrEntries are the Rock Ridge entries of n (without NM for "." records).
func rrEntries(n *tnode, withName bool) [][]byte {
	px := make([]byte, 40)
	both32(px[0:], n.mode)
	both32(px[8:], 1)
	both32(px[16:], n.uid)
	both32(px[24:], n.gid)
	out := [][]byte{suEntry("PX", px...)}
	out = append(out, suEntry("TF", append([]byte{0x02}, recDate(n.mtime)...)...))
	if withName {
		// NM entries of at most 200 bytes each, CONTINUE on all but the last.
		name := []byte(n.name)
		for len(name) > 200 {
			out = append(out, suEntry("NM", append([]byte{1}, name[:200]...)...))
			name = name[200:]
		}
		out = append(out, suEntry("NM", append([]byte{0}, name...)...))
	}
	if n.mode&0o170000 == 0o120000 {
		var comps []byte
		t := n.target
		if len(t) > 0 && t[0] == '/' {
			comps = append(comps, 0x08, 0)
			t = t[1:]
		}
		for _, c := range splitSlash(t) {
			switch c {
			case ".":
				comps = append(comps, 0x02, 0)
			case "..":
				comps = append(comps, 0x04, 0)
			default:
				comps = append(comps, 0, byte(len(c)))
				comps = append(comps, c...)
			}
		}
		out = append(out, suEntry("SL", append([]byte{0}, comps...)...))
	}
	return out
}

func splitSlash(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '/' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func recDate(t time.Time) []byte {
	if t.IsZero() {
		t = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	t = t.UTC()
	return []byte{byte(t.Year() - 1900), byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second()), 0}
}

// recLen is the length of n's record with the entries that fit in it.
func (n *tnode) idBytes() []byte {
	if n.id != "" {
		return []byte(n.id)
	}
	if len(n.name) > 64 {
		return []byte(n.name[:64])
	}
	return []byte(n.name)
}

func baseLen(id []byte) int {
	l := 33 + len(id)
	if len(id)%2 == 0 {
		l++
	}
	return l
}

// plan decides which system use entries stay in the record.
func (n *tnode) plan(rr bool) {
	if rr {
		n.su = rrEntries(n, true)
	}
	base := baseLen(n.idBytes())
	total := base
	for _, e := range n.su {
		total += len(e)
	}
	n.inRec = len(n.su)
	if total <= 255 {
		return
	}
	l := base + 28 // the CE entry
	n.inRec = 0
	for _, e := range n.su {
		if l+len(e) > 255 {
			break
		}
		l += len(e)
		n.inRec++
	}
}

func (n *tnode) recLen() int {
	l := baseLen(n.idBytes())
	for _, e := range n.su[:n.inRec] {
		l += len(e)
	}
	if n.inRec < len(n.su) {
		l += 28
	}
	return l
}

func (n *tnode) ceData() []byte {
	var b []byte
	for _, e := range n.su[n.inRec:] {
		b = append(b, e...)
	}
	return b
}

// trecord writes a directory record.
func trecord(id []byte, loc, size uint32, flags byte, date []byte, su []byte) []byte {
	b := make([]byte, baseLen(id), baseLen(id)+len(su))
	both32(b[2:], loc)
	both32(b[10:], size)
	copy(b[18:25], date)
	b[25] = flags
	both16(b[28:], 1)
	b[32] = byte(len(id))
	copy(b[33:], id)
	b = append(b, su...)
	b[0] = byte(len(b))
	return b
}

// dotSU is the system use of a directory's "." record (SP first in the root).
func dotSU(n *tnode, root, rr bool) []byte {
	if !rr {
		return nil
	}
	var b []byte
	if root {
		b = append(b, suEntry("SP", 0xBE, 0xEF, 0)...)
	}
	for _, e := range rrEntries(n, false) {
		b = append(b, e...)
	}
	return b
}

// buildISO writes an image of the tree under root.
func buildISO(root *tnode, rr bool) []byte {
	if root.mode == 0 {
		root.mode = 0o040755
	}
	// Breadth first: directories, then continuation areas, then data.
	var dirs, all []*tnode
	queue := []*tnode{root}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n.mode == 0 {
			if n.kids != nil {
				n.mode = 0o040755
			} else {
				n.mode = 0o100644
			}
		}
		n.plan(rr)
		all = append(all, n)
		if n.isDir() {
			dirs = append(dirs, n)
			queue = append(queue, n.kids...)
		}
	}
	next := uint32(18)
	for _, d := range dirs {
		dot := 34 + len(dotSU(d, d == root, rr))
		size, inSec := 0, 0
		for _, l := range append([]int{dot, 34}, func() []int {
			var ls []int
			for _, k := range d.kids {
				ls = append(ls, k.recLen())
			}
			return ls
		}()...) {
			if inSec+l > 2048 {
				size += 2048 - inSec
				inSec = 0
			}
			size += l
			inSec += l
		}
		d.at, d.length = next, uint32(size)
		next += uint32((size + 2047) / 2048)
	}
	for _, n := range all {
		if n.inRec < len(n.su) {
			n.ce = next
			next++
		}
	}
	for _, n := range all {
		if !n.isDir() && len(n.data) > 0 {
			n.at, n.length = next, uint32(len(n.data))
			next += uint32((len(n.data) + 2047) / 2048)
		}
	}
	img := make([]byte, int(next)*2048)
	for _, n := range all {
		if ce := n.ceData(); len(ce) > 0 {
			copy(img[n.ce*2048:], ce)
		}
		if !n.isDir() {
			copy(img[n.at*2048:], n.data)
		}
	}
	recOf := func(n *tnode) []byte {
		var su []byte
		for _, e := range n.su[:n.inRec] {
			su = append(su, e...)
		}
		if n.inRec < len(n.su) {
			ce := make([]byte, 24)
			both32(ce[0:], n.ce)
			both32(ce[8:], 0)
			both32(ce[16:], uint32(len(n.ceData())))
			su = append(su, suEntry("CE", ce...)...)
		}
		loc, size := n.at, n.length
		if n.loc != 0 {
			loc = n.loc
		}
		if n.size != 0 {
			size = n.size
		}
		var flags byte
		if n.isDir() {
			flags = flagDir
		}
		return trecord(n.idBytes(), loc, size, flags, recDate(n.mtime), su)
	}
	parent := map[*tnode]*tnode{root: root}
	for _, d := range dirs {
		for _, k := range d.kids {
			parent[k] = d
		}
	}
	for _, d := range dirs {
		p := parent[d]
		recs := [][]byte{
			trecord([]byte{0}, d.at, d.length, flagDir, recDate(d.mtime), dotSU(d, d == root, rr)),
			trecord([]byte{1}, p.at, p.length, flagDir, recDate(p.mtime), nil),
		}
		for _, k := range d.kids {
			recs = append(recs, recOf(k))
		}
		pos := int(d.at) * 2048
		inSec := 0
		for _, r := range recs {
			if inSec+len(r) > 2048 {
				pos += 2048 - inSec
				inSec = 0
			}
			copy(img[pos:], r)
			pos += len(r)
			inSec += len(r)
		}
	}
	pvd := img[16*2048:]
	pvd[0], pvd[6] = 1, 1
	copy(pvd[1:], "CD001")
	copy(pvd[8:40], pad("LINUX", 32))
	copy(pvd[40:72], pad("HOSTILE", 32))
	both32(pvd[80:], next)
	both16(pvd[120:], 1)
	both16(pvd[124:], 1)
	both16(pvd[128:], 2048)
	copy(pvd[156:190], trecord([]byte{0}, root.at, root.length, flagDir, recDate(root.mtime), nil))
	copy(pvd[813:830], "2024010203040500\x00")
	pvd[881] = 1
	term := img[17*2048:]
	term[0], term[6] = 255, 1
	copy(term[1:], "CD001")
	return img
}

func pad(s string, n int) string {
	for len(s) < n {
		s += " "
	}
	return s
}
