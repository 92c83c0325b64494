package iso

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	"upgradectl/checksum"
	"upgradectl/host"
)

// The MD5 that implantisomd5 (package isomd5sum) stores in the primary
// volume descriptor's application-use area, and its check as checkisomd5
// does it:
//
//   - The area (512 bytes at offset 883 of the descriptor) holds
//     "ISO MD5SUM = HEX;SKIPSECTORS = 15;RHLISOSTATUS=0;FRAGMENT SUMS = ...;
//     FRAGMENT COUNT = 20;THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!".
//   - The MD5 covers the volume (its size from the descriptor) less the last
//     SKIPSECTORS sectors, with the application-use area read as 512 spaces.
//   - The data is taken in chunks of 16 sectors from the start. The size
//     hashed is divided into FRAGMENT COUNT+1 fragments; after the chunk
//     whose start falls into a new fragment, the MD5 of everything so far is
//     taken and the first hex digit of each of its first 60/FRAGMENT COUNT
//     bytes ("%x", so 0x0a gives "a") is compared with the next digits of
//     FRAGMENT SUMS. A corrupt image fails at the first bad fragment.
//
// One difference from checkisomd5: it compares the fragment digits at the
// place of the fragment's number, implantisomd5 writes them one after the
// other. The two agree unless a chunk spans two fragment boundaries, which
// happens only on images under 672 KiB: checkisomd5 fails those even when
// intact; this check compares in the order implantisomd5 wrote them.

const (
	embSector        = 2048
	embSystemArea    = 16 * embSector // the first volume descriptor
	embChunk         = 16 * embSector // checkisomd5's read size
	embAppDataOffset = 883            // in the descriptor (ECMA-119 8.4.32)
	embAppDataSize   = 512
	embFragmentChars = 60
	embMaxVDs        = 64 // volume descriptors looked at before giving up
)

// ErrNoEmbeddedMD5 is returned when an image carries no implanted MD5.
var ErrNoEmbeddedMD5 = errors.New("no embedded MD5 (implantisomd5 was not run on it)")

// errNoPVD: not an ISO image, or one without a primary volume descriptor
// (checkisomd5 says "NA" for those, as for an image without an MD5).
var errNoPVD = errors.New("no primary volume descriptor")

// EmbeddedMD5 is what implantisomd5 stored in an image.
type EmbeddedMD5 struct {
	MD5           string `json:"md5"`
	SkipSectors   int64  `json:"skip_sectors"`
	FragmentSums  string `json:"fragment_sums,omitempty"`
	FragmentCount int64  `json:"fragment_count"`
	Supported     int64  `json:"supported"` // RHLISOSTATUS
	VolumeSize    int64  `json:"volume_size"`
	// pvdOffset is where the primary volume descriptor is in the image.
	pvdOffset int64
	hasFrags  bool
}

// hashedSize is how many bytes the MD5 covers.
func (m *EmbeddedMD5) hashedSize() int64 { return m.VolumeSize - m.SkipSectors*embSector }

// ReadEmbeddedMD5 finds the primary volume descriptor of the image in r and
// reads the MD5 implanted there. It returns ErrNoEmbeddedMD5 (wrapped) when
// there is none, and an error saying what is wrong when the image has no
// primary volume descriptor or the stored values cannot be used.
func ReadEmbeddedMD5(r io.ReaderAt) (*EmbeddedMD5, error) {
	sector := make([]byte, embSector)
	for i := int64(0); ; i++ {
		if i == embMaxVDs {
			return nil, fmt.Errorf("%w in the first %d descriptors", errNoPVD, embMaxVDs)
		}
		off := embSystemArea + i*embSector
		if _, err := r.ReadAt(sector, off); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: the image ends before it", errNoPVD)
			}
			return nil, err
		}
		if !bytes.Equal(sector[1:6], []byte("CD001")) {
			return nil, fmt.Errorf("%w: sector %d is not a volume descriptor", errNoPVD, 16+i)
		}
		switch sector[0] {
		case 1:
			m, ok := parseAppData(sector[embAppDataOffset : embAppDataOffset+embAppDataSize])
			if !ok {
				return nil, fmt.Errorf("%w", ErrNoEmbeddedMD5)
			}
			m.pvdOffset = off
			m.VolumeSize = int64(sector[84])<<24 | int64(sector[85])<<16 | int64(sector[86])<<8 | int64(sector[87])
			m.VolumeSize *= embSector
			if err := m.valid(); err != nil {
				return nil, err
			}
			return m, nil
		case 255:
			return nil, fmt.Errorf("%w before the set terminator", errNoPVD)
		}
	}
}

