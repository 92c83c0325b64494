// Command upgradectl runs on each server during a software upgrade: it
// verifies, reads, mounts and stages ISO images, keeps tagged copies of the
// files an upgrade replaces, switches the host into and out of maintenance
// mode, runs the pre- and post-upgrade health checks and drives the staged
// upgrade itself.
//
// This file holds the command line only: global flags, the error to exit
// code switch and the fix-it hints. The commands are in cmd_*.go, each a
// thin wrapper around a package function.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
)

// version is stamped by build.sh.
var version = "dev"

// commands is filled by the cmd_*.go files.
var commands []*cli.Command

func register(c ...*cli.Command) { commands = append(commands, c...) }

// registerSub adds subcommands to the top-level command name, creating it
// with usage and category if it does not exist yet, so that several files
// can contribute to one command group ("iso verify" and "iso mount").
func registerSub(name, category, usage string, subs ...*cli.Command) {
	for _, c := range commands {
		if c.Name == name {
			c.Subcommands = append(c.Subcommands, subs...)
			return
		}
	}
	register(&cli.Command{Name: name, Category: category, Usage: usage, Subcommands: subs})
}

// env is what every command gets from the global flags.
type env struct {
	Root       host.Root
	ConfigPath string // host path of the configuration
	Config     *host.Config
	StateDir   string // host path of the state directory
	JSON       bool
	Mode       string // host.ModeManual or host.ModeAutomatic
	Out        io.Writer
	Err        io.Writer
}

// State is the state directory on the running system (StateDir has no
// symlink on the way).
func (e *env) State() string { return e.Root.Path(e.StateDir) }

// Log is the upgrade log.
func (e *env) Log() *host.UpgradeLog { return host.OpenLog(e.State(), e.Mode) }

// encodeList writes list as JSON, an empty or nil list as [] (never null),
// so that programs can always iterate over it.
func encodeList[T any](w io.Writer, list []T) error {
	if list == nil {
		list = []T{}
	}
	return json.NewEncoder(w).Encode(list)
}

func newEnv(c *cli.Context) (*env, error) {
	root, err := host.NewRoot(c.String("root"))
	if err != nil {
		return nil, err
	}
	cfgPath := c.String("config")
	cfg, err := host.LoadConfig(root, cfgPath, c.IsSet("config"))
	if err != nil {
		return nil, err
	}
	mode := host.ModeManual
	if c.Bool("automatic") {
		mode = host.ModeAutomatic
	}
	stateDir := c.String("state-dir")
	if !filepath.IsAbs(stateDir) {
		return nil, host.Usage("cannot use state directory %s: not an absolute path", stateDir)
	}
	// A symlink on the way (/var/lib/upgradectl -> /srv/x) is followed as
	// the system under the root sees it, never out of the root: from here
	// on the state directory is named by the path it resolves to.
	// A file on the way (ENOTDIR) is left for the commands to report, as
	// those that can run without the state directory (check) do.
	real, err := root.Resolve(stateDir)
	if err == nil {
		stateDir, err = root.Rel(real)
	}
	if err != nil && !errors.Is(err, syscall.ENOTDIR) {
		return nil, host.CannotRun("cannot use state directory %s: %v", stateDir, err)
	}
	// --json is global and some commands have their own: either asks.
	json := false
	for _, x := range c.Lineage() {
		json = json || x.Bool("json")
	}
	return &env{Root: root, ConfigPath: cfgPath, Config: cfg, StateDir: stateDir,
		JSON: json, Mode: mode, Out: c.App.Writer, Err: c.App.ErrWriter}, nil
}

// action wraps a command body so that it gets the env.
func action(f func(c *cli.Context, e *env) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		e, err := newEnv(c)
		if err != nil {
			return err
		}
		return f(c, e)
	}
}

