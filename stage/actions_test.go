package stage_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// The real stages on a directory root (--root), with the built binary:
// what setup refuses, what the host needs when it contradicts the record,
// and how --force repairs it.

func rootHost(t *testing.T) runner {
	t.Helper()
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "xorriso")
	root := filepath.Join(t.TempDir(), "host")
	setUpHost(t, root, false, false)
	r := runner{bin: hosttest.Bin(t), root: root}
	t.Cleanup(func() { r.run("iso", "umount", "--all") })
	return r
}

func wantExit(t *testing.T, r runner, code int, substr string, args ...string) string {
	t.Helper()
	out, got := r.run(args...)
	if got != code || !strings.Contains(out, substr) {
		t.Fatalf("upgradectl %s: exit %d, want %d saying %q:\n%s", strings.Join(args, " "), got, code, substr, out)
	}
	return out
}

func TestSetupRefusesAnImageThatDoesNotFit(t *testing.T) {
	r := rootHost(t)
	dir := t.TempDir()
	// Version 3 upgrades 2 only; this host runs 1.
	img3 := acmeISO(t, dir, "3", "2")
	wantExit(t, r, 5, "no upgrade in progress", "continue")
	wantExit(t, r, 5, "cannot run install: no upgrade in progress", "install")
	wantExit(t, r, 1, "upgrades from 2, not from this host's 1", "setup", "--iso", img3)
	rep := status(t, r)
	if s := stageOf(rep, stage.Setup); s.Status != stage.Failed || !strings.Contains(s.Error, "upgrades from 2") {
		t.Fatalf("setup %+v, want failed with the reason", s)
	}
	// Another image while that setup is failed: undo it first.
	img2 := acmeISO(t, dir, "2", "1")
	wantExit(t, r, 5, "undo it first", "setup", "--iso", img2)
	r.must(t, "undo", "setup")
	r.must(t, "setup", "--iso", img2)
	// A corrupt image copy is caught by its checksum.
	bad := filepath.Join(t.TempDir(), filepath.Base(img2))
	b, _ := os.ReadFile(img2)
	b[len(b)/2] ^= 0xff
	os.WriteFile(bad, b, 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(bad), "md5sum.out"), []byte(strings.Repeat("0", 32)+"  "+filepath.Base(bad)+"\n"), 0o644)
	r2 := rootHost(t)
	wantExit(t, r2, 1, "setup failed", "setup", "--iso", bad)
}

// TestSetupSHA: setup stages an image against --sha256, or against the
// SHA512SUMS beside it (written by the real sha512sum), and preinstall
// verifies the staged image against that digest again.
func TestSetupSHA(t *testing.T) {
	hosttest.RequireCommand(t, "sha256sum", "sha512sum")
	dir := t.TempDir()
	img := acmeISO(t, dir, "2", "1")
	os.Remove(filepath.Join(dir, "md5sum.out"))
	sha256 := strings.Fields(hosttest.Run(t, "sha256sum", img))[0]

	r := rootHost(t)
	wantExit(t, r, 1, "its SHA-256 is "+sha256+", the checksum says 0000", "setup", "--iso", img, "--sha256", strings.Repeat("0", 64))
	r.must(t, "undo", "setup")
	r.must(t, "setup", "--iso", img, "--sha256", strings.ToUpper(sha256))
	r.must(t, "continue")
	if log := r.must(t, "log"); !strings.Contains(log, "sha256 "+sha256+", not signed") || !strings.Contains(log, "sha256 "+sha256+" as staged") {
		t.Errorf("setup and preinstall do not check the SHA-256:\n%s", log)
	}

	cmd := exec.Command("sha512sum", "--tag", filepath.Base(img))
	cmd.Dir = dir
	tagged, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA512SUMS"), tagged, 0o644); err != nil {
		t.Fatal(err)
	}
	sha512 := strings.Fields(hosttest.Run(t, "sha512sum", img))[0]
	r2 := rootHost(t)
	r2.must(t, "setup", "--iso", img)
	r2.must(t, "continue")
	if log := r2.must(t, "log"); !strings.Contains(log, "sha512 "+sha512+", not signed") || !strings.Contains(log, "sha512 "+sha512+" as staged") {
		t.Errorf("setup and preinstall do not check the SHA-512 of SHA512SUMS:\n%s", log)
	}
}

