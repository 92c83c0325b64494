package boot

import (
	"context"
	"fmt"
	"os"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// systemd is what maintenance mode asks of a running systemd. The one real
// implementation talks to the manager over its private socket.
type systemd interface {
	// Isolate starts unit in isolate mode and waits for the job.
	Isolate(ctx context.Context, unit string) error
	// Reboot queues a clean reboot (reboot.target), as systemctl reboot.
	Reboot(ctx context.Context) error
	// Reload makes systemd read the unit files again.
	Reload(ctx context.Context) error
	// ActiveState is a unit's ActiveState ("active", "inactive", ...).
	ActiveState(ctx context.Context, unit string) (string, error)
	Close()
}

// isolateTimeout bounds the wait for an isolate job. Stopping applications
// can take long (each has its own stop timeout); this is a backstop only.
const isolateTimeout = 15 * time.Minute

// callTimeout bounds a single call to the manager.
const callTimeout = 2 * time.Minute

// systemdRunning reports whether systemd is PID 1 of the running system
// (sd_booted: /run/systemd/system exists).
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

type realSystemd struct {
	conn *sdbus.Conn
}

// connectSystemd opens the private socket /run/systemd/private (root only).
// It survives an isolate that stops dbus.service, which the system bus
// would not. The context given to go-systemd stays tied to the connection
// for its whole life, so it gets one without a deadline; each call has its
// own timeout.
func connectSystemd() (systemd, error) {
	conn, err := sdbus.NewSystemdConnectionContext(context.Background())
	if err != nil {
		return nil, fmt.Errorf("cannot connect to systemd at /run/systemd/private: %w", err)
	}
	return &realSystemd{conn: conn}, nil
}

func (r *realSystemd) Close() { r.conn.Close() }

func (r *realSystemd) Isolate(ctx context.Context, unit string) error {
	ctx, cancel := context.WithTimeout(ctx, isolateTimeout)
	defer cancel()
	ch := make(chan string, 1)
	if _, err := r.conn.StartUnitContext(ctx, unit, "isolate", ch); err != nil {
		return fmt.Errorf("cannot isolate %s: %w", unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("cannot isolate %s: job %s", unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cannot isolate %s: no result after %v: %w", unit, isolateTimeout, ctx.Err())
	}
}

func (r *realSystemd) Reboot(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// What systemctl reboot asks of the manager: the reboot target,
	// replacing every queued job and irreversible.
	if _, err := r.conn.StartUnitContext(ctx, "reboot.target", "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("cannot reboot: %w", err)
	}
	return nil
}

func (r *realSystemd) Reload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := r.conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("cannot reload systemd: %w", err)
	}
	return nil
}

func (r *realSystemd) ActiveState(ctx context.Context, unit string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	p, err := r.conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		return "", fmt.Errorf("cannot read the state of %s: %w", unit, err)
	}
	s, _ := p.Value.Value().(string)
	return s, nil
}
