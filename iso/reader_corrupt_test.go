package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// readAll opens an image held in memory, walks it, reads every file and
// symlink, and returns the first error. It is what the fuzz target does.
func readAll(data []byte) error {
	_, _, err := readAllWarnings(data)
	return err
}

// readAllWarnings is readAll that also returns the names of the entries it
// read and the warnings of the skipped ones.
func readAllWarnings(data []byte) (read []string, warnings []string, err error) {
	im, err := OpenReaderAt(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, err
	}
	defer func() { warnings = im.Warnings() }()
	_ = im.Info()
	var first error
	keep := func(err error) {
		if first == nil && err != nil {
			first = err
		}
	}
	fs.WalkDir(im, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			keep(err)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			keep(err)
			return nil
		}
		e := fi.Sys().(*Entry)
		read = append(read, p)
		switch {
		case e.Mode.IsRegular():
			b, err := im.ReadFile(p)
			keep(err)
			if err == nil && int64(len(b)) != e.Size {
				keep(errors.New("short read"))
			}
		case e.Mode&fs.ModeSymlink != 0:
			_, err := im.ReadLink(p)
			keep(err)
			im.Stat(p) // may well point nowhere
			im.ReadFile(p)
		}
		return nil
	})
	return read, nil, first
}

// recordOf is the byte offset of the directory record whose identifier is
// id (its first occurrence).
func recordOf(t *testing.T, img []byte, id string) int {
	t.Helper()
	i := bytes.Index(img, []byte(id))
	if i < 33 || int(img[i-1]) != len(id) {
		t.Fatalf("no record %q", id)
	}
	return i - 33
}

func put32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

// corruptBase is a small sane image for the corruptions below.
func corruptBase() *twNode {
	return twDir("",
		twFile("FILEA", "aaaa"),
		twDir("DIRB", twDir("DIRC", twFile("FILED", "dddd")), twLink("LINKE", "../FILEA")),
		twFile("FILEF", strings.Repeat("f", 5000)),
	)
}

