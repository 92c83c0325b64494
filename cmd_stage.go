package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"upgradectl/boot"
	"upgradectl/checksum"
	"upgradectl/host"
	"upgradectl/stage"
)

// The staged upgrade: one command per stage, continue, status and undo.

var forceFlag = &cli.BoolFlag{Name: "force", Usage: "redo a done stage (repair) and act even where the host contradicts the record"}

// waitFlag: in a fleet, how long a stage waits for a slot of its group or
// for the groups before it.
var waitFlag = &cli.DurationFlag{Name: "wait", Usage: "in a fleet, wait up to `DURATION` for a free slot or for the groups before this one (default: exit 4 at once)"}

func init() {
	// After a reboot in maintenance mode, the boot hook continues the
	// upgrade: it completes the stage the reboot (or a crash) cut short.
	boot.SetResumeAction("stage resume", func(ctx context.Context, s *boot.System) error {
		e := stage.New(stage.Host{Root: s.Root, StateDir: s.StateDir, ConfigPath: s.ConfigPath, Config: s.Config,
			Mode: host.ModeAutomatic, Out: s.Out})
		_, err := e.Resume(ctx)
		return err
	})
	usage := map[stage.Name]string{
		stage.Setup:       "pre checks, stage and read the image, tag the files the install replaces",
		stage.Preinstall:  "verify the tagged files and the image again, enter maintenance mode if configured",
		stage.Install:     "mount the image and run its install command (or the one after --)",
		stage.Postinstall: "verify the new version is in place and run the post checks",
		stage.Roll:        "stop running on tagged files (version lookup off), reboot if configured",
		stage.Switch:      "make the new version the active one: from here there is no undo",
		stage.Clean:       "remove the tagged files and the image, leave maintenance mode, archive the log",
	}
	for _, n := range stage.Order {
		n := n
		cmd := &cli.Command{
			Name:     string(n),
			Category: "upgrade",
			Usage:    usage[n],
			Flags:    []cli.Flag{forceFlag, waitFlag},
			Action: action(func(c *cli.Context, e *env) error {
				opts := stage.Options{Force: c.Bool("force"), Wait: c.Duration("wait"), Vars: map[string]string{}}
				switch n {
				case stage.Setup:
					// Without --iso, a retry uses the image of the
					// setup it retries.
					if err := setupVars(c, e, opts.Vars); err != nil {
						return err
					}
				case stage.Install:
					// The command given (none: the manifest's) holds for
					// the retries that continue makes.
					opts.Vars[stage.VarInstallCommand] = ""
					if c.NArg() > 0 {
						if strings.TrimSpace(c.Args().First()) == "" {
							return host.Usage("install: the command given after -- is empty")
						}
						b, _ := json.Marshal(c.Args().Slice())
						opts.Vars[stage.VarInstallCommand] = string(b)
					}
				default:
					if c.NArg() > 0 {
						return host.Usage("%s takes no arguments", n)
					}
				}
				ctx, stop := signalContext()
				defer stop()
				return stageDone(e, stageEngine(e).Do(ctx, n, opts))
			}),
		}
		switch n {
		case stage.Setup:
			cmd.Flags = append(cmd.Flags, &cli.StringFlag{Name: "iso", Usage: "the upgrade `IMAGE`"},
				&cli.StringFlag{Name: "sums", Usage: "checksum `FILE` for the image (default: the first beside it that lists it of ISO.md5, ISO-without-.iso.md5, SHA512SUMS, SHA256SUMS, md5sum.out, MD5SUMS)"},
				&cli.StringFlag{Name: "md5", Usage: "the image's MD5 `HEX` digest instead of a checksum file"},
				&cli.StringFlag{Name: "sha256", Usage: "the image's SHA-256 `HEX` digest instead of a checksum file"})
		case stage.Install:
			cmd.ArgsUsage = "[-- CMD ARGS...]"
		}
		register(cmd)
	}
	register(&cli.Command{
		Name:     "continue",
		Category: "upgrade",
		Usage:    "run the next action: complete an interrupted stage, retry a failed one, or run the next stage",
		Flags:    []cli.Flag{forceFlag, waitFlag},
		Action: action(func(c *cli.Context, e *env) error {
			ctx, stop := signalContext()
			defer stop()
			_, err := stageEngine(e).Continue(ctx, stage.Options{Force: c.Bool("force"), Wait: c.Duration("wait")})
			return stageDone(e, err)
		}),
	}, &cli.Command{
		Name:      "undo",
		Category:  "upgrade",
		Usage:     "undo the latest stage (stages are undone in reverse order, never after switch)",
		ArgsUsage: "STAGE",
		Flags:     []cli.Flag{forceFlag, waitFlag},
		Action: action(func(c *cli.Context, e *env) error {
			args, force := c.Args().Slice(), c.Bool("force")
			if len(args) != 1 {
				return host.Usage("undo needs one stage: upgradectl undo STAGE")
			}
			n, err := stage.ParseName(args[0])
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			return stageDone(e, stageEngine(e).Undo(ctx, n, stage.Options{Force: force, Wait: c.Duration("wait")}))
		}),
	}, &cli.Command{
		Name:     "status",
		Category: "upgrade",
		Usage:    "show every stage, the versions, version lookup, maintenance mode, mounts and the next action",
		Flags:    []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON for programs"}},
		Action: action(func(c *cli.Context, e *env) error {
			rep, err := stageEngine(e).Status()
			if err != nil {
				return err
			}
			if e.JSON || c.Bool("json") {
				enc := json.NewEncoder(e.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printStageStatus(e, rep)
			return nil
		}),
	})
}

// setupVars checks setup's arguments before anything is recorded and puts
// them in vars. --iso and --sums name files on this system (not inside
// --root, like tag create --iso), kept as absolute paths so that a retry
// from another directory or the boot hook finds them.
func setupVars(c *cli.Context, e *env, vars map[string]string) error {
	if c.NArg() > 0 {
		return host.Usage("setup takes no arguments; give the image with --iso IMAGE")
	}
	img := c.String("iso")
	if img == "" {
		if c.IsSet("sums") || c.IsSet("md5") || c.IsSet("sha256") {
			return host.Usage("setup takes --sums, --md5 and --sha256 only with --iso IMAGE")
		}
		// A retry takes the image of the setup it retries; a new upgrade
		// needs one, said before anything is recorded.
		if s, _, err := stage.SetupStatus(e.State()); err == nil && s == stage.NotStarted {
			return host.Usage("setup needs the upgrade image: upgradectl setup --iso IMAGE")
		}
		return nil
	}
	if err := oneDigestSource(c, "setup"); err != nil {
		return err
	}
	for _, alg := range []checksum.Algorithm{checksum.MD5, checksum.SHA256} {
		if m := c.String(alg.Flag()); m != "" {
			if _, err := checksum.ParseDigestOf(alg, m); err != nil {
				return host.Usage("cannot use --%s %s: %v", alg.Flag(), m, err)
			}
		}
	}
	for _, f := range []struct{ flag, what, name, v string }{
		{"iso", "image", img, stage.VarISO},
		{"sums", "checksum file", c.String("sums"), stage.VarSums},
	} {
		if f.name == "" {
			continue
		}
		abs, err := filepath.Abs(f.name)
		if err == nil {
			var fi os.FileInfo
			if fi, err = os.Stat(abs); err == nil && !fi.Mode().IsRegular() {
				err = host.ErrNotRegular
			}
		}
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		if err != nil {
			return host.Usage("cannot use %s %s (--%s): %v", f.what, f.name, f.flag, err)
		}
		vars[f.v] = abs
	}
	vars[stage.VarMD5] = c.String("md5")
	vars[stage.VarSHA256Digest] = c.String("sha256")
	return nil
}

// oneDigestSource refuses more than one of --sums, --md5 and --sha256.
func oneDigestSource(c *cli.Context, cmd string) error {
	var given []string
	for _, f := range []string{"sums", "md5", "sha256"} {
		if c.IsSet(f) {
			given = append(given, "--"+f)
		}
	}
	switch {
	case len(given) == 2:
		return host.Usage("%s takes %s or %s, not both", cmd, given[0], given[1])
	case len(given) > 2:
		return host.Usage("%s takes one of %s", cmd, strings.Join(given, ", "))
	}
	return nil
}

// stageEngine is the stage engine on the host the global flags name. Its
// progress lines go to stderr with --json, where stdout is for JSON only.
func stageEngine(e *env) *stage.Engine {
	out := e.Out
	if e.JSON {
		out = e.Err
	}
	return stage.New(stageHost(e, out))
}

// stageDone ends a stage command: with --json, a success prints the
// status that follows it (a failure is the error's JSON).
func stageDone(e *env, err error) error {
	if err != nil || !e.JSON {
		return err
	}
	rep, err := stageEngine(e).Status()
	if err != nil {
		return err
	}
	return writeJSON(e, rep)
}

// stageHost is the host the global flags name, for the stage package,
// its progress and warnings going to out.
func stageHost(e *env, out io.Writer) stage.Host {
	return stage.Host{Root: e.Root, StateDir: e.StateDir, ConfigPath: e.ConfigPath, Config: e.Config, Mode: e.Mode, Out: out}
}

// signalContext is cancelled by SIGINT or SIGTERM, so that a stage stops
// and records itself as failed rather than dying half-way unrecorded.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func printStageStatus(e *env, rep *stage.Report) {
	w := e.Out
	if !rep.InProgress {
		fmt.Fprintf(w, "no upgrade in progress; active version %s\n", host.OrDash(rep.ActiveVersion))
	} else {
		fmt.Fprintf(w, "upgrade %s: version %s to %s", rep.Upgrade, host.OrDash(rep.OldVersion), host.OrDash(rep.NewVersion))
		if rep.Image != "" {
			fmt.Fprintf(w, " (image %s", rep.Image)
			if rep.Signer != "" {
				fmt.Fprintf(w, ", %s", host.OneLine(rep.Signer))
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "versions: running %s, new %s, active %s\n", host.OrDash(rep.RunningVersion), host.OrDash(rep.NewVersion), host.OrDash(rep.ActiveVersion))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tSTATUS\tATTEMPT\tSTARTED\tENDED\tNOTE")
	for _, s := range rep.Stages {
		note := s.Error
		switch {
		case s.Interrupted:
			note = "interrupted: no process is running it"
		case s.Waiting != "":
			note = "waiting for " + s.Waiting
		case (s.Status == stage.Running || s.Status == stage.Undoing) && rep.Busy != 0:
			note = fmt.Sprintf("process %d", rep.Busy)
		}
		attempt := ""
		if s.Attempt > 0 {
			attempt = fmt.Sprint(s.Attempt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Status, attempt, stamp(s.Started), stamp(s.Ended), note)
	}
	tw.Flush()
	for _, f := range rep.Facts {
		fmt.Fprintf(w, "%s: %s\n", f.Name, f.Value)
	}
	if len(rep.Repair) > 0 {
		fmt.Fprintln(w, "needs manual repair; the record and the host disagree:")
		for _, r := range rep.Repair {
			fmt.Fprintf(w, "  - %s\n", r)
		}
	}
	if len(rep.History) > 0 {
		fmt.Fprintf(w, "archived upgrades: %s\n", strings.Join(rep.History, ", "))
	}
	fmt.Fprintf(w, "next: %s\n", rep.Next)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
