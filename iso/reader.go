// Package iso reads, verifies, mounts and stages ISO 9660 images.
//
// The reader (reader*.go) parses the volume descriptors and directory
// records itself, with Rock Ridge (names, modes, owners, timestamps,
// symlinks, device numbers, relocated directories) and Joliet names, and
// files of several extents (over 4 GiB). It checks that the image is as
// long as its volume says before trusting any of it, bounds every length it
// reads from the image and refuses loops in the directory tree, so that a
// truncated, corrupt or hostile image gives an error, never a panic, a hang
// or a huge allocation.
package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"upgradectl/host"
)

const (
	// sectorSize is the size of a volume descriptor and of the logical
	// blocks this reader supports (every real image uses 2048).
	sectorSize = 2048
	// firstDescriptor is the sector of the first volume descriptor, after
	// the system area.
	firstDescriptor = 16
	// maxDescriptors bounds the volume descriptor set.
	maxDescriptors = 64
	// maxDirSize bounds one directory's data: about a million entries.
	maxDirSize = 32 << 20
	// maxSystemUse bounds the system use data of one record, continuation
	// areas included, and maxContinuations the number of those areas.
	maxSystemUse     = 64 << 10
	maxContinuations = 32
	// maxNameLen bounds a Rock Ridge name, maxTargetLen a symlink target.
	maxNameLen   = 1024
	maxTargetLen = 4096
	// maxLinkHops bounds symlink resolution inside the image.
	maxLinkHops = 40
)

// Image is an ISO 9660 image opened for reading. It is safe for concurrent
// use. It implements fs.FS, fs.ReadDirFS, fs.StatFS and fs.ReadFileFS with
// slash-separated paths ("." is the root); the fs.FileInfo it returns has
// an *Entry as Sys().
type Image struct {
	name string      // for messages
	r    io.ReaderAt // the image
	f    *os.File    // set when Open opened the file
	info Info

	volBytes int64  // volume space size in bytes: every extent lies below
	tree     string // "rockridge", "joliet" or "iso9660"
	skip     int    // SUSP bytes to skip at the start of each system use field
	root     *Entry

	mu       sync.Mutex
	warnings []string           // damaged entries skipped (at most maxWarnings)
	skipped  int                // how many in all
	dirs     map[int64]*dirList // parsed directories by data offset
	parent   map[int64]int64    // data offset of each directory's parent
	dirBytes int64              // directory data parsed so far
}

// Info describes an image as a whole.
type Info struct {
	Path         string    `json:"path,omitempty"`
	VolumeID     string    `json:"volume_id"`
	VolumeSetID  string    `json:"volume_set_id,omitempty"`
	SystemID     string    `json:"system_id,omitempty"`
	Publisher    string    `json:"publisher,omitempty"`
	Preparer     string    `json:"preparer,omitempty"`
	Application  string    `json:"application,omitempty"`
	BlockSize    int       `json:"block_size"`
	VolumeBlocks int64     `json:"volume_blocks"`
	VolumeSize   int64     `json:"volume_size"` // VolumeBlocks * BlockSize
	FileSize     int64     `json:"file_size"`   // bytes in the file (at least VolumeSize)
	Created      time.Time `json:"created,omitzero"`
	Modified     time.Time `json:"modified,omitzero"`
	RockRidge    bool      `json:"rock_ridge"`
	Joliet       bool      `json:"joliet"`
	EmbeddedMD5  bool      `json:"embedded_md5"` // implantisomd5 data in the application use area
	Bootable     bool      `json:"bootable"`     // El Torito boot record present
	// Tree is the directory tree that names come from: "rockridge",
	// "joliet" or "iso9660".
	Tree string `json:"tree"`
}

