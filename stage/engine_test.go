package stage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// The engine tests use a toy upgrade with real files under a temporary
// root: each stage's do writes root/marks/STAGE, its undo removes it, and
// its verify wants it there. A file root/fail/STAGE makes do fail with its
// content; root/kill/STAGE makes do kill its own process with SIGKILL (in
// a child process: a real kill -9 in the middle of a stage).

type toy struct {
	t     *testing.T
	root  host.Root
	state string
	cfg   *host.Config
	out   bytes.Buffer
	calls []string
	// reboot: the stages whose do asks for a reboot on the first attempt.
	reboot map[Name]bool
}

func newToy(t *testing.T) *toy {
	t.Helper()
	dir := t.TempDir()
	root, err := host.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := host.DefaultConfig()
	cfg.Product.Version = "1"
	return &toy{t: t, root: root, state: root.Path("/var/lib/upgradectl"), cfg: cfg, reboot: map[Name]bool{}}
}

func (ty *toy) path(p string) string { return ty.root.Path(p) }

// doAll runs the stages ns in order, each of which must succeed.
func (ty *toy) doAll(ns []Name) {
	ty.t.Helper()
	for _, n := range ns {
		ty.must(ty.engine().Do(context.Background(), n, Options{}))
	}
}

func (ty *toy) write(p, content string, mode os.FileMode) {
	ty.t.Helper()
	full := ty.path(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		ty.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), mode); err != nil {
		ty.t.Fatal(err)
	}
}

func (ty *toy) exists(p string) bool {
	_, err := os.Lstat(ty.path(p))
	return err == nil
}

