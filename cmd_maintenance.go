package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"upgradectl/boot"
	"upgradectl/stage"
)

func init() {
	registerSub("maintenance", "upgrade", "switch this host into and out of maintenance mode",
		&cli.Command{
			Name:  "enter",
			Usage: "stop the applications, block non-root logins and show the maintenance banner",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "message", Usage: "banner and login-block `TEXT` (default: maintenance.message)"},
				&cli.BoolFlag{Name: "reboot", Usage: "reboot into maintenance mode instead of switching now"},
			},
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				o, err := boot.Enter(ctx, s, boot.EnterOptions{Message: c.String("message"), Reboot: c.Bool("reboot")})
				if err != nil {
					return err
				}
				printOutcome(e, o, "in maintenance mode")
				publish(e)
				return nil
			}),
		},
		&cli.Command{
			Name:  "exit",
			Usage: "undo maintenance mode exactly and go back to the previous default target",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "reboot", Usage: "reboot into the previous default target instead of switching now"},
			},
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				o, err := boot.Exit(ctx, s, boot.ExitOptions{Reboot: c.Bool("reboot")})
				if err != nil {
					return err
				}
				printOutcome(e, o, "out of maintenance mode")
				publish(e)
				return nil
			}),
		},
		&cli.Command{
			Name:  "status",
			Usage: "in or out, since when, message, current and default target, what the next boot does",
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				r, err := boot.Status(ctx, s)
				if err != nil {
					return err
				}
				if e.JSON {
					return json.NewEncoder(e.Out).Encode(r)
				}
				printStatus(e, r)
				return nil
			}),
		},
	)
}

// bootAction wraps a command body that works on the boot package's view of
// the global flags; ctx ends on SIGINT or SIGTERM.
func bootAction(f func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error) cli.ActionFunc {
	return action(func(c *cli.Context, e *env) error {
		s := &boot.System{Root: e.Root, StateDir: e.StateDir, ConfigPath: e.ConfigPath, Config: e.Config, Mode: e.Mode, Out: e.Err,
			Checks: stage.Checks()}
		defer s.Close()
		ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return f(ctx, c, e, s)
	})
}

func printOutcome(e *env, o *boot.Outcome, what string) {
	if o == nil {
		return
	}
	if e.JSON {
		json.NewEncoder(e.Out).Encode(o)
		return
	}
	for _, n := range o.Notes {
		fmt.Fprintln(e.Out, n)
	}
	switch {
	case o.Already:
	case o.Rebooting:
		fmt.Fprintf(e.Out, "rebooting into %s\n", o.Target)
	case o.Live:
		fmt.Fprintf(e.Out, "%s: %s is active\n", what, o.Target)
	}
}

func printStatus(e *env, r *boot.StatusReport) {
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	state := "out"
	if r.In {
		state = "in"
	}
	fmt.Fprintf(tw, "maintenance:\t%s\n", state)
	if r.In {
		fmt.Fprintf(tw, "since:\t%s\n", r.Since.Local().Format(time.DateTime+" MST"))
		fmt.Fprintf(tw, "message:\t%s\n", r.Message)
		fmt.Fprintf(tw, "previous target:\t%s\n", r.PreviousTarget)
	} else if !r.Exited.IsZero() {
		fmt.Fprintf(tw, "left:\t%s\n", r.Exited.Local().Format(time.DateTime+" MST"))
	}
	cur := r.CurrentTarget
	if !r.Live {
		cur = "unknown (systemd does not run " + e.Root.Dir() + ")"
	}
	fmt.Fprintf(tw, "current target:\t%s\n", cur)
	if r.BootOverride != "" {
		fmt.Fprintf(tw, "kernel command line:\tsystemd.unit=%s for this boot\n", r.BootOverride)
	}
	fmt.Fprintf(tw, "default target:\t%s\n", r.DefaultTarget)
	fmt.Fprintf(tw, "next boot:\t%s\n", r.NextBoot)
	fmt.Fprintf(tw, "boot units:\t%s\n", map[bool]string{true: "installed", false: "not installed"}[r.UnitsInstalled])
	if !r.LastResume.IsZero() {
		fmt.Fprintf(tw, "last resume:\t%s %s", r.LastResume.Local().Format(time.DateTime+" MST"), r.LastResumeResult)
		if r.LastResumeError != "" {
			fmt.Fprintf(tw, ": %s", r.LastResumeError)
		}
		fmt.Fprintln(tw)
	}
	if r.In {
		fmt.Fprintf(tw, "failed resumes:\t%d of %d\n", r.ResumeFailures, boot.MaxResumeFailures)
	}
	if r.Halted != "" {
		fmt.Fprintf(tw, "resume hook:\tSTOPPED after %s: manual intervention is needed\n", r.Halted)
	}
	tw.Flush()
	for _, p := range r.Problems {
		fmt.Fprintf(e.Out, "problem: %s\n", p)
	}
}