// Open opens the image file at path and checks its volume descriptors and
// its length. The error is a host.Bad for a truncated or corrupt image.
func Open(path string) (*Image, error) {
	f, err := host.OpenImage(path)
	if err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	im, err := openReaderAt(f, size, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	im.f = f
	im.info.Path = path
	return im, nil
}

// OpenReaderAt reads an image of size bytes from r.
func OpenReaderAt(r io.ReaderAt, size int64) (*Image, error) {
	return openReaderAt(r, size, "image")
}

// Close closes the file that Open opened.
func (im *Image) Close() error {
	if im.f != nil {
		return im.f.Close()
	}
	return nil
}

// Info returns what the volume descriptors say about the image.
func (im *Image) Info() Info { return im.info }

// Root is the root directory's entry.
func (im *Image) Root() *Entry { return im.root }

// corrupt is the error for an image whose content is wrong.
// maxWarnings bounds the warnings an image keeps; the rest are counted.
const maxWarnings = 100

// warn records a damaged entry that was skipped. The caller holds im.mu or
// is still opening the image.
func (im *Image) warn(format string, args ...any) {
	im.skipped++
	if len(im.warnings) < maxWarnings {
		im.warnings = append(im.warnings, fmt.Sprintf(format, args...))
	}
}

// Warnings are the entries skipped so far for damaged Rock Ridge data, one
// line each (the first 100, then how many more).
func (im *Image) Warnings() []string {
	im.mu.Lock()
	defer im.mu.Unlock()
	w := append([]string(nil), im.warnings...)
	if im.skipped > len(w) {
		w = append(w, fmt.Sprintf("%d more damaged entries skipped", im.skipped-len(w)))
	}
	return w
}

func (im *Image) corrupt(format string, args ...any) error {
	return host.Bad("cannot read %s: %s", im.name, fmt.Sprintf(format, args...))
}

// readFull reads exactly len(b) bytes at off; a short read is a truncated
// image.
func (im *Image) readFull(b []byte, off int64) error {
	n, err := im.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return im.corrupt("truncated: no data at byte %d", off+int64(n))
	}
	return fmt.Errorf("cannot read %s: %w", im.name, err)
}

func openReaderAt(r io.ReaderAt, size int64, name string) (*Image, error) {
	im := &Image{name: name, r: r, dirs: map[int64]*dirList{}, parent: map[int64]int64{}}
	im.info.FileSize = size
	if size < (firstDescriptor+2)*sectorSize {
		return nil, im.corrupt("not an ISO 9660 image: %d bytes is too short", size)
	}
	var pvd, svd []byte
	sec := make([]byte, sectorSize)
	for i := int64(0); ; i++ {
		if i == maxDescriptors {
			return nil, im.corrupt("no volume descriptor set terminator in the first %d descriptors", maxDescriptors)
		}
		off := (firstDescriptor + i) * sectorSize
		if off+sectorSize > size {
			return nil, im.corrupt("truncated: volume descriptor set ends at byte %d", size)
		}
		if err := im.readFull(sec, off); err != nil {
			return nil, err
		}
		if string(sec[1:6]) != "CD001" {
			if i == 0 {
				return nil, im.corrupt("not an ISO 9660 image: no CD001 volume descriptor at byte %d", off)
			}
			return nil, im.corrupt("bad volume descriptor at byte %d", off)
		}
		switch sec[0] {
		case 255:
		case 0:
			if bytes.HasPrefix(sec[7:], []byte("EL TORITO SPECIFICATION")) {
				im.info.Bootable = true
			}
			continue
		case 1:
			if pvd == nil {
				pvd = bytes.Clone(sec)
			}
			continue
		case 2:
			esc := sec[88:120]
			if svd == nil && sec[6] == 1 && (bytes.Contains(esc, []byte("%/@")) ||
				bytes.Contains(esc, []byte("%/C")) || bytes.Contains(esc, []byte("%/E"))) {
				svd = bytes.Clone(sec)
			}
			continue
		default:
			continue
		}
		break
	}
	if pvd == nil {
		return nil, im.corrupt("no primary volume descriptor")
	}
	in := &im.info
	in.BlockSize = int(binary.LittleEndian.Uint16(pvd[128:]))
	if in.BlockSize != sectorSize {
		return nil, im.corrupt("logical block size %d is not supported (only %d)", in.BlockSize, sectorSize)
	}
	in.VolumeBlocks = int64(binary.LittleEndian.Uint32(pvd[80:]))
	in.VolumeSize = in.VolumeBlocks * sectorSize
	if in.VolumeBlocks < firstDescriptor+2 {
		return nil, im.corrupt("volume space size of %d blocks is too small", in.VolumeBlocks)
	}
	if size < in.VolumeSize {
		return nil, im.corrupt("truncated: the file has %d bytes, its volume says %d", size, in.VolumeSize)
	}
	im.volBytes = in.VolumeSize
	in.SystemID = dString(pvd[8:40])
	in.VolumeID = dString(pvd[40:72])
	in.VolumeSetID = dString(pvd[190:318])
	in.Publisher = dString(pvd[318:446])
	in.Preparer = dString(pvd[446:574])
	in.Application = dString(pvd[574:702])
	in.Created = decDateTime(pvd[813:830])
	in.Modified = decDateTime(pvd[830:847])
	in.EmbeddedMD5 = bytes.Contains(pvd[883:1395], []byte("ISO MD5SUM = "))
	in.Joliet = svd != nil
	if svd != nil {
		if id := jolietString(svd[40:72]); id != "" {
			in.VolumeID = id
		}
	}

	root, err := im.rootEntry(pvd[156:190], "iso9660")
	if err != nil {
		return nil, err
	}
	dot, err := im.dotRecord(root)
	if err != nil {
		return nil, err
	}
	if im.detectRockRidge(dot) {
		im.tree = "rockridge"
		in.RockRidge = true
	} else if svd != nil {
		if root, err = im.rootEntry(svd[156:190], "joliet"); err != nil {
			return nil, err
		}
		im.tree = "joliet"
	} else {
		im.tree = "iso9660"
	}
	in.Tree = im.tree
	if im.tree == "rockridge" {
		var ri rrInfo
		if err := im.parseSystemUse(dot.su, &ri, "/"); err != nil {
			var d damage
			if errors.As(err, &d) {
				err = im.corrupt("directory /: %v", d)
			}
			return nil, err
		}
		ri.apply(root)
	}
	root.Name = "."
	im.root = root
	// Read the root directory now: an image whose root cannot be listed
	// is refused at once.
	if _, err := im.list(root, "/"); err != nil {
		return nil, err
	}
	return im, nil
}