func (ty *toy) engine() *Engine {
	hs := map[Name]Handler{}
	for _, n := range Order {
		n := n
		h := Handler{
			Do: func(r *Run) error {
				ty.calls = append(ty.calls, "do "+string(n))
				if b, err := os.ReadFile(ty.path("/fail/" + string(n))); err == nil {
					return errors.New(strings.TrimSpace(string(b)))
				}
				if _, err := os.Stat(ty.path("/kill/" + string(n))); err == nil {
					os.Remove(ty.path("/kill/" + string(n)))
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
				if n == Setup {
					if err := r.SetNewVersion("2"); err != nil {
						return err
					}
				}
				if ty.reboot[n] && r.Get("asked") == "" {
					if err := r.Set("asked", "yes"); err != nil {
						return err
					}
					return ErrReboot
				}
				if n == Switch {
					if err := SetActiveVersion(r.StateDir, r.State.NewVersion); err != nil {
						return err
					}
				}
				return r.Step("mark "+string(n), func() (string, error) {
					return "", writeMark(ty.path("/marks/"+string(n)), r.Get("asked"))
				})
			},
			Verify: func(r *Run) []string {
				if !ty.exists("/marks/" + string(n)) {
					return []string{"/marks/" + string(n) + " is missing"}
				}
				return nil
			},
		}
		if n != Switch && n != Clean {
			h.Undo = func(r *Run) error {
				ty.calls = append(ty.calls, "undo "+string(n))
				if _, err := os.Stat(ty.path("/kill/undo-" + string(n))); err == nil {
					os.Remove(ty.path("/kill/undo-" + string(n)))
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
				if b, err := os.ReadFile(ty.path("/fail/undo-" + string(n))); err == nil {
					return errors.New(strings.TrimSpace(string(b)))
				}
				err := os.Remove(ty.path("/marks/" + string(n)))
				if errors.Is(err, os.ErrNotExist) {
					err = nil
				}
				return err
			}
		}
		hs[n] = h
	}
	return &Engine{Root: ty.root, StateDir: ty.state, Config: ty.cfg, Log: host.OpenLog(ty.state, host.ModeManual),
		Handlers: hs, Out: &ty.out}
}

func writeMark(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

func (ty *toy) status() *Report {
	ty.t.Helper()
	rep, err := ty.engine().Status()
	if err != nil {
		ty.t.Fatal(err)
	}
	return rep
}

func (ty *toy) stageStatus(n Name) StageStatus {
	ty.t.Helper()
	for _, s := range ty.status().Stages {
		if s.Name == n {
			return s
		}
	}
	ty.t.Fatalf("no stage %s in status", n)
	return StageStatus{}
}

func (ty *toy) must(err error) {
	ty.t.Helper()
	if err != nil {
		ty.t.Fatalf("%v\noutput:\n%s", err, ty.out.String())
	}
}

func wantKind(t *testing.T, err error, k host.Kind, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want kind %d %q", k, substr)
	}
	if host.KindOf(err) != k {
		t.Fatalf("error %q has kind %d, want %d", err, host.KindOf(err), k)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not say %q", err, substr)
	}
}

func TestWholeUpgradeWithContinue(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	ty.must(ty.engine().Do(ctx, Setup, Options{Vars: map[string]string{"iso": "/x.iso"}}))
	for _, want := range Order[1:] {
		n, err := ty.engine().Continue(ctx, Options{})
		ty.must(err)
		if n != want {
			t.Fatalf("continue ran %s, want %s", n, want)
		}
	}
	for _, n := range Order {
		if !ty.exists("/marks/" + string(n)) {
			t.Errorf("stage %s did not run", n)
		}
	}
	rep := ty.status()
	if rep.InProgress {
		t.Errorf("upgrade still in progress after clean: %+v", rep)
	}
	if rep.ActiveVersion != "2" {
		t.Errorf("active version %q, want 2", rep.ActiveVersion)
	}
	if len(rep.History) != 1 {
		t.Fatalf("history %v, want one archived upgrade", rep.History)
	}
	if ty.exists("/var/lib/upgradectl/" + StateFile) {
		t.Errorf("state file left after clean")
	}
	// The archived log tells the story: every stage started and finished
	// under the upgrade entry, and the marks under their stage's entry.
	log := host.OpenLog(filepath.Join(ty.state, rep.History[0]), "")
	entries, bad, err := log.Read()
	if err != nil || bad != 0 {
		t.Fatalf("archived log: %v, %d bad lines", err, bad)
	}
	byID := map[int64]host.LogEntry{}
	for _, e := range entries {
		byID[e.ID] = e
	}
	up := entries[0]
	if up.Action != "upgrade" || up.Result != host.ResultStarted {
		t.Fatalf("first entry %+v, want the upgrade start", up)
	}
	for _, n := range Order {
		var started, done, mark bool
		for _, e := range entries {
			switch {
			case e.Action == string(n) && e.Result == host.ResultStarted && e.Parent == up.ID:
				started = true
			case e.Action == string(n) && e.Result == host.ResultSuccess && byID[e.Parent].Action == string(n):
				done = true
			case e.Action == "mark "+string(n) && byID[e.Parent].Action == string(n):
				mark = true
			}
		}
		if !started || !done || !mark {
			t.Errorf("log of stage %s: started %v, done %v, sub-action %v", n, started, done, mark)
		}
	}
	last := entries[len(entries)-1]
	if last.Action != "upgrade" || last.Result != host.ResultSuccess || last.Parent != up.ID {
		t.Errorf("last entry %+v, want the upgrade's completion", last)
	}
	// A second upgrade starts from the switched version.
	ty.must(ty.engine().Do(ctx, Setup, Options{Vars: map[string]string{"iso": "/y.iso"}}))
	if rep := ty.status(); rep.OldVersion != "2" {
		t.Errorf("second upgrade starts from %q, want 2", rep.OldVersion)
	}
}

func TestOrderIsEnforced(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	e := ty.engine()
	wantKind(t, e.Do(ctx, Install, Options{}), host.KindRefused, "no upgrade in progress")
	_, err := e.Continue(ctx, Options{})
	wantKind(t, err, host.KindRefused, "no upgrade in progress")
	wantKind(t, e.Undo(ctx, Setup, Options{}), host.KindRefused, "no upgrade in progress")
	ty.must(e.Do(ctx, Setup, Options{}))
	wantKind(t, e.Do(ctx, Install, Options{}), host.KindRefused, "cannot run install: preinstall is not started")
	if h := host.HintOf(e.Do(ctx, Install, Options{})); !strings.Contains(h, "upgradectl preinstall") {
		t.Errorf("hint %q does not name the next stage", h)
	}
	wantKind(t, e.Do(ctx, Setup, Options{}), host.KindRefused, "cannot run setup: it is done")
	ty.must(e.Do(ctx, Preinstall, Options{}))
	ty.must(e.Do(ctx, Install, Options{}))
	// Undo: only the latest, in reverse order.
	wantKind(t, e.Undo(ctx, Setup, Options{}), host.KindRefused, "install is done; stages are undone in reverse order")
	wantKind(t, e.Undo(ctx, Postinstall, Options{}), host.KindRefused, "cannot undo postinstall: it is not started")
	ty.must(e.Undo(ctx, Install, Options{}))
	if ty.exists("/marks/install") {
		t.Error("undo install left its mark")
	}
	wantKind(t, e.Undo(ctx, Install, Options{}), host.KindRefused, "it is undone")
	ty.must(e.Undo(ctx, Preinstall, Options{}))
	// Forward again after an undo.
	n, err := e.Continue(ctx, Options{})
	ty.must(err)
	if n != Preinstall {
		t.Fatalf("continue after undo ran %s, want preinstall", n)
	}
	for _, s := range []Name{Install, Postinstall, Roll, Switch} {
		ty.must(e.Do(ctx, s, Options{}))
	}
	wantKind(t, e.Undo(ctx, Switch, Options{}), host.KindRefused, "no undo after switch")
	wantKind(t, e.Undo(ctx, Roll, Options{}), host.KindRefused, "switch is done, and there is no undo after switch")
	ty.must(e.Do(ctx, Clean, Options{}))
	wantKind(t, e.Do(ctx, Clean, Options{}), host.KindRefused, "no upgrade in progress")
	want := []string{"do setup", "do preinstall", "do install", "undo install", "undo preinstall", "do preinstall",
		"do install", "do postinstall", "do roll", "do switch", "do clean"}
	if !slices.Equal(ty.calls, want) {
		t.Errorf("calls\n%v\nwant\n%v", ty.calls, want)
	}
}

func TestFailedStageIsRecordedAndRetried(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	e := ty.engine()
	ty.must(e.Do(ctx, Setup, Options{}))
	ty.write("/fail/preinstall", "disk on fire", 0o644)
	err := e.Do(ctx, Preinstall, Options{})
	wantKind(t, err, host.KindBad, "preinstall failed: disk on fire")
	s := ty.stageStatus(Preinstall)
	if s.Status != Failed || s.Error != "disk on fire" || s.Attempt != 1 {
		t.Fatalf("status %+v, want failed attempt 1 with the reason", s)
	}
	if next := ty.status().Next; !strings.Contains(next, "upgradectl preinstall") || !strings.Contains(next, "undo preinstall") {
		t.Errorf("next %q does not offer retry and undo", next)
	}
	entries, _, _ := e.Log.Read()
	if l := entries[len(entries)-1]; l.Result != host.ResultFailed || !strings.Contains(l.Message, "UPGRADE_OPERATION_FAILED") {
		t.Errorf("last log entry %+v, want the failure", l)
	}
	wantKind(t, e.Do(ctx, Install, Options{}), host.KindRefused, "preinstall is failed")
	// Retry after the cause is fixed.
	os.Remove(ty.path("/fail/preinstall"))
	n, err := e.Continue(ctx, Options{})
	ty.must(err)
	if s := ty.stageStatus(Preinstall); n != Preinstall || s.Status != Done || s.Attempt != 2 {
		t.Fatalf("continue ran %s, status %+v, want preinstall done at attempt 2", n, s)
	}
	// A failed stage can be undone too.
	ty.write("/fail/install", "bad payload", 0o644)
	wantKind(t, e.Do(ctx, Install, Options{}), host.KindBad, "bad payload")
	ty.must(e.Undo(ctx, Install, Options{}))
	if s := ty.stageStatus(Install); s.Status != Undone {
		t.Fatalf("install %+v, want undone", s)
	}
	// A failed undo is recorded and continue finishes it.
	ty.write("/fail/undo-preinstall", "stuck", 0o644)
	wantKind(t, e.Undo(ctx, Preinstall, Options{}), host.KindBad, "undo preinstall failed: stuck")
	wantKind(t, e.Do(ctx, Install, Options{}), host.KindRefused, "preinstall is undo failed")
	os.Remove(ty.path("/fail/undo-preinstall"))
	n, err = e.Continue(ctx, Options{})
	ty.must(err)
	if s := ty.stageStatus(Preinstall); n != Preinstall || s.Status != Undone {
		t.Fatalf("continue ran %s, preinstall %+v, want its undo finished", n, s)
	}
}

func TestHooks(t *testing.T) {
	hosttestRequireSh(t)
	ty := newToy(t)
	ctx := context.Background()
	e := ty.engine()
	hooks := "/etc/upgradectl/hooks.d"
	// Name order, environment, output logged.
	ty.write(hooks+"/setup.pre.d/20-second", "#!/bin/sh\necho second $UPGRADECTL_STAGE $UPGRADECTL_HOOK >> \"$UPGRADECTL_ROOT/hooks.out\"\n", 0o755)
	ty.write(hooks+"/setup.pre.d/10-first", "#!/bin/sh\necho first >> \"$UPGRADECTL_ROOT/hooks.out\"\necho hello from the hook\n", 0o755)
	ty.write(hooks+"/setup.pre.d/30-not-executable", "#!/bin/sh\necho never >> \"$UPGRADECTL_ROOT/hooks.out\"\n", 0o644)
	ty.write(hooks+"/setup.post.d/10-post", "#!/bin/sh\necho post $UPGRADECTL_NEW_VERSION >> \"$UPGRADECTL_ROOT/hooks.out\"\n", 0o755)
	ty.must(e.Do(ctx, Setup, Options{}))
	got, _ := os.ReadFile(ty.path("/hooks.out"))
	if string(got) != "first\nsecond setup pre\npost 2\n" {
		t.Errorf("hooks ran as\n%s", got)
	}
	entries, _, _ := e.Log.Read()
	found := false
	for _, en := range entries {
		if strings.HasSuffix(en.Action, "setup.pre.d/10-first") && en.Message == "hello from the hook" && en.Result == host.ResultSuccess {
			found = true
		}
	}
	if !found {
		t.Errorf("hook output not in the log: %+v", entries)
	}
	// A failing pre hook stops the stage before its do; fail hooks run
	// and learn why.
	ty.write(hooks+"/preinstall.pre.d/10-no", "#!/bin/sh\necho not today >&2\nexit 3\n", 0o755)
	ty.write(hooks+"/preinstall.fail.d/10-tell", "#!/bin/sh\necho \"failed: $UPGRADECTL_ERROR\" > \"$UPGRADECTL_ROOT/fail.out\"\nexit 1\n", 0o755)
	err := e.Do(ctx, Preinstall, Options{})
	wantKind(t, err, host.KindBad, "pre hook 10-no failed")
	if !strings.Contains(err.Error(), "not today") {
		t.Errorf("error %q does not carry the hook's last line", err)
	}
	if slices.Contains(ty.calls, "do preinstall") {
		t.Error("preinstall's do ran although its pre hook failed")
	}
	if b, _ := os.ReadFile(ty.path("/fail.out")); !strings.Contains(string(b), "failed: pre hook 10-no failed") {
		t.Errorf("fail hook saw %q", b)
	}
	// A failing post hook fails the stage after its do.
	os.Remove(ty.path(hooks + "/preinstall.pre.d/10-no"))
	ty.write(hooks+"/preinstall.post.d/10-check", "#!/bin/sh\nexit 1\n", 0o755)
	wantKind(t, e.Do(ctx, Preinstall, Options{}), host.KindBad, "post hook 10-check failed")
	if !slices.Contains(ty.calls, "do preinstall") {
		t.Error("do did not run before the post hook")
	}
}

func hosttestRequireSh(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs /bin/sh for the hook scripts")
	}
}

func TestNeedsManualRepair(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	e := ty.engine()
	ty.must(e.Do(ctx, Setup, Options{}))
	ty.must(e.Do(ctx, Preinstall, Options{}))
	os.Remove(ty.path("/marks/setup"))
	_, err := e.Continue(ctx, Options{})
	wantKind(t, err, host.KindRefused, "needs manual repair: setup is done but /marks/setup is missing")
	wantKind(t, e.Undo(ctx, Preinstall, Options{}), host.KindRefused, "needs manual repair")
	rep := ty.status()
	if len(rep.Repair) != 1 || !strings.Contains(rep.Next, "--force") {
		t.Fatalf("status repair %v next %q, want the disagreement and the --force way", rep.Repair, rep.Next)
	}
	// Redo of a done stage is only for repair, and only the latest one.
	wantKind(t, e.Do(ctx, Setup, Options{Force: true}), host.KindRefused, "preinstall is done")
	// Acting anyway.
	ty.must(e.Undo(ctx, Preinstall, Options{Force: true}))
	ty.must(e.Do(ctx, Setup, Options{Force: true}))
	if rep := ty.status(); len(rep.Repair) != 0 || !ty.exists("/marks/setup") {
		t.Fatalf("after setup --force: repair %v", rep.Repair)
	}
	_, err = e.Continue(ctx, Options{})
	ty.must(err)
}

func TestRebootAndResume(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	ty.reboot[Roll] = true
	ty.doAll(Order[:4])
	ty.must(ty.engine().Do(ctx, Roll, Options{}))
	s := ty.stageStatus(Roll)
	if s.Status != Running || s.Waiting != "reboot" || s.Interrupted {
		t.Fatalf("roll after asking for the reboot: %+v", s)
	}
	if next := ty.status().Next; !strings.Contains(next, "boot hook") {
		t.Errorf("next %q", next)
	}
	// The boot hook completes it, and only it.
	boot := ty.engine()
	boot.Automatic = true
	n, err := boot.Resume(ctx)
	ty.must(err)
	if s := ty.stageStatus(Roll); n != Roll || s.Status != Done || s.Attempt != 2 {
		t.Fatalf("resume ran %s: roll %+v", n, s)
	}
	if b, _ := os.ReadFile(ty.path("/marks/roll")); string(b) != "yes" {
		t.Errorf("roll's checkpoint did not survive the reboot: %q", b)
	}
	if s := ty.stageStatus(Switch); s.Status != NotStarted {
		t.Errorf("resume went on to switch: %+v", s)
	}
	n, err = boot.Resume(ctx)
	if n != "" || err != nil {
		t.Errorf("resume with nothing interrupted: %s %v", n, err)
	}
}

// crash runs one engine action in a child process (this test binary) that
// a stage kills with SIGKILL, as kill -9 or a power cut would.
func crash(t *testing.T, ty *toy, action string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), "STAGE_CRASH_CHILD=1", "STAGE_CRASH_ROOT="+ty.root.Dir(), "STAGE_CRASH_ACTION="+action)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child %s: %v, want killed by SIGKILL\n%s", action, err, out)
	}
}