func TestManualRepairWithForce(t *testing.T) {
	r := rootHost(t)
	img := acmeISO(t, t.TempDir(), "2", "1")
	r.must(t, "setup", "--iso", img)
	r.must(t, "continue") // preinstall
	// Someone removes a tagged copy: the record says setup is done.
	tagged := filepath.Join(r.root, "opt/acme/bin/.Old..acme")
	if err := os.Remove(tagged); err != nil {
		t.Fatal(err)
	}
	wantExit(t, r, 5, "needs manual repair", "continue")
	wantExit(t, r, 5, "needs manual repair", "undo", "preinstall")
	out := r.must(t, "status")
	if !strings.Contains(out, "needs manual repair") || !strings.Contains(out, "/opt/acme/bin/.Old..acme") || !strings.Contains(out, "--force") {
		t.Fatalf("status does not say what disagrees and how to repair it:\n%s", out)
	}
	// Redoing setup is refused while preinstall is done; undo preinstall
	// anyway, then redo setup to make the copy again.
	wantExit(t, r, 5, "preinstall is done", "setup", "--iso", img, "--force")
	r.must(t, "undo", "preinstall", "--force")
	r.must(t, "setup", "--iso", img, "--force")
	if _, err := os.Lstat(tagged); err != nil {
		t.Fatalf("setup --force did not make the tagged copy again: %v", err)
	}
	if rep := status(t, r); len(rep.Repair) != 0 {
		t.Fatalf("still needs repair: %v", rep.Repair)
	}
	for i := 0; i < 6; i++ {
		r.must(t, "continue")
	}
	if rep := status(t, r); rep.InProgress || rep.ActiveVersion != "2" {
		t.Fatalf("after the upgrade: %+v", rep)
	}
}

// readyToInstall is a root host with version 2 set up and preinstalled.
func readyToInstall(t *testing.T) runner {
	t.Helper()
	r := rootHost(t)
	r.must(t, "setup", "--iso", acmeISO(t, t.TempDir(), "2", "1"))
	r.must(t, "preinstall")
	return r
}

func TestInstallCommandFromTheCommandLine(t *testing.T) {
	r := readyToInstall(t)
	// An install command that fails: recorded, its output in the log.
	wantExit(t, r, 1, "install failed", "install", "--", "/bin/sh", "-c", "echo half-way; echo broken >&2; exit 7")
	log := r.must(t, "--json", "log")
	if !strings.Contains(log, "half-way") || !strings.Contains(log, "UPGRADE_OPERATION_FAILED") {
		t.Fatalf("the install output and the failure are not in the log:\n%s", log)
	}
	// The one given runs with the image root and both versions.
	out := filepath.Join(r.root, "install.env")
	r.must(t, "install", "--", "/bin/sh", "-c", `echo "$UPGRADECTL_OLD_VERSION $UPGRADECTL_NEW_VERSION $(cat "$UPGRADECTL_IMAGE_ROOT/upgradectl.toml" | grep -c '^version = "2"')" > `+out)
	b, err := os.ReadFile(out)
	if err != nil || strings.TrimSpace(string(b)) != "1 2 1" {
		t.Fatalf("install command saw %q (%v), want versions 1 2 and the image", b, err)
	}
	r.must(t, "undo", "install")
	r.must(t, "undo", "preinstall")
	r.must(t, "undo", "setup")
}

