package iso

import (
	"bytes"
	"encoding/binary"
	"time"
)

// A small ISO 9660 + Rock Ridge writer for tests: it writes exactly the
// names, targets, modes and locations it is given, hostile or corrupt, which
// xorriso would refuse or repair.

// twNode is one file of a test image.
type twNode struct {
	name   string // Rock Ridge name (NM); the ISO identifier too unless id is set
	id     string
	mode   uint32 // POSIX mode with its type; 0 means 0644 file or 0755 directory
	data   []byte
	target string // symlink target, written as SL components
	kids   []*twNode
	uid    uint32
	gid    uint32
	mtime  time.Time
	// Corruptions: the extent location (blocks) and data length written
	// instead of the real ones, when not zero.
	loc, size uint32
	xflags    byte // more record flags
	// split stores the data in that many extents (multi-extent records),
	// with a block of garbage between them.
	split int
	parts [][2]uint32 // block and length of each extent

	// layout
	su     [][]byte // system use entries
	inRec  int      // how many fit in the record, the rest go to a CE area
	ce     uint32   // block of the continuation area
	at     uint32   // data or directory block
	length uint32   // data or directory length
}

func (n *twNode) isDir() bool {
	return n.mode&0o170000 == 0o040000 || (n.mode == 0 && n.kids != nil)
}

// dir and file make nodes.
func twDir(name string, kids ...*twNode) *twNode {
	return &twNode{name: name, mode: 0o040755, kids: append([]*twNode{}, kids...)}
}
func twFile(name, data string) *twNode {
	return &twNode{name: name, mode: 0o100644, data: []byte(data)}
}
func twLink(name, target string) *twNode {
	return &twNode{name: name, mode: 0o120777, target: target}
}

func twBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

func twBoth16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func twSU(sig string, data ...byte) []byte {
	return append([]byte{sig[0], sig[1], byte(4 + len(data)), 1}, data...)
}

