package boot

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// The tests in this file boot a real Debian system with systemd in
// systemd-nspawn (hosttest.NewContainer) and drive the built binary inside
// it. Nothing here touches this machine's own systemd or /etc.

// appUnit is an application: stopped by maintenance mode, started again
// after it.
const appUnit = "upgradectl-test-app.service"

// checkConfig is a configuration that runs the post checks at each resume
// (besides the stage engine's action, which has nothing to do here), with
// a disk check that asks for minFree on /: the container shares the
// build machine's kernel clock, which may not be synchronised (no network),
// and has no RTC, so those checks are accepted.
func checkConfig(minFree string) string {
	return `
[maintenance]
resume_checks = true

[checks]
accept = ["ntp.synced", "ntp.servers", "clock.rtc", "systemd.failed-units"]

[[checks.disk]]
path = "/"
min_free = "` + minFree + `"
`
}

var (
	// passingConfig asks for one free byte.
	passingConfig = checkConfig("1B")
	// failingConfig makes a post check fail for real: no filesystem
	// has an exbibyte free.
	failingConfig = checkConfig("1000000TiB")
)

// newSystem makes a container with the built binary, an application unit
// enabled in multi-user.target and the configuration cfg. It is not booted.
func newSystem(t *testing.T, cfg string, kernelArgs ...string) *hosttest.Container {
	t.Helper()
	bin := hosttest.Bin(t)
	c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: bin, KernelArgs: kernelArgs})
	unit := "[Unit]\nDescription=an application\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
	write(t, filepath.Join(c.Dir, "etc/systemd/system", appUnit), unit)
	must(t, os.MkdirAll(filepath.Join(c.Dir, "etc/systemd/system/multi-user.target.wants"), 0o755))
	must(t, os.Symlink("/etc/systemd/system/"+appUnit, filepath.Join(c.Dir, "etc/systemd/system/multi-user.target.wants", appUnit)))
	write(t, filepath.Join(c.Dir, "etc/upgradectl/upgradectl.toml"), cfg)
	// login and sshd ask pam_nologin in their PAM stacks; su, the one
	// PAM client a test can drive without a terminal or a password, gets
	// the same module here so that the login block is tried for real.
	su := filepath.Join(c.Dir, "etc/pam.d/su")
	b, err := os.ReadFile(su)
	must(t, err)
	write(t, su, "account requisite pam_nologin.so\n"+string(b))
	return c
}

// loginRefused tries a non-root login through PAM (pam_nologin) and
// returns whether it was refused, with what it said.
func loginRefused(t *testing.T, c *hosttest.Container) (bool, string) {
	t.Helper()
	out, code, err := c.Exec("su", "-s", "/bin/sh", "-c", "echo logged-in", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 && strings.Contains(out, "logged-in") {
		return false, out
	}
	return true, out
}

func write(t *testing.T, p, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(data), 0o644))
}

// hostFiles is what maintenance mode changes, as seen from this machine.
func hostFiles(t *testing.T, c *hosttest.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	// /run is the container's own tmpfs: read it inside.
	out["run/nologin"] = "absent"
	if b, code, err := c.Exec("cat", "/run/nologin"); err == nil && code == 0 {
		out["run/nologin"] = b
	}
	for _, p := range []string{"etc/issue", "etc/motd", "etc/systemd/system/default.target"} {
		full := filepath.Join(c.Dir, p)
		fi, err := os.Lstat(full)
		switch {
		case err != nil:
			out[p] = "absent"
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(full)
			out[p] = "-> " + l
		default:
			b, _ := os.ReadFile(full)
			out[p] = fi.Mode().String() + " " + string(b)
		}
	}
	return out
}

// units is what the container's systemd has active and failed at one
// moment, leaving out units that come and go on their own (devices,
// mounts, sessions).
type units struct {
	active, failed []string
}

func listUnits(t *testing.T, c *hosttest.Container, state string) []string {
	t.Helper()
	out := c.MustExec(t, "systemctl", "list-units", "--state="+state, "--no-legend", "--plain", "--all", "--type=service,target,socket,timer,path")
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return names
}

