package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
	"upgradectl/iso"
	"upgradectl/stage"
	"upgradectl/tagfs"
)

func init() {
	const cat = "upgrade"
	const usage = "tagged .Old.. copies of the files an upgrade replaces, and version lookup"
	registerSub("tag", cat, usage,
		&cli.Command{
			Name:      "create",
			Usage:     "keep a tagged .Old.. copy of each file (a directory: every file below it)",
			ArgsUsage: "[PATH...]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "version", Usage: "the version the copies carry (the one installed now; required)"},
				&cli.StringFlag{Name: "list", Usage: "read the paths from `FILE` (one a line, # comments), a file on this system"},
				&cli.StringFlag{Name: "iso", Usage: "tag the files the manifest of image `IMAGE` lists (a file on this system)"},
				&cli.BoolFlag{Name: "force", Usage: "tag in directories that users other than root can write to"},
				&cli.BoolFlag{Name: "digest", Usage: "record a digest of each copy's content for 'check --content' (reads every file)"},
			},
			Action: action(tagLocked("create", func(c *cli.Context, e *env, t *tagfs.Tags) (any, string, error) {
				paths := append([]string(nil), c.Args().Slice()...)
				if f := c.String("list"); f != "" {
					more, err := readPathList(f)
					if err != nil {
						return nil, "", err
					}
					paths = append(paths, more...)
				}
				if img := c.String("iso"); img != "" {
					more, err := manifestFiles(img)
					if err != nil {
						return nil, "", err
					}
					paths = append(paths, more...)
				}
				rep, err := t.Create(c.String("version"), paths, tagfs.CreateOptions{Force: c.Bool("force"), Digest: c.Bool("digest")})
				return rep, summary(rep), err
			})),
		},
		&cli.Command{
			Name:      "restore",
			Usage:     "backout: put the tagged copies back in place of the originals (all, or the given ones)",
			ArgsUsage: "[PATH...]",
			Flags:     []cli.Flag{holdForce},
			Action: action(tagLocked("restore", func(c *cli.Context, e *env, t *tagfs.Tags) (any, string, error) {
				if err := upgradeHoldsTags(c, e, "restore"); err != nil {
					return nil, "", err
				}
				rep, err := t.Restore(c.Args().Slice())
				return rep, summary(rep), err
			})),
		},
		&cli.Command{
			Name:      "remove",
			Usage:     "delete the tagged copies of the given files",
			ArgsUsage: "PATH...",
			Flags:     []cli.Flag{holdForce},
			Action: action(tagLocked("remove", func(c *cli.Context, e *env, t *tagfs.Tags) (any, string, error) {
				if err := upgradeHoldsTags(c, e, "remove"); err != nil {
					return nil, "", err
				}
				rep, err := t.Remove(c.Args().Slice())
				return rep, summary(rep), err
			})),
		},
		&cli.Command{
			Name:  "clean",
			Usage: "delete every tagged copy and what interrupted runs left",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "scan", Usage: "also delete the tagged copies found below `DIR` (a lost record)"},
				holdForce,
			},
			Action: action(tagLocked("clean", func(c *cli.Context, e *env, t *tagfs.Tags) (any, string, error) {
				if err := upgradeHoldsTags(c, e, "clean"); err != nil {
					return nil, "", err
				}
				rep, err := t.Clean(tagfs.CleanOptions{Scan: c.StringSlice("scan")})
				return rep, summary(rep), err
			})),
		},
		&cli.Command{
			Name:  "list",
			Usage: "show the tagged set (--scan: find tagged files by walking DIR)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "scan", Usage: "walk `DIR` instead of reading the record"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				t := newTags(e)
				defer t.Close()
				if dir := c.String("scan"); dir != "" {
					found, err := t.Scan(dir)
					if found != nil || err == nil {
						printFound(e, found)
					}
					return err
				}
				rec, err := t.Load()
				if err != nil {
					return err
				}
				st, err := t.State()
				if err != nil {
					return err
				}
				printRecord(e, rec, st)
				return nil
			}),
		},
		&cli.Command{
			Name:  "check",
			Usage: "verify that every tagged file exists and carries its version (--content: and its content)",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "content", Usage: "also compare each copy's content with its digest"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				t := newTags(e)
				defer t.Close()
				rep, err := t.Check(c.Bool("content"))
				if rep == nil {
					return err
				}
				if e.JSON {
					return firstErr(writeJSON(e, rep), err)
				}
				for _, p := range rep.Problems {
					fmt.Fprintf(e.Out, "%s: %s\n", p.Path, p.Problem)
				}
				if err == nil {
					note := ""
					if rep.ByCtime > 0 {
						note = fmt.Sprintf(" (%d without a digest checked by change time; 'tag create --digest' records digests)", rep.ByCtime)
					}
					fmt.Fprintf(e.Out, "%d tagged files for version %s: all good%s\n", rep.Checked, orNone(rep.Version), note)
				}
				return err
			}),
		},
		&cli.Command{
			Name:  "enable",
			Usage: "run this member on the tagged files (--bind: bind-mount each over its original)",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "bind", Usage: "make the diversion transparent with read-only bind mounts (again: re-apply)"},
			},
			Action: action(tagLocked("enable", func(c *cli.Context, e *env, t *tagfs.Tags) (any, string, error) {
				rep, err := t.Enable(c.Bool("bind"))
				return rep, bindSummary(rep), err
			})),
		},
		&cli.Command{
			Name:  "disable",
			Usage: "stop running this member on the tagged files (and remove the bind mounts)",
			Action: action(tagLocked("disable", func(c *cli.Context, e *env, t *tagfs.Tags) (any, string, error) {
				rep, err := t.Disable()
				return rep, bindSummary(rep), err
			})),
		},
		&cli.Command{
			Name:      "lookup",
			Usage:     "print the path that applies on this member for each path",
			ArgsUsage: "PATH...",
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() == 0 {
					return host.Usage("tag lookup needs at least one PATH")
				}
				t := newTags(e)
				defer t.Close()
				l, err := t.Lookuper()
				if err != nil {
					return err
				}
				type applies struct {
					Path    string `json:"path"`
					Applies string `json:"applies"`
				}
				var out []applies
				for _, p := range c.Args().Slice() {
					got, err := l.Lookup(p)
					if err != nil {
						return err
					}
					out = append(out, applies{p, got})
				}
				if e.JSON {
					return writeJSON(e, out)
				}
				for _, a := range out {
					fmt.Fprintln(e.Out, host.OneLine(a.Applies))
				}
				return nil
			}),
		},
		&cli.Command{
			Name:            "exec",
			Usage:           "run a command as this member would (the tagged copy of the command when lookup is on)",
			ArgsUsage:       "-- CMD [ARGS...]",
			SkipFlagParsing: true,
			Action: action(func(c *cli.Context, e *env) error {
				args := c.Args().Slice()
				// Its flags are not parsed (the command's are its own):
				// --help before "--" is the only one.
				if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
					return cli.ShowSubcommandHelp(c)
				}
				if len(args) > 0 && args[0] == "--" {
					args = args[1:]
				}
				if len(args) == 0 {
					return host.Usage("cannot run a command: none given")
				}
				t := newTags(e)
				l, err := t.Lookuper()
				if err != nil {
					return err
				}
				bin, err := l.Command(args[0], os.Getenv("PATH"))
				if err != nil {
					return err
				}
				t.Close()
				if err := syscall.Exec(bin, args, os.Environ()); err != nil {
					return host.CannotRun("cannot run %s: %v", bin, err)
				}
				return nil
			}),
		},
	)
}

