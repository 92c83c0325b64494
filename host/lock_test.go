package host

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLockStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l, err := LockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock is per open file: a second open conflicts as another process would.
	_, err = LockStateDir(dir)
	if KindOf(err) != KindBusy {
		t.Fatalf("second lock: %v, want busy", err)
	}
	if !strings.Contains(err.Error(), "another upgradectl is running (process ") {
		t.Errorf("busy message does not name the holder: %v", err)
	}
	if HintOf(err) == "" {
		t.Error("busy error has no hint")
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := LockStateDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}