// TestCrashChild is the child process of crash.
func TestCrashChild(t *testing.T) {
	if os.Getenv("STAGE_CRASH_CHILD") != "1" {
		t.Skip("child process of the crash tests")
	}
	root, _ := host.NewRoot(os.Getenv("STAGE_CRASH_ROOT"))
	ty := &toy{t: t, root: root, state: root.Path("/var/lib/upgradectl"), cfg: host.DefaultConfig(), reboot: map[Name]bool{}}
	e := ty.engine()
	ctx := context.Background()
	var err error
	switch a := os.Getenv("STAGE_CRASH_ACTION"); {
	case a == "continue":
		_, err = e.Continue(ctx, Options{})
	case a == "resume":
		e.Automatic = true
		_, err = e.Resume(ctx)
	case strings.HasPrefix(a, "undo "):
		err = e.Undo(ctx, Name(strings.TrimPrefix(a, "undo ")), Options{})
	default:
		err = e.Do(ctx, Name(a), Options{})
	}
	t.Fatalf("child was not killed: %v", err)
}

func TestInterruptedStageIsCompletedOrUndone(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	ty.must(ty.engine().Do(ctx, Setup, Options{}))
	ty.write("/kill/preinstall", "", 0o644)
	crash(t, ty, "preinstall")
	s := ty.stageStatus(Preinstall)
	if s.Status != Running || !s.Interrupted {
		t.Fatalf("after kill -9: %+v, want running and interrupted", s)
	}
	if next := ty.status().Next; !strings.Contains(next, "completes the interrupted preinstall") {
		t.Errorf("next %q", next)
	}
	// The next run finds it, logs it and completes it.
	n, err := ty.engine().Continue(ctx, Options{})
	ty.must(err)
	if s := ty.stageStatus(Preinstall); n != Preinstall || s.Status != Done || s.Attempt != 2 {
		t.Fatalf("continue ran %s: %+v", n, s)
	}
	entries, _, _ := ty.engine().Log.Read()
	found := false
	for _, en := range entries {
		if en.Action == "preinstall" && strings.Contains(en.Message, "do attempt 1 was interrupted") {
			found = true
		}
	}
	if !found {
		t.Error("the interruption is not in the log")
	}
	// Interrupted, then undone instead.
	ty.write("/kill/install", "", 0o644)
	crash(t, ty, "continue")
	ty.must(ty.engine().Undo(ctx, Install, Options{}))
	if s := ty.stageStatus(Install); s.Status != Undone {
		t.Fatalf("install %+v, want undone", s)
	}
	// An interrupted undo: only undo (or continue) finishes it.
	ty.must(ty.engine().Do(ctx, Install, Options{}))
	ty.write("/kill/undo-install", "", 0o644)
	crash(t, ty, "undo install")
	if s := ty.stageStatus(Install); s.Status != Undoing || !s.Interrupted {
		t.Fatalf("install %+v, want undoing, interrupted", s)
	}
	wantKind(t, ty.engine().Do(ctx, Postinstall, Options{}), host.KindRefused, "install is undoing")
	wantKind(t, ty.engine().Do(ctx, Install, Options{}), host.KindRefused, "its undo is unfinished")
	n, err = ty.engine().Continue(ctx, Options{})
	ty.must(err)
	if s := ty.stageStatus(Install); n != Install || s.Status != Undone || ty.exists("/marks/install") {
		t.Fatalf("continue ran %s: install %+v", n, s)
	}
}

