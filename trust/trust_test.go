package trust

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"upgradectl/host/hosttest"
)

const sumsText = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  cmp-12.1.2-x86_64.iso\n"

// TestSignatures: keys and signatures made by gpg, each case with the
// verdict the issue of signed images asks for.
func TestSignatures(t *testing.T) {
	g := hosttest.NewGPG(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.d")
	os.Mkdir(keys, 0o755)
	rsa := g.Key("Vendor RSA <rsa@vendor.example>", "rsa3072", "0")
	ed := g.Key("Vendor Ed <ed@vendor.example>", "ed25519", "0")
	sub := g.Key("Vendor Sub <sub@vendor.example>", "ed25519", "0")
	g.Run("--quick-add-key", sub, "rsa3072", "sign", "0")
	old := g.Key("Vendor Old <old@vendor.example>", "rsa3072", "1d", "--faked-system-time", "20200101T000000")
	revoked := g.Key("Vendor Revoked <revoked@vendor.example>", "rsa3072", "0")
	weak := g.Key("Vendor Weak <weak@vendor.example>", "rsa1024", "0")
	stranger := g.Key("Stranger <x@elsewhere.example>", "ed25519", "0")
	g.Export(rsa, filepath.Join(keys, "rsa.asc"), true)
	g.Export(ed, filepath.Join(keys, "ed.gpg"), false)
	g.Export(sub, filepath.Join(keys, "sub.asc"), true)
	g.Export(old, filepath.Join(keys, "old.asc"), true)
	g.Export(weak, filepath.Join(keys, "weak.asc"), true)
	sign := func(name, signer string, args ...string) string {
		p := filepath.Join(dir, name, "md5sum.out")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(sumsText), 0o644)
		if signer != "" {
			g.Run(append(append([]string{"--local-user", signer}, args...), p)...)
		}
		return p
	}
	// Signed before the key is revoked.
	revokedSums := sign("k", revoked, "--detach-sign")
	// The revocation certificate gpg made with the key, imported: the
	// exported key is revoked.
	rev, err := os.ReadFile(filepath.Join(g.Home, "openpgp-revocs.d", revoked+".rev"))
	if err != nil {
		t.Fatal(err)
	}
	revFile := filepath.Join(dir, "rev.asc")
	os.WriteFile(revFile, []byte(strings.Replace(string(rev), ":-----BEGIN", "-----BEGIN", 1)), 0o644)
	g.Run("--import", revFile)
	g.Export(revoked, filepath.Join(keys, "revoked.asc"), true)

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
			g.Run("--local-user", rsa, "--detach-sign", "--output", p+".sig", other)
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