func newApp() *cli.App {
	sort.SliceStable(commands, func(i, j int) bool { return commands[i].Category < commands[j].Category })
	usageErrors(commands, "")
	return &cli.App{
		Name:    "upgradectl",
		Usage:   "verify, stage and run a software upgrade on this server",
		Version: version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "root", Value: "/", Usage: "act on the system whose / is `DIR` (a mounted system image in rescue)"},
			&cli.StringFlag{Name: "config", Value: host.DefaultConfigPath, Usage: "configuration `FILE`, inside the root (the embedded default when absent)"},
			&cli.StringFlag{Name: "state-dir", Value: "/var/lib/upgradectl", Usage: "state `DIR`, inside the root"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON for programs instead of tables"},
			&cli.BoolFlag{Name: "automatic", Hidden: true, Usage: "record log entries as automatic (boot hooks)"},
		},
		Commands:             commands,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		ExitErrHandler:       func(*cli.Context, error) {},
		CommandNotFound: func(c *cli.Context, name string) {
			unknownCommand = name
		},
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return host.Usage("%v", err)
		},
	}
}

// usageErrors makes a bad flag of any command a one-line usage error
// (exit 2), as it is for the global flags, instead of the parser's
// message and the command's help on stdout.
func usageErrors(cmds []*cli.Command, parent string) {
	for _, c := range cmds {
		name := strings.TrimSpace(parent + " " + c.Name)
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return host.Usage("%s: %v", name, err)
		}
		if min, max, ok := argRange(c.ArgsUsage); ok && c.Action != nil && len(c.Subcommands) == 0 && !c.SkipFlagParsing && c.Before == nil {
			usage := c.ArgsUsage
			c.Before = func(ctx *cli.Context) error {
				if n := ctx.NArg(); n < min || max >= 0 && n > max {
					if usage == "" {
						return host.Usage("%s takes no arguments, not %q", name, ctx.Args().First())
					}
					return host.Usage("%s takes %s, not %d argument(s)", name, usage, n)
				}
				return nil
			}
		}
		usageErrors(c.Subcommands, name)
	}
}

// argRange reads how many arguments a command takes from its synopsis, the
// one rule for every command: "ISO DEST [PATH...]" is 2 or more, "" none,
// "[pre|post]" 0 or 1. A synopsis with alternatives of another shape
// ("NAME | --all") or a "--" is left to the command (ok false).
func argRange(usage string) (min, max int, ok bool) {
	depth := 0
	var tokens []string
	cur := ""
	for _, r := range usage {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case r == '|' && depth == 0:
			return 0, 0, false
		case r == ' ' && depth == 0:
			if cur != "" {
				tokens = append(tokens, cur)
			}
			cur = ""
			continue
		}
		cur += string(r)
	}
	if cur != "" {
		tokens = append(tokens, cur)
	}
	for _, t := range tokens {
		if strings.HasPrefix(t, "-") || strings.HasPrefix(t, "[-") {
			return 0, 0, false
		}
		if strings.Contains(t, "...") {
			max = -1
		} else if max >= 0 {
			max++
		}
		if !strings.HasPrefix(t, "[") {
			min++
		}
	}
	return min, max, true
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	out := &countingWriter{w: stdout}
	app.Writer, app.ErrWriter = out, stderr
	unknownCommand = ""
	err := app.Run(interspersed(app, args))
	if unknownCommand != "" {
		err = host.WithHint(host.Usage("unknown command %q", unknownCommand), "see 'upgradectl --help'")
	}
	if err == nil {
		return 0
	}
	code := exitCode(err)
	if errors.As(err, new(errSilent)) {
		return code
	}
	// One line, whatever names from outside the message carries.
	fmt.Fprintf(stderr, "upgradectl: %s\n", host.OneLine(err.Error()))
	h := hint(err)
	if h != "" {
		fmt.Fprintf(stderr, "hint: %s\n", host.OneLine(h))
	}
	// A program that asked for JSON gets the failure as JSON too, unless
	// the command already wrote its report (which says what failed).
	if jsonAsked(args) && out.n == 0 {
		json.NewEncoder(stdout).Encode(failureOf(err))
	}
	return code
}

// jsonFailure is how a failure is given in JSON: on its own, or added to
// the report of a command that did part of its work.
type jsonFailure struct {
	Error string `json:"error"`
	Exit  int    `json:"exit"`
	Hint  string `json:"hint,omitempty"`
}

