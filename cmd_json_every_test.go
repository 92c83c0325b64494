package main

import (
	"bytes"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// leafCommands lists every command line that runs an action, from the
// command definitions themselves, so that a new command is in every test
// that walks them.
func leafCommands() map[string]*cli.Command {
	out := map[string]*cli.Command{}
	var walk func(cmds []*cli.Command, parent string)
	walk = func(cmds []*cli.Command, parent string) {
		for _, c := range cmds {
			if c.Name == "help" {
				continue
			}
			name := strings.TrimSpace(parent + " " + c.Name)
			if c.Action != nil {
				out[name] = c
			}
			walk(c.Subcommands, name)
		}
	}
	walk(newApp().Commands, "")
	return out
}

// jsonValues decodes out as a sequence of JSON values.
func jsonValues(out string) ([]any, error) {
	dec := json.NewDecoder(strings.NewReader(out))
	var vals []any
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return vals, nil
		}
		if err != nil {
			return vals, err
		}
		vals = append(vals, v)
	}
}

// With --json, every command prints JSON on stdout, on success as on an
// error, without a null list. The commands come from the command
// definitions: one missing from the table fails the test, so that a new
// command cannot be forgotten.
func TestJSONOnEveryCommand(t *testing.T) {
	data, err := os.ReadFile(isoReadImage(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", md5.Sum(data))
	root := t.TempDir()
	// Absolute paths on the command line are inside the root.
	img, dest := "/img/cmp-12.1.2-x86_64.iso", "/x"
	if err := os.MkdirAll(filepath.Join(root, "img"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, img), data, 0o644); err != nil {
		t.Fatal(err)
	}
	type jsonCase struct {
		cmd string
		// ok: arguments that succeed here, in this order on one root (nil:
		// none can without a whole upgrade, a FUSE mount or systemd); bad:
		// arguments that fail.
		ok, bad []string
		// raw: the output is data (a file, a command's), not a report;
		// either: the outcome depends on this machine (health checks).
		raw, either bool
	}
	table := []jsonCase{
		{cmd: "boot install", ok: []string{}, bad: []string{"--bin", "/none"}},
		{cmd: "boot nologin", ok: []string{}, bad: []string{"x"}},
		{cmd: "boot resume", ok: []string{}, bad: []string{"x"}},
		{cmd: "boot remove", ok: []string{}, bad: []string{"x"}},
		{cmd: "check", either: true, ok: []string{}, bad: []string{"--only", "no.such"}},
		{cmd: "check pre", either: true, ok: []string{}, bad: []string{"--only", "no.such"}},
		{cmd: "check post", either: true, ok: []string{}, bad: []string{"--only", "no.such"}},
		{cmd: "completion", raw: true, bad: []string{"no-such-shell"}},
		{cmd: "manpage", raw: true, bad: []string{"x"}},
		{cmd: "iso info", ok: []string{img}, bad: []string{img + ".none"}},
		{cmd: "iso ls", ok: []string{img}, bad: []string{img, "nope"}},
		{cmd: "iso cat", raw: true, bad: []string{img, "nope"}},
		{cmd: "iso extract", ok: []string{img, dest}, bad: []string{img + ".none", dest}},
		{cmd: "iso verify", ok: []string{img, "--md5", sum}, bad: []string{img, "--md5", strings.Repeat("0", 32)}},
		{cmd: "iso stage", ok: []string{img, "--md5", sum}, bad: []string{img + ".none"}},
		{cmd: "iso list", ok: []string{}, bad: []string{"x"}},
		{cmd: "iso remove", ok: []string{filepath.Base(img)}, bad: []string{"nope.iso"}},
		{cmd: "iso mount", bad: []string{img + ".none", dest}},
		{cmd: "iso serve-fuse", raw: true, bad: []string{}},
		{cmd: "iso mounts", ok: []string{}, bad: []string{"x"}},
		{cmd: "iso umount", ok: []string{"--all"}, bad: []string{dest}},
		{cmd: "log", ok: []string{}, bad: []string{"--last", "-1"}},
		{cmd: "fleet status", bad: []string{}},
		{cmd: "fleet release", bad: []string{"m1"}},
		{cmd: "fleet remove", bad: []string{"m1"}},
		{cmd: "maintenance status", ok: []string{}, bad: []string{"x"}},
		{cmd: "maintenance exit", ok: []string{}, bad: []string{"x"}},
		{cmd: "maintenance enter", bad: []string{"x"}},
		{cmd: "status", ok: []string{}, bad: []string{"x"}},
		{cmd: "setup", bad: []string{}},
		{cmd: "preinstall", bad: []string{}},
		{cmd: "install", bad: []string{}},
		{cmd: "postinstall", bad: []string{}},
		{cmd: "roll", bad: []string{}},
		{cmd: "switch", bad: []string{}},
		{cmd: "clean", bad: []string{}},
		{cmd: "continue", bad: []string{}},
		{cmd: "undo", bad: []string{"setup"}},
		{cmd: "tag create", ok: []string{"--version", "1", "/x/README"}, bad: []string{"--version", "1", "/x/none"}},
		{cmd: "tag list", ok: []string{"--scan", "/img"}, bad: []string{"--scan", "/none"}},
		{cmd: "tag check", ok: []string{}, bad: []string{"x"}},
		{cmd: "tag enable", ok: []string{}, bad: []string{"x"}},
		{cmd: "tag lookup", ok: []string{"/x/README"}, bad: []string{}},
		{cmd: "tag disable", ok: []string{}, bad: []string{"x"}},
		{cmd: "tag exec", raw: true, bad: []string{"--", "no-such-command"}},
		{cmd: "tag remove", ok: []string{"/x/README"}, bad: []string{"/x/none"}},
		{cmd: "tag restore", ok: []string{}, bad: []string{"--no-such-flag"}},
		{cmd: "tag clean", ok: []string{}, bad: []string{"x"}},
	}
	leaves := leafCommands()
	listed := map[string]bool{}
	for _, c := range table {
		listed[c.cmd] = true
		if leaves[c.cmd] == nil {
			t.Errorf("%q in the --json table is not a command", c.cmd)
		}
	}
	for name := range leaves {
		if !listed[name] {
			t.Errorf("command %q is not in the --json table", name)
		}
	}
	check := func(argv []string, wantOK, either bool) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append([]string{"upgradectl"}, argv...), &out, &errb)
		if wantOK != (code == 0) && !either {
			t.Errorf("%v: exit %d, want success %v; stderr %q", argv, code, wantOK, errb.String())
		}
		vals, err := jsonValues(out.String())
		// log prints JSON lines, none for an empty log.
		if err != nil || len(vals) == 0 && !(code == 0 && strings.HasSuffix(strings.Join(argv, " "), " log")) {
			t.Errorf("%v: stdout is not JSON (%v): %q", argv, err, out.String())
			return
		}
		if strings.Contains(out.String(), "null") {
			t.Errorf("%v: a null in %s", argv, out.String())
		}
		if m, ok := vals[len(vals)-1].(map[string]any); code != 0 && ok && m["error"] != nil && m["exit"] != float64(code) {
			t.Errorf("%v: exit %d, JSON %v", argv, code, m)
		}
	}
	for _, c := range table {
		base := append([]string{"--root", root, "--state-dir", "/state", "--json"}, strings.Fields(c.cmd)...)
		if c.ok != nil && !c.raw {
			check(append(append([]string{}, base...), c.ok...), true, c.either)
		}
		if c.bad != nil {
			check(append(append([]string{}, base...), c.bad...), false, c.either)
		}
	}
}

