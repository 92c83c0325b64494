package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Entry is one file, directory or symlink of an image.
type Entry struct {
	// Name is the Rock Ridge name where present, else the Joliet name,
	// else the ISO 9660 name without its ";1" version and trailing dot.
	Name string
	// Mode has the file type and, from Rock Ridge, the permission bits;
	// without Rock Ridge directories are 0555 and files 0444.
	Mode fs.FileMode
	Size int64
	// ModTime is the Rock Ridge modification time where present, else
	// the directory record's date.
	ModTime  time.Time
	UID, GID uint32
	Nlink    uint32
	// Ino is stable for a file within an image: the byte offset of its
	// data, or of its directory record for files without data. Hard
	// links share their data and so their Ino.
	Ino uint64
	// Target is a symlink's target (Rock Ridge SL), "" otherwise.
	Target string
	// Rdev is a device file's number as Rock Ridge PN gives it (high 32
	// bits, low 32 bits); Device decodes it.
	Rdev uint64

	extents []extent // data; one for a directory
	// dir is the path in the image of the directory listing this entry
	// ("" for the root), so that a warning about its own entries names
	// the whole path.
	dir     string
	zf      *zfInfo // zisofs-compressed: the extents hold rawSize bytes
	rawSize int64
}

type extent struct{ off, n int64 } // byte offset and length in the image

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Mode.IsDir() }

// record is one directory record as it is on disk.
type record struct {
	off   int64  // byte offset of the record in the image
	loc   uint32 // extent location (blocks)
	ear   uint8  // extended attribute record length (blocks)
	size  uint32 // data length
	date  []byte // 7 bytes
	flags byte
	unit  byte // interleaved file unit size
	id    []byte
	su    []byte // system use
}

const (
	flagDir        = 0x02
	flagAssociated = 0x04
	flagMultiExent = 0x80
)

// parseRecord decodes the record b (b[0] bytes) found at byte off.
func (im *Image) parseRecord(b []byte, off int64) (record, error) {
	if len(b) < 34 || int(b[0]) < 34 || int(b[0]) > len(b) {
		return record{}, im.corrupt("bad directory record at byte %d", off)
	}
	b = b[:b[0]]
	lenID := int(b[32])
	if lenID == 0 || 33+lenID > len(b) {
		return record{}, im.corrupt("bad directory record at byte %d: name length %d", off, lenID)
	}
	r := record{
		off:   off,
		ear:   b[1],
		loc:   binary.LittleEndian.Uint32(b[2:]),
		size:  binary.LittleEndian.Uint32(b[10:]),
		date:  b[18:25],
		flags: b[25],
		unit:  b[26],
		id:    b[33 : 33+lenID],
	}
	suStart := 33 + lenID
	if lenID%2 == 0 {
		suStart++ // padding byte
	}
	if suStart < len(b) {
		r.su = b[suStart:]
	}
	return r, nil
}

// dataOff is the byte offset of a record's data.
func (r record) dataOff() int64 { return (int64(r.loc) + int64(r.ear)) * sectorSize }

// dirList is one parsed directory.
type dirList struct {
	entries []*Entry // sorted by name
	byName  map[string]*Entry
	err     error
}