// TestCorruptImages: corrupt images give an error, never a panic, a huge
// allocation or a hang (both Go libraries panic or run out of memory on
// some of these: kdomanski makeslice in GetChildren, go-diskfs in
// parsePathTable, parseDirEntries, parseTimestamps and a nil dereference
// without a primary volume descriptor).
func TestCorruptImages(t *testing.T) {
	pvd := 16 * sectorSize
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, img []byte) []byte
		want    string // "" means: reads fine
	}{
		{"sane", func(t *testing.T, img []byte) []byte { return img }, ""},
		{"no primary volume descriptor", func(t *testing.T, img []byte) []byte {
			img[pvd] = 2 // a supplementary one without Joliet escapes
			return img
		}, "no primary volume descriptor"},
		{"no terminator", func(t *testing.T, img []byte) []byte {
			for i := 17; i < 17+maxDescriptors; i++ {
				img = append(img, make([]byte, sectorSize)...)
				copy(img[i*sectorSize:], img[pvd:pvd+sectorSize])
			}
			return img
		}, "no volume descriptor set terminator"},
		{"no CD001", func(t *testing.T, img []byte) []byte { copy(img[pvd+1:], "CD002"); return img }, "not an ISO 9660 image"},
		{"block size 512", func(t *testing.T, img []byte) []byte {
			binary.LittleEndian.PutUint16(img[pvd+128:], 512)
			return img
		}, "logical block size 512"},
		{"volume larger than the file", func(t *testing.T, img []byte) []byte {
			put32(img[pvd+80:], 1<<31)
			return img
		}, "truncated: the file has"},
		{"root of 4 GiB", func(t *testing.T, img []byte) []byte {
			put32(img[pvd+156+10:], 0xFFFFFFFF)
			return img
		}, "ends beyond the volume"},
		{"root not a directory", func(t *testing.T, img []byte) []byte {
			img[pvd+156+25] = 0
			return img
		}, "root directory record is not a directory"},
		{"garbage path tables", func(t *testing.T, img []byte) []byte {
			for i := 132; i < 156; i++ {
				img[pvd+i] = 0xEE
			}
			return img
		}, ""},
		{"file beyond the volume", func(t *testing.T, img []byte) []byte {
			put32(img[recordOf(t, img, "FILEF")+10:], 3<<30)
			return img
		}, `data of "FILEF" at byte`},
		{"file extent beyond the volume", func(t *testing.T, img []byte) []byte {
			put32(img[recordOf(t, img, "FILEF")+2:], 1<<30)
			return img
		}, "ends beyond the volume"},
		{"directory loops to the root", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "DIRC")
			root := binary.LittleEndian.Uint32(img[pvd+156+2:])
			put32(img[r+2:], root)
			return img
		}, "loops back to a directory above it"},
		{"directory loops to its parent", func(t *testing.T, img []byte) []byte {
			c, b := recordOf(t, img, "DIRC"), recordOf(t, img, "DIRB")
			copy(img[c+2:c+18], img[b+2:b+18])
			return img
		}, "loops back to a directory above it"},
		{"directory shared by two parents", func(t *testing.T, img []byte) []byte {
			// FILEA becomes a second name for DIRC.
			a, c := recordOf(t, img, "FILEA"), recordOf(t, img, "DIRC")
			copy(img[a+2:a+18], img[c+2:c+18])
			img[a+25] = flagDir
			return img
		}, "is also a directory elsewhere"},
		{"record shorter than its header", func(t *testing.T, img []byte) []byte {
			img[recordOf(t, img, "FILEA")] = 20
			return img
		}, "bad directory record"},
		{"name longer than its record", func(t *testing.T, img []byte) []byte {
			img[recordOf(t, img, "FILEA")+32] = 200
			return img
		}, "bad directory record"},
		{"zero name length", func(t *testing.T, img []byte) []byte {
			img[recordOf(t, img, "FILEA")+32] = 0
			return img
		}, "name length 0"},
		{"bad dates", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "FILEA")
			copy(img[r+18:], []byte{255, 13, 0, 99, 99, 99, 127})
			copy(img[pvd+813:], "2024139999999999\x7f")
			i := bytes.Index(img[r:], []byte("TF")) + r
			copy(img[i+5:], []byte{255, 0, 32, 25, 61, 61, 0x80})
			return img
		}, ""},
		{"system use entry overruns its record", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "FILEA")
			i := bytes.Index(img[r:], []byte("PX")) + r
			img[i+2] = 250
			return img
		}, "warning: directory /: entry \"FILEA\" skipped: PX entry of 250 bytes overruns its record"},
		{"short PX", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "FILEA")
			i := bytes.Index(img[r:], []byte("PX")) + r
			img[i+2] = 8
			return img
		}, "warning: directory /: entry \"FILEA\" skipped: short PX entry"},
		{"symlink component overruns", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "LINKE")
			i := bytes.Index(img[r:], []byte("SL")) + r
			img[i+6] = 200 // the first component's length
			return img
		}, "warning: directory /DIRB: entry \"LINKE\" skipped: a symlink component overruns its SL entry"},
		{"continuation area loop", func(t *testing.T, img []byte) []byte {
			// FILEA's PX becomes a CE entry pointing at FILEA's own record.
			r := recordOf(t, img, "FILEA")
			i := bytes.Index(img[r:], []byte("PX")) + r
			copy(img[i:], []byte{'C', 'E', 28, 1})
			put32(img[i+4:], uint32(r/sectorSize))
			put32(img[i+12:], uint32(i%sectorSize))
			put32(img[i+20:], 28)
			return img
		}, "warning: directory /: entry \"FILEA\" skipped: too many system use continuation areas"},
		{"continuation area beyond the volume", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "FILEA")
			i := bytes.Index(img[r:], []byte("PX")) + r
			copy(img[i:], []byte{'C', 'E', 28, 1})
			put32(img[i+4:], 1<<30)
			put32(img[i+12:], 0)
			put32(img[i+20:], 2048)
			return img
		}, "warning: directory /: entry \"FILEA\" skipped: continuation area at block 0 or beyond the volume"},
		{"huge continuation area", func(t *testing.T, img []byte) []byte {
			r := recordOf(t, img, "FILEA")
			i := bytes.Index(img[r:], []byte("PX")) + r
			copy(img[i:], []byte{'C', 'E', 28, 1})
			put32(img[i+4:], 0)
			put32(img[i+12:], 0)
			put32(img[i+20:], 0xFFFFFFF0)
			return img
		}, "warning: directory /: entry \"FILEA\" skipped: too many system use continuation areas"},
		{"overlapping directories", func(t *testing.T, img []byte) []byte {
			// DIRB's data length covers the rest of the image.
			b := recordOf(t, img, "DIRB")
			loc := binary.LittleEndian.Uint32(img[b+2:])
			put32(img[b+10:], uint32(len(img))-loc*sectorSize)
			return img
		}, "bad directory record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.corrupt(t, twBuild(corruptBase(), true))
			read, warnings, err := readAllWarnings(img)
			if w, ok := strings.CutPrefix(tc.want, "warning: "); ok {
				// Damaged Rock Ridge data: that entry is skipped with a
				// warning naming it, every other entry reads.
				if err != nil || len(warnings) != 1 || warnings[0] != w {
					t.Fatalf("error %v, warnings %q; want the one warning %q", err, warnings, w)
				}
				skipped := strings.Trim(strings.SplitN(w, `"`, 3)[1], `"`)
				if !slices.Contains(read, "DIRB/DIRC/FILED") || !slices.Contains(read, "FILEF") || slices.ContainsFunc(read, func(p string) bool { return path.Base(p) == skipped }) {
					t.Fatalf("read %q", read)
				}
				return
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want %q", tc.want)
			case tc.want != "" && (!strings.Contains(err.Error(), tc.want) || host.KindOf(err) != host.KindBad):
				t.Fatalf("error %v (kind %d), want %q", err, host.KindOf(err), tc.want)
			}
		})
	}
}