func newTags(e *env) *tagfs.Tags { return tagfs.New(e.Root, e.Config, e.State()) }

// tagLocked runs a tag command that changes things: under the state
// directory lock, logged in the upgrade log, its report printed.
var holdForce = &cli.BoolFlag{Name: "force", Usage: "act even while an upgrade in progress holds the tagged copies for its backout"}

// upgradeHoldsTags refuses to delete or restore tagged copies by hand while
// an upgrade's setup made them and its clean has not removed them: its
// backout restores from them, and without them it would leave the new
// version in place; restored by hand, the upgrade would go on with the old
// files in place (undo install is the backout that records it).
func upgradeHoldsTags(c *cli.Context, e *env, verb string) error {
	if c.Bool("force") {
		return nil
	}
	if s, upgrade, err := stage.SetupStatus(e.State()); err == nil && s != stage.NotStarted && s != stage.Undone {
		return host.WithHint(host.Refused("cannot %s tagged files: the upgrade in progress (%s) holds them for its backout", verb, upgrade),
			"finish the upgrade ('upgradectl continue') or undo it ('upgradectl undo install' restores them); --force acts anyway")
	}
	return nil
}

func tagLocked(name string, f func(*cli.Context, *env, *tagfs.Tags) (any, string, error)) func(*cli.Context, *env) error {
	return func(c *cli.Context, e *env) error {
		lock, err := host.LockStateDir(e.State())
		if err != nil {
			return err
		}
		defer lock.Unlock()
		t := newTags(e)
		defer t.Close()
		start := time.Now()
		rep, msg, err := f(c, e, t)
		if r, ok := rep.(*tagfs.Report); ok && r != nil {
			for _, w := range r.Warnings {
				fmt.Fprintf(e.Err, "upgradectl: warning: %s\n", host.OneLine(w))
			}
		}
		entry := host.LogEntry{Action: "tag " + name, Start: start, Scope: "tagged files", Result: host.ResultSuccess, Message: msg}
		if err != nil {
			entry.Result, entry.Message = host.ResultFailed, err.Error()
		}
		if _, lerr := e.Log().Append(entry); lerr != nil && err == nil {
			err = lerr
		}
		if e.JSON && rep != nil {
			if err != nil {
				// The report of what was done, and why the rest was not.
				return firstErr(writeJSONFailed(e, rep, err), err)
			}
			return writeJSON(e, rep)
		}
		if msg != "" && err == nil {
			fmt.Fprintln(e.Out, msg)
		}
		return err
	}
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONFailed writes the JSON object v with the failure err added as
// "error", "exit" and "hint", as the failure object of any command has them.
func writeJSONFailed(e *env, v any, err error) error {
	b, merr := json.Marshal(v)
	if merr != nil || len(b) < 2 || b[0] != '{' {
		return writeJSON(e, v)
	}
	tail, _ := json.Marshal(failureOf(err))
	if len(b) > 2 {
		b = append(b[:len(b)-1], ',')
	} else {
		b = b[:1]
	}
	b = append(b, tail[1:]...)
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, werr := e.Out.Write(out.Bytes())
	return werr
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func summary(r *tagfs.Report) string {
	if r == nil {
		return ""
	}
	var parts []string
	switch r.Action {
	case "create":
		how := fmt.Sprintf("%d clones, %d copies, %s copied", r.Cloned, r.Copied, host.FormatSize(r.Bytes))
		if r.Linked > 0 {
			how += fmt.Sprintf(", %d hard links to them", r.Linked)
		}
		parts = append(parts, fmt.Sprintf("tagged %d files for version %s (%s)", len(r.Done), r.Version, how))
		if len(r.Already) > 0 {
			parts = append(parts, fmt.Sprintf("%d were tagged already", len(r.Already)))
		}
	case "restore":
		parts = append(parts, fmt.Sprintf("restored %d files of version %s", len(r.Done), orNone(r.Version)))
		if len(r.Already) > 0 {
			parts = append(parts, fmt.Sprintf("%d had nothing left to restore", len(r.Already)))
		}
	default:
		parts = append(parts, fmt.Sprintf("removed %d tagged files", len(r.Done)))
		if len(r.Already) > 0 {
			parts = append(parts, fmt.Sprintf("%d were gone already", len(r.Already)))
		}
	}
	if len(r.Temps) > 0 {
		parts = append(parts, fmt.Sprintf("removed %d temporary files of an interrupted run", len(r.Temps)))
	}
	for _, f := range r.Foreign {
		parts = append(parts, fmt.Sprintf("left alone %s (no version attribute: not a tagged file)", f))
	}
	return strings.Join(parts, "; ")
}

func bindSummary(r *tagfs.BindReport) string {
	if r == nil {
		return ""
	}
	if !r.Lookup {
		return fmt.Sprintf("version lookup off; removed %d bind mounts", len(r.Removed))
	}
	s := "version lookup on"
	if r.Bind {
		s += fmt.Sprintf("; bind mounts: %d made, %d in place", len(r.Mounted), len(r.Already))
		if len(r.Skipped) > 0 {
			s += fmt.Sprintf(", %d skipped (symlinks or missing originals: lookup only)", len(r.Skipped))
		}
	}
	return s
}

func printRecord(e *env, rec *tagfs.Record, st *tagfs.Status) {
	if e.JSON {
		writeJSON(e, struct {
			*tagfs.Record
			Mounted int `json:"mounted"`
		}{rec, st.Mounted})
		return
	}
	state := "complete"
	switch {
	case rec.Complete:
	case st.Busy != 0:
		// The lock says a tag create (or a stage) is at work on it now.
		state = fmt.Sprintf("in progress (process %d is at work on it)", st.Busy)
	default:
		state = "INCOMPLETE (a tag create was interrupted: run it again)"
	}
	lookup := "off"
	if rec.Lookup {
		lookup = "on"
		if rec.Bind {
			lookup += fmt.Sprintf(" (bind mounts: %d in this mount namespace)", st.Mounted)
		}
	}
	fmt.Fprintf(e.Out, "version %s: %d tagged files, %s; version lookup %s\n", orNone(rec.Version), len(rec.Files), state, lookup)
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TAGGED\tTYPE\tSIZE\tHOW")
	for _, f := range rec.Files {
		how := "copy"
		if f.Cloned {
			how = "clone"
		}
		typ := f.Type
		if typ == "" {
			typ, how = "planned", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", host.OneLine(f.Tagged()), typ, f.Size, how)
	}
	tw.Flush()
}

func printFound(e *env, found []tagfs.Found) {
	if e.JSON {
		if found == nil {
			found = []tagfs.Found{}
		}
		writeJSON(e, found)
		return
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tVERSION\tNOTE")
	for _, f := range found {
		note := ""
		switch {
		case f.Temp:
			note = "temporary file of an interrupted run ('tag clean --scan' removes it)"
		case !f.Ours:
			note = "no version attribute: not a tagged file, left alone"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", host.OneLine(f.Path), host.OneLine(f.Version), note)
	}
	tw.Flush()
}

// manifestFiles is the files list of an image's manifest.
func manifestFiles(name string) ([]string, error) {
	img, err := iso.Open(name)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	m, err := iso.ReadManifest(img)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, host.Bad("cannot tag the files of %s: it has no manifest %s", name, iso.ManifestName)
	}
	if err != nil {
		return nil, host.Bad("%s: %v", name, err)
	}
	if len(m.Files) == 0 {
		return nil, host.Bad("cannot tag the files of %s: its manifest lists none", name)
	}
	return m.Files, nil
}

// readPathList reads paths one a line; blank lines and # comments are
// skipped.
func readPathList(name string) ([]string, error) {
	f, err := host.OpenRegular(name)
	if err != nil {
		return nil, host.Usage("cannot read path list %s: %v", name, err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, host.Usage("cannot read path list %s: %v", name, err)
	}
	return out, nil
}
