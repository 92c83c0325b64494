package check

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// rtcReader reads a hardware clock; realRTC is the one implementation.
type rtcReader interface {
	read(dev string) (unix.RTCTime, error)
}

type realRTC struct{}

// read opens the device read-only and asks for its time (RTC_RD_TIME).
func (realRTC) read(dev string) (unix.RTCTime, error) {
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return unix.RTCTime{}, &fs.PathError{Op: "open", Path: dev, Err: err}
	}
	defer unix.Close(fd)
	t, err := unix.IoctlGetRTCTime(fd)
	if err != nil {
		return unix.RTCTime{}, &fs.PathError{Op: "RTC_RD_TIME", Path: dev, Err: err}
	}
	return *t, nil
}

var rtc rtcReader = realRTC{}

// rtcData is the structured result of clock.rtc.
type rtcData struct {
	Device   string  `json:"device"`
	Mode     string  `json:"mode"` // UTC or LOCAL, from /etc/adjtime
	RTC      string  `json:"rtc,omitempty"`
	System   string  `json:"system,omitempty"`
	Drift    float64 `json:"drift_seconds"`
	Timezone string  `json:"timezone,omitempty"`
}

// parseAdjtime returns the mode of the hardware clock from /etc/adjtime:
// its third line is "UTC" or "LOCAL"; a missing line means UTC, as for
// hwclock. Anything else is an error.
func parseAdjtime(data []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), maxLine)
	for n := 1; sc.Scan(); n++ {
		if n != 3 {
			continue
		}
		switch l := strings.TrimSpace(sc.Text()); l {
		case "UTC", "":
			return "UTC", nil
		case "LOCAL":
			return "LOCAL", nil
		default:
			if len(l) > 20 {
				l = l[:20] + "..."
			}
			return "", fmt.Errorf("third line %q is neither UTC nor LOCAL", l)
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "UTC", nil
}

// rtcTime turns the broken-down RTC time into a time in loc.
func rtcTime(t unix.RTCTime, loc *time.Location) time.Time {
	return time.Date(int(t.Year)+1900, time.Month(t.Mon+1), int(t.Mday), int(t.Hour), int(t.Min), int(t.Sec), 0, loc)
}

// checkRTC compares the hardware clock with the system clock. The device
// is the running machine's (the hardware is the same in rescue); the
// UTC/LOCAL mode and the time zone come from /etc/adjtime and
// /etc/localtime under the root.
func checkRTC(ctx context.Context, e *env) Result {
	cfg := e.cfg.Checks.RTC
	d := rtcData{Device: cfg.Device, Mode: "UTC"}
	if data, err := e.readFile("/etc/adjtime"); err == nil {
		m, err := parseAdjtime(data)
		if err != nil {
			return Result{Status: Fail, Data: d, Message: fmt.Sprintf("cannot use /etc/adjtime: %v", err)}
		}
		d.Mode = m
	} else if !errors.Is(err, fs.ErrNotExist) {
		return unreadable("/etc/adjtime", err)
	}
	loc := time.UTC
	if d.Mode == "LOCAL" {
		d.Timezone = "UTC"
		if data, err := e.readFile("/etc/localtime"); err == nil {
			l, err := time.LoadLocationFromTZData("localtime", data)
			if err != nil {
				return Result{Status: Fail, Data: d, Message: fmt.Sprintf("cannot use /etc/localtime for the LOCAL hardware clock: %v", err)}
			}
			loc = l
			d.Timezone = "/etc/localtime"
		}
	}

	var t unix.RTCTime
	var err error
	for try := 0; ; try++ {
		t, err = rtc.read(cfg.Device)
		// The kernel lets one process at a time open an RTC: wait a
		// little for another reader to finish.
		if !errors.Is(err, unix.EBUSY) || try >= 10 || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	now := time.Now()
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return Result{Status: Skip, Data: d, Message: fmt.Sprintf("no RTC device %s on this machine", cfg.Device)}
	case errors.Is(err, unix.EBUSY):
		return Result{Status: Warn, Data: d, Message: fmt.Sprintf("RTC device %s is busy: another process holds it open", cfg.Device)}
	case errors.Is(err, unix.EINVAL):
		// The kernel's answer when the RTC holds no valid time.
		return Result{Status: Fail, Data: d, Message: fmt.Sprintf("RTC %s holds no valid time", cfg.Device)}
	case err != nil:
		return unreadable(cfg.Device, err)
	}
	hw := rtcTime(t, loc)
	// The RTC counts whole seconds: compare it with the system clock cut
	// to the second.
	sys := now.Truncate(time.Second)
	drift := hw.Sub(sys)
	d.RTC = hw.UTC().Format(time.RFC3339)
	d.System = sys.UTC().Format(time.RFC3339)
	d.Drift = drift.Seconds()
	mag := drift.Abs()
	msg := fmt.Sprintf("RTC %s (%s) differs from the system clock by %s", cfg.Device, d.Mode, fmtOffset(drift))
	switch {
	case mag > cfg.FailDrift.Duration:
		return Result{Status: Fail, Data: d, Message: fmt.Sprintf("%s (limit %s)", msg, cfg.FailDrift.Duration)}
	case mag > cfg.WarnDrift.Duration:
		return Result{Status: Warn, Data: d, Message: fmt.Sprintf("%s (above %s)", msg, cfg.WarnDrift.Duration)}
	}
	return Result{Status: Pass, Data: d, Message: fmt.Sprintf("RTC %s (%s) agrees with the system clock: drift %s", cfg.Device, d.Mode, fmtOffset(drift))}
}

// readFile reads a host path inside the root.
func (e *env) readFile(p string) ([]byte, error) {
	real, err := e.root.Resolve(p)
	if err != nil {
		return nil, err
	}
	return host.ReadSmallFile(real)
}
