package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"upgradectl/boot"
	"upgradectl/stage"
)

func init() {
	registerSub("boot", "upgrade", "the systemd units and boot-time hooks of maintenance mode",
		&cli.Command{
			Name:  "install",
			Usage: "write the maintenance target and its services under /etc/systemd/system",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "bin", Usage: "upgradectl's `PATH` inside the root, for the units (default: this binary)"},
			},
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				ch, err := boot.Install(ctx, s, boot.InstallOptions{Bin: c.String("bin")})
				if err != nil && len(ch) == 0 {
					return err
				}
				printChanges(e, ch, "the boot units are installed")
				return err
			}),
		},
		&cli.Command{
			Name:  "remove",
			Usage: "remove the units that boot install wrote (refused in maintenance mode)",
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				ch, err := boot.Remove(ctx, s)
				printChanges(e, ch, "no boot units to remove")
				return err
			}),
		},
		&cli.Command{
			Name:  "resume",
			Usage: "continue the upgrade in maintenance mode (run by upgradectl-resume.service at boot)",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "reset", Usage: "clear the boot-loop guard and run the pending action now"},
				&cli.BoolFlag{Name: "now", Usage: "act even in the boot that entered maintenance mode"},
			},
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				s.Out = e.Out // the journal, in the boot hook
				r, err := boot.Resume(ctx, s, boot.ResumeOptions{Reset: c.Bool("reset"), Now: c.Bool("now")})
				noteBootHook(e, r, err)
				if r != nil {
					if e.JSON {
						json.NewEncoder(e.Out).Encode(r)
					} else if r.Result == "skipped" {
						fmt.Fprintf(e.Out, "resume: nothing to do: %s\n", r.Reason)
					}
				}
				return err
			}),
		},
		&cli.Command{
			Name:  "nologin",
			Usage: "re-create /run/nologin in maintenance mode (run by upgradectl-nologin.service at boot)",
			Action: bootAction(func(ctx context.Context, c *cli.Context, e *env, s *boot.System) error {
				done, err := boot.Nologin(ctx, s)
				if err == nil && e.JSON {
					return writeJSON(e, map[string]bool{"nologin": done})
				}
				if err == nil && done {
					fmt.Fprintln(e.Out, "non-root logins are refused: maintenance mode")
				}
				return err
			}),
		},
	)
}

func printChanges(e *env, ch []boot.UnitChange, none string) {
	if e.JSON {
		encodeList(e.Out, ch)
		return
	}
	for _, c := range ch {
		fmt.Fprintf(e.Out, "%s %s\n", c.Action, c.Path)
	}
	if len(ch) == 0 {
		fmt.Fprintln(e.Out, none)
	}
}

// noteBootHook sends the boot hook's outcome to the journal and the
// metrics.
func noteBootHook(e *env, r *boot.ResumeReport, err error) {
	result, reason := "failed", ""
	if r != nil {
		result, reason = r.Result, r.Reason
	}
	if err != nil && reason == "" {
		reason = err.Error()
	}
	stage.NoteBootHook(stageHost(e, e.Err), result, reason)
}