// A tag create killed while it probes the filesystem leaves a temporary
// file that no record names (made here by hand): undo of setup removes it.
func TestUndoSetupRemovesTagTemporaries(t *testing.T) {
	r := rootHost(t)
	img := acmeISO(t, t.TempDir(), "2", "1")
	r.must(t, "setup", "--iso", img)
	// Deleting the tagged copies by hand while the upgrade holds them
	// would leave its backout nothing to restore: refused without --force.
	wantExit(t, r, 5, "the upgrade in progress", "tag", "clean")
	wantExit(t, r, 5, "the upgrade in progress", "tag", "remove", "/opt/acme/bin/acme")
	if _, err := os.Lstat(filepath.Join(r.root, "opt/acme/bin/.Old..acme")); err != nil {
		t.Fatalf("a refused remove removed: %v", err)
	}
	// The record of tagged files names none, as before a create's plan.
	r.must(t, "tag", "clean", "--force")
	tmp := filepath.Join(r.root, "opt/acme/bin/.Old..acme.upgradectl-tmp")
	if err := os.WriteFile(tmp, []byte("half a probe"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.must(t, "undo", "setup")
	if _, err := os.Lstat(tmp); err == nil {
		t.Fatalf("%s is left after undo setup", tmp)
	}
	if log := r.must(t, "log"); !strings.Contains(log, "tag temporaries") {
		t.Errorf("the removal is not in the log:\n%s", log)
	}
}

// Symlinks inside the root are followed as the system under it sees them,
// never out of it: /opt and the state directory are absolute links to
// other places in the root, and the upgrade and its backout work there.
func TestSymlinksInsideTheRoot(t *testing.T) {
	r := rootHost(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(r.root, "srv"), 0o755))
	must(os.Rename(filepath.Join(r.root, "opt"), filepath.Join(r.root, "srv/opt")))
	must(os.Symlink("/srv/opt", filepath.Join(r.root, "opt")))
	must(os.MkdirAll(filepath.Join(r.root, "var/lib"), 0o755))
	must(os.Symlink("/srv/upgradectl-state", filepath.Join(r.root, "var/lib/upgradectl")))
	// The product's post hook runs acme by its path through the root on
	// this system, where the absolute /opt link does not lead into the
	// root; it has no place here.
	must(os.Remove(filepath.Join(r.root, "etc/upgradectl/hooks.d/postinstall.post.d/50-acme-check")))
	before := snapshot(t, filepath.Join(r.root, "srv"), false)

	img := acmeISO(t, t.TempDir(), "2", "1")
	out := r.must(t, "setup", "--iso", img)
	t.Logf("setup:\n%s", out)
	if _, err := os.Stat(filepath.Join(r.root, "srv/upgradectl-state", "stages.json")); err != nil {
		t.Fatalf("the state is not in the directory the link names inside the root: %v", err)
	}
	if _, err := os.Lstat("/srv/upgradectl-state"); err == nil {
		t.Fatal("the state directory was made outside the root, at /srv/upgradectl-state")
	}
	if _, err := os.Lstat(filepath.Join(r.root, "srv/opt/acme/bin/.Old..acme")); err != nil {
		t.Fatalf("setup did not tag the files behind the /opt link: %v", err)
	}
	r.must(t, "preinstall")
	r.must(t, "install", "--", "/bin/sh", "-c", `cp -a "$UPGRADECTL_IMAGE_ROOT"/payload/opt/acme/. "$UPGRADECTL_ROOT"/srv/opt/acme/`)
	r.must(t, "postinstall")
	r.must(t, "undo", "postinstall")
	r.must(t, "undo", "install")
	if d := diffSnapshots(before, snapshot(t, filepath.Join(r.root, "srv"), false)); len(d) > 0 {
		t.Errorf("the backout did not give back version 1: %v", d)
	}
}

// TestSetupArguments: setup's arguments are checked before anything is
// recorded (a usage error, exit 2, and no upgrade to undo); a relative
// image path is kept absolute; another image is refused while a setup is
// done, not only while it is failed.
func TestSetupArguments(t *testing.T) {
	r := rootHost(t)
	img := acmeISO(t, t.TempDir(), "2", "1")
	sums := filepath.Join(filepath.Dir(img), "md5sum.out")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"setup"}, "setup needs the upgrade image"},
		{[]string{"setup", "extra"}, "setup takes no arguments"},
		{[]string{"setup", "--md5", strings.Repeat("0", 32)}, "only with --iso"},
		{[]string{"setup", "--iso", img, "--md5", "nothex"}, "cannot use --md5 nothex"},
		{[]string{"setup", "--iso", img, "--sums", sums + ".none"}, "cannot use checksum file " + sums + ".none (--sums): no such file or directory"},
		{[]string{"setup", "--iso", img, "--sums", sums, "--md5", strings.Repeat("0", 32)}, "--sums or --md5, not both"},
		{[]string{"setup", "--iso", img, "--sha256", "nothex"}, "cannot use --sha256 nothex"},
		{[]string{"setup", "--iso", img, "--sha256", strings.Repeat("0", 32)}, "is not a SHA-256 digest (64 hex digits)"},
		{[]string{"setup", "--iso", img, "--md5", strings.Repeat("0", 32), "--sha256", strings.Repeat("0", 64)}, "--md5 or --sha256, not both"},
		{[]string{"setup", "--sha256", strings.Repeat("0", 64)}, "only with --iso"},
		{[]string{"setup", "--iso", img + ".none"}, "cannot use image " + img + ".none (--iso): no such file or directory"},
		{[]string{"setup", "--iso", filepath.Dir(img)}, "not a regular file"},
	} {
		out := wantExit(t, r, 2, c.msg, c.args...)
		if strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%v: not one line:\n%s", c.args, out)
		}
		if rep := status(t, r); rep.InProgress {
			t.Fatalf("%v recorded an upgrade: %+v", c.args, rep)
		}
	}
	// A relative path, from the image's directory: kept absolute.
	// With --json, stdout is the status after the stage, the progress
	// lines go to stderr.
	cmd := r.cmd("setup", "--iso", filepath.Base(img), "--json")
	cmd.Dir = filepath.Dir(img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("setup with a relative path: %v\n%s%s", err, out, stderr.Bytes())
	}
	var after stage.Report
	if err := json.Unmarshal(out, &after); err != nil || !after.InProgress || after.Image != img {
		t.Fatalf("setup --json printed %v %+v:\n%s", err, after, out)
	}
	if rep := status(t, r); rep.Image != img {
		t.Fatalf("the image is recorded as %q, want %q", rep.Image, img)
	}
	// Redoing a done setup with another image would leave the first one
	// staged: refused, as while it is failed.
	other := acmeISO(t, t.TempDir(), "2", "1")
	wantExit(t, r, 5, "undo it first", "setup", "--force", "--iso", other)
	r.must(t, "undo", "setup")
	if out := r.must(t, "iso", "list"); strings.Contains(out, "acme-2") {
		t.Errorf("an image is still staged after undo setup:\n%s", out)
	}
}

