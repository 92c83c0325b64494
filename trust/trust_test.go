package trust

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"upgradectl/host/hosttest"
)

// gpgHome is a private GnuPG home with keys made by the real gpg.
type gpgHome struct {
	t    testing.TB
	home string
}

func newGPG(t testing.TB) *gpgHome {
	hosttest.RequireCommand(t, "gpg")
	home := filepath.Join(t.TempDir(), "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() })
	return &gpgHome{t, home}
}

func (g *gpgHome) run(args ...string) string {
	g.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--homedir", g.home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("gpg %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// key makes a signing key and returns its fingerprint.
func (g *gpgHome) key(uid, algo, expire string, extra ...string) string {
	g.t.Helper()
	g.run(append(extra, "--quick-gen-key", uid, algo, "sign", expire)...)
	out := g.run("--with-colons", "--list-keys", uid)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fpr:") {
			return strings.Split(l, ":")[9]
		}
	}
	g.t.Fatalf("no fingerprint for %s", uid)
	return ""
}

func (g *gpgHome) export(fpr, to string, armor bool) {
	args := []string{"--output", to}
	if armor {
		args = append(args, "--armor")
	}
	g.run(append(args, "--export", fpr)...)
}

const sumsText = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  cmp-12.1.2-x86_64.iso\n"

// TestSignatures: keys and signatures made by gpg, each case with the
// verdict the issue of signed images asks for.
func TestSignatures(t *testing.T) {
	g := newGPG(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.d")
	os.Mkdir(keys, 0o755)
	rsa := g.key("Vendor RSA <rsa@vendor.example>", "rsa3072", "0")
	ed := g.key("Vendor Ed <ed@vendor.example>", "ed25519", "0")
	sub := g.key("Vendor Sub <sub@vendor.example>", "ed25519", "0")
	g.run("--quick-add-key", sub, "rsa3072", "sign", "0")
	old := g.key("Vendor Old <old@vendor.example>", "rsa3072", "1d", "--faked-system-time", "20200101T000000")
	revoked := g.key("Vendor Revoked <revoked@vendor.example>", "rsa3072", "0")
	weak := g.key("Vendor Weak <weak@vendor.example>", "rsa1024", "0")
	stranger := g.key("Stranger <x@elsewhere.example>", "ed25519", "0")
	g.export(rsa, filepath.Join(keys, "rsa.asc"), true)
	g.export(ed, filepath.Join(keys, "ed.gpg"), false)
	g.export(sub, filepath.Join(keys, "sub.asc"), true)
	g.export(old, filepath.Join(keys, "old.asc"), true)
	g.export(weak, filepath.Join(keys, "weak.asc"), true)
	sign := func(name, signer string, args ...string) string {
		p := filepath.Join(dir, name, "md5sum.out")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(sumsText), 0o644)
		if signer != "" {
			g.run(append(append([]string{"--local-user", signer}, args...), p)...)
		}
		return p
	}
	// Signed before the key is revoked.
	revokedSums := sign("k", revoked, "--detach-sign")
	// The revocation certificate gpg made with the key, imported: the
	// exported key is revoked.
	rev, err := os.ReadFile(filepath.Join(g.home, "openpgp-revocs.d", revoked+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	revFile := filepath.Join(dir, "rev.asc")
	os.WriteFile(revFile, []byte(strings.Replace(string(rev), ":-----BEGIN", "-----BEGIN", 1)), 0o644)
	g.run("--import", revFile)
	g.export(revoked, filepath.Join(keys, "revoked.asc"), true)

	k, err := LoadKeys(keys)
	if err != nil || k.Len() != 6 {
		t.Fatalf("LoadKeys: %d keys, %v", k.Len(), err)
	}
	for _, tc := range []struct {
		name   string
		path   func() string
		signer string // user id, or "" when refused
		want   string // refusal
	}{
		{"rsa armored detached", func() string { return sign("a", rsa, "--armor", "--detach-sign") }, "Vendor RSA <rsa@vendor.example>", ""},
		{"ed25519 binary detached", func() string { return sign("b", ed, "--detach-sign") }, "Vendor Ed <ed@vendor.example>", ""},
		{"clearsigned", func() string {
			p := sign("c", rsa, "--clearsign")
			os.Rename(p+".asc", p)
			return p
		}, "Vendor RSA <rsa@vendor.example>", ""},
		{"signing subkey", func() string { return sign("d", sub, "--detach-sign") }, "Vendor Sub <sub@vendor.example>", ""},
		{"tampered checksum file", func() string {
			p := sign("e", rsa, "--detach-sign")
			os.WriteFile(p, []byte(strings.Replace(sumsText, "9f86", "0f86", 1)), 0o644)
			return p
		}, "", "bad signature"},
		{"signature over another file", func() string {
			p := sign("f", rsa, "--detach-sign")
			other := sign("g", rsa, "--detach-sign")
			os.Rename(other+".sig", p+".sig")
			os.WriteFile(other, []byte("other\n"), 0o644)
			g.run("--local-user", rsa, "--detach-sign", "--output", p+".sig", other)
			return p
		}, "", "bad signature"},
		{"truncated signature", func() string {
			p := sign("h", rsa, "--detach-sign")
			b, _ := os.ReadFile(p + ".sig")
			os.WriteFile(p+".sig", b[:len(b)/2], 0o644)
			return p
		}, "", "bad signature"},
		{"unknown key", func() string { return sign("i", stranger, "--detach-sign") }, "", "not in the keys directory"},
		{"expired key", func() string { return sign("j", old, "--faked-system-time", "20200101T120000", "--detach-sign") }, "", "expired"},
		{"revoked key", func() string { return revokedSums }, "", "revoked"},
		{"SHA-1", func() string { return sign("l", rsa, "--digest-algo", "SHA1", "--detach-sign") }, "", "weak hash SHA-1"},
		{"RSA 1024", func() string { return sign("m", weak, "--detach-sign") }, "", "bits"},
		{"unsigned", func() string { return sign("n", "") }, "", "not signed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.path()
			data, _ := os.ReadFile(p)
			signed, s, err := k.Verify(p, data)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, %v; want a refusal saying %q", s, err, tc.want)
				}
				return
			}
			// A clearsigned text ends without its last newline.
			if err != nil || s.UserID != tc.signer || len(s.Fingerprint) != 40 || strings.TrimSuffix(sumsText, "\n") != strings.TrimSuffix(string(signed), "\n") {
				t.Fatalf("got %+v, %v, %q", s, err, signed)
			}
		})
	}
	// The library itself takes a SHA-1 signature: the refusal above is
	// ours (see check).
	sha1 := sign("q", rsa, "--digest-algo", "SHA1", "--detach-sign")
	sig, _ := os.Open(sha1 + ".sig")
	defer sig.Close()
	if _, err := openpgp.CheckDetachedSignature(k.list, strings.NewReader(sumsText), sig, &packet.Config{}); err != nil {
		t.Logf("the library now refuses SHA-1 signatures itself (%v): the check in check may go", err)
	}
	if _, _, err := k.Verify(sign("o", stranger, "--detach-sign"), []byte(sumsText)); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key: %v", err)
	}
	if _, _, err := k.Verify(sign("p", ""), []byte(sumsText)); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
}

