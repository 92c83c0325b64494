package boot

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"upgradectl/host"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// newRoot makes a directory tree that looks like a Debian system's files
// (no systemd runs it) and a System on it.
func newRoot(t *testing.T) *System {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"etc/systemd/system/multi-user.target.wants", "lib/systemd/system", "run", "var/lib"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	for _, u := range []string{"multi-user.target", "graphical.target", "rescue.target", "ssh.service"} {
		must(t, os.WriteFile(filepath.Join(dir, "lib/systemd/system", u), []byte("[Unit]\n"), 0o644))
	}
	must(t, os.Symlink("/lib/systemd/system/graphical.target", filepath.Join(dir, "lib/systemd/system/default.target")))
	must(t, os.Symlink("/lib/systemd/system/multi-user.target", filepath.Join(dir, "etc/systemd/system/default.target")))
	must(t, os.WriteFile(filepath.Join(dir, "etc/issue"), []byte("Debian GNU/Linux 12 \\n \\l\n\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "etc/motd"), []byte("\nThe programs included with the Debian GNU/Linux system are free software;\n"), 0o644))
	r, err := host.NewRoot(dir)
	must(t, err)
	return &System{Root: r, StateDir: "/var/lib/upgradectl", Config: host.DefaultConfig(), Mode: host.ModeManual}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot records every file under dir except the state directory: kind,
// mode, owner and content or link target.
func snapshot(t *testing.T, dir string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		for _, s := range skip {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				if fi.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		st := fi.Sys().(*syscall.Stat_t)
		v := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			v += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		out[rel] = v
		return nil
	})
	must(t, err)
	return out
}

func diffSnapshots(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed:\nbefore %q\nafter  %q", k, v, after[k])
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s appeared: %q", k, v)
		}
	}
}

func read(t *testing.T, s *System, p string) string {
	t.Helper()
	b, err := os.ReadFile(s.Root.Path(p))
	must(t, err)
	return string(b)
}

func TestEnterExitRestoresEverything(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		setup func(t *testing.T, s *System)
	}{
		{"debian", func(*testing.T, *System) {}},
		{"odd modes and owners", func(t *testing.T, s *System) {
			must(t, os.Chmod(s.Root.Path("/etc/issue"), 0o600))
			if os.Geteuid() == 0 {
				must(t, os.Chown(s.Root.Path("/etc/motd"), 1234, 5678))
				must(t, os.Chmod(s.Root.Path("/etc/motd"), 0o2640))
			}
		}},
		{"motd is a symlink, issue absent", func(t *testing.T, s *System) {
			must(t, os.Remove(s.Root.Path("/etc/motd")))
			must(t, os.Symlink("/run/motd.dynamic", s.Root.Path("/etc/motd")))
			must(t, os.Remove(s.Root.Path("/etc/issue")))
		}},
		{"no default.target link in /etc", func(t *testing.T, s *System) {
			must(t, os.Remove(s.Root.Path(defaultTargetLink)))
		}},
		{"binary content and no trailing newline", func(t *testing.T, s *System) {
			must(t, os.WriteFile(s.Root.Path("/etc/issue"), []byte("\x00\xff\\e[1m odd\r"), 0o644))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newRoot(t)
			c.setup(t, s)
			// Units installed beforehand, as an operator would, with
			// the binary in place.
			must(t, os.MkdirAll(s.Root.Path("/usr/local/bin"), 0o755))
			must(t, os.WriteFile(s.Root.Path("/usr/local/bin/upgradectl"), []byte("#!/bin/sh\n"), 0o755))
			_, err := Install(ctx, s, InstallOptions{Bin: "/usr/local/bin/upgradectl"})
			must(t, err)
			before := snapshot(t, s.Root.Dir(), "var/lib/upgradectl")
			prev := defaultTarget(s.Root)

			o, err := Enter(ctx, s, EnterOptions{Message: "SYSTEM SOFTWARE UPDATE IN PROGRESS"})
			must(t, err)
			if o.Live || len(o.Notes) == 0 || !strings.Contains(o.Notes[0], "next boot") {
				t.Errorf("outcome %+v: want files only, taking effect at the next boot", o)
			}
			if got := defaultTarget(s.Root); got != TargetUnit {
				t.Errorf("default target in maintenance %q, want %q", got, TargetUnit)
			}
			for _, p := range bannerFiles {
				if !strings.Contains(read(t, s, p), "SYSTEM SOFTWARE UPDATE IN PROGRESS") {
					t.Errorf("%s has no banner", p)
				}
			}
			if _, err := os.Lstat(s.Root.Path(nologinPath)); err == nil {
				t.Errorf("%s written under a root systemd does not run (it is a tmpfs at boot)", nologinPath)
			}
			r, err := Status(ctx, s)
			must(t, err)
			if !r.In || r.PreviousTarget != prev || r.DefaultTarget != TargetUnit || len(r.Problems) != 0 {
				t.Errorf("status in maintenance: %+v", r)
			}

			o, err = Exit(ctx, s, ExitOptions{})
			must(t, err)
			if o.Target != prev {
				t.Errorf("exit goes to %q, want %q", o.Target, prev)
			}
			diffSnapshots(t, before, snapshot(t, s.Root.Dir(), "var/lib/upgradectl"))
			r, err = Status(ctx, s)
			must(t, err)
			if r.In || len(r.Problems) != 0 || r.Exited.IsZero() {
				t.Errorf("status after exit: %+v", r)
			}
		})
	}
}

