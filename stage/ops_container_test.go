package stage_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// TestUpgradeWithoutMountsInContainer is an upgrade on a real systemd where
// nothing can mount the image: a container without /dev/fuse (no
// --bind=/dev/fuse) on this kernel, which has no iso9660. Install extracts
// the image into the state directory and says so, status shows it, clean
// removes it. The roll reboots the container and the boot hook completes
// it; afterwards the journal holds the upgrade's start, its stage
// transitions (the boot hook's among them, automatic), its end and the
// boot hook's outcome, each with its MESSAGE_ID and the upgrade's id; the
// history lists the upgrade; the metrics file says it is complete.
func TestUpgradeWithoutMountsInContainer(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	bin := hosttest.Bin(t)
	c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: bin})
	setUpHost(t, c.Dir, true, true)
	// A persistent journal, to read across the reboot; the node
	// exporter's directory, for the metrics.
	for _, d := range []string{"var/log/journal", "var/lib/prometheus/node-exporter"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img2 := acmeISO(t, filepath.Join(c.Dir, "root"), "2", "1")
	img3 := acmeISO(t, filepath.Join(c.Dir, "root"), "3", "2")
	c.Boot(t)
	if _, code, _ := c.Exec("test", "-e", "/dev/fuse"); code == 0 {
		t.Fatal("the container has /dev/fuse: this test needs a container without it")
	}
	u, st := containerCommands(t, c)
	u("boot", "install")
	u("setup", "--iso", "/root/"+filepath.Base(img2))
	u("continue") // preinstall
	out := u("continue")
	if !strings.Contains(out, "extracted into /var/lib/upgradectl/mnt instead") || !strings.Contains(out, "no /dev/fuse") {
		t.Errorf("install does not say it extracted the image:\n%s", out)
	}
	if s := stageOf(st(), stage.Install); s.Status != stage.Done {
		t.Fatalf("install is %s: %s", s.Status, s.Error)
	}
	if out := c.MustExec(t, "/opt/acme/bin/acme"); !strings.Contains(out, "acme 2") {
		t.Fatalf("after install acme says %q", out)
	}
	if status := u("status"); !strings.Contains(status, "/var/lib/upgradectl/mnt (extracted") {
		t.Errorf("status does not show the image extracted:\n%s", status)
	}
	if mi := c.MustExec(t, "cat", "/proc/self/mountinfo"); strings.Contains(mi, "upgradectl") {
		t.Errorf("something is mounted although nothing can mount:\n%s", mi)
	}
	if fi, err := os.Stat(filepath.Join(c.Dir, "var/lib/upgradectl/mnt")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the extracted image's directory: %v %v, want mode 0700", fi, err)
	}
	u("continue") // postinstall
	rollThroughReboot(t, c, u, st)
	u("continue") // switch
	u("continue") // clean
	rep := st()
	if rep.InProgress || rep.ActiveVersion != "2" {
		t.Fatalf("after clean: %+v", rep)
	}
	if _, err := os.Lstat(filepath.Join(c.Dir, "var/lib/upgradectl/mnt")); !os.IsNotExist(err) {
		t.Errorf("the extracted image is left after clean: %v", err)
	}

	// Version 3 fails in postinstall and is backed out.
	u("setup", "--iso", "/root/"+filepath.Base(img3))
	u("continue")
	u("continue")
	if out, code, _ := c.Exec("upgradectl", "continue"); code != 1 || !strings.Contains(out, "postinstall failed") {
		t.Fatalf("postinstall of version 3: exit %d, want 1\n%s", code, out)
	}
	id3 := st().Upgrade
	for _, n := range []string{"postinstall", "install", "preinstall", "setup"} {
		u("undo", n)
	}

	// The journal, across the reboot.
	type rec map[string]any
	var entries []rec
	read := func() {
		entries = nil
		for _, line := range strings.Split(c.MustExec(t, "journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=upgradectl"), "\n") {
			var r rec
			if json.Unmarshal([]byte(line), &r) == nil && r["MESSAGE_ID"] != nil {
				entries = append(entries, r)
			}
		}
	}
	find := func(kind stage.Kind, field, value string) rec {
		for _, r := range entries {
			if r["MESSAGE_ID"] == stage.MessageIDs[kind] && (field == "" || r[field] == value) {
				return r
			}
		}
		return nil
	}
	// journald takes the entries on its own time: wait for the last one
	// sent (the undo of version 3's setup) before reading them all.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		read()
		if find(stage.KindUpgradeUndone, "UPGRADECTL_UPGRADE_ID", id3) != nil || time.Now().After(deadline) {
			break
		}
	}
	for _, r := range entries {
		t.Logf("journal: %v %v %v %v %v", r["UPGRADECTL_EVENT"], r["UPGRADECTL_STAGE"], r["UPGRADECTL_STATUS"], r["UPGRADECTL_MODE"], r["MESSAGE"])
	}
	started := find(stage.KindUpgradeStarted, "", "")
	if started == nil {
		t.Fatalf("no upgrade-started entry in the journal; upgradectl's entries:\n%v", entries)
	}
	id, _ := started["UPGRADECTL_UPGRADE_ID"].(string)
	if id == "" || started["UPGRADECTL_OLD_VERSION"] != "1" {
		t.Errorf("upgrade-started entry: %v", started)
	}
	for _, want := range []struct {
		kind         stage.Kind
		field, value string
	}{
		{stage.KindStage, "UPGRADECTL_STAGE", "setup"},
		{stage.KindStage, "UPGRADECTL_STAGE", "install"},
		{stage.KindStage, "UPGRADECTL_WAITING", "reboot"},
		{stage.KindStage, "UPGRADECTL_MODE", "automatic"}, // the boot hook's roll
		{stage.KindStage, "UPGRADECTL_STAGE", "clean"},
		{stage.KindUpgradeComplete, "UPGRADECTL_NEW_VERSION", "2"},
		{stage.KindBootHook, "UPGRADECTL_RESULT", "success"},
	} {
		r := find(want.kind, want.field, want.value)
		if r == nil {
			t.Errorf("no %s entry with %s=%s in the journal", want.kind, want.field, want.value)
			continue
		}
		if want.kind != stage.KindBootHook && r["UPGRADECTL_UPGRADE_ID"] != id {
			t.Errorf("%s entry of another upgrade: %v", want.kind, r)
		}
	}
	if r := find(stage.KindUpgradeFailed, "UPGRADECTL_UPGRADE_ID", id3); r == nil || r["UPGRADECTL_STAGE"] != "postinstall" || r["PRIORITY"] != "3" ||
		!strings.Contains(fmt.Sprint(r["UPGRADECTL_ERROR"]), "wrong ABI") {
		t.Errorf("upgrade-failed entry of version 3: %v", r)
	}
	if r := find(stage.KindUpgradeUndone, "UPGRADECTL_UPGRADE_ID", id3); r == nil {
		t.Errorf("no upgrade-undone entry for version 3")
	}
	if r := find(stage.KindStage, "UPGRADECTL_STAGE", "roll"); r != nil && r["UPGRADECTL_NEW_VERSION"] != "2" {
		t.Errorf("roll entry without the versions: %v", r)
	}
	if t.Failed() {
		t.Logf("journal:\n%s", c.MustExec(t, "journalctl", "-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=upgradectl"))
	}

	// The history and the metrics.
	var past []stage.Past
	if err := json.Unmarshal([]byte(u("log", "--history", "--json")), &past); err != nil {
		t.Fatal(err)
	}
	if len(past) != 2 || past[0].Upgrade != id || past[0].Version != "2" || past[0].Result != stage.OutcomeComplete ||
		past[1].Upgrade != id3 || past[1].Result != stage.OutcomeUndone {
		t.Errorf("log --history: %+v, want upgrade %s to 2 complete, then %s undone", past, id, id3)
	}
	prom, err := os.ReadFile(filepath.Join(c.Dir, "var/lib/prometheus/node-exporter", stage.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(prom), "upgradectl_stage_info") {
		t.Errorf("a current stage after the upgrade was backed out:\n%s", prom)
	}
	for _, want := range []string{`upgradectl_active_version_info{version="2"} 1`, `outcome="undone"`, `upgradectl_maintenance_mode 0`,
		`upgradectl_upgrade_in_progress 0`} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("the metrics do not have %s:\n%s", want, prom)
		}
	}
}