// TestDebianInRelease: the clearsigned InRelease files apt keeps, which
// nobody here signed, verify with the keys of debian-archive-keyring, and
// one edited byte makes them fail.
func TestDebianInRelease(t *testing.T) {
	files, _ := filepath.Glob("/var/lib/apt/lists/*_InRelease")
	if len(files) == 0 {
		t.Skip("no InRelease files under /var/lib/apt/lists (run apt-get update)")
	}
	if _, err := os.Stat("/usr/share/keyrings/debian-archive-keyring.gpg"); err != nil {
		t.Skip("needs debian-archive-keyring")
	}
	keys := t.TempDir()
	b, _ := os.ReadFile("/usr/share/keyrings/debian-archive-keyring.gpg")
	os.WriteFile(filepath.Join(keys, "debian.gpg"), b, 0o644)
	k, err := LoadKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		signed, s, err := k.Verify(f, data)
		if err != nil || !strings.Contains(string(signed), "SHA256:") {
			t.Errorf("%s: %v", f, err)
			continue
		}
		t.Logf("%s: signed by %s", filepath.Base(f), s)
		i := strings.Index(string(data), "SHA256:")
		data[i+20] ^= 1
		if _, _, err := k.Verify(f, data); err == nil {
			t.Errorf("%s: verified with a byte edited", f)
		}
	}
}
