package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
	"upgradectl/stage"
)

func init() {
	register(&cli.Command{
		Name:     "log",
		Category: "upgrade",
		Usage:    "print the upgrade log",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "last", Usage: "only the last `N` entries"},
			&cli.BoolFlag{Name: "history", Usage: "list the past upgrades (archived in the state directory's history/) and the one in progress"},
			&cli.StringFlag{Name: "upgrade", Usage: "the log of upgrade `ID` (as --history lists it)"},
		},
		Action: action(func(c *cli.Context, e *env) error {
			if n := c.Int("last"); n < 0 {
				return host.Usage("cannot show the last %d entries: N must not be negative", n)
			}
			if c.Bool("history") {
				if c.IsSet("upgrade") || c.IsSet("last") {
					return host.Usage("log --history lists the upgrades: it takes neither --upgrade nor --last")
				}
				return printHistory(e)
			}
			log := e.Log()
			if c.IsSet("upgrade") {
				p, l, err := stage.PastLog(e.State(), c.String("upgrade"))
				if err != nil {
					return err
				}
				log = l
				if !e.JSON {
					fmt.Fprintf(e.Out, "upgrade %s: version %s to %s, %s\n", p.Upgrade, orNone(p.OldVersion), orNone(p.Version), p.Result)
				}
			}
			entries, bad, err := log.Read()
			if err != nil {
				return err
			}
			if n := c.Int("last"); n > 0 && n < len(entries) {
				entries = entries[len(entries)-n:]
			}
			if e.JSON {
				enc := json.NewEncoder(e.Out)
				for _, en := range entries {
					if err := enc.Encode(en); err != nil {
						return err
					}
				}
				return nil
			}
			printLog(e, entries)
			if bad > 0 {
				fmt.Fprintf(e.Err, "upgradectl: %d unreadable line(s) in %s skipped\n", bad, log.Path)
			}
			return nil
		}),
	})
}

func printLog(e *env, entries []host.LogEntry) {
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPARENT\tACTION\tSTART\tDURATION\tSCOPE\tHOST\tRESULT\tMODE\tMESSAGE")
	for _, en := range entries {
		parent := ""
		if en.Parent != 0 {
			parent = fmt.Sprint(en.Parent)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.1fs\t%s\t%s\t%s\t%s\t%s\n", en.ID, parent, en.Action,
			en.Start.Local().Format("2006-01-02 15:04:05"), en.Duration, en.Scope, en.Host, en.Result, en.Mode, oneLineMessage(en.Message))
	}
	tw.Flush()
}

// oneLineMessage keeps a table row on one line: the first line of a
// multi-line message (captured command output) and how many lines follow;
// `upgradectl --json log` has the whole message.
func oneLineMessage(m string) string {
	m = strings.TrimRight(m, "\n")
	first, rest, found := strings.Cut(m, "\n")
	if !found {
		return host.OneLine(m)
	}
	return fmt.Sprintf("%s (+%d more lines, see --json)", host.OneLine(strings.TrimRight(first, "\r")), strings.Count(rest, "\n")+1)
}

// printHistory lists the past upgrades and the one in progress.
func printHistory(e *env) error {
	past, err := stage.History(e.State())
	if err != nil {
		return err
	}
	if e.JSON {
		return encodeList(e.Out, past)
	}
	if len(past) == 0 {
		fmt.Fprintln(e.Out, "no upgrade yet")
		return nil
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPGRADE\tFROM\tVERSION\tSTART\tEND\tRESULT")
	for _, p := range past {
		end := stamp(p.End)
		if end == "" {
			end = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Upgrade, orNone(p.OldVersion), orNone(p.Version), stamp(p.Start), end, p.Result)
	}
	return tw.Flush()
}
