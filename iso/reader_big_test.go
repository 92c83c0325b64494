package iso

import (
	"bytes"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kdomanski "github.com/kdomanski/iso9660"

	"upgradectl/host/hosttest"
)

// TestBigDirectory: a directory of 8,000 files, far larger than one
// sector, has every Rock Ridge name, mode, time and content right
// (kdomanski/iso9660 gave 4,316 distinct names for 8,000 files), and
// reading all of them parses each directory once (go-diskfs parses the
// parent directory again for every file it opens: 80 s for 8,000 files).
func TestBigDirectory(t *testing.T) {
	src := rtTree(t, 8000)
	im, err := Open(rtMkisofs(t, src))
	rtMust(t, err)
	defer im.Close()
	big, err := im.Lstat("big")
	rtMust(t, err)
	if big.Size <= 100*sectorSize {
		t.Fatalf("big directory is only %d bytes", big.Size)
	}
	names := map[string]bool{}
	modes := map[fs.FileMode]bool{}
	kids, err := im.Children(big)
	rtMust(t, err)
	for _, k := range kids {
		names[k.Name] = true
		modes[k.Mode] = true
	}
	if len(kids) != 8000 || len(names) != 8000 || len(modes) != 256 {
		t.Fatalf("%d entries, %d names, %d modes; want 8000, 8000, 256", len(kids), len(names), len(modes))
	}
	logKdomanskiNames(t, im)
	// Every name, mode, owner, time and content, read by path.
	rtCompareTree(t, im, src, os.Geteuid() == 0)

	// Each directory was parsed once, however many files were read.
	var dirBytes int64
	fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			fi, _ := d.Info()
			dirBytes += fi.Size()
		}
		return err
	})
	if im.dirBytes != dirBytes {
		t.Fatalf("parsed %d bytes of directories, the directories have %d", im.dirBytes, dirBytes)
	}
}

// TestMultiExtentFile: a 4.5 GiB file is stored by xorriso in two
// extents and reads whole and right, across the extent boundary (go-diskfs
// returns the first extent twice; kdomanski reads the first extent only).
func TestMultiExtentFile(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "src")
	rtMust(t, os.Mkdir(src, 0o755))
	const size = 4<<30 + 4<<20
	huge := filepath.Join(src, "huge.bin")
	f, err := os.Create(huge)
	rtMust(t, err)
	rtMust(t, f.Truncate(size))
	// Random data where a mix-up would show: the start, around the 4 GiB
	// extent boundary, the end; the rest is a hole.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, off := range []int64{0, 4<<30 - 1<<20, size - 1<<20} {
		b := make([]byte, 2<<20)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_, err := f.WriteAt(b[:min(int64(len(b)), size-off)], off)
		rtMust(t, err)
	}
	rtMust(t, f.Close())
	rtMust(t, os.WriteFile(filepath.Join(src, "after"), []byte("after\n"), 0o644))

	// xorriso writes the image to a pipe and the test stores it sparse:
	// cheap on any filesystem.
	img := filepath.Join(t.TempDir(), "huge.iso")
	cmd := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-iso-level", "3", src)
	out, err := cmd.StdoutPipe()
	rtMust(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	rtMust(t, cmd.Start())
	t0 := time.Now()
	n := writeSparse(t, img, out)
	t.Logf("xorriso to a sparse file: %v", time.Since(t0))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, stderr.Bytes())
	}
	if n < size {
		t.Fatalf("image of %d bytes", n)
	}

	im, err := Open(img)
	rtMust(t, err)
	defer im.Close()
	e, err := im.Lstat("huge.bin")
	rtMust(t, err)
	if e.Size != size || len(e.extents) < 2 {
		t.Fatalf("huge.bin: %d bytes in %d extents", e.Size, len(e.extents))
	}
	if b, err := im.ReadFile("after"); err != nil || string(b) != "after\n" {
		t.Fatalf("file after the big one: %q %v", b, err)
	}
	// The regions of data and some of the holes, compared with the
	// source (reading all of it twice takes half a minute here).
	want, err := os.Open(huge)
	rtMust(t, err)
	defer want.Close()
	got := im.OpenEntry(e)
	a, b := make([]byte, 4<<20), make([]byte, 4<<20)
	for _, off := range []int64{0, 4<<30 - 2<<20, size - 3<<20, 1 << 30, 3<<30 + 12345, 4<<30 + 1<<20 + 77} {
		na, erra := got.ReadAt(a, off)
		nb, errb := want.ReadAt(b, off)
		if na != nb || !bytes.Equal(a[:na], b[:nb]) || (erra == nil) != (errb == nil) {
			t.Fatalf("content differs in the 4 MiB at %d (%d %v, want %d %v)", off, na, erra, nb, errb)
		}
	}
	if n, err := got.ReadAt(a[:1], size); n != 0 || err != io.EOF {
		t.Fatalf("more than %d bytes: %d %v", size, n, err)
	}
	// Reads across the boundary at odd offsets.
	for _, off := range []int64{int64(e.extents[0].n) - 3, int64(e.extents[0].n), size - 5} {
		p, q := make([]byte, 7), make([]byte, 7)
		nb, _ := want.ReadAt(q, off)
		na, _ := got.ReadAt(p, off)
		if na != nb || !bytes.Equal(p[:na], q[:nb]) {
			t.Errorf("ReadAt %d: %x, want %x", off, p[:na], q[:nb])
		}
	}
}

