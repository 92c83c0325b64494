package stage

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"upgradectl/host"
	"upgradectl/host/check"
	"upgradectl/host/hosttest"
)

// TestKeysCheck runs the iso.keys check, as the check command does, on keys
// made by the real gpg: no keys directory or an empty one passes with a
// note, good keys pass, a key expiring in 10 days warns naming its
// fingerprint and date, and a file that does not parse fails naming it.
func TestKeysCheck(t *testing.T) {
	g := hosttest.NewGPG(t)
	good := g.Key("Acme Release <release@acme.example>", "ed25519", "0")
	soon := g.Key("Acme Soon <soon@acme.example>", "ed25519", "10d")
	var expires time.Time
	for _, l := range strings.Split(g.Run("--with-colons", "--list-keys", soon), "\n") {
		if f := strings.Split(l, ":"); f[0] == "pub" {
			secs, _ := strconv.ParseInt(f[6], 10, 64)
			expires = time.Unix(secs, 0)
		}
	}
	if expires.IsZero() {
		t.Fatal("gpg shows no expiry for the 10-day key")
	}

	root := t.TempDir()
	r, err := host.NewRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(root, "etc/upgradectl/keys.d")
	run := func() check.Result {
		t.Helper()
		rep, err := check.Run(context.Background(), check.Options{Root: r, Only: []string{"iso.keys"}, Extra: Checks()})
		if err != nil || len(rep.Checks) != 1 {
			t.Fatalf("%+v %v", rep, err)
		}
		return rep.Checks[0]
	}
	for _, step := range []struct {
		name    string
		do      func()
		status  check.Status
		message []string
	}{
		{"absent", func() {}, check.Pass, []string{"no keys in /etc/upgradectl/keys.d"}},
		{"empty", func() { os.MkdirAll(keys, 0o755) }, check.Pass, []string{"no keys in /etc/upgradectl/keys.d"}},
		{"good keys", func() {
			g.Export(good, filepath.Join(keys, "acme.asc"), true)
			g.Export(good, filepath.Join(keys, "acme.gpg"), false)
		}, check.Pass, []string{"2 key(s) in /etc/upgradectl/keys.d, none expires within 30 days"}},
		{"expiring", func() { g.Export(soon, filepath.Join(keys, "soon.asc"), true) }, check.Warn,
			[]string{"key " + soon + " (Acme Soon <soon@acme.example>, soon.asc) expires on " + expires.UTC().Format(time.DateOnly)}},
		{"does not parse", func() {
			os.WriteFile(filepath.Join(keys, "broken.asc"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n"), 0o644)
		}, check.Fail,
			[]string{"keys directory /etc/upgradectl/keys.d: broken.asc: not OpenPGP public keys"}},
	} {
		step.do()
		r := run()
		if r.Status != step.status || r.ID != "iso.keys" || r.Severity != check.Inhibitor {
			t.Errorf("%s: %+v, want %s", step.name, r, step.status)
		}
		for _, m := range step.message {
			if !strings.Contains(r.Message, m) {
				t.Errorf("%s: message %q lacks %q", step.name, r.Message, m)
			}
		}
		if strings.Contains(r.Message, "\n") {
			t.Errorf("%s: message of more than one line: %q", step.name, r.Message)
		}
	}
	if d := run().Data.(keysData); len(d.Keys) != 3 || len(d.Expiring) != 0 {
		t.Errorf("data with a broken file: %+v", d)
	}
}