func failureOf(err error) jsonFailure {
	return jsonFailure{err.Error(), exitCode(err), hint(err)}
}

// jsonAsked reports whether --json is on the command line (before "--").
func jsonAsked(args []string) bool {
	for _, a := range args[1:] {
		switch a {
		case "--":
			return false
		case "--json", "-json", "--json=true", "-json=true":
			return true
		}
	}
	return false
}

// countingWriter counts what a command wrote.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// interspersed lets flags follow arguments, as the synopses write them
// ("iso verify FILE --md5 HEX", "maintenance status --json"): the parser
// stops at the first argument, so the flags found among a command's
// arguments are moved before them, and global flags given after the
// command before it. Nothing after "--" is touched, nor the command line
// that install takes without one.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	var global, path, flags, pos []string
	i := 1
	take := func(fs []cli.Flag, to *[]string) {
		*to = append(*to, args[i])
		if takesValue(fs, args[i]) && i+1 < len(args) {
			i++
			*to = append(*to, args[i])
		}
	}
	for ; i < len(args) && isFlag(args[i]); i++ {
		take(app.Flags, &global)
	}
	var leaf *cli.Command
	for cmds := app.Commands; i < len(args); i++ {
		c := findCommand(cmds, args[i])
		if c == nil {
			break
		}
		path, leaf, cmds = append(path, args[i]), c, c.Subcommands
	}
	if leaf == nil {
		return args
	}
	for ; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--" || (leaf.Name == "install" && !isFlag(a)):
			pos = append(pos, args[i:]...)
			i = len(args)
		case !isFlag(a):
			pos = append(pos, a)
		case !hasFlag(leaf.Flags, a) && hasFlag(app.Flags, a):
			take(app.Flags, &global)
		default: // the command's, or unknown: the parser says so
			take(leaf.Flags, &flags)
		}
	}
	out := append([]string{args[0]}, global...)
	out = append(append(out, path...), flags...)
	return append(out, pos...)
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// flagName is the name in "-x", "--name" or "--name=value".
func flagName(a string) string {
	a = strings.TrimLeft(a, "-")
	name, _, _ := strings.Cut(a, "=")
	return name
}

func lookupFlag(fs []cli.Flag, a string) cli.Flag {
	name := flagName(a)
	for _, f := range fs {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func hasFlag(fs []cli.Flag, a string) bool { return lookupFlag(fs, a) != nil }

// takesValue: a flag that takes its value from the next argument.
func takesValue(fs []cli.Flag, a string) bool {
	if strings.Contains(a, "=") {
		return false
	}
	f, ok := lookupFlag(fs, a).(cli.DocGenerationFlag)
	return ok && f.TakesValue()
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// unknownCommand is set by the app when a command name is not known.
var unknownCommand string

// errSilent is returned by commands that already printed their verdict
// (a failed check table) and only need the exit code.
type errSilent struct{ code int }

func (e errSilent) Error() string { return fmt.Sprintf("exit %d", e.code) }

// exitCode is the one switch from errors to exit codes (see docs/cli.md).
func exitCode(err error) int {
	var es errSilent
	if errors.As(err, &es) {
		return es.code
	}
	if k := host.KindOf(err); k != 0 {
		return int(k)
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	switch {
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS),
		errors.Is(err, syscall.EIO), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.ENODEV),
		// A name this filesystem cannot hold (too long, or refused as
		// invalid): the destination cannot take it, the input is fine.
		errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.EINVAL):
		return int(host.KindCannotRun)
	case errors.Is(err, fs.ErrNotExist):
		return int(host.KindBad)
	}
	return int(host.KindUsage)
}

func hint(err error) string {
	if h := host.HintOf(err); h != "" {
		return h
	}
	switch {
	case errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0:
		return "run it as root: sudo upgradectl ..."
	case errors.Is(err, syscall.ENOSPC):
		return "free some space on that filesystem and run the command again"
	}
	return ""
}
