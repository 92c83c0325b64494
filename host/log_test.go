package host

import (
	"os"
	"sync"
	"testing"
	"time"
)

func TestUpgradeLogAppendRead(t *testing.T) {
	dir := t.TempDir()
	l := OpenLog(dir, "")
	start := time.Now().Add(-1500 * time.Millisecond)
	e, err := l.Append(LogEntry{Action: "check pre", Start: start, Result: ResultSuccess, Scope: "host"})
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != 1 || e.Mode != ModeManual || e.Host == "" || e.Duration < 1.4 {
		t.Fatalf("entry not filled in: %+v", e)
	}
	e2, _ := OpenLog(dir, ModeAutomatic).Append(LogEntry{Action: "boot resume", Parent: e.ID, Result: ResultFailed})
	if e2.ID != 2 || e2.Mode != ModeAutomatic || e2.Parent != 1 {
		t.Fatalf("second entry: %+v", e2)
	}
	got, bad, err := l.Read()
	if err != nil || bad != 0 || len(got) != 2 || got[1].Action != "boot resume" {
		t.Fatalf("read %+v bad=%d err=%v", got, bad, err)
	}
}

func TestUpgradeLogTornLineAndConcurrency(t *testing.T) {
	dir := t.TempDir()
	l := OpenLog(dir, "")
	l.Append(LogEntry{Action: "a"})
	// A crash in the middle of a write leaves a torn line.
	f, _ := os.OpenFile(l.Path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":2,"action":"tor`)
	f.Close()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := OpenLog(dir, "").Append(LogEntry{Action: "c"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, bad, err := l.Read()
	if err != nil {
		t.Fatal(err)
	}
	if bad != 1 {
		t.Errorf("torn lines counted: %d, want 1", bad)
	}
	seen := map[int64]bool{}
	for _, e := range got {
		if seen[e.ID] {
			t.Fatalf("id %d used twice", e.ID)
		}
		seen[e.ID] = true
	}
	if len(got) != 21 {
		t.Fatalf("%d entries, want 21", len(got))
	}
}

func TestUpgradeLogAbsent(t *testing.T) {
	got, bad, err := OpenLog(t.TempDir(), "").Read()
	if err != nil || bad != 0 || len(got) != 0 {
		t.Fatalf("absent log: %v %d %v", got, bad, err)
	}
}
