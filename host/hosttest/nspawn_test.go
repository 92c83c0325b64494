package hosttest

import (
	"strings"
	"testing"
	"time"
)

func TestContainerBootExecReboot(t *testing.T) {
	c := NewContainer(t, ContainerOptions{})
	c.Boot(t)
	out := c.MustExec(t, "cat", "/proc/1/comm")
	if strings.TrimSpace(out) != "systemd" {
		t.Fatalf("PID 1 in the container is %q, want systemd", out)
	}
	if _, code, _ := c.Exec("false"); code != 1 {
		t.Fatalf("false exited %d, want 1", code)
	}
	c.MustExec(t, "sh", "-c", "echo before-reboot > /var/tmp/marker")
	c.Exec("systemctl", "reboot")
	if st := c.WaitExit(t, 2*time.Minute); st != 133 {
		t.Fatalf("systemd-nspawn exited %d after a reboot, want 133", st)
	}
	c.Boot(t)
	if out := c.MustExec(t, "cat", "/var/tmp/marker"); strings.TrimSpace(out) != "before-reboot" {
		t.Fatalf("marker after reboot: %q", out)
	}
}

func TestContainerKernelArgs(t *testing.T) {
	c := NewContainer(t, ContainerOptions{KernelArgs: []string{"systemd.unit=multi-user.target"}})
	c.Boot(t)
	out := c.MustExec(t, "cat", "/proc/cmdline", "/proc/1/cmdline")
	if !strings.Contains(out, "systemd.unit=multi-user.target") {
		t.Fatalf("init did not get the argument: %q", out)
	}
}
