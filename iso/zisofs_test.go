package iso

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"upgradectl/host/hosttest"
)

// TestZisofs: files xorriso compressed with zisofs came back compressed,
// with their compressed size, in ls, cat, extract and the mount. They are
// read decompressed, byte for byte the source, with their real size.
func TestZisofs(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "src")
	rtMust(t, os.MkdirAll(src, 0o755))
	var seq bytes.Buffer
	for i := 0; i < 60000; i++ {
		seq.WriteString("line of a compressible file\n")
	}
	files := map[string][]byte{
		"seq.txt":   seq.Bytes(),                      // many blocks
		"zeros.bin": make([]byte, 300<<10),            // blocks of zeros
		"small.txt": []byte("smaller than a block\n"), // one block
	}
	for n, b := range files {
		rtMust(t, os.WriteFile(filepath.Join(src, n), b, 0o644))
	}
	img := filepath.Join(t.TempDir(), "z.iso")
	out, err := exec.Command("xorriso", "-outdev", img, "-map", src, "/", "-set_filter_r", "--zisofs", "/", "--", "-commit").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	im, err := Open(img)
	rtMust(t, err)
	defer im.Close()
	compressed := 0
	for n, want := range files {
		e, err := im.Lstat(n)
		rtMust(t, err)
		if e.zf != nil {
			compressed++
		}
		if e.Size != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", n, e.Size, len(want))
		}
		got, err := im.ReadFile(n)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: read %d bytes, %v; not the source", n, len(got), err)
		}
		// Reads at odd offsets across blocks.
		r := im.OpenEntry(e)
		part := make([]byte, 70000)
		if len(want) > 40000 {
			n2, err := r.ReadAt(part, 32760)
			if (err != nil && err != io.EOF) || !bytes.Equal(part[:n2], want[32760:32760+n2]) {
				t.Errorf("%s: read at 32760: %d, %v", n, n2, err)
			}
		}
	}
	if compressed < 2 {
		t.Fatalf("xorriso compressed %d files: the test does not test", compressed)
	}
	dest := filepath.Join(t.TempDir(), "dest")
	rtMust(t, Extract(im, dest, nil))
	for n, want := range files {
		got, err := os.ReadFile(filepath.Join(dest, n))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("extracted %s: %d bytes, %v", n, len(got), err)
		}
	}
}

// FuzzZisofs: any compressed content and ZF numbers read as an error or
// data, never a panic or an allocation the numbers ask for.
func FuzzZisofs(f *testing.F) {
	hdr := append(append([]byte{}, zisofsMagic...), 10, 0, 0, 0, 4, 15, 0, 0, 24, 0, 0, 0, 24, 0, 0, 0)
	f.Add(hdr, uint32(10), uint8(15))
	f.Add([]byte{}, uint32(1<<31), uint8(17))
	f.Fuzz(func(t *testing.T, data []byte, size uint32, blockLog uint8) {
		if blockLog < 15 || blockLog > 17 {
			return
		}
		z := newZisofsReader(bytes.NewReader(data), int64(len(data)), zfInfo{blockLog: blockLog, size: int64(size)})
		buf := make([]byte, 64<<10)
		for off := int64(0); off < int64(size) && off < 1<<20; off += int64(len(buf)) {
			if _, err := z.ReadAt(buf, off); err != nil {
				return
			}
		}
	})
}