// writeSparse copies r to a new file at path, leaving holes for blocks of
// zeros, and returns the size.
func writeSparse(t *testing.T, path string, r io.Reader) int64 {
	f, err := os.Create(path)
	rtMust(t, err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, 1<<20)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		rtMust(t, err)
	}
	rtMust(t, f.Truncate(off))
	return off
}

// logKdomanskiNames logs how many distinct names kdomanski/iso9660 reads in
// the big directory (the defect this test guards against; not asserted).
func logKdomanskiNames(t *testing.T, im *Image) {
	defer func() {
		if r := recover(); r != nil {
			t.Logf("kdomanski/iso9660 panics: %v", r)
		}
	}()
	theirs, err := kdomanski.OpenImage(im.f)
	if err != nil {
		t.Logf("kdomanski/iso9660: %v", err)
		return
	}
	root, err := theirs.RootDir()
	if err != nil {
		return
	}
	kids, _ := root.GetChildren()
	for _, k := range kids {
		if k.Name() == "big" {
			files, err := k.GetChildren()
			names := map[string]bool{}
			for _, f := range files {
				names[f.Name()] = true
			}
			t.Logf("kdomanski/iso9660 reads %d entries with %d distinct names in big/ (%v); ours 8000", len(files), len(names), err)
		}
	}
}

// TestMultiExtentRecords: a file in several extents with other data
// between them reads whole, by path, at any offset and when extracted;
// a multi-extent file without its last record is an error.
func TestMultiExtentRecords(t *testing.T) {
	data := make([]byte, 20000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	split := &twNode{name: "split.bin", mode: 0o100640, data: data, split: 3}
	img := twBuild(twDir("", twFile("a", "a"), split, twFile("z", "z")), true)
	im, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)))
	rtMust(t, err)
	e, err := im.Lstat("split.bin")
	rtMust(t, err)
	if len(e.extents) != 3 || e.Size != int64(len(data)) || e.Mode != 0o640 {
		t.Fatalf("split.bin: %d extents, %d bytes, mode %v", len(e.extents), e.Size, e.Mode)
	}
	if b, err := im.ReadFile("split.bin"); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("ReadFile: %d bytes, %v", len(b), err)
	}
	r := im.OpenEntry(e)
	for _, off := range []int64{0, 6143, 6144, 6145, 12287, 12288, 19990} {
		b := make([]byte, 100)
		n, err := r.ReadAt(b, off)
		want := data[off:min(off+100, int64(len(data)))]
		if n != len(want) || !bytes.Equal(b[:n], want) || (n < 100) != (err == io.EOF) {
			t.Errorf("ReadAt %d: %d bytes, %v", off, n, err)
		}
	}
	dest := t.TempDir()
	rtMust(t, Extract(im, dest, []string{"split.bin"}))
	if b, err := os.ReadFile(filepath.Join(dest, "split.bin")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("extracted: %d bytes, %v", len(b), err)
	}

	// The last record still says "more extents follow".
	last := bytes.LastIndex(img, []byte("\x09split.bin")) + 1 - 33
	img[last+25] |= flagMultiExent
	if err := readAll(img); err == nil || !strings.Contains(err.Error(), "unfinished multi-extent file") {
		t.Fatalf("unfinished multi-extent file: %v", err)
	}
}