func TestBootLoopGuard(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	ty.doAll(Order[:4])
	// Roll dies every time, at the first run and at each boot.
	ty.write("/kill/roll", "", 0o644)
	crash(t, ty, "roll")
	for i := 0; i < DefaultMaxResumes; i++ {
		ty.write("/kill/roll", "", 0o644)
		crash(t, ty, "resume")
	}
	boot := ty.engine()
	boot.Automatic = true
	_, err := boot.Resume(ctx)
	wantKind(t, err, host.KindRefused, fmt.Sprintf("%d resumes at boot have not finished it", DefaultMaxResumes))
	if s := ty.stageStatus(Roll); s.Status != Running || s.Attempt != 1+DefaultMaxResumes {
		t.Fatalf("roll %+v", s)
	}
	// An operator's continue is not bound by the guard, and resets it.
	os.Remove(ty.path("/kill/roll"))
	_, err = ty.engine().Continue(ctx, Options{})
	ty.must(err)
	if s := ty.stageStatus(Roll); s.Status != Done {
		t.Fatalf("roll %+v", s)
	}
}

func TestStateFormat(t *testing.T) {
	ty := newToy(t)
	ty.write("/var/lib/upgradectl/"+StateFile, `{"format": 99, "stages": []}`, 0o644)
	_, err := ty.engine().Continue(context.Background(), Options{})
	wantKind(t, err, host.KindCannotRun, "format 99, this upgradectl reads format 1")
	ty.write("/var/lib/upgradectl/"+StateFile, `{"format": 1, "stages": [`, 0o644)
	_, err = ty.engine().Status()
	wantKind(t, err, host.KindBad, "cannot read upgrade state")
}

