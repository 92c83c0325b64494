package stage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// TestRequireSignature: with iso.require_signature, setup stages an image
// whose md5sum.out the vendor's key signed (status names the signer), and
// refuses, with nothing changed on the host, an unsigned one and one
// signed by a key not in the keys directory. Keys and signatures are made
// by gpg.
func TestRequireSignature(t *testing.T) {
	g := hosttest.NewGPG(t)
	g.Run("--quick-gen-key", "Acme Release <release@acme.example>", "ed25519", "sign", "0")
	g.Run("--quick-gen-key", "Someone Else <x@elsewhere.example>", "ed25519", "sign", "0")

	r := rootHost(t)
	conf := filepath.Join(r.root, "etc/upgradectl/upgradectl.toml")
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, append(b, []byte("\n[iso]\nrequire_signature = true\n")...), 0o644)
	os.MkdirAll(filepath.Join(r.root, "etc/upgradectl/keys.d"), 0o755)
	g.Run("--armor", "--output", filepath.Join(r.root, "etc/upgradectl/keys.d/acme.asc"), "--export", "release@acme.example")
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
