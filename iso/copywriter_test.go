package iso

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"upgradectl/checksum"
	"upgradectl/host/hosttest"
)

// TestCopyWriter writes a copy as Stream hands it over (blocks of
// checksum.BlockSize, then a short last one) on ext4, which takes direct
// I/O, and on ramfs, which does not: the full blocks go direct where they
// can, a last block of a size no device takes direct (not a multiple of
// 512 bytes) falls back to the page cache, and the file holds exactly the
// data either way.
func TestCopyWriter(t *testing.T) {
	hosttest.RequireRoot(t)
	ext4 := hosttest.LoopFS(t, "ext4", 64<<20)
	ramfs := t.TempDir()
	hosttest.Run(t, "mount", "-t", "ramfs", "ramfs", ramfs)
	t.Cleanup(func() { hosttest.Run(t, "umount", ramfs) })

	data := make([]byte, 3*checksum.BlockSize+100)
	for i := range data {
		data[i] = byte(i*31 + i>>11)
	}
	for _, c := range []struct {
		dir    string
		direct bool // whether the full blocks go direct
	}{{ext4, true}, {ramfs, false}} {
		p := filepath.Join(c.dir, "copy")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := newCopyWriter(int(f.Fd()))
		if w.direct != c.direct {
			t.Errorf("%s: direct I/O %v, want %v", c.dir, w.direct, c.direct)
		}
		for off := 0; off < len(data); off += checksum.BlockSize {
			block := make([]byte, min(checksum.BlockSize, len(data)-off)) // as Stream's buffers
			copy(block, data[off:])
			if err := w.write(block); err != nil {
				t.Fatalf("%s: block at %d: %v", c.dir, off, err)
			}
			if full := len(block) == checksum.BlockSize; full && w.direct != c.direct {
				t.Errorf("%s: after the full block at %d direct I/O is %v", c.dir, off, w.direct)
			}
		}
		if w.direct {
			t.Errorf("%s: the short last block was written direct", c.dir)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: the copy differs from the data (%d bytes, %v)", c.dir, len(got), err)
		}
	}
}