// containerCommands returns u, which runs upgradectl in c and fails the
// test when it fails, and st, its status.
func containerCommands(t *testing.T, c *hosttest.Container) (u func(args ...string) string, st func() *stage.Report) {
	u = func(args ...string) string {
		t.Helper()
		return c.MustExec(t, append([]string{"upgradectl"}, args...)...)
	}
	st = func() *stage.Report {
		t.Helper()
		var rep stage.Report
		out := u("status", "--json")
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return &rep
	}
	return u, st
}

// TestStuckJournal: a journald that does not read (stopped with SIGSTOP in
// a booted container, its socket's queue soon full) neither fails nor
// holds up the stages; the entries sent while it was stopped and queued
// reach the journal once it runs again.
func TestStuckJournal(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: hosttest.Bin(t), NspawnArgs: []string{"--bind=/dev/fuse"}})
	setUpHost(t, c.Dir, false, false)
	img2 := acmeISO(t, filepath.Join(c.Dir, "root"), "2", "1")
	c.Boot(t)
	c.MustExec(t, "systemctl", "kill", "-s", "SIGSTOP", "systemd-journald.service")
	t.Cleanup(func() { c.Exec("systemctl", "kill", "-s", "SIGCONT", "systemd-journald.service") })
	t.Logf("datagram queue length: %s", c.MustExec(t, "cat", "/proc/sys/net/unix/max_dgram_qlen"))
	// Six entries for each setup and its undo: more than the queue holds.
	for i := 0; i < 3; i++ {
		for _, args := range [][]string{{"setup", "--iso", "/root/" + filepath.Base(img2)}, {"undo", "setup"}} {
			out, code, err := c.Exec(append([]string{"timeout", "100", "upgradectl"}, args...)...)
			if code != 0 || err != nil {
				t.Fatalf("upgradectl %s with journald stopped: exit %d %v (124: it hung)\n%s", strings.Join(args, " "), code, err, out)
			}
		}
	}
	c.MustExec(t, "systemctl", "kill", "-s", "SIGCONT", "systemd-journald.service")
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(c.MustExec(t, "journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=upgradectl"), stage.MessageIDs[stage.KindUpgradeStarted]) {
		if time.Now().After(deadline) {
			t.Fatal("the entries queued while journald was stopped never reached the journal")
		}
		time.Sleep(time.Second)
	}
}

