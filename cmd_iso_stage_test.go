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

	"upgradectl/host/hosttest"
	"upgradectl/iso"
)

// TestISOStageCommands runs stage, list and remove against a root whose
// configuration says it is a cmp server, with images in the root's
// /var/TKLC/upgrade beside an md5sum.out in the seed procedure's form.
func TestISOStageCommands(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	root := t.TempDir()
	up := filepath.Join(root, "var/TKLC/upgrade")
	os.MkdirAll(up, 0o755)
	os.MkdirAll(filepath.Join(root, "etc/upgradectl"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"), []byte("[product]\ntype = \"cmp\"\nversion = \"12.1.1\"\n"), 0o644)
	var sums strings.Builder
	sha256s := map[string]string{}
	for _, name := range []string{"cmp-12.1.2.0.0_22.1.0-x86_64.iso", "cmp-12.1.3.0.0_22.1.0-x86_64.iso", "mpe-12.1.2.0.0_22.1.0-x86_64.iso"} {
		src := t.TempDir()
		os.WriteFile(filepath.Join(src, "README"), []byte(name), 0o644)
		img := filepath.Join(up, name)
		hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", img, src)
		data, _ := os.ReadFile(img)
		fmt.Fprintf(&sums, "%x/home/build/build/PLATFORM-70/iso/%s\n", md5.Sum(data), name)
		sha256s[name] = fmt.Sprintf("%x", sha256.Sum256(data))
	}
	os.WriteFile(filepath.Join(up, "md5sum.out"), []byte(sums.String()), 0o644)

	cli := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"--root", root}, args...)...)
	}
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"iso", "stage", "/var/TKLC/upgrade/mpe-12.1.2.0.0_22.1.0-x86_64.iso"}, 1, "it is a mpe image and this host is cmp"},
		{[]string{"iso", "stage", "/var/TKLC/upgrade/cmp-12.1.2.0.0_22.1.0-x86_64.iso"}, 0, "staged cmp-12.1.2.0.0_22.1.0-x86_64.iso: cmp 12.1.2.0.0_22.1.0"},
		{[]string{"iso", "stage", "/var/TKLC/upgrade/cmp-12.1.3.0.0_22.1.0-x86_64.iso"}, 5, "already staged"},
		{[]string{"iso", "stage", "--md5", "00", "/var/TKLC/upgrade/cmp-12.1.3.0.0_22.1.0-x86_64.iso"}, 2, "not an MD5 digest"},
		{[]string{"iso", "stage", "--sha256", "00", "/var/TKLC/upgrade/cmp-12.1.3.0.0_22.1.0-x86_64.iso"}, 2, "not a SHA-256 digest"},
		{[]string{"iso", "stage", "--md5", "00", "--sha256", "00", "/var/TKLC/upgrade/cmp-12.1.3.0.0_22.1.0-x86_64.iso"}, 2, "iso stage takes --md5 or --sha256, not both"},
		// Staged again against its SHA-256: verified and recorded with it.
		{[]string{"iso", "stage", "--sha256", strings.ToUpper(sha256s["cmp-12.1.2.0.0_22.1.0-x86_64.iso"]), "/var/TKLC/upgrade/cmp-12.1.2.0.0_22.1.0-x86_64.iso"}, 0,
			"), sha256 " + sha256s["cmp-12.1.2.0.0_22.1.0-x86_64.iso"] + ", in "},
		{[]string{"iso", "stage"}, 2, "iso stage takes ISO, not 0 argument(s)"},
		{[]string{"iso", "remove"}, 2, "needs NAME or --all"},
		{[]string{"iso", "remove", "nope.iso"}, 1, "no such image"},
	} {
		code, out, errOut := cli(tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.out) {
			t.Errorf("%v: exit %d, %q %q; want exit %d with %q", tc.args, code, out, errOut, tc.code, tc.out)
		}
	}
	code, out, _ := cli("--json", "iso", "list")
	var imgs []iso.StagedImage
	if code != 0 || json.Unmarshal([]byte(out), &imgs) != nil || len(imgs) != 1 || imgs[0].Type != "cmp" || imgs[0].VerifiedAt.IsZero() || imgs[0].Size == 0 {
		t.Errorf("iso list --json: %d %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/upgradectl/iso/cmp-12.1.2.0.0_22.1.0-x86_64.iso")); err != nil {
		t.Errorf("not in the default staging directory under the root: %v", err)
	}
	if code, out, _ := cli("iso", "list"); code != 0 || !strings.Contains(out, "VERIFIED") || !strings.Contains(out, "12.1.2.0.0_22.1.0") {
		t.Errorf("iso list: %d %s", code, out)
	}
	if code, out, _ := cli("iso", "remove", "--all"); code != 0 || !strings.Contains(out, "removed cmp-12.1.2.0.0_22.1.0-x86_64.iso") {
		t.Errorf("iso remove --all: %d %s", code, out)
	}
	if code, out, _ := cli("--json", "iso", "list"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("iso list after remove: %d %s", code, out)
	}
	code, out, _ = cli("log")
	if code != 0 || !strings.Contains(out, "iso stage") || !strings.Contains(out, "iso remove") {
		t.Errorf("log: %s", out)
	}
}