func TestStatusSeesARunningProcess(t *testing.T) {
	ty := newToy(t)
	ty.must(ty.engine().Do(context.Background(), Setup, Options{}))
	lock, err := host.LockStateDir(ty.state)
	if err != nil {
		t.Fatal(err)
	}
	rep := ty.status()
	if rep.Busy != os.Getpid() || !strings.HasPrefix(rep.Next, "wait") {
		t.Errorf("status while locked: busy %d next %q", rep.Busy, rep.Next)
	}
	lock.Unlock()
	if rep := ty.status(); rep.Busy != 0 {
		t.Errorf("status after unlock: busy %d", rep.Busy)
	}
	_, err = ty.engine().Continue(context.Background(), Options{})
	ty.must(err)
}

// TestArchiveCutShort: an archive stopped after the log was copied and
// before it was removed (a crash there; here the log is made append-only,
// so that its removal fails for real, and clean fails) is finished by
// continue without copying the log twice or saying twice that the
// upgrade is complete.
func TestArchiveCutShort(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "chattr")
	ty := newToy(t)
	ctx := context.Background()
	ty.doAll(Order[:len(Order)-1])
	logPath := ty.engine().Log.Path
	if out, err := exec.Command("chattr", "+a", logPath).CombinedOutput(); err != nil {
		t.Skipf("chattr +a on %s: %v %s (the filesystem has no append-only flag)", logPath, err, out)
	}
	err := ty.engine().Do(ctx, Clean, Options{})
	exec.Command("chattr", "-a", logPath).Run()
	if err == nil {
		t.Fatal("clean archived although the log could not be removed")
	}
	if n, err := ty.engine().Continue(ctx, Options{}); err != nil || n != Clean {
		t.Fatalf("continue: %s %v", n, err)
	}
	logs, _ := filepath.Glob(filepath.Join(ty.state, HistoryDir, "*", "*", host.LogFile))
	if len(logs) != 1 {
		t.Fatalf("archived logs %v, want one", logs)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]int{}
	complete := 0
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var en host.LogEntry
		if err := json.Unmarshal([]byte(l), &en); err != nil {
			t.Fatalf("archived log line %q: %v", l, err)
		}
		ids[en.ID]++
		if en.Action == "upgrade" && strings.Contains(en.Message, "complete") {
			complete++
		}
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("entry %d is %d times in the archived log", id, n)
		}
	}
	if complete != 1 {
		t.Errorf("%d entries say the upgrade is complete, want 1", complete)
	}
	if _, err := os.Stat(logPath); !os.IsNotExist(err) {
		t.Errorf("the upgrade log is still there: %v", err)
	}
}