// list returns the entries of directory d (at path p, for messages),
// parsing it once.
func (im *Image) list(d *Entry, p string) (*dirList, error) {
	if !d.IsDir() {
		return nil, im.corrupt("%s is not a directory", p)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	key := d.extents[0].off
	if l, ok := im.dirs[key]; ok {
		return l, l.err
	}
	l := &dirList{}
	l.entries, l.byName, l.err = im.parseDir(d, p)
	im.dirs[key] = l
	return l, l.err
}

// pathOf is d's path in the image, as found by listing its parents.
func pathOf(d *Entry) string {
	if d.dir == "" && d.Name == "" {
		return "/"
	}
	return path.Join("/", d.dir, d.Name)
}

// Children returns the entries of directory d sorted by name.
func (im *Image) Children(d *Entry) ([]*Entry, error) {
	l, err := im.list(d, pathOf(d))
	if err != nil {
		return nil, err
	}
	return l.entries, nil
}

// Child returns the entry called name in directory d, or nil and no error
// if there is none.
func (im *Image) Child(d *Entry, name string) (*Entry, error) {
	l, err := im.list(d, pathOf(d))
	if err != nil {
		return nil, err
	}
	return l.byName[name], nil
}

func (im *Image) parseDir(d *Entry, p string) ([]*Entry, map[string]*Entry, error) {
	size, base := d.Size, d.extents[0].off
	if size > maxDirSize {
		return nil, nil, im.corrupt("directory %s is %d bytes, more than the %d this reader accepts", p, size, maxDirSize)
	}
	// Directories never overlap in a sane image, so all of them together
	// are no larger than the volume; more means overlapping directories
	// made to multiply the work.
	if im.dirBytes += size; im.dirBytes > im.volBytes {
		return nil, nil, im.corrupt("directory %s: the directories hold more data than the volume", p)
	}
	b := make([]byte, size)
	if err := im.readFull(b, base); err != nil {
		return nil, nil, err
	}
	var (
		entries []*Entry
		byName  = map[string]*Entry{}
		pending []record // extents of a multi-extent file so far
	)
	for pos := int64(0); pos < size; {
		n := int64(b[pos])
		if n == 0 { // the rest of this sector is padding
			pos = (pos/sectorSize + 1) * sectorSize
			continue
		}
		rec, err := im.parseRecord(b[pos:], base+pos)
		if err != nil {
			return nil, nil, err
		}
		pos += n
		if len(rec.id) == 1 && rec.id[0] <= 1 { // "." and ".."
			if len(pending) > 0 {
				return nil, nil, im.corrupt("directory %s: unfinished multi-extent file at byte %d", p, rec.off)
			}
			continue
		}
		if rec.flags&flagAssociated != 0 && len(pending) == 0 {
			continue // Apple resource forks and the like, hidden as Linux does
		}
		if len(pending) > 0 && !bytes.Equal(pending[0].id, rec.id) {
			return nil, nil, im.corrupt("directory %s: unfinished multi-extent file at byte %d", p, rec.off)
		}
		pending = append(pending, rec)
		if rec.flags&flagMultiExent != 0 {
			if rec.flags&flagDir != 0 {
				return nil, nil, im.corrupt("directory %s: multi-extent directory at byte %d", p, rec.off)
			}
			continue
		}
		var ri rrInfo
		if im.tree == "rockridge" {
			if err := im.parseSystemUse(pending[0].su, &ri, p); err != nil {
				var d damage
				if !errors.As(err, &d) {
					return nil, nil, err
				}
				im.warn("directory %s: entry %q skipped: %v", p, displayName(pending[0].id), d)
				pending = pending[:0]
				continue
			}
			if ri.re {
				pending = pending[:0] // shown where its CL entry is
				continue
			}
		}
		e, err := im.entryOf(pending, &ri, p)
		pending = pending[:0]
		if e != nil {
			e.dir = p
		}
		if err != nil {
			return nil, nil, err
		}
		if byName[e.Name] != nil {
			return nil, nil, im.corrupt("directory %s: two entries named %q", p, e.Name)
		}
		if e.IsDir() {
			// Each directory has one parent: a directory reached a second
			// time is a loop (or a shared directory, which ISO 9660 has
			// not), refused before anyone walks into it.
			k := e.extents[0].off
			if k == im.root.extents[0].off || k == base {
				return nil, nil, im.corrupt("directory %s: %q loops back to a directory above it", p, e.Name)
			}
			if q, seen := im.parent[k]; seen && q != base {
				return nil, nil, im.corrupt("directory %s: %q is also a directory elsewhere (a loop?)", p, e.Name)
			}
			im.parent[k] = base
		}
		byName[e.Name] = e
		entries = append(entries, e)
	}
	if len(pending) > 0 {
		return nil, nil, im.corrupt("directory %s: unfinished multi-extent file at the end", p)
	}
	slices.SortFunc(entries, func(a, b *Entry) int { return strings.Compare(a.Name, b.Name) })
	return entries, byName, nil
}

// entryOf makes an entry from its records (several for a multi-extent
// file) and Rock Ridge data (nil for the root).
func (im *Image) entryOf(recs []record, ri *rrInfo, p string) (*Entry, error) {
	first := recs[0]
	e := &Entry{Nlink: 1, ModTime: recDateTime(first.date)}
	if first.unit != 0 {
		return nil, im.corrupt("directory %s: interleaved file at byte %d is not supported", p, first.off)
	}
	if first.flags&flagDir != 0 {
		e.Mode = fs.ModeDir | 0o555
		e.Nlink = 2
	} else {
		e.Mode = 0o444
	}
	for _, r := range recs {
		ext := extent{off: r.dataOff(), n: int64(r.size)}
		if ext.n > 0 && ext.off+ext.n > im.volBytes {
			return nil, im.corrupt("directory %s: data of %q at byte %d ends beyond the volume (%d bytes)",
				p, displayName(first.id), ext.off, im.volBytes)
		}
		e.Size += ext.n
		if ext.n > 0 {
			e.extents = append(e.extents, ext)
		}
	}
	switch im.tree {
	case "joliet":
		e.Name = jolietName(ucs2(first.id))
	default:
		e.Name = isoName(string(first.id))
	}
	if ri != nil && ri.cl != 0 {
		// A relocated directory: the entry here is a placeholder file,
		// the directory itself is at the CL location.
		d := &Entry{Mode: fs.ModeDir, extents: []extent{{off: int64(ri.cl) * sectorSize, n: sectorSize}}, Size: sectorSize}
		if d.extents[0].off+sectorSize > im.volBytes {
			return nil, im.corrupt("directory %s: relocated directory of %q is beyond the volume", p, displayName(first.id))
		}
		dot, err := im.dotRecord(d)
		if err != nil {
			return nil, err
		}
		e.Mode = fs.ModeDir | 0o555
		e.extents = []extent{{off: dot.dataOff(), n: int64(dot.size)}}
		e.Size = int64(dot.size)
	}
	if e.IsDir() {
		if len(e.extents) != 1 || e.Size < 34 {
			return nil, im.corrupt("directory %s: directory %q has no data", p, displayName(first.id))
		}
		e.Ino = uint64(e.extents[0].off)
	} else if len(e.extents) > 0 {
		e.Ino = uint64(e.extents[0].off)
	} else {
		e.Ino = uint64(first.off)
	}
	if ri != nil {
		ri.apply(e)
	}
	if ri == nil { // the root
		return e, nil
	}
	if !validName(e.Name) {
		return nil, im.corrupt("directory %s: entry %q is not a valid file name", p, e.Name)
	}
	if e.Mode&fs.ModeSymlink != 0 && e.Target == "" {
		return nil, im.corrupt("directory %s: symlink %q has no target", p, e.Name)
	}
	return e, nil
}

// displayName is a raw identifier for messages.
func displayName(id []byte) string {
	if utf8.Valid(id) {
		return string(id)
	}
	return strings.ToValidUTF8(string(id), "?")
}

// isoName strips the ";1" version and the trailing dot of an extension
// that is not there from an ISO 9660 identifier ("README.;1"). A leading
// dot stays (".treeinfo").
func isoName(s string) string {
	if i := strings.LastIndexByte(s, ';'); i >= 0 && i+1 < len(s) && strings.Trim(s[i+1:], "0123456789") == "" {
		s = s[:i]
	}
	if len(s) > 1 && strings.HasSuffix(s, ".") {
		s = s[:len(s)-1]
	}
	return s
}

// jolietName strips a ";1" version from a Joliet identifier (mkisofs
// writes it, xorriso does not). Dots are kept: Joliet names are the
// file's own (".treeinfo", "name.").
func jolietName(s string) string {
	return strings.TrimSuffix(s, ";1")
}

// Device is a device file's major and minor number, read from Rock Ridge
// PN the way the kernel's isofs does: with a high part of 0 the low part is
// an encoded dev_t (what xorriso writes), else the parts are the major and
// minor numbers (what genisoimage writes). The FUSE mount, iso extract and
// iso ls all use it.
func (e *Entry) Device() (major, minor uint32) {
	high, low := uint32(e.Rdev>>32), uint32(e.Rdev)
	if high == 0 {
		return unix.Major(uint64(low)), unix.Minor(uint64(low))
	}
	return high, low
}

// validName reports whether a name can be a path component: not empty,
// not "." or "..", without "/" or NUL, at most maxNameLen bytes.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= maxNameLen && !strings.ContainsAny(s, "/\x00")
}

