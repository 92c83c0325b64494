package host

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "two" || fi.Mode().Perm() != 0o640 {
		t.Fatalf("content %q mode %v", b, fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("stray files left: %v", ents)
	}
	// A directory that does not exist: error, nothing written.
	if err := WriteFileAtomic(filepath.Join(dir, "no/such/file"), []byte("x"), 0o644); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestWriteFileAtomicENOSPC(t *testing.T) {
	// A real full filesystem: a tiny tmpfs.
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := mountTmpfs(dir, 64*1024); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	defer unmount(dir)
	p := filepath.Join(dir, "f")
	if err := WriteFileAtomic(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1<<20)
	err := WriteFileAtomic(p, big, 0o644)
	if err == nil {
		t.Fatal("a write larger than the filesystem succeeded")
	}
	// One message naming the file, not the temporary, and the cause once.
	if want := "cannot write " + p + ": no space left on device"; err.Error() != want || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("error %q, want %q (ENOSPC)", err, want)
	}
	b, _ := os.ReadFile(p)
	if string(b) != "old" {
		t.Fatalf("old content lost: %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary file left behind: %v", ents)
	}
}

// TestWriteFileAtomicRemovesStaleTemps: a temporary that a crashed write
// left is removed by a later write once it is old; a recent one (a write
// that may be under way) and the temporaries of other files stay.
func TestWriteFileAtomicRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state[1].json")
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{".state[1].json.tmp-111", ".state[1].json.tmp-222", ".other.json.tmp-333"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
		if n != ".state[1].json.tmp-222" {
			os.Chtimes(filepath.Join(dir, n), old, old)
		}
	}
	if err := WriteFileAtomic(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{".other.json.tmp-333", ".state[1].json.tmp-222", "state[1].json"}; strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("left %q, want %q", left, want)
	}
}

func TestReadSmallFile(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok")
	if err := os.WriteFile(ok, []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadSmallFile(ok); err != nil || string(b) != "x = 1\n" {
		t.Errorf("a small file: %q %v", b, err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o644); err != nil || os.Truncate(big, maxSmallFile+1) != nil {
		t.Fatal("cannot make the big file")
	}
	for p, want := range map[string]string{"/dev/zero": "not a regular file", fifo: "not a regular file", big: "larger than 16.0MiB"} {
		if _, err := ReadSmallFile(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", p, err, want)
		}
	}
}

// TestOpenRegularRefuses: a FIFO (opening one for reading waits for a
// writer), a directory and a character device are refused at once; a
// block device is an image only for OpenImage.
func TestOpenRegularRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, open := range []func(string) (*os.File, error){OpenRegular, OpenImage} {
		for _, p := range []string{fifo, dir, "/dev/null"} {
			done := make(chan error, 1)
			go func() {
				f, err := open(p)
				if err == nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrNotRegular) {
					t.Errorf("%s: %v, want %v", p, err, ErrNotRegular)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: still waiting after 10s", p)
			}
		}
		f, err := open(file)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if _, err := ReadSmallFile(fifo); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadSmallFile: %v", err)
	}
	if _, err := ReadRegularFile(fifo); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadRegularFile: %v", err)
	}
}