// rrEntries are the Rock Ridge entries of n (without NM for "." records).
func twRR(n *twNode, withName bool) [][]byte {
	px := make([]byte, 40)
	twBoth32(px[0:], n.mode)
	twBoth32(px[8:], 1)
	twBoth32(px[16:], n.uid)
	twBoth32(px[24:], n.gid)
	out := [][]byte{twSU("PX", px...)}
	out = append(out, twSU("TF", append([]byte{0x02}, twDate(n.mtime)...)...))
	if withName {
		// NM entries of at most 200 bytes each, CONTINUE on all but the last.
		name := []byte(n.name)
		for len(name) > 200 {
			out = append(out, twSU("NM", append([]byte{1}, name[:200]...)...))
			name = name[200:]
		}
		out = append(out, twSU("NM", append([]byte{0}, name...)...))
	}
	if n.mode&0o170000 == 0o120000 {
		var comps []byte
		t := n.target
		if len(t) > 0 && t[0] == '/' {
			comps = append(comps, 0x08, 0)
			t = t[1:]
		}
		for _, c := range twSplit(t) {
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
		out = append(out, twSU("SL", append([]byte{0}, comps...)...))
	}
	return out
}

func twSplit(s string) []string {
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

func twDate(t time.Time) []byte {
	if t.IsZero() {
		t = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	t = t.UTC()
	return []byte{byte(t.Year() - 1900), byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second()), 0}
}

// recLen is the length of n's record with the entries that fit in it.
func (n *twNode) idBytes() []byte {
	if n.id != "" {
		return []byte(n.id)
	}
	if len(n.name) > 64 {
		return []byte(n.name[:64])
	}
	return []byte(n.name)
}

func twBaseLen(id []byte) int {
	l := 33 + len(id)
	if len(id)%2 == 0 {
		l++
	}
	return l
}

// plan decides which system use entries stay in the record.
func (n *twNode) plan(rr bool) {
	if rr {
		n.su = twRR(n, true)
	}
	base := twBaseLen(n.idBytes())
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

func (n *twNode) recLen() int {
	l := twBaseLen(n.idBytes())
	for _, e := range n.su[:n.inRec] {
		l += len(e)
	}
	if n.inRec < len(n.su) {
		l += 28
	}
	return l
}

func (n *twNode) ceData() []byte {
	var b []byte
	for _, e := range n.su[n.inRec:] {
		b = append(b, e...)
	}
	return b
}

// trecord writes a directory record.
func twRecord(id []byte, loc, size uint32, flags byte, date []byte, su []byte) []byte {
	b := make([]byte, twBaseLen(id), twBaseLen(id)+len(su))
	twBoth32(b[2:], loc)
	twBoth32(b[10:], size)
	copy(b[18:25], date)
	b[25] = flags
	twBoth16(b[28:], 1)
	b[32] = byte(len(id))
	copy(b[33:], id)
	b = append(b, su...)
	b[0] = byte(len(b))
	return b
}

// dotSU is the system use of a directory's "." record (SP first in the root).
func twDotSU(n *twNode, root, rr bool) []byte {
	if !rr {
		return nil
	}
	var b []byte
	if root {
		b = append(b, twSU("SP", 0xBE, 0xEF, 0)...)
	}
	for _, e := range twRR(n, false) {
		b = append(b, e...)
	}
	return b
}

// buildISO writes an image of the tree under root.
func twBuild(root *twNode, rr bool) []byte {
	if root.mode == 0 {
		root.mode = 0o040755
	}
	// Breadth first: directories, then continuation areas, then data.
	var dirs, all []*twNode
	queue := []*twNode{root}
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
		dot := 34 + len(twDotSU(d, d == root, rr))
		size, inSec := 0, 0
		for _, l := range append([]int{dot, 34}, func() []int {
			var ls []int
			for _, k := range d.kids {
				for range max(k.split, 1) {
					ls = append(ls, k.recLen())
				}
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
			ps := len(n.data)
			if n.split > 1 {
				ps = (len(n.data)/n.split + 2047) / 2048 * 2048
			}
			for off := 0; off < len(n.data); off += ps {
				l := min(ps, len(n.data)-off)
				n.parts = append(n.parts, [2]uint32{next, uint32(l)})
				next += uint32((l+2047)/2048) + uint32(min(n.split, 1)) // a gap after a split part
			}
		}
	}
	img := make([]byte, int(next)*2048)
	for _, n := range all {
		if ce := n.ceData(); len(ce) > 0 {
			copy(img[n.ce*2048:], ce)
		}
		off := 0
		for _, pt := range n.parts {
			copy(img[pt[0]*2048:], n.data[off:off+int(pt[1])])
			off += int(pt[1])
			if n.split > 0 {
				end := (int(pt[0]) + (int(pt[1])+2047)/2048) * 2048
				copy(img[end:end+2048], bytes.Repeat([]byte("X"), 2048))
			}
		}
	}
	recOf := func(n *twNode) [][]byte {
		var su []byte
		for _, e := range n.su[:n.inRec] {
			su = append(su, e...)
		}
		if n.inRec < len(n.su) {
			ce := make([]byte, 24)
			twBoth32(ce[0:], n.ce)
			twBoth32(ce[8:], 0)
			twBoth32(ce[16:], uint32(len(n.ceData())))
			su = append(su, twSU("CE", ce...)...)
		}
		loc, size := n.at, n.length
		if n.loc != 0 {
			loc = n.loc
		}
		if n.size != 0 {
			size = n.size
		}
		flags := n.xflags
		if n.isDir() {
			flags |= flagDir
		}
		if n.split < 2 {
			return [][]byte{twRecord(n.idBytes(), loc, size, flags, twDate(n.mtime), su)}
		}
		var recs [][]byte
		for i, pt := range n.parts {
			f := flags
			if i < len(n.parts)-1 {
				f |= flagMultiExent
			}
			recs = append(recs, twRecord(n.idBytes(), pt[0], pt[1], f, twDate(n.mtime), su))
		}
		return recs
	}
	parent := map[*twNode]*twNode{root: root}
	for _, d := range dirs {
		for _, k := range d.kids {
			parent[k] = d
		}
	}
	for _, d := range dirs {
		p := parent[d]
		recs := [][]byte{
			twRecord([]byte{0}, d.at, d.length, flagDir, twDate(d.mtime), twDotSU(d, d == root, rr)),
			twRecord([]byte{1}, p.at, p.length, flagDir, twDate(p.mtime), nil),
		}
		for _, k := range d.kids {
			recs = append(recs, recOf(k)...)
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
	copy(pvd[8:40], twPad("LINUX", 32))
	copy(pvd[40:72], twPad("HOSTILE", 32))
	twBoth32(pvd[80:], next)
	twBoth16(pvd[120:], 1)
	twBoth16(pvd[124:], 1)
	twBoth16(pvd[128:], 2048)
	copy(pvd[156:190], twRecord([]byte{0}, root.at, root.length, flagDir, twDate(root.mtime), nil))
	copy(pvd[813:830], "2024010203040500\x00")
	pvd[881] = 1
	term := img[17*2048:]
	term[0], term[6] = 255, 1
	copy(term[1:], "CD001")
	return img
}

func twPad(s string, n int) string {
	for len(s) < n {
		s += " "
	}
	return s
}
