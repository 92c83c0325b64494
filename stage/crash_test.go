package stage_test

import (
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// TestCrashConsistency kills the real binary with SIGKILL at random moments
// of every stage and every undo, then runs `continue` or `undo` (chosen at
// random) and checks that the host is consistent: the product is exactly
// version 1 or exactly version 2 as the record says, tagged copies exist
// exactly while setup is done, the image is mounted exactly while install
// is done, maintenance mode matches preinstall, nothing is left running or
// half-done, and status explains it all. Each cycle is an upgrade 1 -> 2 on
// a fresh copy of the host with a few random undos on the way; cycles run
// until at least UPGRADECTL_CRASH_KILLS (default 100) kills landed inside a
// run. Without reboots: the root is a directory on this machine (--root).
func TestCrashConsistency(t *testing.T) {
	bin, want, rng := crashSetup(t, "UPGRADECTL_CRASH_KILLS", 100)

	img := acmeISO(t, t.TempDir(), "2", "1")
	template := filepath.Join(t.TempDir(), "host")
	setUpHost(t, template, true, false)
	v1 := snapshot(t, template, false)

	// A clean upgrade first: the version 2 record, and how long each
	// action takes (the kill moments are drawn within that).
	took := map[string]time.Duration{}
	ref := freshHost(t, template)
	r := runner{bin: bin, root: ref, env: []string{"ACME_INSTALL_DELAY=0.01"}}
	for _, act := range [][]string{{"setup", "--iso", img}, {"continue"}, {"continue"}, {"continue"}, {"continue"}, {"continue"}, {"continue"}} {
		start := time.Now()
		r.must(t, act...)
		took[nextKey(t, r, act)] = time.Since(start)
	}
	v2 := snapshot(t, ref, false)
	if len(diffSnapshots(v1, v2)) == 0 {
		t.Fatal("version 2 is the same as version 1")
	}
	checkHost(t, r, v1, v2, img)
	// The undos' durations, from a backout of setup to install.
	r = runner{bin: bin, root: freshHost(t, template), env: r.env}
	for _, act := range [][]string{{"setup", "--iso", img}, {"continue"}, {"continue"}, {"undo", "install"}, {"undo", "preinstall"}, {"undo", "setup"}} {
		start := time.Now()
		r.must(t, act...)
		took[strings.Join(act, " ")] = time.Since(start)
	}

	kills, runs := 0, 0
	cut := map[string]int{} // kills that left a stage running or undoing, by action
	for cycle := 0; kills < want; cycle++ {
		if cycle > 4*want {
			t.Fatalf("only %d kills landed in %d cycles", kills, cycle)
		}
		root := freshHost(t, template)
		r := runner{bin: bin, root: root, env: []string{"ACME_INSTALL_DELAY=0.01"}}
		undos := 0
		for step := 0; ; step++ {
			if step > 60 {
				t.Fatalf("cycle %d does not converge", cycle)
			}
			rep := status(t, r)
			if !rep.InProgress && rep.ActiveVersion == "2" {
				break
			}
			// The next action: mostly forward, a few undos.
			act := []string{"continue"}
			if !rep.InProgress {
				act = []string{"setup", "--iso", img}
			} else if n := latestUndoable(rep); n != "" && undos < 3 && rng.Intn(4) == 0 {
				act = []string{"undo", string(n)}
				undos++
			}
			key := strings.Join(act, " ")
			if act[0] == "continue" {
				key = "continue " + string(nextStage(rep))
			}
			runs++
			if !killAt(t, r, act, rng, took[key]) {
				checkHost(t, r, v1, v2, img)
				continue
			}
			kills++
			// Recover: continue, or undo what was cut short when it can be.
			rep = status(t, r)
			rec := []string{"continue"}
			n := interrupted(rep)
			if n != "" {
				cut[key]++
			}
			if n != "" && n != stage.Switch && n != stage.Clean && rng.Intn(2) == 0 {
				rec = []string{"undo", string(n)}
			}
			if !rep.InProgress {
				// Killed before setup recorded anything, or after clean
				// archived the upgrade: nothing to recover.
				checkHost(t, r, v1, v2, img)
				continue
			}
			out, code := r.run(rec...)
			if code != 0 {
				t.Fatalf("cycle %d: after kill -9 in %q, %q exited %d:\n%s\nstatus:\n%s", cycle, key, strings.Join(rec, " "), code, out, r.must(t, "status"))
			}
			checkHost(t, r, v1, v2, img)
		}
		checkHost(t, r, v1, v2, img)
	}
	t.Logf("%d kills in %d runs; kills that cut a stage short, by action: %v", kills, runs, cut)
	if len(cut) < 4 {
		t.Errorf("kills cut short only %d kinds of action", len(cut))
	}
}

// crashSetup is what a kill test needs: root, xorriso and FUSE (or it
// skips), the built binary, how many kills must land (from the variable
// kills names, else def), and a random source seeded from
// UPGRADECTL_CRASH_SEED or the clock, logged so that a run can be repeated.
func crashSetup(t *testing.T, kills string, def int) (bin string, want int, rng *rand.Rand) {
	t.Helper()
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "xorriso")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse for the image mount (this kernel has no iso9660)")
	}
	want = def
	if s := os.Getenv(kills); s != "" {
		want, _ = strconv.Atoi(s)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("UPGRADECTL_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("seed %d (UPGRADECTL_CRASH_SEED repeats it)", seed)
	return hosttest.Bin(t), want, rand.New(rand.NewSource(seed))
}

// nextKey names an action by the stage it ran, for the duration table.
func nextKey(t *testing.T, r runner, act []string) string {
	if act[0] != "continue" {
		return strings.Join(act, " ")
	}
	entries := logEntries(t, r)
	for i := len(entries) - 1; i >= 0; i-- {
		for _, n := range stage.Order {
			if entries[i].Action == string(n) {
				return "continue " + string(n)
			}
		}
	}
	return "continue"
}

type logEntry struct {
	ID, Parent     int64
	Action, Result string
	Mode, Message  string
}

func logEntries(t *testing.T, r runner) []logEntry {
	var out []logEntry
	for _, p := range []string{"var/lib/upgradectl/upgrade.log"} {
		b, _ := os.ReadFile(filepath.Join(r.root, p))
		for _, line := range strings.Split(string(b), "\n") {
			var e logEntry
			if json.Unmarshal([]byte(line), &e) == nil {
				out = append(out, e)
			}
		}
	}
	return out
}

func freshHost(t *testing.T, template string) string {
	root := filepath.Join(t.TempDir(), "host")
	hosttest.Run(t, "cp", "-a", template, root)
	t.Cleanup(func() { runner{bin: hosttest.Bin(t), root: root}.run("iso", "umount", "--all") })
	return root
}

// killAt runs act and, with a delay drawn within how long it takes, kills
// it with SIGKILL. It reports whether the kill landed while it ran.
func killAt(t *testing.T, r runner, act []string, rng *rand.Rand, took time.Duration) bool {
	if took <= 0 {
		took = 300 * time.Millisecond
	}
	cmd := r.cmd(act...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	delay := time.Duration(rng.Int63n(int64(took) * 11 / 10))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("upgradectl %s: %v\n%s", strings.Join(act, " "), err, out.String())
		}
		return false
	case <-time.After(delay):
	}
	syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	err := <-done
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL {
		return true
	}
	if err != nil {
		t.Fatalf("upgradectl %s: %v\n%s", strings.Join(act, " "), err, out.String())
	}
	return false
}