// help COMMAND... and COMMAND... --help show the help of every command,
// without running it.
func TestHelpOfEveryCommand(t *testing.T) {
	for name := range leafCommands() {
		for _, args := range [][]string{append([]string{"help"}, strings.Fields(name)...), append(strings.Fields(name), "--help")} {
			code, stdout, stderr := runCLI(t, args...)
			if code != 0 || !strings.Contains(stdout, "upgradectl "+name+" ") || strings.Contains(stdout, "`") {
				t.Errorf("%v: exit %d, %q %q", args, code, stdout, stderr)
			}
		}
	}
}

// Every command refuses one argument too many (and one too few where it
// needs some) with a usage error before it does anything: the count is
// read from its synopsis, or, for a synopsis with alternatives or "--",
// checked by the command itself.
func TestEveryCommandChecksItsArgumentCount(t *testing.T) {
	root := t.TempDir()
	// The most and the fewest arguments of the synopses argRange leaves
	// to their commands; -1: no bound.
	own := map[string][2]int{
		"check": {0, 1}, "iso remove": {0, 1}, "iso umount": {0, 1}, "install": {0, -1}, "tag exec": {1, -1},
	}
	for name, c := range leafCommands() {
		least, most, ok := argRange(c.ArgsUsage)
		// (The parser gives every command it runs a help subcommand.)
		if !ok || slices.ContainsFunc(c.Subcommands, func(s *cli.Command) bool { return s.Name != "help" }) {
			r, listed := own[name]
			if !listed {
				t.Errorf("%s (%q): its argument count is not checked from its synopsis; list how its command checks it", name, c.ArgsUsage)
				continue
			}
			least, most = r[0], r[1]
		}
		var bad [][]string
		if most >= 0 {
			bad = append(bad, strings.Fields(strings.Repeat("x ", most+1)))
		}
		if least > 0 {
			bad = append(bad, strings.Fields(strings.Repeat("x ", least-1)))
		}
		for _, args := range bad {
			argv := append(append([]string{"--root", root}, strings.Fields(name)...), args...)
			if name == "tag exec" && len(args) == 0 {
				argv = append(argv, "--")
			}
			code, _, stderr := runCLI(t, argv...)
			if code != 2 {
				t.Errorf("%v: exit %d %q, want a usage error", argv, code, stderr)
			}
		}
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("commands with a wrong argument count left %v in the root", ents)
	}
}