// rootEntry makes the root's entry from the 34-byte record in a volume
// descriptor.
func (im *Image) rootEntry(b []byte, tree string) (*Entry, error) {
	rec, err := im.parseRecord(b, 16*sectorSize+156)
	if err != nil {
		return nil, err
	}
	if rec.flags&flagDir == 0 {
		return nil, im.corrupt("the %s root directory record is not a directory", tree)
	}
	e, err := im.entryOf([]record{rec}, nil, "/")
	if err != nil {
		return nil, err
	}
	return e, nil
}

// dotRecord reads the first record of directory d, its "." entry.
func (im *Image) dotRecord(d *Entry) (record, error) {
	n := min(d.Size, sectorSize)
	b := make([]byte, n)
	if err := im.readFull(b, d.extents[0].off); err != nil {
		return record{}, err
	}
	if n < 34 || int64(b[0]) > n {
		return record{}, im.corrupt("root directory has no \".\" record")
	}
	rec, err := im.parseRecord(b[:b[0]], d.extents[0].off)
	if err != nil {
		return record{}, err
	}
	if len(rec.id) != 1 || rec.id[0] != 0 {
		return record{}, im.corrupt("root directory has no \".\" record")
	}
	return rec, nil
}

// detectRockRidge looks for the SUSP "SP" entry in the root's "." record
// and a Rock Ridge entry after it, and sets the skip length.
func (im *Image) detectRockRidge(dot record) bool {
	su := dot.su
	if len(su) < 7 || string(su[0:2]) != "SP" || su[2] < 7 || su[4] != 0xBE || su[5] != 0xEF {
		return false
	}
	im.skip = int(su[6])
	var ri rrInfo
	if err := im.parseSystemUse(su, &ri, "/"); err != nil {
		return false
	}
	return ri.rripER || ri.hasPX || ri.hasTF || ri.hasNM
}

// dString is a d-characters or a-characters field without its padding.
func dString(b []byte) string {
	return string(bytes.TrimRight(b, " \x00"))
}

// jolietString decodes a UCS-2 big-endian field without its padding.
func jolietString(b []byte) string {
	return strings.TrimRight(ucs2(b), " \x00")
}

// ucs2 decodes UCS-2 (or UTF-16) big-endian text.
func ucs2(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u = append(u, binary.BigEndian.Uint16(b[i:]))
	}
	return string(utf16.Decode(u))
}

// decDateTime parses the 17-byte date of a volume descriptor
// ("YYYYMMDDHHMMSScc" and a GMT offset in 15-minute units); "not set"
// and malformed dates are the zero time.
func decDateTime(b []byte) time.Time {
	num := func(s []byte) int {
		n, err := strconv.Atoi(string(s))
		if err != nil {
			return -1
		}
		return n
	}
	y, mo, d := num(b[0:4]), num(b[4:6]), num(b[6:8])
	h, mi, s, cs := num(b[8:10]), num(b[10:12]), num(b[12:14]), num(b[14:16])
	if y <= 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60 || cs < 0 {
		return time.Time{}
	}
	return time.Date(y, time.Month(mo), d, h, mi, s, cs*1e7, zone(int8(b[16])))
}

// recDateTime parses the 7-byte date of a directory record or a short
// Rock Ridge TF stamp.
func recDateTime(b []byte) time.Time {
	if b[1] < 1 || b[1] > 12 || b[2] < 1 || b[2] > 31 || b[3] > 23 || b[4] > 59 || b[5] > 60 {
		return time.Time{}
	}
	return time.Date(1900+int(b[0]), time.Month(b[1]), int(b[2]), int(b[3]), int(b[4]), int(b[5]), 0, zone(int8(b[6])))
}

// zone is a fixed zone of off 15-minute units east of UTC.
func zone(off int8) *time.Location {
	if off < -48 || off > 52 || off == 0 {
		return time.UTC
	}
	return time.FixedZone("", int(off)*15*60)
}
