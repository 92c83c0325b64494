package host

import (
	"os"
	"strings"
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

// TestTakeLosesNoEntry: entries appended while the log is taken (archived
// and removed) all end up either in what was taken or in the new log.
func TestTakeLosesNoEntry(t *testing.T) {
	dir := t.TempDir()
	l := OpenLog(dir, ModeManual)
	const writers, each = 8, 40
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := l.Append(LogEntry{Action: "check pre", Result: ResultSuccess}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	var taken []byte
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := l.Take(func(b []byte) error { taken = append(taken, b...); return nil }); err != nil {
				t.Error(err)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	<-done
	rest, _ := os.ReadFile(l.Path)
	all := strings.Count(string(taken), "\n") + strings.Count(string(rest), "\n")
	if all != writers*each {
		t.Errorf("%d entries in the taken logs and the new one, want %d", all, writers*each)
	}
}
