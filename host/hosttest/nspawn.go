package hosttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"

	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The cached container system: a Debian bookworm minbase with systemd,
// built once per machine with debootstrap and copied for every container.
const (
	defaultCache  = "/var/cache/upgradectl-test"
	rootfsName    = "bookworm-rootfs"
	rootfsVersion = "1" // bump when the package list changes
	mirror        = "http://deb.debian.org/debian"
)

// Packages in the container besides minbase.
var containerPackages = []string{"systemd", "systemd-sysv", "dbus", "procps", "bsdutils"}

// Container is a Debian bookworm system booted with systemd-nspawn --boot.
type Container struct {
	Dir  string // the container's root directory on this machine (a private copy)
	Log  string // file collecting the container's console output
	name string
	opts ContainerOptions

	cgroupCleanup bool // the test removes the container's cgroups

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	status int
}

// ContainerOptions say how to make and boot a container.
type ContainerOptions struct {
	// Bin, if set, is copied into the container as /usr/local/bin/upgradectl.
	Bin string
	// KernelArgs are extra arguments for the container's init, such as
	// "systemd.unit=rescue.target".
	KernelArgs []string
	// NspawnArgs are extra systemd-nspawn options, such as
	// "--bind=/dev/fuse".
	NspawnArgs []string
}

func cacheDir() string {
	if d := os.Getenv("UPGRADECTL_TEST_CACHE"); d != "" {
		return d
	}
	return defaultCache
}

// Rootfs returns the cached container system, building it first if needed
// (about a minute; file-locked so concurrent tests build it once).
func Rootfs(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "systemd-nspawn", "debootstrap", "nsenter")
	dir := cacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, rootfsName)
	stamp := filepath.Join(rootfs, ".upgradectl-test-rootfs")
	if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == rootfsVersion {
		return rootfs
	}
	tmp := rootfs + ".tmp"
	os.RemoveAll(tmp)
	os.RemoveAll(rootfs)
	t.Logf("building the container system with debootstrap into %s", rootfs)
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(containerPackages, ","), "bookworm", tmp, mirror)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("debootstrap failed (needs the Debian mirror): %v\n%s", err, tail(out, 4000))
	}
	// A machine id is made at first boot of each copy; no getty on the
	// nspawn console is needed for tests.
	os.WriteFile(filepath.Join(tmp, "etc/machine-id"), nil, 0o444)
	os.WriteFile(filepath.Join(tmp, "etc/hostname"), []byte("upgradectl-test\n"), 0o644)
	os.Symlink("/dev/null", filepath.Join(tmp, "etc/systemd/system/console-getty.service"))
	if err := os.WriteFile(filepath.Join(tmp, ".upgradectl-test-rootfs"), []byte(rootfsVersion+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, rootfs); err != nil {
		t.Fatal(err)
	}
	return rootfs
}

// failedLines picks out of a console log the lines where systemd reports
// a failure, which the tail kept on a test failure no longer shows.
func failedLines(b []byte) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "FAILED") || strings.Contains(l, "Failed") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// NewContainer makes a private copy of the cached container system. It
// does not boot it, so a test can change files in c.Dir first.
func NewContainer(t testing.TB, opts ContainerOptions) *Container {
	t.Helper()
	src := Rootfs(t)
	base := t.TempDir()
	dir := filepath.Join(base, "root")
	if out, err := exec.Command("cp", "-a", "--reflink=auto", src, dir).CombinedOutput(); err != nil {
		t.Fatalf("cannot copy the container system: %v\n%s", err, out)
	}
	if opts.Bin != "" {
		b, err := os.ReadFile(opts.Bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "usr/local/bin/upgradectl"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	c := &Container{Dir: dir, Log: filepath.Join(base, "console.log"), name: "uctl-" + hex.EncodeToString(rnd[:]), opts: opts}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			if b, err := os.ReadFile(c.Log); err == nil {
				if f := failedLines(b); f != "" {
					t.Logf("container console, the lines that report a failure:\n%s", f)
				}
				t.Logf("container console (last 6000 bytes):\n%s", tail(b, 6000))
			}
		}
	})
	return c
}

