package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// TestCompletion: the bash script completes commands, subcommands and
// flags for real, through the built binary; zsh and fish accept theirs.
func TestCompletion(t *testing.T) {
	bin := hosttest.Bin(t)
	hosttest.RequireCommand(t, "bash")
	dir := t.TempDir()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, err := exec.Command(bin, "completion", sh).Output()
		if err != nil || len(out) == 0 {
			t.Fatalf("completion %s: %v", sh, err)
		}
		p := filepath.Join(dir, sh)
		os.WriteFile(p, out, 0o644)
		if _, err := exec.LookPath(sh); err != nil {
			t.Logf("no %s: its script's syntax not checked", sh)
			continue
		}
		if out, err := exec.Command(sh, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
	complete := func(words ...string) string {
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _upgradectl; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", append([]string{"-c", script, "bash", filepath.Join(dir, "bash"), bin}, words...)...).Output()
		if err != nil {
			t.Fatalf("completing %q: %v", words, err)
		}
		return string(out)
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"is"}, "iso\n"},
		{[]string{"iso", "ex"}, "extract\n"},
		{[]string{"tag", "create", "--ver"}, "--version\n"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("completing %q: %q, want %q", tc.words, got, tc.want)
		}
	}
}

// TestManPage: the manual page made from the command definitions names
// every command.
func TestManPage(t *testing.T) {
	code, out, _ := runCLI(t, "manpage")
	if code != 0 || !strings.HasPrefix(out, ".nh\n.TH upgradectl 8") {
		t.Fatalf("exit %d:\n%.200s", code, out)
	}
	for _, c := range newApp().Commands {
		if !c.Hidden && !strings.Contains(out, c.Name) {
			t.Errorf("the manual page does not name %s", c.Name)
		}
	}
}