func TestEnterTwiceKeepsFirstOriginals(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	issue := read(t, s, "/etc/issue")
	_, err := Enter(ctx, s, EnterOptions{Message: "FIRST"})
	must(t, err)
	_, err = Enter(ctx, s, EnterOptions{Message: "SECOND"})
	must(t, err)
	if !strings.Contains(read(t, s, "/etc/motd"), "SECOND") {
		t.Errorf("second enter did not change the message")
	}
	r, _ := Status(ctx, s)
	if r.PreviousTarget != "multi-user.target" {
		t.Errorf("previous target %q after entering twice, want multi-user.target", r.PreviousTarget)
	}
	_, err = Exit(ctx, s, ExitOptions{})
	must(t, err)
	if got := read(t, s, "/etc/issue"); got != issue {
		t.Errorf("/etc/issue after exit %q, want the original %q", got, issue)
	}
	if defaultTarget(s.Root) != "multi-user.target" {
		t.Errorf("default target after exit %q", defaultTarget(s.Root))
	}
}

func TestEnterRefusesWhatItCannotRestore(t *testing.T) {
	s := newRoot(t)
	must(t, os.Remove(s.Root.Path("/etc/motd")))
	must(t, os.Mkdir(s.Root.Path("/etc/motd"), 0o755))
	before := snapshot(t, s.Root.Dir(), "var/lib/upgradectl")
	_, err := Enter(context.Background(), s, EnterOptions{})
	if err == nil || !strings.Contains(err.Error(), "cannot save /etc/motd") {
		t.Fatalf("enter with /etc/motd a directory: %v, want it refused", err)
	}
	// Only the units may have been installed.
	diffSnapshots(t, before, snapshot(t, s.Root.Dir(), "var/lib/upgradectl", "etc/systemd/system/"+TargetUnit,
		"etc/systemd/system/"+TargetUnit+".wants", "etc/systemd/system/"+NologinUnit, "etc/systemd/system/"+ResumeUnit))
	st, err := loadState(s)
	must(t, err)
	if st.In {
		t.Errorf("state says in after a refused enter")
	}
}

func TestExitAfterCrashInEnter(t *testing.T) {
	// A crash right after the state was written: the default target and
	// banner are still the originals. Exit must leave them as they are.
	ctx := context.Background()
	s := newRoot(t)
	before := snapshot(t, s.Root.Dir(), "var/lib/upgradectl")
	saved := map[string]SavedFile{}
	for _, p := range append([]string{defaultTargetLink}, bannerFiles...) {
		f, err := saveFile(s.Root, p)
		must(t, err)
		saved[p] = f
	}
	must(t, saveState(s, &State{In: true, Message: "X", Saved: saved, PreviousTarget: "multi-user.target"}))
	_, err := Exit(ctx, s, ExitOptions{})
	must(t, err)
	diffSnapshots(t, before, snapshot(t, s.Root.Dir(), "var/lib/upgradectl"))
}