// Boot starts systemd-nspawn --boot on c.Dir in the background and waits
// until systemd inside reports running or degraded.
func (c *Container) Boot(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	if c.cmd != nil {
		select {
		case <-c.done:
		default:
			c.mu.Unlock()
			t.Fatal("container already running")
		}
	}
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.mu.Unlock()
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "\n==== boot %s ====\n", time.Now().Format(time.RFC3339))
	args := []string{"-D", c.Dir, "--boot", "--register=no", "--keep-unit", "-M", c.name, "--console=read-only"}
	args = append(args, c.opts.NspawnArgs...)
	args = append(args, c.opts.KernelArgs...)
	// systemd-nspawn starts in a cgroup of the container's own (see
	// ownCgroup), moved there by the shell it replaces.
	procs := c.ownCgroup(t)
	cmd := exec.Command("/bin/sh", append([]string{"-c",
		`for f in $UPGRADECTL_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; exec systemd-nspawn "$@"`, "sh"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_TMPFS_TMP=1", "UPGRADECTL_CGROUP_PROCS="+strings.Join(procs, " "))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		logf.Close()
		t.Fatalf("cannot start systemd-nspawn: %v", err)
	}
	c.cmd = cmd
	c.done = make(chan struct{})
	done := c.done
	go func() {
		cmd.Wait()
		logf.Close()
		c.mu.Lock()
		c.status = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			c.status = 128 + int(ws.Signal())
		}
		c.mu.Unlock()
		close(done)
	}()
	c.mu.Unlock()

	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case <-done:
			t.Fatalf("systemd-nspawn exited with status %d during boot", c.status)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not finish booting within 3 minutes")
		}
		if c.leader() > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			out, _, err := c.exec(ctx, "systemctl", "is-system-running", "--wait")
			cancel()
			state := strings.TrimSpace(out)
			if err == nil && state == "running" {
				return
			}
			if err == nil && state == "degraded" {
				// Not this project's doing (nothing of it has run yet),
				// but a test comparing units before and after must know;
				// say which units failed and why.
				out, _, _ := c.exec(context.Background(), "systemctl", "status", "--failed", "--no-pager", "-l", "-n", "20")
				t.Logf("the container booted degraded:\n%s", out)
				return
			}
			// "offline" (with "has not been booted with systemd"): PID 1
			// is still systemd-nspawn's child, not yet systemd.
			if err == nil && state != "" && state != "starting" && state != "initializing" && state != "offline" &&
				!strings.Contains(state, "Failed to connect") && !strings.Contains(state, "not been booted") {
				// maintenance, stopping...: booted, but not into the default target;
				// tests that use rescue or isolate look at it themselves.
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ownCgroup makes the container a cgroup of its own below this process's,
// in the systemd hierarchy (cgroup v1, name=systemd) and in the unified
// one (cgroup v2, /sys/fs/cgroup/unified beside v1, or /sys/fs/cgroup),
// and returns the cgroup.procs files to move systemd-nspawn into.
// systemd-nspawn --keep-unit otherwise puts every container in the same
// cgroups (/payload, /supervisor below this process's) where the
// machine's PID 1 is not systemd, and the systemd of containers booted at
// the same time create and remove the same unit cgroups in them: a unit
// then fails to start with status 219/CGROUP (seen in CI:
// systemd-tmpfiles-setup, systemd-user-sessions). They are removed when
// the test ends.
func (c *Container) ownCgroup(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Logf("the container shares this process's cgroup: %v", err)
		return nil
	}
	sub := "upgradectl-test-" + c.name
	var procs, dirs []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		var mnt string
		switch {
		case f[1] == "name=systemd":
			mnt = "/sys/fs/cgroup/systemd"
		case f[0] == "0" && f[1] == "":
			for _, m := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
				if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err == nil {
					mnt = m
					break
				}
			}
		}
		if mnt == "" {
			continue
		}
		dir := filepath.Join(mnt, f[2], sub)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			t.Logf("the container shares this process's cgroup in %s: %v", mnt, err)
			continue
		}
		procs, dirs = append(procs, filepath.Join(dir, "cgroup.procs")), append(dirs, dir)
	}
	if len(procs) == 0 {
		t.Logf("the container shares this process's cgroup: no systemd or unified cgroup hierarchy found")
	}
	if !c.cgroupCleanup {
		c.cgroupCleanup = true // booted again: the same cgroups
		t.Cleanup(func() {
			c.stop() // (cleanups run last first: this one before NewContainer's)
			for _, d := range dirs {
				removeCgroup(d)
			}
			// systemd-nspawn makes the same path in the other hierarchies.
			others, _ := filepath.Glob("/sys/fs/cgroup/*/" + sub)
			for _, d := range others {
				removeCgroup(d)
			}
		})
	}
	return procs
}