// TestNoUndoOfferedAfterSwitch: a failed stage before switch offers its
// undo; a failed clean does not, as it has none.
func TestNoUndoOfferedAfterSwitch(t *testing.T) {
	ty := newToy(t)
	ctx := context.Background()
	ty.doAll(Order[:3])
	ty.write("/fail/postinstall", "broken", 0o644)
	err := ty.engine().Do(ctx, Postinstall, Options{})
	if h := host.HintOf(err); !strings.Contains(h, "upgradectl undo postinstall") || !strings.Contains(ty.status().Next, "undo postinstall") {
		t.Errorf("failed postinstall: hint %q, next %q; want the undo offered", h, ty.status().Next)
	}
	os.Remove(ty.path("/fail/postinstall"))
	ty.doAll(Order[3:6])
	ty.write("/fail/clean", "broken", 0o644)
	err = ty.engine().Do(ctx, Clean, Options{})
	if h := host.HintOf(err); err == nil || strings.Contains(h, "undo") || strings.Contains(ty.status().Next, "undo") {
		t.Errorf("failed clean: %v, hint %q, next %q; want no undo offered", err, h, ty.status().Next)
	}
}

// TestFailureKeepsTheCauseHint: a stage's failure keeps what its cause
// says to fix first, before how to go on.
func TestFailureKeepsTheCauseHint(t *testing.T) {
	err := failure("undo install failed", host.WithHint(host.Refused("they are bind-mounted"), "run 'upgradectl tag disable' first"),
		"fix the cause and run 'upgradectl undo install' again")
	if h := host.HintOf(err); h != "run 'upgradectl tag disable' first; then fix the cause and run 'upgradectl undo install' again" || host.KindOf(err) != host.KindRefused {
		t.Errorf("hint %q, kind %d", h, host.KindOf(err))
	}
}
