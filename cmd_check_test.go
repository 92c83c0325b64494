package main

import (
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host"
	"upgradectl/host/check"
	"upgradectl/host/hosttest"
)

// imageRoot is a small system image with an MD5 root password and a
// configuration that needs no network.
func imageRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range map[string]string{
		"etc/shadow":                     "root:$1$salt$Zq8secretHashNeverPrinted:19000:0:99999:7:::\n",
		"etc/upgradectl/upgradectl.toml": "[checks.ntp]\nfrom_host = false\n",
	} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func readLog(t *testing.T, root string) []host.LogEntry {
	t.Helper()
	entries, bad, err := host.OpenLog(filepath.Join(root, "var/lib/upgradectl"), "").Read()
	if err != nil || bad != 0 {
		t.Fatalf("log: %v, %d bad lines", err, bad)
	}
	return entries
}

func TestCheckCommand(t *testing.T) {
	root := imageRoot(t)
	code, out, stderr := runCLI(t, "--root", root, "check", "--only", "auth.password-hash,backup.recent")
	if code != 1 || stderr != "" {
		t.Fatalf("exit %d, stderr %q:\n%s", code, stderr, out)
	}
	for _, want := range []string{"CHECK", "auth.password-hash", "FAIL", "inhibitor", "MD5 password hash (expires during the upgrade) for root",
		"backup.recent", "SKIP", "no backup locations configured", "upgrade blocked"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Zq8secret") {
		t.Errorf("the table shows the hash")
	}
	log := readLog(t, root)
	if len(log) != 1 || log[0].Action != "check pre" || log[0].Result != host.ResultFailed || !strings.Contains(log[0].Message, "auth.password-hash") {
		t.Fatalf("log %+v", log)
	}

	// Accepted: exit 0, the waiver is its own log entry under the run.
	code, out, _ = runCLI(t, "--root", root, "check", "--only", "auth.password-hash", "post", "--accept", "auth.password-hash", "--json")
	var rep check.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if rep.Profile != "post" || rep.Inhibited || !rep.Checks[0].Waived || rep.Checks[0].Status != check.Fail {
		t.Errorf("report %+v", rep)
	}
	log = readLog(t, root)
	if len(log) != 3 || log[1].Action != "check post" || log[1].Result != host.ResultWarning ||
		log[2].Action != "waive auth.password-hash" || log[2].Parent != log[1].ID || log[2].Result != host.ResultWaived {
		t.Fatalf("log %+v", log)
	}
	if strings.Contains(log[2].Message, "Zq8secret") {
		t.Errorf("the log shows the hash")
	}
	// Nothing but the log was written into the image.
	var files []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, root))
		}
		return nil
	})
	if strings.Join(files, " ") != "/etc/shadow /etc/upgradectl/upgradectl.toml /var/lib/upgradectl/upgrade.log" {
		t.Errorf("files in the image after check: %v", files)
	}
}

func TestCheckCommandUsage(t *testing.T) {
	root := imageRoot(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"check", "during"}, `unknown check profile "during"`},
		{[]string{"check", "pre", "post"}, `check pre takes no arguments, not "post"`},
		{[]string{"check", "--only", "ntp"}, `unknown check "ntp" in --only`},
		{[]string{"check", "--accept", "x", "--only", "y"}, `unknown check "y" in --only; unknown check "x" to accept`},
	} {
		code, _, stderr := runCLI(t, append([]string{"--root", root}, c.args...)...)
		if code != 2 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d %q", c.args, code, stderr)
		}
	}
	if len(readLog(t, root)) != 0 {
		t.Errorf("a usage error was logged")
	}
}

func TestCheckWithoutStateDir(t *testing.T) {
	// The state directory cannot be created (a file is in the way): the
	// checks still run and say so on stderr.
	root := imageRoot(t)
	os.WriteFile(filepath.Join(root, "state"), nil, 0o644)
	code, out, stderr := runCLI(t, "--root", root, "--state-dir", "/state/dir", "check", "--only", "backup.recent")
	if code != 0 || !strings.Contains(out, "backup.recent") || !strings.Contains(stderr, "checks not recorded in the upgrade log: cannot create") {
		t.Fatalf("exit %d, stderr %q:\n%s", code, stderr, out)
	}
}