// rrInfo collects the Rock Ridge entries of one record.
type rrInfo struct {
	hasPX, hasNM, hasSL, hasTF, hasPN bool
	rripER                            bool
	mode, nlink, uid, gid             uint32
	name                              []byte
	nmDone                            bool
	target                            []byte
	slSep, slDone                     bool
	mtime                             time.Time
	rdev                              uint64
	cl                                uint32
	re                                bool
	zf                                *zfInfo
}

// apply sets what the Rock Ridge entries say on e.
func (ri *rrInfo) apply(e *Entry) {
	if ri.hasNM {
		e.Name = string(ri.name)
	}
	if ri.hasTF && !ri.mtime.IsZero() {
		e.ModTime = ri.mtime
	}
	if ri.hasPX {
		perm := fs.FileMode(ri.mode & 0o777)
		if ri.mode&0o4000 != 0 {
			perm |= fs.ModeSetuid
		}
		if ri.mode&0o2000 != 0 {
			perm |= fs.ModeSetgid
		}
		if ri.mode&0o1000 != 0 {
			perm |= fs.ModeSticky
		}
		typ := e.Mode.Type()
		if !e.IsDir() {
			switch ri.mode & 0o170000 {
			case 0o120000:
				typ = fs.ModeSymlink
			case 0o060000:
				typ = fs.ModeDevice
			case 0o020000:
				typ = fs.ModeDevice | fs.ModeCharDevice
			case 0o010000:
				typ = fs.ModeNamedPipe
			case 0o140000:
				typ = fs.ModeSocket
			default:
				typ = 0
			}
		}
		e.Mode = typ | perm
		e.UID, e.GID, e.Nlink = ri.uid, ri.gid, ri.nlink
	} else if ri.hasSL && !e.IsDir() {
		e.Mode = fs.ModeSymlink | 0o777
	}
	if e.Mode&fs.ModeSymlink != 0 {
		e.Target = string(ri.target)
		e.Size = int64(len(e.Target))
		e.extents = nil
	}
	if ri.zf != nil && e.Mode.IsRegular() {
		e.rawSize, e.Size, e.zf = e.Size, ri.zf.size, ri.zf
	}
	if ri.hasPN && e.Mode&fs.ModeDevice != 0 {
		e.Rdev = ri.rdev
	}
	if e.Mode.Type()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
		e.Size = 0
		e.extents = nil
	}
}