// removeCgroup removes a cgroup directory and the ones below it, deepest
// first; one that still has processes stays.
func removeCgroup(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
}

// leader finds the container's PID 1 as seen from this machine: the
// descendant of systemd-nspawn whose pid in its own namespace is 1.
func (c *Container) leader() int {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return 0
	}
	select {
	case <-done:
		return 0
	default:
	}
	queue := []int{cmd.Process.Pid}
	for depth := 0; depth < 3 && len(queue) > 0; depth++ {
		var next []int
		for _, pid := range queue {
			for _, child := range children(pid) {
				if isNamespaceInit(child) {
					return child
				}
				next = append(next, child)
			}
		}
		queue = next
	}
	return 0
}

func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func isNamespaceInit(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(line, "NSpid:") {
			f := strings.Fields(line)
			return len(f) >= 3 && f[len(f)-1] == "1"
		}
	}
	return false
}

// WaitRanAndStopped waits up to 2 minutes until a service of the
// container has run and stopped: inactive or failed, with an exit time.
func (c *Container) WaitRanAndStopped(t testing.TB, unit string) {
	t.Helper()
	c.waitStopped(t, unit, true)
}

// WaitStopped waits up to 2 minutes until a service that has started is
// no longer running: inactive or failed. Once nothing wants an inactive
// unit (upgradectl's resume service after maintenance mode is left)
// systemd unloads it and forgets its last run, so its exit time is not
// asked for.
func (c *Container) WaitStopped(t testing.TB, unit string) {
	t.Helper()
	c.waitStopped(t, unit, false)
}

func (c *Container) waitStopped(t testing.TB, unit string, ran bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, code, err := c.Exec("systemctl", "show", "-p", "ActiveState,ExecMainExitTimestampMonotonic", unit)
		p := map[string]string{}
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
				p[k] = v
			}
		}
		st := p["ActiveState"]
		if (st == "inactive" || st == "failed") && (!ran || p["ExecMainExitTimestampMonotonic"] != "0") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not stop within 2 minutes: systemctl show: exit %d %v\n%s", unit, code, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Exec runs a command inside the booted container and returns its
// combined output and exit code; err is set only when it could not run.
func (c *Container) Exec(args ...string) (out string, code int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return c.exec(ctx, args...)
}

func (c *Container) exec(ctx context.Context, args ...string) (string, int, error) {
	pid := c.leader()
	if pid == 0 {
		return "", -1, fmt.Errorf("the container is not running")
	}
	full := append([]string{"-t", strconv.Itoa(pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--",
		"/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "TERM=dumb"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", full...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return buf.String(), ee.ExitCode(), nil
	}
	if err != nil {
		return buf.String(), -1, err
	}
	return buf.String(), 0, nil
}

// MustExec is Exec that fails the test on a non-zero exit code.
func (c *Container) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, code, err := c.Exec(args...)
	if err != nil || code != 0 {
		t.Fatalf("in the container: %s: exit %d %v\n%s", strings.Join(args, " "), code, err, out)
	}
	return out
}

// WaitExit waits up to timeout for systemd-nspawn to exit and returns its
// exit status (133 after a reboot inside, 0 after a poweroff).
func (c *Container) WaitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done == nil {
		t.Fatal("the container was never booted")
	}
	select {
	case <-done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.status
	case <-time.After(timeout):
		t.Fatalf("systemd-nspawn did not exit within %s", timeout)
		return -1
	}
}

// stop powers the container off, and kills it if it does not go.
func (c *Container) stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	// SIGTERM asks systemd-nspawn to power the container off.
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return
	case <-time.After(30 * time.Second):
	}
	if pid := c.leader(); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}
