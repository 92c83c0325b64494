package check

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upgradectl/host/hosttest"
)

// TestFailedUnitsInContainer boots a real systemd in a container with a
// unit that fails, and runs the built binary inside it.
func TestFailedUnitsInContainer(t *testing.T) {
	bin := hosttest.Bin(t)
	c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: bin})
	unit := "upgradectl-test-fail.service"
	writeFile(t, filepath.Join(c.Dir, "etc/systemd/system", unit),
		"[Unit]\nDescription=fails on purpose\n[Service]\nType=oneshot\nExecStart=/bin/false\n[Install]\nWantedBy=multi-user.target\n")
	wants := filepath.Join(c.Dir, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../"+unit, filepath.Join(wants, unit)); err != nil {
		t.Fatal(err)
	}
	c.Boot(t)
	waitBooted(t, c)

	check := func(wantCode int, wantStatus Status) Result {
		t.Helper()
		out, code, err := c.Exec("upgradectl", "check", "--only", "systemd.failed-units", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rep Report
		if i, j := strings.Index(out, "{"), strings.LastIndex(out, "}"); i < 0 || j < i || json.Unmarshal([]byte(out[i:j+1]), &rep) != nil {
			t.Fatalf("no JSON report (exit %d):\n%s", code, out)
		}
		if code != wantCode || len(rep.Checks) != 1 || rep.Checks[0].Status != wantStatus {
			t.Fatalf("exit %d, want %d with %s:\n%s", code, wantCode, wantStatus, out)
		}
		return rep.Checks[0]
	}

	// The unit fails at boot; start it again to be sure it has, whatever
	// state the boot wait returned in (a oneshot start waits for the end).
	// Another unit of the container system may have failed at boot on a
	// loaded machine (seen: systemd-tmpfiles-setup); it is forgotten first
	// so that the check sees this test's unit alone.
	if out, _, _ := c.Exec("systemctl", "--failed", "--plain", "--no-legend"); strings.TrimSpace(out) != "" {
		t.Logf("failed at boot:\n%s", out)
	}
	c.MustExec(t, "systemctl", "reset-failed")
	if _, code, _ := c.Exec("systemctl", "start", unit); code == 0 {
		t.Fatalf("%s did not fail", unit)
	}
	r := check(1, Fail)
	if !strings.Contains(r.Message, "1 unit failed: "+unit) {
		t.Errorf("message %q", r.Message)
	}
	if units := r.Data.([]any); len(units) != 1 || units[0].(map[string]any)["name"] != unit {
		t.Errorf("data %v", r.Data)
	}

	c.MustExec(t, "systemctl", "reset-failed")
	if r := check(0, Pass); r.Message != "no failed units" {
		t.Errorf("message %q", r.Message)
	}

	// Without the system bus, root falls back to systemd's private socket.
	c.MustExec(t, "systemctl", "stop", "dbus.socket", "dbus.service")
	if out, _, _ := c.Exec("systemctl", "is-active", "dbus.socket", "dbus.service"); strings.Contains(out, "active\n") && !strings.Contains(out, "inactive") {
		t.Fatalf("the system bus is still up: %s", out)
	}
	// Fails again (waits for it: a oneshot start returns when it is done).
	if _, code, _ := c.Exec("systemctl", "start", unit); code == 0 {
		t.Fatalf("%s did not fail", unit)
	}
	check(1, Fail)

	// Every run was logged in the container's own state directory.
	b, err := os.ReadFile(filepath.Join(c.Dir, "var/lib/upgradectl/upgrade.log"))
	if err != nil || strings.Count(string(b), `"action":"check pre"`) != 3 {
		t.Errorf("upgrade log: %v\n%s", err, b)
	}
}

// waitBooted waits until systemd in the container has finished booting.
// Boot may return while systemd is still coming up: is-system-running says
// "offline" before /run/systemd/system exists.
func waitBooted(t *testing.T, c *hosttest.Container) {
	t.Helper()
	var out string
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		out, _, _ = c.Exec("systemctl", "is-system-running", "--wait")
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			return
		}
	}
	t.Fatalf("systemd in the container did not finish booting: %s", out)
}