// parseSystemUse reads the SUSP entries of one record's system use field
// and the continuation areas it points to.
func (im *Image) parseSystemUse(su []byte, ri *rrInfo, p string) error {
	if im.skip > 0 {
		if im.skip >= len(su) {
			return nil
		}
		su = su[im.skip:]
	}
	total := len(su)
	for hops := 0; ; hops++ {
		var next []byte
		for len(su) >= 4 {
			sig, n, data := string(su[0:2]), int(su[2]), []byte(nil)
			if n < 4 {
				break
			}
			if n > len(su) {
				return damagef("%s entry of %d bytes overruns its record", sig, n)
			}
			data, su = su[4:n], su[n:]
			switch sig {
			case "ST":
				su = nil
			case "CE":
				if len(data) < 24 {
					return damagef("short CE entry")
				}
				loc := int64(binary.LittleEndian.Uint32(data[0:]))
				off := int64(binary.LittleEndian.Uint32(data[8:]))
				l := int64(binary.LittleEndian.Uint32(data[16:]))
				if hops >= maxContinuations || total+int(min(l, maxSystemUse+1)) > maxSystemUse {
					return damagef("too many system use continuation areas")
				}
				at := loc*sectorSize + off
				if loc == 0 || off >= sectorSize || at+l > im.volBytes {
					return damagef("continuation area at block 0 or beyond the volume")
				}
				next = make([]byte, l)
				if err := im.readFull(next, at); err != nil {
					return err
				}
				total += int(l)
			case "ER":
				if len(data) >= 4 && 4+int(data[0]) <= len(data) {
					id := string(data[4 : 4+int(data[0])])
					if strings.Contains(id, "RRIP") || strings.Contains(id, "1282") {
						ri.rripER = true
					}
				}
			case "PX":
				if len(data) < 32 {
					return damagef("short PX entry")
				}
				ri.hasPX = true
				ri.mode = binary.LittleEndian.Uint32(data[0:])
				ri.nlink = binary.LittleEndian.Uint32(data[8:])
				ri.uid = binary.LittleEndian.Uint32(data[16:])
				ri.gid = binary.LittleEndian.Uint32(data[24:])
			case "PN":
				if len(data) < 16 {
					return damagef("short PN entry")
				}
				ri.hasPN = true
				ri.rdev = uint64(binary.LittleEndian.Uint32(data[0:]))<<32 | uint64(binary.LittleEndian.Uint32(data[8:]))
			case "NM":
				if len(data) < 1 || ri.nmDone {
					break
				}
				ri.hasNM = true
				switch {
				case data[0]&0x02 != 0:
					ri.name = []byte(".")
				case data[0]&0x04 != 0:
					ri.name = []byte("..")
				default:
					ri.name = append(ri.name, data[1:]...)
				}
				if len(ri.name) > maxNameLen {
					return damagef("Rock Ridge name longer than %d bytes", maxNameLen)
				}
				ri.nmDone = data[0]&0x01 == 0
			case "SL":
				if len(data) < 1 || ri.slDone {
					break
				}
				ri.hasSL = true
				if err := ri.addSymlink(data[1:]); err != nil {
					return err
				}
				ri.slDone = data[0]&0x01 == 0
			case "TF":
				if len(data) < 1 {
					return damagef("short TF entry")
				}
				ri.hasTF = true
				flags, stamps := data[0], data[1:]
				size := 7
				if flags&0x80 != 0 {
					size = 17
				}
				for bit := 0; bit < 7; bit++ {
					if flags&(1<<bit) == 0 {
						continue
					}
					if len(stamps) < size {
						return damagef("short TF entry")
					}
					if bit == 1 { // modification
						if size == 7 {
							ri.mtime = recDateTime(stamps[:7])
						} else {
							ri.mtime = decDateTime(stamps[:17])
						}
					}
					stamps = stamps[size:]
				}
			case "CL":
				if len(data) < 8 {
					return damagef("short CL entry")
				}
				ri.cl = binary.LittleEndian.Uint32(data[0:])
				if ri.cl == 0 {
					return damagef("CL entry points to block 0")
				}
			case "RE":
				ri.re = true
			case "ZF":
				zf, err := parseZF(data)
				if err != nil {
					return err
				}
				ri.zf = zf
			}
		}
		if next == nil {
			switch {
			case ri.hasNM && !ri.nmDone:
				return damagef("its Rock Ridge name is continued past its last NM entry")
			case ri.hasSL && !ri.slDone:
				return damagef("its Rock Ridge symlink target is continued past its last SL entry")
			}
			return nil
		}
		su = next
	}
}

