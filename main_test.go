package main

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"upgradectl/host"
	"upgradectl/iso"
)

// runCLI runs the command line in-process and returns exit code, stdout, stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"upgradectl"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodesUsage(t *testing.T) {
	root := t.TempDir()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"no-such-command"}, 2, `unknown command "no-such-command"`},
		{[]string{"--root", filepath.Join(root, "missing"), "log"}, 2, "cannot use root"},
		{[]string{"--root", root, "--state-dir", "relative", "log"}, 2, "not an absolute path"},
		{[]string{"--root", root, "--config", "/etc/none.toml", "log"}, 2, "cannot read configuration /etc/none.toml"},
		{[]string{"--root", root, "log"}, 0, ""},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d stderr %q; want %d with %q", c.args, code, stderr, c.code, c.msg)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") > 1 {
			t.Errorf("%v: more than an error and a hint: %q", c.args, stderr)
		}
	}
}

func TestBadConfigUnderRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/upgradectl"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"), []byte("nonsense = \n"), 0o644)
	code, _, stderr := runCLI(t, "--root", root, "log")
	if code != 2 || !strings.Contains(stderr, "/etc/upgradectl/upgradectl.toml") {
		t.Fatalf("exit %d %q", code, stderr)
	}
}

func TestLogCommand(t *testing.T) {
	root := t.TempDir()
	l := host.OpenLog(filepath.Join(root, "var/lib/upgradectl"), "")
	l.Append(host.LogEntry{Action: "check pre", Result: host.ResultSuccess, Message: "all passed"})
	l.Append(host.LogEntry{Action: "setup", Result: host.ResultFailed, Parent: 1, Message: "install said:\nline two\nline three\n"})
	code, out, _ := runCLI(t, "--root", root, "log")
	if code != 0 || !strings.Contains(out, "check pre") || !strings.Contains(out, "failed") || !strings.HasPrefix(out, "ID") ||
		strings.Count(out, "\n") != 3 || !strings.Contains(out, "install said: (+2 more lines, see --json)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "--root", root, "--json", "log", "--last", "1")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"action":"setup"`) {
		t.Fatalf("json: exit %d:\n%s", code, out)
	}
}

func TestExitCodeSwitch(t *testing.T) {
	for err, want := range map[error]int{
		host.Bad("x"): 1, host.Usage("x"): 2, host.CannotRun("x"): 3, host.Busy("x"): 4, host.Refused("x"): 5,
		os.ErrPermission: 3, errSilent{1}: 1,
		// A name the destination filesystem cannot hold, met by extract.
		fmt.Errorf("cannot extract a to /x/a: %w", syscall.ENAMETOOLONG): 3,
		fmt.Errorf("cannot extract a to /x/a: %w", syscall.EINVAL):       3,
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

// TestFlagsAfterArguments: flags may follow a command's arguments, as the
// synopses write them, and global flags may follow the command; a bad
// flag is a one-line usage error with nothing on stdout.
func TestFlagsAfterArguments(t *testing.T) {
	root := t.TempDir()
	img := isoReadImage(t)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", md5.Sum(b))
	for _, c := range []struct {
		args []string
		code int
		out  string
		err  string
	}{
		{[]string{"iso", "verify", img, "--md5", sum}, 0, "ok", ""},
		{[]string{"iso", "verify", img, "--md5=" + sum}, 0, "ok", ""},
		{[]string{"iso", "ls", img, "-l"}, 0, "-rw-r--r--", ""},
		{[]string{"--root", root, "maintenance", "status", "--json"}, 0, `"in":false`, ""},
		{[]string{"maintenance", "status", "--root", root, "--json"}, 0, `"in":false`, ""},
		{[]string{"--root", root, "--json", "status"}, 0, `"in_progress": false`, ""},
		{[]string{"--root", root, "status", "--json"}, 0, `"in_progress": false`, ""},
		{[]string{"--root", root, "status", "--bogus"}, 2, "", "upgradectl: status: flag provided but not defined: -bogus\n"},
		{[]string{"--root", root, "iso", "ls", img, "--bogus"}, 2, "", "upgradectl: iso ls: flag provided but not defined: -bogus\n"},
		{[]string{"--root", root, "log", "--last", "-3"}, 2, "", "N must not be negative"},
		{[]string{"--root", root, "install", "--", ""}, 2, "", "install: the command given after -- is empty"},
		// After "--", everything is the install command's.
		{[]string{"--root", root, "install", "--", "sh", "--json"}, 5, "", "no upgrade in progress"},
	} {
		code, out, errs := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(out, c.out) || !strings.Contains(errs, c.err) || (c.out == "" && out != "") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, out, errs, c.code, c.out, c.err)
		}
	}
}

func TestInterspersed(t *testing.T) {
	app := newApp()
	for _, c := range []struct{ in, want string }{
		{"u iso verify a b --md5 x", "u iso verify --md5 x a b"},
		{"u --root /r tag create /opt --version 2 --digest", "u --root /r tag create --version 2 --digest /opt"},
		{"u maintenance status --json", "u --json maintenance status"},
		{"u install -- sh -c 'x'", "u install -- sh -c 'x'"},
		{"u install sh -c x", "u install sh -c x"},
		{"u install --force sh -c x", "u install --force sh -c x"},
		{"u undo setup --force", "u undo --force setup"},
		{"u nosuch a --json", "u nosuch a --json"},
		{"u", "u"},
	} {
		if got := strings.Join(interspersed(app, strings.Fields(c.in)), " "); got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}

// TestSumsHelpOrder: the help of setup and iso stage gives the checksum
// files in the order the code looks for them (iso.SumsFileNames after the
// image's own .md5 names).
func TestSumsHelpOrder(t *testing.T) {
	want := "ISO.md5, ISO-without-.iso.md5, " + strings.Join(iso.SumsFileNames, ", ")
	for _, args := range [][]string{{"setup", "--help"}, {"iso", "stage", "--help"}} {
		_, out, _ := runCLI(t, args...)
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("%v does not give the order %q:\n%s", args, want, out)
		}
	}
}