func TestExitWithoutStateRepairsDefaultTarget(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	_, err := Enter(ctx, s, EnterOptions{})
	must(t, err)
	// The state directory is lost (a restored /var, say).
	must(t, os.RemoveAll(s.Root.Path(s.StateDir)))
	r, err := Status(ctx, s)
	must(t, err)
	if len(r.Problems) == 0 {
		t.Errorf("status shows no problem with default.target = %s and no state", r.DefaultTarget)
	}
	o, err := Exit(ctx, s, ExitOptions{})
	must(t, err)
	if got := defaultTarget(s.Root); got != fallbackTarget || o.Already {
		t.Errorf("default target %q (outcome %+v), want %s", got, o, fallbackTarget)
	}
}

func TestStateFileErrors(t *testing.T) {
	ctx := context.Background()
	for name, data := range map[string]string{
		"garbage":        "{not json",
		"future format":  `{"format": 2, "in": true}`,
		"bad saved kind": `{"format": 1, "in": true, "saved": {"/etc/issue": {"kind": "fifo"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := newRoot(t)
			must(t, os.MkdirAll(s.Root.Path(s.StateDir), 0o755))
			must(t, os.WriteFile(s.Root.Path(s.StateDir+"/"+StateFile), []byte(data), 0o644))
			_, err := Status(ctx, s)
			if host.KindOf(err) != host.KindCannotRun || host.HintOf(err) == "" {
				t.Errorf("status on a bad state: %v (kind %d), want cannot-run with a hint", err, host.KindOf(err))
			}
			if _, err := Enter(ctx, s, EnterOptions{}); err == nil {
				t.Errorf("enter on a bad state succeeded")
			}
		})
	}
}

func TestLockBusy(t *testing.T) {
	s := newRoot(t)
	l, err := host.LockStateDir(s.Root.Path(s.StateDir))
	must(t, err)
	defer l.Unlock()
	_, err = Enter(context.Background(), s, EnterOptions{})
	if host.KindOf(err) != host.KindBusy {
		t.Errorf("enter while the lock is held: %v, want busy", err)
	}
	// The caller holding the lock says so.
	_, err = Enter(context.Background(), s, EnterOptions{Locked: true})
	must(t, err)
	_, err = Exit(context.Background(), s, ExitOptions{Locked: true})
	must(t, err)
}

func TestInstallUnits(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	// ssh is enabled (as Debian does), systemd-networkd only installed.
	must(t, os.Symlink("/lib/systemd/system/ssh.service", s.Root.Path("/etc/systemd/system/multi-user.target.wants/ssh.service")))
	must(t, os.Symlink("/lib/systemd/system/ssh.service", s.Root.Path("/etc/systemd/system/sshd.service")))
	must(t, os.WriteFile(s.Root.Path("/lib/systemd/system/systemd-networkd.service"), nil, 0o644))
	s.Config.Maintenance.KeepUnits = []string{"postgresql@15-main.service", "iiidb.mount"}
	s.StateDir = "/srv/state"
	s.ConfigPath = "/etc/upgradectl/site.toml"

	// The binary --bin names must be there to run.
	if _, err := Install(ctx, s, InstallOptions{Bin: "/opt/upgradectl/bin/upgradectl"}); err == nil || !strings.Contains(err.Error(), "not an executable file") {
		t.Fatalf("install with a missing binary: %v", err)
	}
	must(t, os.MkdirAll(s.Root.Path("/opt/upgradectl/bin"), 0o755))
	must(t, os.WriteFile(s.Root.Path("/opt/upgradectl/bin/upgradectl"), []byte("#!/bin/sh\n"), 0o755))
	ch, err := Install(ctx, s, InstallOptions{Bin: "/opt/upgradectl/bin/upgradectl"})
	must(t, err)
	if len(ch) != 5 {
		t.Errorf("install changed %d files, want 3 units and 2 links: %+v", len(ch), ch)
	}
	for _, n := range unitNames {
		got := read(t, s, unitDir+"/"+n)
		golden := filepath.Join("testdata", "units", n)
		if *update {
			must(t, os.MkdirAll(filepath.Dir(golden), 0o755))
			must(t, os.WriteFile(golden, []byte(got), 0o644))
		}
		want, err := os.ReadFile(golden)
		must(t, err)
		if got != string(want) {
			t.Errorf("%s differs from %s (go test -update rewrites it):\n%s", n, golden, got)
		}
	}
	target := read(t, s, unitDir+"/"+TargetUnit)
	for _, want := range []string{"Wants=ssh.service", "Wants=sshd.service", "Wants=postgresql@15-main.service", "AllowIsolate=yes"} {
		if !strings.Contains(target, want) {
			t.Errorf("target lacks %q", want)
		}
	}
	if strings.Contains(target, "systemd-networkd") {
		t.Errorf("target starts systemd-networkd, which is not enabled")
	}
	for _, n := range []string{NologinUnit, ResumeUnit} {
		l, err := os.Readlink(s.Root.Path(wantsLink(n)))
		if err != nil || l != unitDir+"/"+n {
			t.Errorf("%s: %q %v", wantsLink(n), l, err)
		}
	}
	// Idempotent.
	ch, err = Install(ctx, s, InstallOptions{Bin: "/opt/upgradectl/bin/upgradectl"})
	must(t, err)
	if len(ch) != 0 {
		t.Errorf("second install changed %+v", ch)
	}

	// Refused in maintenance mode, then removes everything it wrote.
	_, err = Enter(ctx, s, EnterOptions{})
	must(t, err)
	if _, err := Remove(ctx, s); host.KindOf(err) != host.KindRefused {
		t.Errorf("remove in maintenance: %v, want refused", err)
	}
	_, err = Exit(ctx, s, ExitOptions{})
	must(t, err)
	ch, err = Remove(ctx, s)
	must(t, err)
	if len(ch) != 6 {
		t.Errorf("remove changed %+v, want 3 units, 2 links and the .wants directory", ch)
	}
	for _, n := range unitNames {
		if _, err := os.Lstat(s.Root.Path(unitDir + "/" + n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after remove", n)
		}
	}
}

func TestInstallRejectsBadInput(t *testing.T) {
	s := newRoot(t)
	s.Config.Maintenance.KeepUnits = []string{"ok.service", "evil.service\nExecStartPre=/bin/rm", "noext"}
	_, err := Install(context.Background(), s, InstallOptions{Bin: "/usr/bin/up grade"})
	if host.KindOf(err) != host.KindUsage {
		t.Fatalf("install with bad input: %v, want a usage error", err)
	}
	for _, want := range []string{"binary path", "evil.service", `"noext"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s (every problem is reported)", err, want)
		}
	}
	if unitsInstalled(s.Root) {
		t.Errorf("units written despite the error")
	}
}