func activeUnits(t *testing.T, c *hosttest.Container) units {
	t.Helper()
	// A unit on its way up or down (a login's user manager, say) is
	// neither; wait until systemd has no job left.
	deadline := time.Now().Add(time.Minute)
	for {
		jobs, _, _ := c.Exec("systemctl", "list-jobs", "--no-legend", "--plain")
		if strings.TrimSpace(jobs) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd still has jobs after a minute:\n%s", jobs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return units{active: listUnits(t, c, "active"), failed: listUnits(t, c, "failed")}
}

// sameUnits checks that the units active before are active now and that
// nothing else is, except units that had failed before: isolating a
// target starts again what it wants, and a unit that failed at boot
// (which Boot logs) may come up then. That is systemd's doing and leaves
// the system no worse off.
func sameUnits(t *testing.T, c *hosttest.Container, before units, when string) {
	t.Helper()
	now := activeUnits(t, c)
	var lost, extra []string
	for _, u := range before.active {
		if !slices.Contains(now.active, u) {
			lost = append(lost, u)
		}
	}
	for _, u := range now.active {
		if slices.Contains(before.active, u) {
			continue
		}
		if slices.Contains(before.failed, u) {
			t.Logf("%s had failed before and is active %s", u, when)
			continue
		}
		extra = append(extra, u)
	}
	if len(lost) > 0 || len(extra) > 0 {
		t.Errorf("active units %s differ: not active any more %v, newly active %v\nbefore %v (failed %v)\nnow    %v (failed %v)",
			when, lost, extra, before.active, before.failed, now.active, now.failed)
	}
}

func isActive(t *testing.T, c *hosttest.Container, unit string) string {
	out, _, _ := c.Exec("systemctl", "is-active", unit)
	return strings.TrimSpace(out)
}

func status(t *testing.T, c *hosttest.Container) StatusReport {
	t.Helper()
	out := c.MustExec(t, "upgradectl", "--json", "maintenance", "status")
	var r StatusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("maintenance status --json: %v\n%s", err, out)
	}
	return r
}

// logEntries reads the container's upgrade log.
func logEntries(t *testing.T, c *hosttest.Container) []host.LogEntry {
	t.Helper()
	entries, _, err := host.OpenLog(filepath.Join(c.Dir, "var/lib/upgradectl"), "").Read()
	must(t, err)
	return entries
}

