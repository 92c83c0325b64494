package iso

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// An extraction cut short (a crash, a kill -9) leaves its record partial
// and files in the directory: it is not dropped as stale, and unmounting it
// empties the directory and drops the record. (The crash itself is not
// made here: the record and the files are what it leaves.)
func TestPartialExtractionIsEmptied(t *testing.T) {
	state := t.TempDir()
	state, _ = filepath.EvalSymlinks(state)
	dir := filepath.Join(state, "mnt")
	if err := os.MkdirAll(filepath.Join(dir, "sub/deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "sub/deeper/file"), []byte("half"), 0o444)
	os.Chmod(filepath.Join(dir, "sub/deeper"), 0o555)
	rec := MountRecord{Dir: dir, Image: "/nowhere.iso", Method: MethodExtract, Partial: true, MountedAt: time.Now().UTC()}
	if err := writeMounts(state, []MountRecord{rec}); err != nil {
		t.Fatal(err)
	}
	ms, err := Mounts(state)
	if err != nil || len(ms) != 1 || ms[0].State != StatePartial {
		t.Fatalf("Mounts: %+v %v, want one partial", ms, err)
	}
	if gone, err := CleanStaleMounts(state, nil); err != nil || len(gone) != 0 {
		t.Fatalf("CleanStaleMounts dropped %v (%v): a partial extraction is not stale", gone, err)
	}
	if err := Unmount(dir, false, MountOptions{StateDir: state}); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("%s after Unmount: %d entries (%v), want empty", dir, len(ents), err)
	}
	if ms, _ := Mounts(state); len(ms) != 0 {
		t.Fatalf("records after Unmount: %+v", ms)
	}
	// A finished extraction whose directory is gone is stale.
	rec.Partial = false
	writeMounts(state, []MountRecord{rec})
	os.Remove(dir)
	if ms, _ := Mounts(state); len(ms) != 1 || ms[0].State != StateStale {
		t.Fatalf("extraction without its directory: %+v, want stale", ms)
	}
}

// Extraction is refused outside the state directory: it empties the
// directory first.
func TestExtractOnlyIntoTheStateDirectory(t *testing.T) {
	state, other := t.TempDir(), t.TempDir()
	keep := filepath.Join(other, "keep")
	os.WriteFile(keep, []byte("mine"), 0o644)
	rec := MountRecord{Dir: other, Image: "/nowhere.iso", Method: MethodExtract, Why: "test"}
	if err := extractInstead(&rec, MountOptions{StateDir: state}, nil); err == nil {
		t.Fatal("extracted outside the state directory")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("a file outside the state directory was removed: %v", err)
	}
}