// failingAction is a resume action that always fails, as a stage whose
// hook script keeps failing would. The live container test drives a real
// failing check instead.
func failingAction(calls *int) ResumeAction {
	return func(ctx context.Context, s *System) error {
		*calls++
		return errors.New("stage install: hook 10-db exited with 1")
	}
}

func TestResumeLoopGuard(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	var out bytes.Buffer
	s.Out = &out
	calls := 0
	SetResumeAction("stage install", failingAction(&calls))
	defer SetResumeAction("", nil)

	r, err := Resume(ctx, s, ResumeOptions{})
	must(t, err)
	if r.Acted || r.Result != "skipped" {
		t.Errorf("resume outside maintenance: %+v", r)
	}
	_, err = Enter(ctx, s, EnterOptions{Message: "UPDATE"})
	must(t, err)
	for i := 1; i <= MaxResumeFailures; i++ {
		r, err = Resume(ctx, s, ResumeOptions{})
		if host.KindOf(err) != host.KindBad || !r.Acted || r.Failures != i {
			t.Fatalf("resume %d: %+v %v", i, r, err)
		}
	}
	if !strings.Contains(read(t, s, "/etc/issue"), "MANUAL INTERVENTION") {
		t.Errorf("banner after %d failures does not ask for manual intervention:\n%s", MaxResumeFailures, read(t, s, "/etc/issue"))
	}
	r, err = Resume(ctx, s, ResumeOptions{})
	if host.KindOf(err) != host.KindRefused || r.Acted || r.Result != "halted" {
		t.Errorf("resume after the guard tripped: %+v %v", r, err)
	}
	if calls != MaxResumeFailures {
		t.Errorf("action ran %d times, want %d", calls, MaxResumeFailures)
	}
	st, err := Status(ctx, s)
	must(t, err)
	if st.Halted == "" || !strings.Contains(st.LastResumeError, "hook 10-db") || !strings.Contains(st.NextBoot, "manual intervention") {
		t.Errorf("status does not say why: %+v", st)
	}
	entries, _, err := s.log().Read()
	must(t, err)
	failed := 0
	for _, e := range entries {
		if e.Action == "boot resume" && e.Result == host.ResultFailed {
			failed++
		}
	}
	if failed != MaxResumeFailures+1 {
		t.Errorf("%d failed resume entries in the log, want %d", failed, MaxResumeFailures+1)
	}

	// The operator fixed it.
	SetResumeAction("stage install", func(context.Context, *System) error { calls++; return nil })
	r, err = Resume(ctx, s, ResumeOptions{Reset: true})
	must(t, err)
	if r.Result != "success" || calls != MaxResumeFailures+1 {
		t.Errorf("resume --reset: %+v", r)
	}
	if strings.Contains(read(t, s, "/etc/issue"), "MANUAL") {
		t.Errorf("banner still asks for manual intervention after a good resume")
	}
	st, _ = Status(ctx, s)
	if st.Halted != "" || st.ResumeFailures != 0 || len(st.Problems) != 0 {
		t.Errorf("status after a good resume: %+v", st)
	}
	if !strings.Contains(out.String(), "resume failed (3 of 3)") {
		t.Errorf("journal lines:\n%s", out.String())
	}
}

