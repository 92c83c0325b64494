package stage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// TestRequireSignature: with iso.require_signature, setup stages an image
// whose md5sum.out the vendor's key signed (status names the signer), and
// refuses, with nothing changed on the host, an unsigned one and one
// signed by a key not in the keys directory. Keys and signatures are made
// by gpg.
func TestRequireSignature(t *testing.T) {
	g := vendorKeys(t)
	r := rootHost(t)
	requireSignature(g, r.root)
	before := snapshot(t, r.root, true)

	unsigned := acmeISO(t, t.TempDir(), "2", "1")
	wantExit(t, r, 1, "a signature is required", "setup", "--iso", unsigned)
	r.must(t, "undo", "setup")
	stranger := acmeISO(t, t.TempDir(), "2", "1")
	g.Run("--local-user", "x@elsewhere.example", "--detach-sign", filepath.Join(filepath.Dir(stranger), "md5sum.out"))
	wantExit(t, r, 1, "not in the keys directory", "setup", "--iso", stranger)
	r.must(t, "undo", "setup")
	sameSnapshot(t, "after the refused setups", before, snapshot(t, r.root, true))

	signed := acmeISO(t, t.TempDir(), "2", "1")
	g.Run("--local-user", "release@acme.example", "--armor", "--detach-sign", filepath.Join(filepath.Dir(signed), "md5sum.out"))
	r.must(t, "setup", "--iso", signed)
	if out := r.must(t, "status"); !strings.Contains(out, "signed by Acme Release <release@acme.example>") {
		t.Fatalf("status does not name the signer:\n%s", out)
	}
	if out := r.must(t, "log"); !strings.Contains(out, "signed by Acme Release") {
		t.Errorf("the log does not name the signer:\n%s", out)
	}
}

// vendorKeys makes the vendor's signing key and a stranger's with gpg.
func vendorKeys(t *testing.T) *hosttest.GPG {
	g := hosttest.NewGPG(t)
	g.Run("--quick-gen-key", "Acme Release <release@acme.example>", "ed25519", "sign", "0")
	g.Run("--quick-gen-key", "Someone Else <x@elsewhere.example>", "ed25519", "sign", "0")
	return g
}

// requireSignature turns iso.require_signature on for the host at root
// and puts the vendor's key in its keys directory.
func requireSignature(g *hosttest.GPG, root string) {
	conf := filepath.Join(root, "etc/upgradectl/upgradectl.toml")
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, append(b, []byte("\n[iso]\nrequire_signature = true\n")...), 0o644)
	os.MkdirAll(filepath.Join(root, "etc/upgradectl/keys.d"), 0o755)
	g.Run("--armor", "--output", filepath.Join(root, "etc/upgradectl/keys.d/acme.asc"), "--export", "release@acme.example")
}

// TestSignedUpgradeInContainer: the whole upgrade on a real systemd with
// iso.require_signature: an unsigned image and one signed by a key not in
// the keys directory are refused at setup with nothing changed on the
// host; the vendor's signed image installs, through the reboot in roll,
// to the end, and the archived log names the signer.
func TestSignedUpgradeInContainer(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	g := vendorKeys(t)
	c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: hosttest.Bin(t), NspawnArgs: []string{"--bind=/dev/fuse"}})
	setUpHost(t, c.Dir, true, true)
	requireSignature(g, c.Dir)
	dir := filepath.Join(c.Dir, "root")
	var imgs []string
	for _, signer := range []string{"", "x@elsewhere.example", "release@acme.example"} {
		sub := filepath.Join(dir, "v2-"+strings.Split(signer+"none", "@")[0])
		os.MkdirAll(sub, 0o755)
		img := acmeISO(t, sub, "2", "1")
		if signer != "" {
			g.Run("--local-user", signer, "--detach-sign", filepath.Join(filepath.Dir(img), "md5sum.out"))
		}
		imgs = append(imgs, strings.TrimPrefix(img, c.Dir))
	}
	c.Boot(t)
	u, st := containerCommands(t, c)
	u("boot", "install")
	before := snapshot(t, c.Dir, true)
	for i, want := range []string{"a signature is required", "not in the keys directory"} {
		out, code, _ := c.Exec("upgradectl", "setup", "--iso", imgs[i])
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("setup with %s: exit %d, want 1 saying %q:\n%s", imgs[i], code, want, out)
		}
		u("undo", "setup")
	}
	sameSnapshot(t, "after the refused setups", before, snapshot(t, c.Dir, true))
	u("setup", "--iso", imgs[2])
	for _, n := range []stage.Name{stage.Preinstall, stage.Install, stage.Postinstall} {
		u("continue")
		if s := stageOf(st(), n); s.Status != stage.Done {
			t.Fatalf("%s is %s: %s", n, s.Status, s.Error)
		}
	}
	rollThroughReboot(t, c, u, st)
	u("continue") // switch
	u("continue") // clean
	if rep := st(); rep.InProgress || rep.ActiveVersion != "2" {
		t.Fatalf("after the signed upgrade: in progress %v, active %s", rep.InProgress, rep.ActiveVersion)
	}
	if out := u("log", "--history"); !strings.Contains(out, "complete") {
		t.Errorf("history after the signed upgrade:\n%s", out)
	}
	if out := c.MustExec(t, "sh", "-c", "cat /var/lib/upgradectl/history/*/*/upgrade.log"); !strings.Contains(out, "signed by Acme Release") {
		t.Errorf("the archived log does not name the signer")
	}
}
