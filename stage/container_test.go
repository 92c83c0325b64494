package stage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// TestUpgradeInContainer is the whole story on a real systemd (a Debian
// container booted with systemd-nspawn, the built binary inside, the image
// mounted over FUSE since this kernel has no iso9660):
//
//  1. a backout: setup, preinstall (into maintenance mode), install, then
//     undo all three: version 1 comes back byte for byte, metadata and
//     extended attributes included;
//  2. the upgrade 1 -> 2 with continue from start to end, the roll
//     rebooting the container into maintenance mode, the boot hook
//     completing the roll, then switch and clean bringing it back out:
//     version 2, no .Old.. file, no mount, and the archived log telling it;
//  3. the broken version 3 failing in postinstall (the product's hook sees
//     its self test fail), then undone to version 2 byte for byte.
func TestUpgradeInContainer(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse for the image mount in the container (this kernel has no iso9660)")
	}
	bin := hosttest.Bin(t)
	c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: bin, NspawnArgs: []string{"--bind=/dev/fuse"}})
	setUpHost(t, c.Dir, true, true)
	img2 := acmeISO(t, filepath.Join(c.Dir, "root"), "2", "1")
	img3 := acmeISO(t, filepath.Join(c.Dir, "root"), "3", "2")
	in := func(p string) string { return "/root/" + filepath.Base(p) }
	v1 := snapshot(t, c.Dir, false)
	c.Boot(t)
	u, st := containerCommands(t, c)
	activeTarget := func(unit string) bool {
		out, _, _ := c.Exec("systemctl", "is-active", unit)
		return strings.TrimSpace(out) == "active"
	}

	// upgradectl is installed with its boot units.
	u("boot", "install")

	// 1. Backout after install.
	u("setup", "--iso", in(img2))
	u("preinstall")
	if !activeTarget("upgradectl-maintenance.target") {
		t.Fatal("preinstall did not isolate the maintenance target")
	}
	u("install")
	if out := c.MustExec(t, "/opt/acme/bin/acme"); !strings.Contains(out, "acme 2") {
		t.Fatalf("after install acme says %q", out)
	}
	if !strings.Contains(c.MustExec(t, "cat", "/proc/self/mountinfo"), "/var/lib/upgradectl/mnt") {
		t.Fatal("the image is not mounted after install")
	}
	out, code, _ := c.Exec("upgradectl", "undo", "setup")
	if code != 5 || !strings.Contains(out, "reverse order") {
		t.Fatalf("undo setup after install: exit %d, want 5 and the reason\n%s", code, out)
	}
	u("undo", "install")
	u("undo", "preinstall")
	u("undo", "setup")
	sameSnapshot(t, "version 1 after the backout", v1, snapshot(t, c.Dir, false))
	sameSnapshot(t, "version 1 after the backout, with tags", v1, snapshot(t, c.Dir, true))
	if activeTarget("upgradectl-maintenance.target") || !activeTarget("multi-user.target") {
		t.Fatal("undo preinstall did not leave maintenance mode")
	}

	// 2. The upgrade, continue after continue, with a reboot in roll.
	u("setup", "--iso", in(img2))
	for _, want := range []stage.Name{stage.Preinstall, stage.Install, stage.Postinstall} {
		u("continue")
		if s := stageOf(st(), want); s.Status != stage.Done {
			t.Fatalf("continue: %s is %s", want, s.Status)
		}
	}
	rollThroughReboot(t, c, u, st)
	if !activeTarget("upgradectl-maintenance.target") {
		t.Fatal("the reboot did not come back into maintenance mode")
	}
	u("continue") // switch
	out, code, _ = c.Exec("upgradectl", "undo", "roll")
	if code != 5 || !strings.Contains(out, "no undo after switch") {
		t.Fatalf("undo roll after switch: exit %d, want 5\n%s", code, out)
	}
	u("continue") // clean
	rep := st()
	if rep.InProgress || rep.ActiveVersion != "2" || rep.RunningVersion != "2" {
		t.Fatalf("after clean: %+v", rep)
	}
	if !activeTarget("multi-user.target") || activeTarget("upgradectl-maintenance.target") {
		t.Fatal("clean did not leave maintenance mode")
	}
	v2 := snapshot(t, c.Dir, true)
	for p := range v2 {
		if strings.Contains(filepath.Base(p), ".Old..") {
			t.Errorf("%s left after clean", p)
		}
	}
	if mi := c.MustExec(t, "cat", "/proc/self/mountinfo"); strings.Contains(mi, "upgradectl") {
		t.Errorf("a mount is left after clean:\n%s", mi)
	}
	if out := c.MustExec(t, "/opt/acme/bin/acme"); !strings.Contains(out, "acme 2") {
		t.Fatalf("after the upgrade acme says %q", out)
	}
	// The archived log tells the story.
	hist := filepath.Join(c.Dir, "var/lib/upgradectl", rep.History[len(rep.History)-1], "upgrade.log")
	b, err := os.ReadFile(hist)
	if err != nil {
		t.Fatal(err)
	}
	story := string(b)
	for _, want := range []string{`"action":"check pre"`, `"action":"iso stage"`, `"action":"tag create"`, `"action":"maintenance enter"`,
		`"action":"iso mount"`, `"action":"install command"`, `installed /opt/acme/bin/acme`, `"action":"check post"`,
		`50-acme-check`, `acme 2 self test: ok`, `"action":"reboot"`, `back after the reboot`, `"mode":"automatic"`,
		`"action":"version switch"`, `"action":"tag clean"`, `"action":"iso umount"`, `"action":"maintenance exit"`, `complete: version 1 to 2`} {
		if !strings.Contains(story, want) {
			t.Errorf("the archived log does not have %s", want)
		}
	}
	if t.Failed() {
		t.Fatalf("archived log:\n%s", story)
	}

	// 3. Version 3: its install is killed half-way and the host loses
	// power; the boot hook finds the install interrupted and completes it.
	// Then it fails in postinstall, and is undone to version 2.
	u("setup", "--iso", in(img3))
	u("continue")
	pid := strings.TrimSpace(c.MustExec(t, "sh", "-c", "ACME_INSTALL_DELAY=2 upgradectl install >/tmp/install.out 2>&1 & echo $!"))
	// Kill it once the image is mounted and the install command runs.
	deadline := time.Now().Add(2 * time.Minute)
	for stageOf(st(), stage.Install).Status != stage.Running || !strings.Contains(c.MustExec(t, "cat", "/proc/self/mountinfo"), "/var/lib/upgradectl/mnt") {
		if time.Now().After(deadline) {
			t.Fatalf("install did not get going:\n%s", c.MustExec(t, "cat", "/tmp/install.out"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	c.MustExec(t, "kill", "-9", pid)
	if s := stageOf(st(), stage.Install); s.Status != stage.Running {
		t.Fatalf("install after kill -9: %+v, want running", s)
	}
	c.Exec("systemctl", "reboot")
	if status := c.WaitExit(t, 3*time.Minute); status != 133 {
		t.Fatalf("the container exited with %d, want 133 (reboot)", status)
	}
	c.Boot(t)
	deadline = time.Now().Add(3 * time.Minute)
	for stageOf(st(), stage.Install).Status != stage.Done {
		if time.Now().After(deadline) {
			t.Fatalf("the boot hook did not complete the interrupted install:\n%s", u("status"))
		}
		time.Sleep(time.Second)
	}
	c.WaitStopped(t, "upgradectl-resume.service") // the hook lets go of the lock
	if s := stageOf(st(), stage.Install); s.Attempt != 2 {
		t.Errorf("install done at attempt %d, want 2", s.Attempt)
	}
	log := u("--json", "log")
	if !strings.Contains(log, "do attempt 1 was interrupted") || !strings.Contains(log, `"result":"started","mode":"automatic","message":"attempt 2"`) {
		t.Errorf("the log does not tell the interrupted install:\n%s", log)
	}
	if out := c.MustExec(t, "/opt/acme/bin/acme"); !strings.Contains(out, "acme 3") {
		t.Fatalf("after the resumed install acme says %q", out)
	}
	out, code, _ = c.Exec("upgradectl", "continue")
	if code != 1 || !strings.Contains(out, "postinstall failed") || !strings.Contains(out, "wrong ABI") {
		t.Fatalf("postinstall of version 3: exit %d, want 1 and the reason\n%s", code, out)
	}
	if s := stageOf(st(), stage.Postinstall); s.Status != stage.Failed {
		t.Fatalf("postinstall is %s, want failed", s.Status)
	}
	for _, n := range []string{"postinstall", "install", "preinstall", "setup"} {
		u("undo", n)
	}
	sameSnapshot(t, "version 2 after undoing version 3", v2, snapshot(t, c.Dir, true))
	if rep := st(); rep.RunningVersion != "2" || rep.ActiveVersion != "2" {
		t.Fatalf("after the backout of 3: %+v", rep)
	}
}