// TestKilledInstallLeavesNothingRunning: what the install command started
// in the background does not outlive a kill -9 of upgradectl into the
// backout: the next run kills it before it acts.
func TestKilledInstallLeavesNothingRunning(t *testing.T) {
	r := readyToInstall(t)
	late, started := filepath.Join(r.root, "late"), filepath.Join(r.root, "started")
	// The background process writes 10 s after the command started, long
	// after the kill and the undo even on a loaded machine.
	cmd := r.cmd("install", "--", "/bin/sh", "-c", `(sleep 10; echo late > "$UPGRADECTL_ROOT/late") & touch "$UPGRADECTL_ROOT/started"; sleep 60`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the install command did not start")
		}
	}
	wrote := time.Now().Add(10 * time.Second)
	syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	r.must(t, "undo", "install")
	time.Sleep(time.Until(wrote) + time.Second)
	if _, err := os.Stat(late); err == nil {
		t.Fatal("a process the killed install left wrote into the root after undo install")
	}
}

// TestTagRestoreMidUpgrade: tag restore by hand in the middle of an
// upgrade put the old files back unnoticed; status saw nothing and
// continue switched to the new version with the old files in place. It is
// refused like remove and clean; forced, status names what disagrees, and
// postinstall finds the files are not the image's.
func TestTagRestoreMidUpgrade(t *testing.T) {
	r := rootHost(t)
	img := acmeISO(t, t.TempDir(), "2", "1")
	r.must(t, "setup", "--iso", img)
	r.must(t, "continue") // preinstall
	r.must(t, "continue") // install
	wantExit(t, r, 5, "holds them for its backout", "tag", "restore")
	if b, _ := os.ReadFile(filepath.Join(r.root, "opt/acme/bin/acme")); !strings.Contains(string(b), "acme 2") {
		t.Fatalf("a refused restore changed the files: %s", b)
	}
	r.must(t, "tag", "restore", "--force")
	out := r.must(t, "status")
	if !strings.Contains(out, "/opt/acme/bin/acme is no longer tagged") {
		t.Fatalf("status does not see the restore:\n%s", out)
	}
	wantExit(t, r, 5, "needs manual repair", "continue")
	// Acting anyway, postinstall compares the files with the image.
	out = wantExit(t, r, 1, "is not the image's", "continue", "--force")
	if !strings.Contains(out, "/opt/acme/bin/acme is not the image's") {
		t.Fatalf("postinstall does not name the old file:\n%s", out)
	}
	if rep := status(t, r); stageOf(rep, stage.Postinstall).Status != stage.Failed || rep.ActiveVersion == "2" {
		t.Fatalf("after postinstall: %+v", rep)
	}
}

// TestISORemoveMidUpgrade: iso remove --all (or of the image in use) was
// allowed in the middle of an upgrade, whose later stages install from and
// check the staged image. It is refused (exit 5) until the upgrade is
// finished or undone; --force removes it anyway.
func TestISORemoveMidUpgrade(t *testing.T) {
	r := rootHost(t)
	img := acmeISO(t, t.TempDir(), "2", "1")
	r.must(t, "setup", "--iso", img)
	wantExit(t, r, 5, "the upgrade in progress", "iso", "remove", "--all")
	wantExit(t, r, 5, "uses acme-2-x86_64.iso", "iso", "remove", "acme-2-x86_64.iso")
	r.must(t, "continue")
	r.must(t, "undo", "preinstall")
	r.must(t, "undo", "setup")
	r.must(t, "setup", "--iso", img)
	r.must(t, "iso", "remove", "--all", "--force")
	if out := r.must(t, "iso", "list"); strings.Contains(out, "acme-2") {
		t.Fatalf("still staged:\n%s", out)
	}
}
