package host

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Lock is an exclusive lock on the state directory, held through flock on
// STATEDIR/lock. The kernel drops it when the process dies, so a crash never
// leaves a stale lock.
type Lock struct {
	f *os.File
}

// LockStateDir takes the exclusive lock on stateDir (a path on the running
// system), creating the directory if needed. If another process holds it, the
// error is of KindBusy and names that process.
func LockStateDir(stateDir string) (*Lock, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, CannotRun("cannot create state directory %s: %v", stateDir, errors.Unwrap(err))
	}
	path := filepath.Join(stateDir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, CannotRun("cannot open lock %s: %v", path, errors.Unwrap(err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid := strings.TrimSpace(string(b)); pid != "" {
				holder = " (process " + pid + ")"
			}
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &Error{Kind: KindBusy, Err: fmt.Errorf("cannot lock %s: another upgradectl is running%s", stateDir, holder),
				Hint: "wait for it to finish, or check it with 'upgradectl status'"}
		}
		return nil, CannotRun("cannot lock %s: %v", path, err)
	}
	// Record the holder for the message above; the lock itself is the flock.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.f.Truncate(0)
	err := l.f.Close() // closing drops the flock
	l.f = nil
	return err
}

// LockHolder returns the process holding the lock of stateDir, without
// touching the lock: the pid LockStateDir wrote into the file, if
// /proc/locks shows that process holding an flock on the file's inode. 0
// when none.
func LockHolder(stateDir string) int {
	path := filepath.Join(stateDir, "lock")
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		// No /proc/locks: trust a live process.
		if unix.Kill(pid, 0) == nil {
			return pid
		}
		return 0
	}
	// 1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF  (a waiter has "->" after the number)
	ino := fmt.Sprintf(":%d", sys.Ino)
	for _, line := range strings.Split(string(locks), "\n") {
		fs := strings.Fields(line)
		if len(fs) > 1 && fs[1] == "->" {
			continue
		}
		if len(fs) < 6 || fs[1] != "FLOCK" || fs[4] != strconv.Itoa(pid) || !strings.HasSuffix(fs[5], ino) {
			continue
		}
		return pid
	}
	return 0
}