// TestCheckNotRoot runs the built binary as an unprivileged user on a
// system image: the checks that need root skip and say why, the others run,
// and the log that cannot be written is reported.
func TestCheckNotRoot(t *testing.T) {
	built := hosttest.Bin(t)
	hosttest.RequireRoot(t) // to switch to nobody
	hosttest.RequireCommand(t, "setpriv")
	root := imageRoot(t)
	// A copy nobody can run wherever the checkout is.
	b, err := os.ReadFile(built)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "upgradectl")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// nobody must reach the image (t.TempDir is 0700) and the binary.
	for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.Chmod(filepath.Join(root, "etc/upgradectl/upgradectl.toml"), 0o644)
	os.MkdirAll(filepath.Join(root, "backup/private"), 0o700)
	os.WriteFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"),
		[]byte("[checks.ntp]\nfrom_host = false\n[checks.backup]\npaths = [\"/backup/private/*\"]\n"), 0o644)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin,
		"--root", root, "--json", "check", "--only", "auth.password-hash,backup.recent,disk.space")
	cmd.Dir = root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v, stderr %q:\n%s", err, stderr.String(), out)
	}
	var rep check.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	want := map[string]string{
		"auth.password-hash": "skip needs root to read /etc/shadow",
		"backup.recent":      "skip needs root to read the backup locations",
		"disk.space":         "pass ",
	}
	for _, r := range rep.Checks {
		if w := want[r.ID]; !strings.HasPrefix(string(r.Status)+" "+r.Message, w) {
			t.Errorf("%s: %s %s, want %s", r.ID, r.Status, r.Message, w)
		}
	}
	if !strings.Contains(stderr.String(), "checks not recorded in the upgrade log") || !strings.Contains(stderr.String(), "permission denied") {
		t.Errorf("stderr %q", stderr.String())
	}
}

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestCheckTableGolden pins the table people read, from a fixed report.
func TestCheckTableGolden(t *testing.T) {
	rep := check.Report{Profile: "pre", Checks: []check.Result{
		{ID: "ntp.synced", Status: check.Pass, Severity: check.Inhibitor, Message: "system clock synchronised: estimated error 2ms, maximum 16ms, chronyd running"},
		{ID: "ntp.servers", Status: check.Warn, Severity: check.Inhibitor, Message: "1 of 2 servers good, offset +12µs to ntp1: ntp2 unreachable: no answer within the timeout"},
		{ID: "clock.rtc", Status: check.Fail, Severity: check.Warning, Message: "RTC /dev/rtc0 (UTC) differs from the system clock by -2m0s (limit 1m0s)"},
		{ID: "backup.recent", Status: check.Fail, Severity: check.Inhibitor, Waived: true, Message: "newest backup /backup/a.iso is 30.0h old (limit 24.0h)"},
		{ID: "systemd.failed-units", Status: check.Skip, Severity: check.Inhibitor, Message: "systemd is not running as init on this machine (no /run/systemd/system)"},
		{ID: "auth.password-hash", Status: check.Fail, Severity: check.Inhibitor, Message: "MD5 password hash (expires during the upgrade) for root"},
	}, Inhibited: true}
	var b strings.Builder
	printReport(&b, rep)
	golden := filepath.Join("testdata", "check-table.golden")
	if *updateGolden {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestCheckTableGolden -update to create it)", err)
	}
	if b.String() != string(want) {
		t.Errorf("table differs from %s:\n%s\nwant:\n%s", golden, b.String(), want)
	}
}

// TestCheckTableOneLine: a message carrying a name with a newline (a
// backup file here) stays one row of the table.
func TestCheckTableOneLine(t *testing.T) {
	root := imageRoot(t)
	os.WriteFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"), []byte("[checks.backup]\npaths = [\"/backup\"]\n"), 0o600)
	os.MkdirAll(filepath.Join(root, "backup"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "backup", "a\nb.tar"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "--root", root, "check", "--only", "backup.recent")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.Contains(lines[1], `newest backup /backup/a\nb.tar is`) {
		t.Fatalf("exit %d, stderr %q, want a header, one row, a blank line and the verdict:\n%s", code, stderr, out)
	}
}

// TestCheckISOKeys: the iso.keys check is listed in check --help, runs from
// the check command (a key file that does not parse fails it, named), and
// its id may be accepted in the configuration.
func TestCheckISOKeys(t *testing.T) {
	root := imageRoot(t)
	if _, out, _ := runCLI(t, "check", "--help"); !strings.Contains(out, "auth.password-hash, iso.keys") {
		t.Errorf("check --help does not list iso.keys:\n%s", out)
	}
	code, out, _ := runCLI(t, "--root", root, "check", "--only", "iso.keys")
	if code != 0 || !strings.Contains(out, "no keys in /etc/upgradectl/keys.d") {
		t.Errorf("no keys: exit %d\n%s", code, out)
	}
	keys := filepath.Join(root, "etc/upgradectl/keys.d")
	os.MkdirAll(keys, 0o755)
	os.WriteFile(filepath.Join(keys, "vendor.asc"), []byte("not a key\n"), 0o644)
	code, out, _ = runCLI(t, "--root", root, "check", "--only", "iso.keys")
	if code != 1 || !strings.Contains(out, "vendor.asc: not OpenPGP public keys") || !strings.Contains(out, "upgrade blocked") {
		t.Errorf("a broken key file: exit %d\n%s", code, out)
	}
	conf := filepath.Join(root, "etc/upgradectl/upgradectl.toml")
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, append(b, []byte("\n[checks]\naccept = [\"iso.keys\"]\n")...), 0o600)
	for _, args := range [][]string{{"check", "--only", "iso.keys"}, {"check", "post"}} {
		code, out, errs := runCLI(t, append([]string{"--root", root}, args...)...)
		if code == 2 || strings.Contains(out+errs, "unknown check") {
			t.Errorf("%v with iso.keys accepted: exit %d\n%s%s", args, code, out, errs)
		}
	}
}