// addSymlink appends the components of one SL entry to the target.
func (ri *rrInfo) addSymlink(b []byte) error {
	for len(b) > 0 {
		if len(b) < 2 || 2+int(b[1]) > len(b) {
			return damagef("a symlink component overruns its SL entry")
		}
		flags, content := b[0], b[2:2+int(b[1])]
		b = b[2+int(b[1]):]
		if ri.slSep {
			ri.target = append(ri.target, '/')
		}
		ri.slSep = true
		switch {
		case flags&0x02 != 0:
			ri.target = append(ri.target, '.')
		case flags&0x04 != 0:
			ri.target = append(ri.target, ".."...)
		case flags&0x08 != 0 && len(ri.target) == 0:
			// ROOT first: an absolute target.
			ri.target = append(ri.target, '/')
			ri.slSep = false
		case flags&0x08 != 0:
			// ROOT later on is an empty component ("a//b" stays
			// relative), as xorriso, bsdtar and the kernel read it.
		default:
			ri.target = append(ri.target, content...)
			if flags&0x01 != 0 { // the component continues
				ri.slSep = false
			}
		}
		if len(ri.target) > maxTargetLen {
			return damagef("its symlink target is longer than 4096 bytes")
		}
	}
	return nil
}

// damage is what is wrong with one directory record's Rock Ridge data. The
// rule for damaged Rock Ridge data: that record is skipped (not listed,
// read or extracted) with a warning that names it, and every other entry of
// the image reads as usual. Damage is a symlink component that overruns its
// entry, a name or target continued past its last entry, a system use entry
// too short for its kind or overrunning its record, a continuation area at
// block 0 or beyond the volume, or too many of them.
type damage string

func (d damage) Error() string { return string(d) }

func damagef(format string, args ...any) error { return damage(fmt.Sprintf(format, args...)) }