// waitResume waits until the upgrade log has n "boot resume" entries and,
// for n above 0, the hook's service has stopped.
func waitResume(t *testing.T, c *hosttest.Container, n int) []host.LogEntry {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var got []host.LogEntry
		for _, e := range logEntries(t, c) {
			if e.Action == "boot resume" {
				got = append(got, e)
			}
		}
		if len(got) >= n {
			if n > 0 {
				// The entry is written before the hook lets go of the
				// state lock: a command run next would find it taken.
				c.WaitRanAndStopped(t, ResumeUnit)
			}
			return got
		}
		if time.Now().After(deadline) {
			out, _, _ := c.Exec("journalctl", "-b", "-u", ResumeUnit, "--no-pager")
			t.Fatalf("%d boot resume entries in the upgrade log after 3 minutes, want %d; journal:\n%s", len(got), n, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitJournal waits up to 30 seconds for text in this boot's journal of
// unit, and returns the journal. journald reads a service's output from
// its stream on its own time, and it names the unit of a line from the
// sender's cgroup in /proc: a line that arrives after the process has
// exited has no _SYSTEMD_UNIT and is missing from journalctl -u (systemd
// issue 2913; seen in CI and here, the line on the console and not under
// -u). So the lines the service printed are also looked for by their
// identifier, which the stream's own header gives: upgradectl's output
// goes to the journal only from its services.
func waitJournal(c *hosttest.Container, unit, text string) (string, bool) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, _, _ := c.Exec("journalctl", "-b", "-u", unit, "--no-pager")
		printed, _, _ := c.Exec("journalctl", "-b", "_TRANSPORT=stdout", "SYSLOG_IDENTIFIER=upgradectl", "--no-pager")
		if strings.Contains(j, text) || strings.Contains(printed, text) {
			return j + printed, true
		}
		if time.Now().After(deadline) {
			return j + "upgradectl's output:\n" + printed, false
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// reboot waits for the container to reboot (nspawn exits 133) and boots it
// again.
func reboot(t *testing.T, c *hosttest.Container) {
	t.Helper()
	if st := c.WaitExit(t, 3*time.Minute); st != 133 {
		t.Fatalf("systemd-nspawn exited with %d, want 133 (reboot)", st)
	}
	c.Boot(t)
}

func assertMaintenance(t *testing.T, c *hosttest.Container, msg string) {
	t.Helper()
	if a := isActive(t, c, TargetUnit); a != "active" {
		t.Errorf("%s is %s, want active", TargetUnit, a)
	}
	if a := isActive(t, c, appUnit); a == "active" {
		t.Errorf("%s still active in maintenance mode", appUnit)
	}
	for _, u := range []string{"systemd-journald.service", "systemd-logind.service"} {
		if a := isActive(t, c, u); a != "active" {
			t.Errorf("%s is %s in maintenance mode, want it kept", u, a)
		}
	}
	for _, p := range []string{"/run/nologin", "/etc/issue", "/etc/motd"} {
		b, code, err := c.Exec("cat", p)
		if err != nil || code != 0 || !strings.Contains(b, msg) {
			t.Errorf("%s in maintenance mode: %q (exit %d, %v), want the message %q", p, b, code, err, msg)
		}
	}
	if refused, out := loginRefused(t, c); !refused || !strings.Contains(out, msg) {
		t.Errorf("a non-root login in maintenance mode was not refused with the message: %q", out)
	}
	if out, code, _ := c.Exec("su", "-s", "/bin/sh", "-c", "echo root-ok", "root"); code != 0 || !strings.Contains(out, "root-ok") {
		t.Errorf("root was refused in maintenance mode: %q", out)
	}
	if d := strings.TrimSpace(c.MustExec(t, "systemctl", "get-default")); d != TargetUnit {
		t.Errorf("systemctl get-default says %s, want %s", d, TargetUnit)
	}
}

func TestContainerEnterExit(t *testing.T) {
	t.Parallel()
	c := newSystem(t, passingConfig)
	// A unit that fails at boot and works when started again, as a unit
	// of the system may (once seen here: systemd-tmpfiles-setup on a
	// loaded machine). Leaving maintenance starts it again with the rest
	// of the default target; that is no harm and must not count as one.
	const bootFail = "upgradectl-test-bootfail.service"
	write(t, filepath.Join(c.Dir, "etc/systemd/system", bootFail), "[Service]\nType=oneshot\nRemainAfterExit=yes\n"+
		"ExecStart=/bin/sh -c 'test -e /run/bootfail-ran && exit 0; touch /run/bootfail-ran; exit 1'\n")
	must(t, os.Symlink("/etc/systemd/system/"+bootFail, filepath.Join(c.Dir, "etc/systemd/system/multi-user.target.wants", bootFail)))
	c.Boot(t)
	if a := isActive(t, c, appUnit); a != "active" {
		t.Fatalf("%s is %s before maintenance", appUnit, a)
	}
	// The operator's login is a scope unit (logind makes one per
	// session): the isolate must leave it alone.
	const operator = "upgradectl-test-operator.scope"
	c.MustExec(t, "sh", "-c", "setsid systemd-run --scope --unit="+operator+" sleep infinity >/dev/null 2>&1 &")
	waitActive(t, c, operator)
	if refused, out := loginRefused(t, c); refused {
		t.Fatalf("a non-root login is refused before maintenance: %q", out)
	}
	// A user logged in through login(1) on a terminal, as utmp knows
	// them, gets the broadcasts.
	terminal := loginOnTerminal(t, c, "tester")
	files := hostFiles(t, c)
	before := activeUnits(t, c)
	if !slices.Contains(before.failed, bootFail) {
		t.Fatalf("%s did not fail at boot: failed units %v", bootFail, before.failed)
	}

	const msg = "SYSTEM SOFTWARE UPDATE IN PROGRESS (test)"
	out := c.MustExec(t, "upgradectl", "maintenance", "enter", "--message", msg)
	t.Logf("enter:\n%s", out)
	if !strings.Contains(out, "told 1 logged-in terminal(s)") {
		t.Errorf("enter did not tell the one logged-in terminal: %q", out)
	}
	waitTerminal(t, c, terminal, 1, msg+"\r\r\nThe system is now in maintenance mode")
	// systemd's own reading of the units: no warnings.
	verify := c.MustExec(t, "systemd-analyze", "verify", "/etc/systemd/system/"+TargetUnit,
		"/etc/systemd/system/"+NologinUnit, "/etc/systemd/system/"+ResumeUnit)
	if strings.Contains(verify, "upgradectl") {
		t.Errorf("systemd-analyze verify:\n%s", verify)
	}
	assertMaintenance(t, c, msg)
	if a := isActive(t, c, operator); a != "active" {
		t.Errorf("the operator's session %s is %s after enter, want it kept", operator, a)
	}
	r := status(t, c)
	if !r.In || !r.Live || !r.MaintenanceActive || r.CurrentTarget != TargetUnit || len(r.Problems) != 0 {
		t.Errorf("status in maintenance: %+v", r)
	}
	// The resume service started with the target, saw that this boot
	// entered maintenance and did nothing.
	c.WaitRanAndStopped(t, ResumeUnit)
	if j, ok := waitJournal(c, ResumeUnit, "entered in this boot"); !ok {
		t.Errorf("resume journal:\n%s", j)
	}
	for _, e := range logEntries(t, c) {
		if e.Action == "boot resume" || e.Action == "check post" {
			t.Errorf("the resume hook acted in the boot that entered maintenance: %+v", e)
		}
	}

	out = c.MustExec(t, "upgradectl", "maintenance", "exit")
	t.Logf("exit:\n%s", out)
	waitTerminal(t, c, terminal, 2, "Maintenance mode is over: logins are allowed again.")
	if a := isActive(t, c, TargetUnit); a == "active" {
		t.Errorf("%s still active after exit", TargetUnit)
	}
	if got := hostFiles(t, c); !mapsEqual(got, files) {
		t.Errorf("files after exit:\n%q\nwant as before:\n%q", got, files)
	}
	sameUnits(t, c, before, "after exit")
	if a := isActive(t, c, bootFail); a != "active" {
		t.Errorf("%s is %s after exit, want it started again with the default target", bootFail, a)
	}
	if refused, out := loginRefused(t, c); refused {
		t.Errorf("a non-root login is refused after exit: %q", out)
	}
	r = status(t, c)
	if r.In || r.MaintenanceActive || len(r.Problems) != 0 {
		t.Errorf("status after exit: %+v", r)
	}
	c.MustExec(t, "upgradectl", "boot", "remove")
	if out := c.MustExec(t, "systemctl", "show", "-P", "LoadState", TargetUnit); strings.TrimSpace(out) != "not-found" {
		t.Errorf("%s is %s to systemd after boot remove, want not-found", TargetUnit, out)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// loginOnTerminal logs user in with login(1) on a pseudo-terminal that
// script(1) keeps open, and returns the file where script records what
// the terminal shows. It returns once utmp lists the login.
func loginOnTerminal(t *testing.T, c *hosttest.Container, user string) string {
	t.Helper()
	c.MustExec(t, "useradd", "-m", "-s", "/bin/sh", user)
	record := "/run/" + user + ".typescript"
	c.MustExec(t, "sh", "-c", "setsid sh -c 'sleep infinity | script -qf -c \"login -f "+user+"\" "+record+"' >/dev/null 2>&1 &")
	deadline := time.Now().Add(time.Minute)
	for {
		if out, _, _ := c.Exec("who"); strings.HasPrefix(out, user+" ") {
			return record
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not show up in who within a minute", user)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitTerminal waits until the terminal recorded in file has shown n
// broadcasts from upgradectl, the last one containing text.
func waitTerminal(t *testing.T, c *hosttest.Container, file string, n int, text string) {
	t.Helper()
	const head = "Broadcast message from upgradectl@"
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, _ := c.Exec("cat", file)
		if i := strings.LastIndex(out, head); strings.Count(out, head) == n && strings.Contains(out[i:], text) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the logged-in terminal did not show broadcast %d with %q:\n%q", n, text, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitActive waits until a unit is active.
func waitActive(t *testing.T, c *hosttest.Container, unit string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for isActive(t, c, unit) != "active" {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become active within 2 minutes", unit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestContainerRebootIntoMaintenanceAndBack(t *testing.T) {
	t.Parallel()
	c := newSystem(t, passingConfig)
	c.Boot(t)
	files := hostFiles(t, c)
	before := activeUnits(t, c)

	c.MustExec(t, "upgradectl", "maintenance", "enter", "--reboot")
	reboot(t, c)
	assertMaintenance(t, c, "SYSTEM SOFTWARE UPDATE IN PROGRESS")
	res := waitResume(t, c, 1)
	if res[0].Result != host.ResultSuccess || res[0].Mode != host.ModeAutomatic || !strings.HasPrefix(res[0].Message, "check post") {
		t.Errorf("resume log entry: %+v", res[0])
	}
	if j, ok := waitJournal(c, ResumeUnit, "resumed: check post"); !ok {
		t.Errorf("resume journal:\n%s", j)
	}
	if r := status(t, c); !r.In || r.LastResumeResult != host.ResultSuccess || r.ResumeFailures != 0 || len(r.Problems) != 0 {
		t.Errorf("status after the resume: %+v", r)
	}

	c.MustExec(t, "upgradectl", "maintenance", "exit", "--reboot")
	reboot(t, c)
	if got := hostFiles(t, c); !mapsEqual(got, files) {
		t.Errorf("files after exit --reboot:\n%q\nwant as before:\n%q", got, files)
	}
	sameUnits(t, c, before, "after exit --reboot")
	if refused, out := loginRefused(t, c); refused {
		t.Errorf("a non-root login is refused after exit --reboot: %q", out)
	}
	if len(waitResume(t, c, 0)) != 1 {
		t.Errorf("the resume hook ran outside maintenance")
	}
}

func TestContainerLoopGuard(t *testing.T) {
	t.Parallel()
	c := newSystem(t, failingConfig)
	c.Boot(t)
	c.MustExec(t, "upgradectl", "maintenance", "enter", "--reboot")
	for i := 1; i <= MaxResumeFailures; i++ {
		reboot(t, c)
		res := waitResume(t, c, i)
		if last := res[i-1]; last.Result != host.ResultFailed || !strings.Contains(last.Message, "disk.space") {
			t.Fatalf("resume %d: %+v, want failed on disk.space", i, last)
		}
		assertMaintenance(t, c, "SYSTEM SOFTWARE UPDATE IN PROGRESS")
		if i < MaxResumeFailures {
			c.MustExec(t, "systemctl", "reboot")
		}
	}
	r := status(t, c)
	if r.Halted == "" || r.ResumeFailures != MaxResumeFailures || !strings.Contains(r.LastResumeError, "disk.space") {
		t.Errorf("status after %d failures: %+v", MaxResumeFailures, r)
	}
	human := c.MustExec(t, "upgradectl", "maintenance", "status")
	if !strings.Contains(human, "manual intervention is needed") {
		t.Errorf("maintenance status does not say why:\n%s", human)
	}
	// The next boot: still maintenance, the hook does not act.
	c.MustExec(t, "systemctl", "reboot")
	reboot(t, c)
	assertMaintenance(t, c, "MANUAL INTERVENTION IS NEEDED")
	res := waitResume(t, c, MaxResumeFailures+1)
	if last := res[len(res)-1]; last.Result != host.ResultFailed || !strings.Contains(last.Message, "boot-loop guard") {
		t.Errorf("resume after the guard tripped: %+v", last)
	}
	checks := 0
	for _, e := range logEntries(t, c) {
		if e.Action == "check post" {
			checks++
		}
	}
	if checks != MaxResumeFailures {
		t.Errorf("post checks ran %d times, want %d", checks, MaxResumeFailures)
	}
	// The operator gets out.
	c.MustExec(t, "upgradectl", "maintenance", "exit")
	if a := isActive(t, c, appUnit); a != "active" {
		t.Errorf("%s is %s after exit", appUnit, a)
	}
}

func TestContainerKernelCommandLineWins(t *testing.T) {
	t.Parallel()
	for _, unit := range []string{"multi-user.target", "rescue.target"} {
		t.Run(unit, func(t *testing.T) {
			t.Parallel()
			c := newSystem(t, passingConfig, "systemd.unit="+unit)
			c.Boot(t)
			c.MustExec(t, "upgradectl", "maintenance", "enter", "--reboot")
			reboot(t, c)
			if a := isActive(t, c, TargetUnit); a == "active" {
				t.Errorf("%s active although the kernel command line chose %s", TargetUnit, unit)
			}
			if a := isActive(t, c, unit); a != "active" {
				t.Errorf("%s is %s: the boot the operator asked for did not happen", unit, a)
			}
			time.Sleep(2 * time.Second) // a resume that should not happen would be quick
			for _, e := range logEntries(t, c) {
				if e.Action == "check post" || (e.Action == "boot resume" && !strings.Contains(e.Message, "skipped")) {
					t.Errorf("the resume hook acted: %+v", e)
				}
			}
			r := status(t, c)
			if !r.In || r.BootOverride != unit || len(r.Problems) == 0 || !strings.Contains(r.Problems[0], "kernel command line") {
				t.Errorf("status with the override: %+v", r)
			}
			// A manual resume respects it too.
			out := c.MustExec(t, "upgradectl", "boot", "resume")
			if !strings.Contains(out, "kernel command line chose "+unit) {
				t.Errorf("boot resume with the override: %s", out)
			}
			// Leaving maintenance from there keeps the operator where
			// they are.
			c.MustExec(t, "upgradectl", "maintenance", "exit")
			if a := isActive(t, c, unit); a != "active" {
				t.Errorf("%s is %s after maintenance exit: exit moved the operator away", unit, a)
			}
			if r := status(t, c); r.In || len(r.Problems) != 0 || r.DefaultTarget != "graphical.target" {
				t.Errorf("status after exit: %+v", r)
			}
		})
	}
}

// TestRootOnDebianTree works on a real Debian system's files that no
// systemd runs (--root), as from a rescue shell.
func TestRootOnDebianTree(t *testing.T) {
	t.Parallel()
	c := newSystem(t, passingConfig)
	bin := hosttest.Bin(t)
	before := snapshot(t, c.Dir, "var/lib/upgradectl", "etc/systemd/system/"+TargetUnit,
		"etc/systemd/system/"+TargetUnit+".wants", "etc/systemd/system/"+NologinUnit, "etc/systemd/system/"+ResumeUnit)
	out := hosttest.Run(t, bin, "--root", c.Dir, "maintenance", "enter", "--reboot")
	if !strings.Contains(out, "takes effect at the next boot") || !strings.Contains(out, "not rebooting") {
		t.Errorf("enter --root says:\n%s", out)
	}
	if l, _ := os.Readlink(filepath.Join(c.Dir, "etc/systemd/system/default.target")); l != "/etc/systemd/system/"+TargetUnit {
		t.Errorf("default.target -> %q", l)
	}
	out = hosttest.Run(t, bin, "--root", c.Dir, "maintenance", "status")
	if !strings.Contains(out, "boots into "+TargetUnit) {
		t.Errorf("status --root:\n%s", out)
	}
	hosttest.Run(t, bin, "--root", c.Dir, "maintenance", "exit")
	diffSnapshots(t, before, snapshot(t, c.Dir, "var/lib/upgradectl", "etc/systemd/system/"+TargetUnit,
		"etc/systemd/system/"+TargetUnit+".wants", "etc/systemd/system/"+NologinUnit, "etc/systemd/system/"+ResumeUnit))
	// The units are what would boot: then the booted system.
	c.Boot(t)
	if a := isActive(t, c, appUnit); a != "active" {
		t.Errorf("%s is %s after the --root round trip", appUnit, a)
	}
}

// TestContainerEnterFailsThenExitUndoes makes the isolate fail for real (a
// site drop-in makes the maintenance target require a unit that fails):
// enter reports it, status explains the half-done state, and exit undoes
// everything.
func TestContainerEnterFailsThenExitUndoes(t *testing.T) {
	t.Parallel()
	const broken = "upgradectl-test-broken.service"
	c := newSystem(t, passingConfig)
	write(t, filepath.Join(c.Dir, "etc/systemd/system", broken), "[Service]\nType=oneshot\nExecStart=/bin/false\n")
	write(t, filepath.Join(c.Dir, "etc/systemd/system", TargetUnit+".d", "site.conf"), "[Unit]\nRequires="+broken+"\nAfter="+broken+"\n")
	c.Boot(t)
	files := hostFiles(t, c)
	before := activeUnits(t, c)

	out, code, err := c.Exec("upgradectl", "maintenance", "enter")
	if err != nil || code != int(host.KindCannotRun) || !strings.Contains(out, "cannot isolate "+TargetUnit) {
		t.Fatalf("enter with a failing required unit: exit %d %v\n%s", code, err, out)
	}
	t.Logf("enter:\n%s", out)
	r := status(t, c)
	if !r.In || r.MaintenanceActive || len(r.Problems) == 0 || !strings.Contains(r.Problems[0], "is not active") {
		t.Errorf("status after the failed enter does not explain it: %+v", r)
	}
	c.MustExec(t, "upgradectl", "maintenance", "exit")
	if got := hostFiles(t, c); !mapsEqual(got, files) {
		t.Errorf("files after exit:\n%q\nwant as before:\n%q", got, files)
	}
	sameUnits(t, c, before, "after exit")
	if r := status(t, c); r.In || len(r.Problems) != 0 {
		t.Errorf("status after exit: %+v", r)
	}
}