func TestResumeActionCanExit(t *testing.T) {
	// The stage engine's last stage leaves maintenance from the hook.
	ctx := context.Background()
	s := newRoot(t)
	before := snapshot(t, s.Root.Dir(), "var/lib/upgradectl", "etc/systemd/system")
	_, err := Enter(ctx, s, EnterOptions{})
	must(t, err)
	SetResumeAction("stage clean", func(ctx context.Context, s *System) error {
		_, err := Exit(ctx, s, ExitOptions{Reboot: true})
		return err
	})
	defer SetResumeAction("", nil)
	r, err := Resume(ctx, s, ResumeOptions{})
	must(t, err)
	if r.Result != "success" {
		t.Errorf("resume: %+v", r)
	}
	st, _ := loadState(s)
	if st.In || st.LastResumeResult != host.ResultSuccess || st.ResumeFailures != 0 {
		t.Errorf("state after the action left maintenance: %+v", st)
	}
	after := snapshot(t, s.Root.Dir(), "var/lib/upgradectl", "etc/systemd/system")
	diffSnapshots(t, before, after)
}

func TestResumeChecksFirst(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	s.Config.Maintenance.ResumeChecks = true
	s.Config.Checks.Accept = []string{"ntp.synced", "ntp.servers", "clock.rtc", "systemd.failed-units"}
	s.Config.Checks.Disk = []host.DiskConfig{{Path: "/", MinFree: 1 << 62}}
	calls := 0
	SetResumeAction("stage resume", func(context.Context, *System) error { calls++; return nil })
	defer SetResumeAction("", nil)
	_, err := Enter(ctx, s, EnterOptions{})
	must(t, err)
	r, err := Resume(ctx, s, ResumeOptions{})
	if err == nil || !strings.Contains(err.Error(), "disk.space") || calls != 0 || r.Action != "check post, stage resume" {
		t.Errorf("resume with failing post checks: %+v %v, action ran %d times", r, err, calls)
	}
	s.Config.Checks.Disk = []host.DiskConfig{{Path: "/", MinFree: 1}}
	r, err = Resume(ctx, s, ResumeOptions{})
	if err != nil || calls != 1 || r.Result != "success" {
		t.Errorf("resume with passing post checks: %+v %v, action ran %d times", r, err, calls)
	}
}

