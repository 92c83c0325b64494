package check

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/dbus"

	"upgradectl/host"
)

// unitData is one failed unit.
type unitData struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Sub         string `json:"sub"`
}

// checkFailedUnits asks systemd for failed units over D-Bus: the system
// bus, or as root systemd's private socket when the bus is down. When
// systemd is not the running init (rescue, chroot, a container without
// it) or --root names another system, it skips, saying so.
func checkFailedUnits(ctx context.Context, e *env) Result {
	if !e.root.IsLive() {
		return Result{Status: Skip, Message: fmt.Sprintf("--root %s is not the running system: its systemd is not running", e.root.Dir())}
	}
	if fi, err := os.Lstat("/run/systemd/system"); err != nil || !fi.IsDir() {
		return Result{Status: Skip, Message: "systemd is not running as init on this machine (no /run/systemd/system)"}
	}
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil && os.Geteuid() == 0 {
		var err2 error
		conn, err2 = dbus.NewSystemdConnectionContext(ctx)
		if err2 != nil {
			return Result{Status: Fail, Message: fmt.Sprintf("cannot reach systemd: system bus: %v; /run/systemd/private: %v", err, err2)}
		}
	} else if err != nil {
		return Result{Status: Skip, Message: fmt.Sprintf("cannot reach the system bus (%v); as root the check also tries systemd's private socket", err)}
	}
	defer conn.Close()
	units, err := conn.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return Result{Status: Fail, Message: fmt.Sprintf("cannot list failed units: %v", err)}
	}
	out := []unitData{}
	var names []string
	for _, u := range units {
		out = append(out, unitData{Name: u.Name, Description: u.Description, Sub: u.SubState})
		names = append(names, u.Name)
	}
	if len(out) == 0 {
		return Result{Status: Pass, Data: out, Message: "no failed units"}
	}
	return Result{Status: Fail, Data: out, Message: fmt.Sprintf("%s failed: %s", host.Plural(len(out), "unit"), strings.Join(names, ", "))}
}
