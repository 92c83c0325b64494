package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJSONAlways: with --json, stdout is JSON whatever happens: a report,
// an empty list as [] (never null), or, when the command fails before it
// writes one, {"error", "exit", "hint"}.
func TestJSONAlways(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		args []string
		exit int
	}{
		{[]string{"iso", "info", "/none.iso"}, 2},
		{[]string{"iso", "info", "/"}, 2},
		{[]string{"iso", "ls"}, 2},
		{[]string{"iso", "list", "extra"}, 2},
		{[]string{"iso", "remove", "--all"}, 0},
		{[]string{"iso", "mounts"}, 0},
		{[]string{"tag", "lookup"}, 2},
		{[]string{"tag", "lookup", "/bin/sh"}, 0},
		{[]string{"tag", "check"}, 0},
		{[]string{"tag", "list", "--scan", "/"}, 0},
		{[]string{"tag", "create", "--version", "1\n2", "/x"}, 2},
		{[]string{"status"}, 0},
		{[]string{"continue"}, 5},
		{[]string{"undo", "install"}, 5},
		{[]string{"setup"}, 2},
		{[]string{"log"}, 0},
		{[]string{"log", "--last", "-3"}, 2},
		{[]string{"maintenance", "status"}, 0},
		{[]string{"no-such-command"}, 2},
	} {
		code, out, errs := runCLI(t, append([]string{"--root", root, "--state-dir", "/state", "--json"}, tc.args...)...)
		if code != tc.exit {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.exit, errs)
		}
		dec := json.NewDecoder(strings.NewReader(out))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Errorf("%v: stdout is not JSON: %v\n%q", tc.args, err, out)
			continue
		}
		if strings.Contains(out, "null") && !strings.Contains(out, `"null"`) {
			t.Errorf("%v: a null in %s", tc.args, out)
		}
		if m, ok := v.(map[string]any); ok && code != 0 && m["error"] != nil {
			if int(m["exit"].(float64)) != code {
				t.Errorf("%v: exit %v in the JSON, %d returned", tc.args, m["exit"], code)
			}
		}
	}
}

// TestJSONReportWithItsFailure: a command that writes its report and then
// fails (tag create of a file that is not there) gives the reason in the
// same JSON object, as "error", "exit" and "hint".
func TestJSONReportWithItsFailure(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, "--root", root, "--json", "tag", "create", "--version", "1", "/x/none")
	var rep struct {
		Action, Error string
		Done          []string
		Exit          int
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if rep.Action != "create" || rep.Done == nil || rep.Exit != 1 || !strings.Contains(rep.Error, "/x/none") {
		t.Errorf("report with its failure: %+v", rep)
	}
}
