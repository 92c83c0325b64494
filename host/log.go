package host

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Log result values.
const (
	ResultSuccess = "success"
	ResultWarning = "warning"
	ResultFailed  = "failed"
	ResultStarted = "started"
	ResultWaived  = "waived"
)

// Log modes: whether an operator ran the action or the host did (boot hook).
const (
	ModeManual    = "manual"
	ModeAutomatic = "automatic"
)

// LogEntry is one line of the upgrade log.
type LogEntry struct {
	ID       int64     `json:"id"`
	Parent   int64     `json:"parent,omitempty"`
	Action   string    `json:"action"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration float64   `json:"duration"` // seconds
	Scope    string    `json:"scope,omitempty"`
	Host     string    `json:"host"`
	Result   string    `json:"result"`
	Mode     string    `json:"mode"`
	Message  string    `json:"message,omitempty"`
}

// UpgradeLog is the append-only upgrade log: JSON lines, each written with
// O_APPEND|O_SYNC under an flock on the file, with increasing ids.
type UpgradeLog struct {
	Path string
	Mode string // default mode for entries that leave it empty
}

// LogFile is the name of the upgrade log in the state directory.
const LogFile = "upgrade.log"

// OpenLog returns the upgrade log in stateDir (a path on the running system).
func OpenLog(stateDir, mode string) *UpgradeLog {
	if mode == "" {
		mode = ModeManual
	}
	return &UpgradeLog{Path: filepath.Join(stateDir, LogFile), Mode: mode}
}

// openLocked opens the log for appending and locks it. A log that Take
// moved away while this waited for the lock is left for the new one.
func (l *UpgradeLog) openLocked() (*os.File, error) {
	for {
		f, err := os.OpenFile(l.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_SYNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, CannotRun("cannot open upgrade log %s: %v", l.Path, errors.Unwrap(err))
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, CannotRun("cannot lock upgrade log %s: %v", l.Path, err)
		}
		var a, b unix.Stat_t
		if unix.Fstat(int(f.Fd()), &a) == nil && unix.Lstat(l.Path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
			return f, nil
		}
		f.Close() // removed (or replaced) while we waited: open it again
	}
}

// Take hands the whole log to keep (which archives it) and removes it,
// holding the log's lock throughout, so that an entry appended meanwhile
// goes to a new log, never to the removed one. No log is not an error:
// keep is not called.
func (l *UpgradeLog) Take(keep func(content []byte) error) error {
	if _, err := os.Lstat(l.Path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	f, err := l.openLocked()
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return CannotRun("cannot read upgrade log %s: %v", l.Path, err)
	}
	if err := keep(b); err != nil {
		return err
	}
	return RemoveDurable(l.Path)
}

// Append writes e as a new line and returns it with its id, host, mode and
// duration filled in.
func (l *UpgradeLog) Append(e LogEntry) (LogEntry, error) {
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o755); err != nil {
		return e, CannotRun("cannot create %s: %v", filepath.Dir(l.Path), errors.Unwrap(err))
	}
	f, err := l.openLocked()
	if err != nil {
		return e, err
	}
	defer f.Close()
	last, torn, err := lastID(f)
	if err != nil {
		return e, CannotRun("cannot read upgrade log %s: %v", l.Path, err)
	}
	e.ID = last + 1
	if e.Host == "" {
		e.Host, _ = os.Hostname()
	}
	if e.Mode == "" {
		e.Mode = l.Mode
	}
	if e.End.IsZero() {
		e.End = time.Now()
	}
	if e.Start.IsZero() {
		e.Start = e.End
	}
	e.Duration = e.End.Sub(e.Start).Round(time.Millisecond).Seconds()
	b, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	b = append(b, '\n')
	if torn {
		// The last write was cut short: start on a line of our own.
		b = append([]byte{'\n'}, b...)
	}
	if _, err := f.Write(b); err != nil {
		return e, CannotRun("cannot append to upgrade log %s: %v", l.Path, err)
	}
	return e, nil
}

// lastID finds the highest id in the log and whether the file ends in a
// torn line (a crash in the middle of a write), which is skipped.
func lastID(f *os.File) (int64, bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	size := fi.Size()
	if size == 0 {
		return 0, false, nil
	}
	// Read the tail; lines are short, 64 KiB holds many.
	off := size - 64*1024
	if off < 0 {
		off = 0
	}
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return 0, false, err
	}
	torn := buf[len(buf)-1] != '\n'
	lines := bytes.Split(buf, []byte{'\n'})
	var max int64
	for i := len(lines) - 1; i >= 0; i-- {
		var e struct {
			ID int64 `json:"id"`
		}
		if json.Unmarshal(lines[i], &e) == nil && e.ID > max {
			max = e.ID
		}
	}
	if max == 0 && off > 0 {
		// Pathological: no parsable line in the tail; fall back to a full scan.
		entries, _, err := readEntries(io.NewSectionReader(f, 0, size))
		if err != nil {
			return 0, false, err
		}
		for _, e := range entries {
			if e.ID > max {
				max = e.ID
			}
		}
	}
	return max, torn, nil
}

// Read returns every entry of the log; an absent log is empty. Lines that do
// not parse (a torn write) are counted in bad, not returned.
func (l *UpgradeLog) Read() (entries []LogEntry, bad int, err error) {
	f, err := OpenRegular(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, CannotRun("cannot open upgrade log %s: %v", l.Path, errors.Unwrap(err))
	}
	defer f.Close()
	return readEntries(f)
}

func readEntries(r io.Reader) ([]LogEntry, int, error) {
	var out []LogEntry
	bad := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e LogEntry
		if err := json.Unmarshal(line, &e); err != nil {
			bad++
			continue
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return out, bad, fmt.Errorf("cannot read upgrade log: %w", err)
	}
	return out, bad, nil
}