func status(t testing.TB, r runner) *stage.Report {
	t.Helper()
	out, code := r.run("status", "--json")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	var rep stage.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return &rep
}

func stageOf(rep *stage.Report, n stage.Name) stage.StageStatus {
	for _, s := range rep.Stages {
		if s.Name == n {
			return s
		}
	}
	return stage.StageStatus{}
}

func latestUndoable(rep *stage.Report) stage.Name {
	if s := stageOf(rep, stage.Switch); s.Status != stage.NotStarted && s.Status != stage.Undone {
		return ""
	}
	for i := len(rep.Stages) - 1; i >= 0; i-- {
		if st := rep.Stages[i].Status; st != stage.NotStarted && st != stage.Undone {
			return rep.Stages[i].Name
		}
	}
	return ""
}

func nextStage(rep *stage.Report) stage.Name {
	for _, s := range rep.Stages {
		if s.Status != stage.Done {
			return s.Name
		}
	}
	return ""
}

func interrupted(rep *stage.Report) stage.Name {
	for _, s := range rep.Stages {
		if s.Status == stage.Running || s.Status == stage.Undoing {
			return s.Name
		}
	}
	return ""
}

// checkHost checks that the host is consistent with its record.
func checkHost(t *testing.T, r runner, v1, v2 map[string]fileRecord, img string) {
	t.Helper()
	rep := status(t, r)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("inconsistent host: "+format+"\nstatus:\n%s\nlog:\n%s", append(args, r.must(t, "status"), r.must(t, "log", "--last", "30"))...)
	}
	if len(rep.Repair) > 0 {
		fail("needs manual repair: %v", rep.Repair)
	}
	for _, s := range rep.Stages {
		if s.Status == stage.Running || s.Status == stage.Undoing || s.Status == stage.Failed || s.Status == stage.UndoFailed {
			fail("stage %s is %s after recovery", s.Name, s.Status)
		}
	}
	done := func(n stage.Name) bool { return rep.InProgress && stageOf(rep, n).Status == stage.Done }
	// The product: version 2 exactly once install is done (or the
	// upgrade finished), version 1 exactly before.
	want, name := v1, "version 1"
	if done(stage.Install) || (!rep.InProgress && rep.ActiveVersion == "2") {
		want, name = v2, "version 2"
	}
	if d := diffSnapshots(want, snapshot(t, r.root, false)); len(d) > 0 {
		fail("the product is not exactly %s: %s", name, strings.Join(d, "; "))
	}
	// Tagged copies: exactly while setup is done, with version 1's content.
	tagged := done(stage.Setup) && !done(stage.Clean)
	all := snapshot(t, r.root, true)
	for p, fr := range all {
		base := filepath.Base(p)
		if strings.Contains(base, ".upgradectl-tmp") {
			fail("temporary file %s left", p)
		}
		if !strings.HasPrefix(base, ".Old..") {
			continue
		}
		if !tagged {
			fail("tagged copy %s exists while setup is not done", p)
		}
		orig := filepath.Join(filepath.Dir(p), strings.TrimPrefix(base, ".Old.."))
		if v1[orig].Digest != fr.Digest {
			fail("tagged copy %s does not hold version 1 of %s", p, orig)
		}
	}
	if tagged {
		for _, f := range acmeFiles {
			if _, ok := v1[f]; !ok {
				continue
			}
			tp := filepath.Join(filepath.Dir(f), ".Old.."+filepath.Base(f))
			if _, ok := all[tp]; !ok {
				fail("setup is done but %s is missing", tp)
			}
		}
	}
	// The image mount: exactly while install is done.
	mnt := filepath.Join(r.root, "var/lib/upgradectl", stage.MountDir)
	if mounted(t, mnt) != (done(stage.Install) && !done(stage.Clean)) {
		fail("mount on %s: %v, install done: %v", mnt, mounted(t, mnt), done(stage.Install))
	}
	// The staged image: exactly while setup is done.
	staged := filepath.Join(r.root, "var/lib/upgradectl/iso", filepath.Base(img))
	if _, err := os.Stat(staged); (err == nil) != (done(stage.Setup) && !done(stage.Clean)) {
		fail("staged image %s present: %v, setup done: %v", staged, err == nil, done(stage.Setup))
	}
	// Maintenance mode: exactly while preinstall is done.
	in := false
	for _, f := range rep.Facts {
		if f.Name == "maintenance" {
			in = strings.HasPrefix(f.Value, "in")
		}
	}
	if in != (done(stage.Preinstall) && !done(stage.Clean)) {
		fail("maintenance mode %v, preinstall done %v", in, done(stage.Preinstall))
	}
	if !rep.InProgress && rep.ActiveVersion == "2" {
		hist := filepath.Join(r.root, "var/lib/upgradectl", rep.History[len(rep.History)-1], "upgrade.log")
		if _, err := os.Stat(hist); err != nil {
			fail("no archived log: %v", err)
		}
	}
}

// mounted reports whether dir is a mount point, from this machine's
// mount table.
func mounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescape(f[4]) == dir {
			return true
		}
	}
	return false
}

func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
