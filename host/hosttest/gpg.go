package hosttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// GPG is a private GnuPG home in which the real gpg makes keys and
// signatures for a test. Its agent is stopped when the test ends.
type GPG struct {
	t    testing.TB
	Home string
}

// NewGPG makes an empty GnuPG home; the test is skipped without gpg.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	RequireCommand(t, "gpg")
	home := filepath.Join(t.TempDir(), "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() })
	return &GPG{t, home}
}

// Run runs gpg in batch mode with an empty passphrase and returns its
// output; a failure fails the test.
func (g *GPG) Run(args ...string) string {
	g.t.Helper()
	cmd := exec.Command("gpg", append([]string{"--homedir", g.Home, "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("gpg %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// Key makes a signing key (gpg --quick-gen-key uid algo sign expire, extra
// options first) and returns its fingerprint.
func (g *GPG) Key(uid, algo, expire string, extra ...string) string {
	g.t.Helper()
	g.Run(append(extra, "--quick-gen-key", uid, algo, "sign", expire)...)
	out := g.Run("--with-colons", "--list-keys", uid)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "fpr:") {
			return strings.Split(l, ":")[9]
		}
	}
	g.t.Fatalf("no fingerprint for %s", uid)
	return ""
}

// Export writes the public key (a fingerprint or user id) to the file to,
// armored or binary.
func (g *GPG) Export(key, to string, armor bool) {
	g.t.Helper()
	args := []string{"--output", to}
	if armor {
		args = append(args, "--armor")
	}
	g.Run(append(args, "--export", key)...)
}
