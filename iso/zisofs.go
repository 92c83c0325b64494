package iso

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// zisofs (version 1, algorithm "pz") stores a file as a header, a table of
// block offsets and zlib-compressed blocks of 2^15 to 2^17 bytes; the
// Rock Ridge ZF entry says so and gives the real size. The reader
// decompresses it as xorriso, bsdtar and the kernel do, so that ls, cat,
// extract and the FUSE mount see the file, not its compressed form. Every
// number read from the image is bounded before it is used.

// zisofsMagic starts a zisofs v1 file.
var zisofsMagic = []byte{0x37, 0xE4, 0x53, 0x96, 0xC9, 0xDB, 0xD6, 0x07}

// zfInfo is what a ZF entry says.
type zfInfo struct {
	blockLog uint8
	size     int64 // uncompressed
}

// parseZF reads a ZF entry's data (after its 4-byte header).
func parseZF(data []byte) (*zfInfo, error) {
	if len(data) < 12 {
		return nil, damagef("short ZF entry")
	}
	alg := string(data[0:2])
	if alg != "pz" {
		return nil, damagef("compressed with %q, which this reader does not read (zisofs v1 \"pz\" only)", alg)
	}
	if data[2] != 4 {
		return nil, damagef("ZF entry with a header of %d bytes (zisofs v1 has 16)", int(data[2])*4)
	}
	if data[3] < 15 || data[3] > 17 {
		return nil, damagef("ZF entry with blocks of 2^%d bytes (zisofs uses 2^15 to 2^17)", data[3])
	}
	return &zfInfo{blockLog: data[3], size: int64(binary.LittleEndian.Uint32(data[4:8]))}, nil
}

// zisofsReader reads the uncompressed content of a zisofs file whose
// compressed bytes raw holds (rawSize of them).
type zisofsReader struct {
	raw     io.ReaderAt
	rawSize int64
	info    zfInfo
	once    sync.Once
	ptrs    []uint32
	err     error

	mu    sync.Mutex
	block int64 // the block in buf, -1 for none
	buf   []byte
}

func newZisofsReader(raw io.ReaderAt, rawSize int64, info zfInfo) *zisofsReader {
	return &zisofsReader{raw: raw, rawSize: rawSize, info: info, block: -1}
}

// table reads and checks the header and the block table, once.
func (z *zisofsReader) table() error {
	z.once.Do(func() {
		bs := int64(1) << z.info.blockLog
		nblocks := (z.info.size + bs - 1) / bs
		tableEnd := 16 + 4*(nblocks+1)
		if tableEnd > z.rawSize {
			z.err = fmt.Errorf("zisofs file of %d bytes is too short for its %d blocks", z.rawSize, nblocks)
			return
		}
		hdr := make([]byte, tableEnd)
		if _, err := z.raw.ReadAt(hdr, 0); err != nil {
			z.err = err
			return
		}
		if !bytes.Equal(hdr[:8], zisofsMagic) || int64(binary.LittleEndian.Uint32(hdr[8:])) != z.info.size ||
			hdr[12] != 4 || hdr[13] != z.info.blockLog {
			z.err = fmt.Errorf("zisofs header does not match its ZF entry")
			return
		}
		z.ptrs = make([]uint32, nblocks+1)
		for i := range z.ptrs {
			z.ptrs[i] = binary.LittleEndian.Uint32(hdr[16+4*i:])
			if int64(z.ptrs[i]) < tableEnd || int64(z.ptrs[i]) > z.rawSize || i > 0 && z.ptrs[i] < z.ptrs[i-1] ||
				i > 0 && int64(z.ptrs[i]-z.ptrs[i-1]) > 2*bs+1024 {
				z.err = fmt.Errorf("zisofs block table is out of order or out of the file")
				z.ptrs = nil
				return
			}
		}
	})
	return z.err
}

// load decompresses block i into z.buf; z.mu is held.
func (z *zisofsReader) load(i int64) error {
	if z.block == i {
		return nil
	}
	bs := int64(1) << z.info.blockLog
	want := min(bs, z.info.size-i*bs)
	if z.buf == nil {
		z.buf = make([]byte, bs)
	}
	z.block = -1
	from, to := int64(z.ptrs[i]), int64(z.ptrs[i+1])
	if from == to { // a block of zeros
		clear(z.buf[:want])
		z.block = i
		return nil
	}
	comp := make([]byte, to-from)
	if _, err := z.raw.ReadAt(comp, from); err != nil {
		return err
	}
	zr, err := zlib.NewReader(bytes.NewReader(comp))
	if err != nil {
		return fmt.Errorf("zisofs block %d: %v", i, err)
	}
	n, err := io.ReadFull(zr, z.buf[:want])
	if err != nil {
		return fmt.Errorf("zisofs block %d: %d of %d bytes: %v", i, n, want, err)
	}
	z.block = i
	return nil
}

func (z *zisofsReader) ReadAt(p []byte, off int64) (int, error) {
	if err := z.table(); err != nil {
		return 0, err
	}
	if off >= z.info.size {
		return 0, io.EOF
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	bs := int64(1) << z.info.blockLog
	done := 0
	for len(p) > 0 && off < z.info.size {
		i := off / bs
		if err := z.load(i); err != nil {
			return done, err
		}
		in := off - i*bs
		n := copy(p, z.buf[in:min(bs, z.info.size-i*bs)])
		done += n
		p, off = p[n:], off+int64(n)
	}
	if len(p) > 0 {
		return done, io.EOF
	}
	return done, nil
}