func TestExitKeepsBannerTheUpgradeReplaced(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	issue := read(t, s, "/etc/issue")
	_, err := Enter(ctx, s, EnterOptions{})
	must(t, err)
	// The upgrade installs a new release's motd while in maintenance.
	const newMotd = "Debian GNU/Linux 13\n"
	must(t, os.WriteFile(s.Root.Path("/etc/motd"), []byte(newMotd), 0o644))
	// A later enter (completing an interrupted one) and the boot hook
	// after a reboot put the banner up again, but not over the new file.
	_, err = Enter(ctx, s, EnterOptions{})
	must(t, err)
	// (Its post checks may fail on this machine: the banner goes up
	// before them.)
	Resume(ctx, s, ResumeOptions{Now: true})
	if got := read(t, s, "/etc/motd"); got != newMotd {
		t.Fatalf("/etc/motd after enter and resume %q, want the upgrade's %q", got, newMotd)
	}
	o, err := Exit(ctx, s, ExitOptions{})
	must(t, err)
	if got := read(t, s, "/etc/motd"); got != newMotd {
		t.Errorf("/etc/motd after exit %q, want the upgrade's %q", got, newMotd)
	}
	if got := read(t, s, "/etc/issue"); got != issue {
		t.Errorf("/etc/issue after exit %q, want the original %q", got, issue)
	}
	if !slices.ContainsFunc(o.Notes, func(n string) bool { return strings.Contains(n, "kept /etc/motd") }) {
		t.Errorf("exit does not say it kept /etc/motd: %q", o.Notes)
	}
	fi, err := os.Stat(s.Root.Path(s.StateDir + "/" + StateFile))
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v: it holds copies of files that may be private", fi.Mode())
	}
}

// TestUnitDirLinkedInsideTheRoot: /etc/systemd/system as an absolute link
// to another place in the root is followed there, never to the running
// system: the units are installed, found and removed inside the root.
func TestUnitDirLinkedInsideTheRoot(t *testing.T) {
	ctx := context.Background()
	s := newRoot(t)
	units := "/srv/upgradectl-test-units-" + filepath.Base(s.Root.Dir())
	must(t, os.MkdirAll(filepath.Dir(s.Root.Path(units)), 0o755))
	must(t, os.Rename(s.Root.Path("/etc/systemd/system"), s.Root.Path(units)))
	must(t, os.Symlink(units, s.Root.Path("/etc/systemd/system")))
	defer func() {
		if _, err := os.Lstat(units); err == nil {
			t.Errorf("%s was made on the running system", units)
			os.RemoveAll(units)
		}
	}()
	_, err := Enter(ctx, s, EnterOptions{})
	must(t, err)
	if _, err := os.Stat(s.Root.Path(units + "/" + TargetUnit)); err != nil {
		t.Fatalf("the target is not in the linked directory inside the root: %v", err)
	}
	r, err := Status(ctx, s)
	must(t, err)
	if !r.UnitsInstalled || r.DefaultTarget != TargetUnit {
		t.Errorf("status: units installed %v, default target %q", r.UnitsInstalled, r.DefaultTarget)
	}
	_, err = Exit(ctx, s, ExitOptions{})
	must(t, err)
	_, err = Remove(ctx, s)
	must(t, err)
	if _, err := os.Lstat(s.Root.Path(units + "/" + TargetUnit)); err == nil {
		t.Error("boot remove left the target")
	}
}