func (m *EmbeddedMD5) valid() error {
	switch {
	case m.SkipSectors < 0 || m.SkipSectors*embSector > m.VolumeSize:
		return fmt.Errorf("embedded MD5 skips %d sectors of a volume of %d", m.SkipSectors, m.VolumeSize/embSector)
	case m.FragmentCount < 0 || m.FragmentCount > embFragmentChars:
		return fmt.Errorf("embedded MD5 has a fragment count of %d (0 to %d)", m.FragmentCount, embFragmentChars)
	case m.FragmentCount > 0 && !m.hasFrags:
		// checkisomd5 would compare with whatever its memory held.
		return fmt.Errorf("embedded MD5 has a fragment count of %d and no fragment sums", m.FragmentCount)
	case m.FragmentCount > 0 && m.hashedSize()/(m.FragmentCount+1) == 0:
		return fmt.Errorf("embedded MD5 has %d fragments in %d bytes", m.FragmentCount, m.hashedSize())
	}
	return nil
}

// parseAppData reads the application-use area the way isomd5sum's parsepvd
// does: the keys in any order, each number up to the next ';', the last
// byte of the area treated as the end. An MD5 and SKIPSECTORS are required.
func parseAppData(area []byte) (*EmbeddedMD5, bool) {
	buf := make([]byte, embAppDataSize)
	copy(buf, area)
	buf[embAppDataSize-1] = 0
	m := &EmbeddedMD5{SkipSectors: 15, FragmentCount: 20}
	var haveMD5, haveSkip, haveSupported, haveCount bool
	// number reads the text after key up to ';' (or the end) as strtol
	// would, the whole text being a number.
	number := func(i int, key string) (v int64, next int, ok bool) {
		if !bytes.HasPrefix(buf[i:], []byte(key)) {
			return 0, 0, false
		}
		j := i + len(key)
		if j >= embAppDataSize {
			return 0, 0, false
		}
		end := j
		for end < embAppDataSize && buf[end] != ';' {
			end++
		}
		text := buf[j:end]
		if k := bytes.IndexByte(text, 0); k >= 0 {
			text = text[:k]
		}
		v, ok = strtol(text)
		return v, end, ok
	}
	for i := 0; i < embAppDataSize; {
		if key := "ISO MD5SUM = "; bytes.HasPrefix(buf[i:], []byte(key)) {
			i += len(key)
			if i+32 >= embAppDataSize {
				return nil, false
			}
			m.MD5 = cString(buf[i : i+32])
			haveMD5 = true
			i += 32
			for i < embAppDataSize && buf[i] != ';' {
				i++
			}
		} else if v, next, ok := number(i, "SKIPSECTORS = "); ok {
			m.SkipSectors, i, haveSkip = v, next, true
			if i >= embAppDataSize {
				return nil, false
			}
		} else if v, next, ok := number(i, "RHLISOSTATUS="); ok {
			m.Supported, i, haveSupported = v, next, true
		} else if key := "FRAGMENT SUMS = "; bytes.HasPrefix(buf[i:], []byte(key)) {
			i += len(key)
			if i+embFragmentChars >= embAppDataSize {
				return nil, false
			}
			m.FragmentSums = cString(buf[i : i+embFragmentChars])
			// implantisomd5 writes fewer digits on small images; what
			// follows them is not a sum.
			m.FragmentSums, _, _ = strings.Cut(m.FragmentSums, ";")
			m.hasFrags = true
			i += embFragmentChars
			for i < embAppDataSize && buf[i] != ';' {
				i++
			}
		} else if v, next, ok := number(i, "FRAGMENT COUNT = "); ok {
			m.FragmentCount, i, haveCount = v, next, true
		}
		i++
		if haveMD5 && haveSkip && haveSupported && haveCount && m.hasFrags {
			break
		}
	}
	return m, haveMD5 && haveSkip
}

