package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// utmpPath is where glibc keeps the login records.
const utmpPath = "/run/utmp"

// utmp record layout on Linux with glibc (x86-64, arm64, and every 64-bit
// platform with 32-bit time fields in utmp): 384 bytes.
const (
	utmpSize      = 384
	utmpUserProc  = 7 // USER_PROCESS
	utmpLineOff   = 8
	utmpLineLen   = 32
	utmpUserOff   = 44
	utmpUserLen   = 32
	utmpTypeOff   = 0
	utmpPIDOffset = 4
)

// Login is one logged-in user's terminal from utmp.
type Login struct {
	User string
	Line string // terminal under /dev ("pts/0", "tty1")
	PID  int32
}

// parseUtmp reads utmp records and returns the user processes with a
// terminal line that stays under /dev. A torn last record is ignored.
func parseUtmp(b []byte) []Login {
	var out []Login
	for off := 0; off+utmpSize <= len(b); off += utmpSize {
		r := b[off : off+utmpSize]
		if int16(binary.NativeEndian.Uint16(r[utmpTypeOff:])) != utmpUserProc {
			continue
		}
		line := cString(r[utmpLineOff : utmpLineOff+utmpLineLen])
		if line == "" || strings.HasPrefix(line, "/") || strings.Contains(line, "..") {
			continue
		}
		out = append(out, Login{
			User: cString(r[utmpUserOff : utmpUserOff+utmpUserLen]),
			Line: line,
			PID:  int32(binary.NativeEndian.Uint32(r[utmpPIDOffset:])),
		})
	}
	return out
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// wallMessage is the text written to each terminal, in the shape of wall(1).
func wallMessage(msg string, now time.Time) []byte {
	hostname, _ := os.Hostname()
	t := fmt.Sprintf("\r\n\aBroadcast message from upgradectl@%s (%s):\r\n\r\n%s\r\n\r\n",
		hostname, now.Format("Mon Jan 2 15:04:05 2006"), strings.ReplaceAll(strings.TrimRight(msg, "\n"), "\n", "\r\n"))
	return []byte(t)
}

// wall writes msg to the terminal of every logged-in user listed in the utmp
// file, the terminals being under devDir. It returns how many terminals got
// it. No utmp file, nobody logged in or a terminal that cannot be written
// (gone, blocked) is not an error: wall is a courtesy.
func wall(utmp, devDir, msg string) (int, []error) {
	b, err := os.ReadFile(utmp)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, []error{fmt.Errorf("cannot read %s: %w", utmp, err)}
	}
	data := wallMessage(msg, time.Now())
	seen := map[string]bool{}
	n := 0
	var errs []error
	for _, l := range parseUtmp(b) {
		if seen[l.Line] {
			continue
		}
		seen[l.Line] = true
		if err := writeTerminal(filepath.Join(devDir, l.Line), data); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errs
}

// writeTerminal writes data to a character device without blocking and
// without making it the controlling terminal.
func writeTerminal(path string, data []byte) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("cannot write to %s: not a terminal", path)
	}
	for len(data) > 0 {
		w, err := unix.Write(fd, data)
		if err != nil {
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		data = data[w:]
	}
	return nil
}

// tellUsers walls msg on a live system and reports it on Out.
func tellUsers(s *System, msg string) {
	if !s.Live() {
		return
	}
	n, errs := wall(utmpPath, "/dev", msg)
	for _, err := range errs {
		s.printf("note: %v", err)
	}
	s.printf("told %d logged-in terminal(s)", n)
}