// rollThroughReboot runs roll, which reboots the container, boots it again
// and waits for the boot hook to complete roll.
func rollThroughReboot(t *testing.T, c *hosttest.Container, u func(args ...string) string, st func() *stage.Report) {
	t.Helper()
	// The command may or may not see its own end.
	out, code, err := c.Exec("upgradectl", "continue")
	t.Logf("continue (roll): exit %d %v\n%s", code, err, out)
	if status := c.WaitExit(t, 3*time.Minute); status != 133 {
		t.Fatalf("the container exited with %d, want 133 (reboot)", status)
	}
	c.Boot(t)
	// The boot hook completes the roll at boot, in maintenance mode.
	deadline := time.Now().Add(3 * time.Minute)
	for stageOf(st(), stage.Roll).Status != stage.Done {
		if time.Now().After(deadline) {
			t.Fatalf("the boot hook did not complete roll:\n%s\n%s", u("status"), c.MustExec(t, "journalctl", "-b", "-u", "upgradectl-resume.service", "--no-pager"))
		}
		time.Sleep(time.Second)
	}
	// Roll shows done while the hook still holds the state lock (it logs,
	// then the resume writes its own state): a command run by hand in that
	// window would find the lock taken.
	c.WaitStopped(t, "upgradectl-resume.service")
}