// strtol reads b as C's strtol(b, &end, 10) with *end == '\0' required:
// leading white space, an optional sign, digits; the empty text is 0.
func strtol(b []byte) (int64, bool) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] >= '\t' && b[i] <= '\r') {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	start := i
	var v int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if v < 1<<62 {
			v = v*10 + int64(b[i]-'0')
		}
		i++
	}
	if i == start {
		return 0, len(b) == 0
	}
	if neg {
		v = -v
	}
	return v, i == len(b)
}

func cString(b []byte) string {
	if k := bytes.IndexByte(b, 0); k >= 0 {
		b = b[:k]
	}
	return string(b)
}

// Embedded check results.
const (
	EmbeddedPass   = "pass"
	EmbeddedFail   = "fail"
	EmbeddedAbsent = "absent"
)

// EmbeddedResult is the outcome of CheckEmbedded.
type EmbeddedResult struct {
	Status   string       `json:"status"` // EmbeddedPass, EmbeddedFail or EmbeddedAbsent
	Stored   *EmbeddedMD5 `json:"stored,omitempty"`
	Computed string       `json:"computed,omitempty"` // the MD5 over the hashed part, when it got that far
	// Fragment is the number (1-based) of the first fragment whose sum did
	// not match; 0 when none failed.
	Fragment int    `json:"fragment,omitempty"`
	Checked  int64  `json:"checked"`          // bytes hashed before it passed or failed
	Reason   string `json:"reason,omitempty"` // why it failed or is absent
}

// errFragment stops a stream at the first bad fragment.
type errFragment struct{ n int }

func (e errFragment) Error() string { return fmt.Sprintf("fragment %d does not match", e.n) }

// embeddedChecker hashes an image block by block as checkisomd5 does.
type embeddedChecker struct {
	m        *EmbeddedMD5
	h        hash.Hash
	total    int64 // bytes hashed in all
	fragSize int64
	off      int64 // next byte of the image to hash
	prevFrag int64
	crossed  int // fragment boundaries passed
	chunkEnd int64
	blank    []byte
}

func newEmbeddedChecker(m *EmbeddedMD5) *embeddedChecker {
	c := &embeddedChecker{m: m, h: md5.New(), total: m.hashedSize(), blank: bytes.Repeat([]byte{' '}, embAppDataSize)}
	if m.FragmentCount > 0 {
		c.fragSize = c.total / (m.FragmentCount + 1)
	}
	return c
}

// write hashes the next block of the image (any size, in order).
func (c *embeddedChecker) write(b []byte) error {
	for len(b) > 0 && c.off < c.total {
		// The current chunk of 16 sectors, as checkisomd5 reads it.
		chunkStart := c.off - c.off%embChunk
		chunkEnd := min(chunkStart+embChunk, c.total)
		n := int(min(int64(len(b)), chunkEnd-c.off))
		c.hashPart(b[:n])
		b = b[n:]
		c.off += int64(n)
		if c.off == chunkEnd && c.fragSize > 0 {
			if cur := chunkStart / c.fragSize; cur != c.prevFrag {
				c.prevFrag = cur
				c.crossed++
				if !c.fragmentOK() {
					return errFragment{c.crossed}
				}
			}
		}
	}
	return nil
}

