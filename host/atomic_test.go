package host

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
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