// TestCorruptXorrisoImages: every byte of the descriptors and directories
// of a real image set to 0x00, 0xFF and a bit flipped, one at a time: an
// error or a readable image, never a panic.
func TestCorruptXorrisoImages(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "src")
	rtMust(t, os.MkdirAll(filepath.Join(src, "d/e"), 0o755))
	rtMust(t, os.WriteFile(filepath.Join(src, "d/e/f"), []byte("f"), 0o644))
	rtMust(t, os.Symlink("../x/y", filepath.Join(src, "d/l")))
	img, err := os.ReadFile(rtMkisofs(t, src, "-R", "-J", "-no-pad"))
	rtMust(t, err)
	im, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)))
	rtMust(t, err)
	// The metadata ends where the first file's data starts.
	e, err := im.Lstat("d/e/f")
	rtMust(t, err)
	end := int(e.extents[0].off)
	n := 0
	for i := 16 * sectorSize; i < end; i++ {
		if i%sectorSize == 0 && bytes.Count(img[i:i+sectorSize], []byte{0}) == sectorSize {
			i += sectorSize - 1 // an empty sector
			continue
		}
		orig := img[i]
		for _, v := range []byte{0, 0xFF, orig ^ 0x10} {
			img[i] = v
			readAll(img)
			n++
		}
		img[i] = orig
	}
	t.Logf("%d corrupt images read", n)
}

// TestSymlinkEmptyComponents: xorriso writes an empty component of a
// symlink target ("a//b") as a ROOT component; read as the root it turned
// the relative a//b into /b. bsdtar, when installed, reads the same image
// to compare.
func TestSymlinkEmptyComponents(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "src")
	rtMust(t, os.MkdirAll(src, 0o755))
	targets := map[string]string{"l1": "a//b", "l2": "/x//y", "l3": "..//c", "l4": "/abs", "l5": "a///b"}
	for name, target := range targets {
		rtMust(t, os.Symlink(target, filepath.Join(src, name)))
	}
	p := rtMkisofs(t, src, "-R")
	img, err := os.ReadFile(p)
	rtMust(t, err)
	im, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)))
	rtMust(t, err)
	for name, target := range targets {
		got, err := im.ReadLink(name)
		if err != nil || got != target {
			t.Errorf("%s -> %q, %v; want %q", name, got, err, target)
		}
	}
	if _, err := exec.LookPath("bsdtar"); err != nil {
		t.Log("no bsdtar (libarchive-tools): not compared")
		return
	}
	out, err := exec.Command("bsdtar", "-tvf", p).Output()
	rtMust(t, err)
	for name, target := range targets {
		if !strings.Contains(string(out), " "+name+" -> "+target+"\n") {
			t.Errorf("bsdtar reads %s otherwise:\n%s", name, out)
		}
	}
}

// TestNameContinuedIntoNothing: an NM entry that says the name goes on,
// followed by a continuation area at block 0, showed a cut name as if it
// were whole; xorriso refuses it. Under the damage rule it is skipped with
// a warning, and the rest reads.
func TestNameContinuedIntoNothing(t *testing.T) {
	img := twBuild(corruptBase(), true)
	r := recordOf(t, img, "FILEA")
	i := bytes.Index(img[r:], []byte("NM")) + r
	img[i+4] |= 0x01 // CONTINUE
	j := bytes.Index(img[r:], []byte("PX")) + r
	copy(img[j:], []byte{'C', 'E', 28, 1})
	put32(img[j+4:], 0)
	put32(img[j+12:], 0)
	put32(img[j+20:], 16)
	read, warnings, err := readAllWarnings(img)
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], `entry "FILEA" skipped: continuation area at block 0`) {
		t.Fatalf("error %v, warnings %q", err, warnings)
	}
	if len(read) == 0 || slices.ContainsFunc(read, func(p string) bool { return strings.HasPrefix(p, "filea") }) {
		t.Fatalf("read %q", read)
	}
	// Without the continuation area: the name is continued past its last
	// NM entry.
	img = twBuild(corruptBase(), true)
	i = bytes.Index(img[r:], []byte("NM")) + r
	img[i+4] |= 0x01
	_, warnings, err = readAllWarnings(img)
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "continued past its last NM entry") {
		t.Fatalf("error %v, warnings %q", err, warnings)
	}
}
