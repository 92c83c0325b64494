package boot

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestBootUnitOverride(t *testing.T) {
	cases := []struct {
		name      string
		proc      string
		pid1      []string
		container bool
		want      string
	}{
		{"nothing", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet", []string{"/sbin/init"}, false, ""},
		{"systemd.unit", "root=/dev/sda1 systemd.unit=rescue.target", []string{"/sbin/init"}, false, "rescue.target"},
		{"last wins", "systemd.unit=rescue.target systemd.unit=multi-user.target", nil, false, "multi-user.target"},
		{"empty value ignored", "systemd.unit=rescue.target systemd.unit=", nil, false, "rescue.target"},
		{"single", "root=/dev/sda1 ro single", nil, false, "rescue.target"},
		{"emergency", "ro emergency", nil, false, "emergency.target"},
		{"after -- is init's", "ro -- --firecracker-init", []string{"/sbin/init"}, false, ""},
		{"init args win", "systemd.unit=rescue.target", []string{"/lib/systemd/systemd", "systemd.unit=multi-user.target"}, false, "multi-user.target"},
		{"container ignores the host kernel", "systemd.unit=rescue.target", []string{"/lib/systemd/systemd"}, true, ""},
		{"container init args", "", []string{"/lib/systemd/systemd", "systemd.unit=rescue.target"}, true, "rescue.target"},
		{"container runlevel word", "", []string{"/sbin/init", "S"}, true, "rescue.target"},
		{"similar names", "systemd.units=x notsingle systemd.unit_x=y", nil, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pid1 := []byte(strings.Join(c.pid1, "\x00"))
			if len(pid1) > 0 {
				pid1 = append(pid1, 0)
			}
			if got := bootUnitOverride([]byte(c.proc), pid1, c.container); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func FuzzBootUnitOverride(f *testing.F) {
	f.Add([]byte("root=/dev/sda1 systemd.unit=rescue.target -- x"), []byte("/sbin/init\x00single\x00"), false)
	f.Add([]byte(""), []byte("\x00\x00"), true)
	f.Fuzz(func(t *testing.T, proc, pid1 []byte, container bool) {
		u := bootUnitOverride(proc, pid1, container)
		if strings.ContainsAny(u, " \t\n\x00") {
			t.Errorf("unit %q has separators", u)
		}
	})
}

// utmpRecord builds a glibc utmp record.
func utmpRecord(typ int16, pid int32, line, user string) []byte {
	r := make([]byte, utmpSize)
	binary.NativeEndian.PutUint16(r[utmpTypeOff:], uint16(typ))
	binary.NativeEndian.PutUint32(r[utmpPIDOffset:], uint32(pid))
	copy(r[utmpLineOff:utmpLineOff+utmpLineLen], line)
	copy(r[utmpUserOff:utmpUserOff+utmpUserLen], user)
	return r
}

func TestParseUtmp(t *testing.T) {
	var b []byte
	b = append(b, utmpRecord(2, 0, "~", "reboot")...)     // BOOT_TIME
	b = append(b, utmpRecord(6, 10, "tty1", "LOGIN")...)  // LOGIN_PROCESS
	b = append(b, utmpRecord(7, 11, "pts/0", "alice")...) // USER_PROCESS
	b = append(b, utmpRecord(7, 12, "../etc/passwd", "mallory")...)
	b = append(b, utmpRecord(7, 13, "/etc/shadow", "mallory")...)
	b = append(b, utmpRecord(7, 14, "tty2", strings.Repeat("u", 40))...)
	b = append(b, utmpRecord(8, 15, "pts/1", "bob")...) // DEAD_PROCESS
	b = append(b, utmpRecord(7, 16, "pts/2", "carol")[:100]...)
	got := parseUtmp(b)
	if len(got) != 2 || got[0] != (Login{User: "alice", Line: "pts/0", PID: 11}) || got[1].Line != "tty2" || len(got[1].User) != 32 {
		t.Errorf("parseUtmp: %+v", got)
	}
}

func FuzzParseUtmp(f *testing.F) {
	f.Add(utmpRecord(7, 1, "pts/0", "root"))
	f.Add(append(utmpRecord(7, 1, "..", "x"), 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, l := range parseUtmp(b) {
			if l.Line == "" || strings.HasPrefix(l.Line, "/") || strings.Contains(l.Line, "..") {
				t.Errorf("unsafe line %q", l.Line)
			}
		}
	})
}

// TestWallToRealTerminal writes to a real pseudo-terminal listed in a utmp
// file and reads it back from the master side.
func TestWallToRealTerminal(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("needs /dev/ptmx: %v", err)
	}
	defer master.Close()
	must(t, unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	must(t, err)
	line := "pts/" + strconv.Itoa(n)
	dir := t.TempDir()
	utmp := filepath.Join(dir, "utmp")
	var b []byte
	b = append(b, utmpRecord(7, int32(os.Getpid()), line, "alice")...)
	b = append(b, utmpRecord(7, int32(os.Getpid()), line, "alice")...) // the same terminal twice
	b = append(b, utmpRecord(7, 1, "pts/999999", "gone")...)
	must(t, os.WriteFile(utmp, b, 0o644))

	sent, errs := wall(utmp, "/dev", "SYSTEM SOFTWARE UPDATE IN PROGRESS\nsecond line")
	if sent != 1 || len(errs) != 1 {
		t.Fatalf("wall: sent to %d terminals, errors %v; want 1 and 1 (the gone terminal)", sent, errs)
	}
	got := make([]byte, 4096)
	must(t, master.SetReadDeadline(time.Now().Add(time.Minute)))
	var text string
	for !strings.Contains(text, "second line") {
		k, err := master.Read(got)
		if err != nil {
			t.Fatalf("reading the terminal: %v (got %q)", err, text)
		}
		text += string(got[:k])
	}
	if !strings.Contains(text, "Broadcast message from upgradectl@") || !strings.Contains(text, "SYSTEM SOFTWARE UPDATE IN PROGRESS") {
		t.Errorf("terminal got %q", text)
	}

	// Nobody logged in, or no utmp at all: not an error.
	if n, errs := wall(filepath.Join(dir, "absent"), "/dev", "x"); n != 0 || errs != nil {
		t.Errorf("wall without utmp: %d %v", n, errs)
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"format":1,"in":true,"saved":{"/etc/issue":{"kind":"file","data":"aGk=","mode":420}}}`))
	f.Add([]byte(`{"format":1,"saved":{"/x":{"kind":"symlink"}}}`))
	f.Add([]byte(`{"format":1,"resume_failures":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			return
		}
		for p, sf := range st.Saved {
			if sf.Kind == kindSymlink && sf.Link == "" {
				t.Errorf("%s: accepted a symlink without a target", p)
			}
		}
	})
}
