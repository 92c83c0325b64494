package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
	"upgradectl/host/check"
	"upgradectl/stage"
)

func init() {
	flags := func() []cli.Flag {
		return []cli.Flag{
			&cli.StringSliceFlag{Name: "only", Usage: "run only the checks `ID,...` (whatever the profile)"},
			&cli.StringSliceFlag{Name: "accept", Usage: "waive the failure of check `ID` (repeatable; recorded in the log)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (as the global --json)"},
		}
	}
	profile := func(name, usage string) *cli.Command {
		return &cli.Command{Name: name, Usage: usage, Flags: flags(), Action: action(checkAction(name))}
	}
	register(&cli.Command{
		Name:      "check",
		Category:  "checks",
		Usage:     "run the pre- or post-upgrade health checks",
		ArgsUsage: "[pre|post]",
		Description: "Runs the health checks of the profile (pre by default) in parallel and prints\n" +
			"a table (or JSON with --json). Exits 1 when a check of severity inhibitor fails\n" +
			"and is not accepted. Every run is appended to the upgrade log.\n\n" +
			"Checks: " + strings.Join(check.IDs(stage.Checks()...), ", "),
		Flags: flags(),
		Subcommands: []*cli.Command{
			profile(check.Pre, "the checks before the upgrade (the default)"),
			profile(check.Post, "the checks after the upgrade"),
		},
		Action: action(func(c *cli.Context, e *env) error {
			if c.NArg() > 0 {
				return host.Usage("unknown check profile %q: use pre or post", c.Args().First())
			}
			return checkAction(check.Pre)(c, e)
		}),
	})
}

func checkAction(profile string) func(c *cli.Context, e *env) error {
	return func(c *cli.Context, e *env) error {
		if c.NArg() > 0 {
			return host.Usage("check %s takes no arguments, not %q", profile, strings.Join(c.Args().Slice(), " "))
		}
		rep, err := check.Run(context.Background(), check.Options{
			Root: e.Root, Config: e.Config, Profile: profile,
			Only: idsFlag(c, "only"), Accept: idsFlag(c, "accept"), Extra: stage.Checks(),
		})
		if err != nil {
			return err
		}
		if _, err := check.Log(e.Log(), rep, 0); err != nil {
			fmt.Fprintf(e.Err, "upgradectl: checks not recorded in the upgrade log: %v\n", err)
		}
		stage.NoteCheck(stageHost(e, e.Err), rep)
		publish(e)
		asJSON := e.JSON
		for _, lc := range c.Lineage() {
			asJSON = asJSON || lc.Bool("json")
		}
		if asJSON {
			enc := json.NewEncoder(e.Out)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else {
			printReport(e.Out, rep)
		}
		if rep.Inhibited {
			return errSilent{int(host.KindBad)}
		}
		return nil
	}
}

// idsFlag collects the ids given to flag name before and after the
// profile ("check --only a post --only b"), as "a,b" or repeated.
func idsFlag(c *cli.Context, name string) []string {
	var out []string
	for _, lc := range c.Lineage() {
		for _, s := range lc.StringSlice(name) {
			for _, id := range strings.Split(s, ",") {
				if id = strings.TrimSpace(id); id != "" && !slices.Contains(out, id) {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

func printReport(w io.Writer, rep check.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tSEVERITY\tRESULT")
	for _, r := range rep.Checks {
		st := strings.ToUpper(string(r.Status))
		if r.Waived {
			st += " (accepted)"
		}
		sev := string(r.Severity)
		if r.Status != check.Fail {
			sev = "-" // the severity says what a failure means
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, st, sev, host.OneLine(r.Message))
	}
	tw.Flush()
	verdict := "upgrade may go on"
	if rep.Inhibited {
		verdict = "upgrade blocked"
	}
	fmt.Fprintf(w, "\n%s checks: %s: %s\n", rep.Profile, verdict, rep.Summary())
}
