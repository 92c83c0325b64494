package stage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
	"upgradectl/host/stage"
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

func TestInstallCommandFromTheCommandLine(t *testing.T) {
	r := rootHost(t)
	img := acmeISO(t, t.TempDir(), "2", "1")
	r.must(t, "setup", "--iso", img)
	r.must(t, "preinstall")
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
	// The record of tagged files names none, as before a create's plan.
	r.must(t, "tag", "clean")
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
