package boot

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"upgradectl/host"
	"upgradectl/host/check"
)

// System is the host maintenance mode works on. The zero value of the
// optional fields is fine.
type System struct {
	Root       host.Root
	StateDir   string // inside the root, e.g. /var/lib/upgradectl
	ConfigPath string // inside the root; "" or host.DefaultConfigPath for the default
	Config     *host.Config
	Mode       string    // host.ModeManual or host.ModeAutomatic, for the upgrade log
	Out        io.Writer // progress lines for people (the journal in a boot hook); nil discards
	// Checks are the health checks of packages above this one, run with
	// the post checks.
	Checks []check.Extra

	sd      systemd
	sdErr   error
	sdTried bool
}

// Live reports whether systemd runs the root: the root is "/" and systemd is
// PID 1. Otherwise only files change, and they take effect at the next boot.
func (s *System) Live() bool { return s.Root.IsLive() && systemdRunning() }

// systemd returns the connection to the running systemd, opened once.
func (s *System) systemd() (systemd, error) {
	if !s.sdTried {
		s.sdTried = true
		s.sd, s.sdErr = connectSystemd()
		if s.sdErr != nil {
			s.sdErr = host.WithHint(host.CannotRun("%v", s.sdErr), "run it as root")
		}
	}
	return s.sd, s.sdErr
}

// Close releases the connection to systemd, if one was opened.
func (s *System) Close() {
	if s.sd != nil {
		s.sd.Close()
		s.sd = nil
	}
	s.sdTried = false
}

// reload makes a running systemd read the unit files again.
func (s *System) reload(ctx context.Context) error {
	if !s.Live() {
		return nil
	}
	sd, err := s.systemd()
	if err != nil {
		return err
	}
	if err := sd.Reload(ctx); err != nil {
		return host.CannotRun("%v", err)
	}
	return nil
}

func (s *System) printf(format string, args ...any) {
	if s.Out != nil {
		fmt.Fprintf(s.Out, format+"\n", args...)
	}
}

func (s *System) log() *host.UpgradeLog {
	return host.OpenLog(s.Root.Path(s.StateDir), s.Mode)
}

// logResult appends one entry for action to the upgrade log. A log that
// cannot be written is reported on Out but does not undo what was done.
func (s *System) logResult(action string, start time.Time, err error, msg string) {
	res := host.ResultSuccess
	if err != nil {
		res = host.ResultFailed
		if msg == "" {
			msg = err.Error()
		} else {
			msg += ": " + err.Error()
		}
	}
	if _, lerr := s.log().Append(host.LogEntry{Action: action, Start: start, Result: res, Message: msg, Scope: "server"}); lerr != nil {
		s.printf("warning: %v", lerr)
	}
}

// lock takes the state-directory lock.
func (s *System) lock() (*host.Lock, error) {
	return host.LockStateDir(s.Root.Path(s.StateDir))
}

// bootID is the running kernel's boot id.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