// hashPart hashes b, which starts at c.off, with the application-use area
// read as spaces.
func (c *embeddedChecker) hashPart(b []byte) {
	aStart, aEnd := c.m.pvdOffset+embAppDataOffset, c.m.pvdOffset+embAppDataOffset+embAppDataSize
	end := c.off + int64(len(b))
	if end <= aStart || c.off >= aEnd {
		c.h.Write(b)
		return
	}
	lo, hi := max(aStart, c.off)-c.off, min(aEnd, end)-c.off
	c.h.Write(b[:lo])
	c.h.Write(c.blank[:hi-lo])
	c.h.Write(b[hi:])
}

// fragmentOK compares the digits of the fragment just passed.
func (c *embeddedChecker) fragmentOK() bool {
	per := embFragmentChars / int(c.m.FragmentCount)
	digest := c.h.Sum(nil)
	j := (c.crossed - 1) * per
	for i := 0; i < min(per, md5.Size); i++ {
		if j+i >= len(c.m.FragmentSums) {
			return true // implantisomd5 stored no more
		}
		d := fmt.Sprintf("%x", digest[i])
		if d[0] != c.m.FragmentSums[j+i] {
			return false
		}
	}
	return true
}

// result finishes the check after the stream ended with err.
func (c *embeddedChecker) result(err error) (EmbeddedResult, error) {
	res := EmbeddedResult{Stored: c.m, Checked: c.off}
	var ef errFragment
	switch {
	case errors.As(err, &ef):
		res.Status, res.Fragment = EmbeddedFail, ef.n
		res.Reason = fmt.Sprintf("fragment %d of %d does not match its embedded sum (at %d of %d bytes)",
			ef.n, c.m.FragmentCount+1, c.off, c.total)
		return res, nil
	case err != nil:
		return res, err
	case c.off < c.total:
		res.Status = EmbeddedFail
		res.Reason = fmt.Sprintf("image ends at %d bytes, its volume is %d", c.off, c.m.VolumeSize)
		return res, nil
	}
	res.Computed = hex.EncodeToString(c.h.Sum(nil))
	if res.Computed != c.m.MD5 {
		res.Status = EmbeddedFail
		res.Reason = fmt.Sprintf("embedded MD5 %s, computed %s", c.m.MD5, res.Computed)
		return res, nil
	}
	res.Status = EmbeddedPass
	return res, nil
}

// CheckEmbedded checks the MD5 that implantisomd5 stored in the image at
// path, failing at the first bad fragment. An image without one is
// EmbeddedAbsent; an image shorter than its volume fails at once. progress,
// when not nil, gets the size of every block read. The error is for what
// kept the check from running (the file cannot be read).
func CheckEmbedded(ctx context.Context, path string, progress func(n int)) (EmbeddedResult, error) {
	f, err := host.OpenImage(path)
	if err != nil {
		return EmbeddedResult{}, err
	}
	defer f.Close()
	res, c, err := startEmbedded(f)
	if c == nil {
		return res, err
	}
	_, err = checksum.Stream(ctx, io.LimitReader(f, c.total), progress, c.write)
	return c.result(err)
}

// startEmbedded reads the stored MD5 of the open image f and checks its
// length. It returns a checker when there is something to hash, else the
// final result.
func startEmbedded(f *os.File) (EmbeddedResult, *embeddedChecker, error) {
	m, err := ReadEmbeddedMD5(f)
	if errors.Is(err, ErrNoEmbeddedMD5) || errors.Is(err, errNoPVD) {
		return EmbeddedResult{Status: EmbeddedAbsent, Reason: err.Error()}, nil, nil
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return EmbeddedResult{}, nil, err
		}
		return EmbeddedResult{Status: EmbeddedFail, Reason: err.Error()}, nil, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return EmbeddedResult{}, nil, err
	}
	if fi.Size() < m.VolumeSize {
		return EmbeddedResult{Status: EmbeddedFail, Stored: m,
			Reason: fmt.Sprintf("image is truncated: %d bytes, its volume is %d", fi.Size(), m.VolumeSize)}, nil, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return EmbeddedResult{}, nil, err
	}
	return EmbeddedResult{}, newEmbeddedChecker(m), nil
}
