package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host"
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
	} {
		if got := exitCode(err); got != want {
			t.Errorf("exitCode(%v) = %d, want %d", err, got, want)
		}
	}
}
