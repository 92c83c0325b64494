package main

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/iso"
)

// TestISOVerifyCommand runs "iso verify" on files inside a --root: absolute
// image paths are host paths inside the root, the checksum file is found
// beside the image, exit codes are 0, 1 and 2, and the run is logged.
func TestISOVerifyCommand(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "srv", "iso")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("upgrade image ", 100000))
	sum := fmt.Sprintf("%x", md5.Sum(data))
	for _, n := range []string{"cmp-12.1.2-x86_64.iso", "mpe-12.1.2-x86_64.iso"} {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seed := sum + "/home/build/build/PLATFORM-70/iso/cmp-12.1.2-x86_64.iso\n" +
		sum + "/home/build/build/PLATFORM-70/iso/mpe-12.1.2-x86_64.iso\n"
	if err := os.WriteFile(filepath.Join(dir, "md5sum.out"), []byte(seed), 0o644); err != nil {
		t.Fatal(err)
	}
	g := []string{"--root", root, "--state-dir", "/var/lib/upgradectl"}
	verify := func(args ...string) (int, string, string) {
		return runCLI(t, append(append(g, "iso", "verify"), args...)...)
	}

	code, out, errs := verify("/srv/iso/cmp-12.1.2-x86_64.iso", "/srv/iso/mpe-12.1.2-x86_64.iso")
	if code != 0 || !strings.Contains(out, "/srv/iso/cmp-12.1.2-x86_64.iso  ok") || !strings.Contains(out, "seed form") {
		t.Errorf("good images: exit %d\n%s%s", code, out, errs)
	}

	code, out, _ = runCLI(t, append(g, "--json", "iso", "verify", "/srv/iso/cmp-12.1.2-x86_64.iso")...)
	var rep iso.VerifyReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.OK || rep.Results[0].Digest != sum {
		t.Errorf("--json: exit %d, %v\n%s", code, err, out)
	}

	bad := append([]byte{}, data...)
	bad[len(bad)/2] ^= 1
	if err := os.WriteFile(filepath.Join(dir, "mpe-12.1.2-x86_64.iso"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = verify("/srv/iso/cmp-12.1.2-x86_64.iso", "/srv/iso/mpe-12.1.2-x86_64.iso", "/srv/iso/gone.iso")
	if code != 1 || !strings.Contains(errs, "2 of 3 image(s) failed verification") ||
		!strings.Contains(out, "MISMATCH") || !strings.Contains(out, "MISSING") {
		t.Errorf("bad images: exit %d\n%s%s", code, out, errs)
	}

	for _, args := range [][]string{{}, {"--md5", "123", "/srv/iso/cmp-12.1.2-x86_64.iso"},
		{"--md5", sum, "/srv/iso/cmp-12.1.2-x86_64.iso", "/srv/iso/mpe-12.1.2-x86_64.iso"}} {
		if code, _, errs := verify(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errs)
		}
	}
	code, _, _ = verify("--md5", strings.ToUpper(sum), "/srv/iso/cmp-12.1.2-x86_64.iso")
	if code != 0 {
		t.Errorf("--md5: exit %d", code)
	}

	log, err := os.ReadFile(filepath.Join(root, "var/lib/upgradectl/upgrade.log"))
	if err != nil || strings.Count(string(log), `"action":"iso verify"`) != 4 || !strings.Contains(string(log), `"result":"failed"`) {
		t.Errorf("upgrade log: %v\n%s", err, log)
	}

	// --sha256, and a SHA256SUMS beside the image that comes before
	// md5sum.out; the digest column names the algorithm.
	sha := fmt.Sprintf("%x", sha256.Sum256(data))
	code, out, errs = verify("--sha256", strings.ToUpper(sha), "/srv/iso/cmp-12.1.2-x86_64.iso")
	if code != 0 || !strings.Contains(out, "sha256 "+sha) || !strings.Contains(out, "--sha256") {
		t.Errorf("--sha256: exit %d\n%s%s", code, out, errs)
	}
	for _, args := range [][]string{{"--sha256", sum, "/srv/iso/cmp-12.1.2-x86_64.iso"},
		{"--sha256", sha, "--md5", sum, "/srv/iso/cmp-12.1.2-x86_64.iso"}} {
		if code, _, errs := verify(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, errs)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte("SHA256 (cmp-12.1.2-x86_64.iso) = "+sha+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = verify("/srv/iso/cmp-12.1.2-x86_64.iso")
	if code != 0 || !strings.Contains(out, "sha256 "+sha) || !strings.Contains(out, "SHA256SUMS line 1, bsd form") {
		t.Errorf("SHA256SUMS: exit %d\n%s%s", code, out, errs)
	}
}
