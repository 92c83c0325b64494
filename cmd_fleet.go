package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"upgradectl/fleet"
	"upgradectl/host"
	"upgradectl/stage"
)

// The fleet: one view of every member, and an operator's hand on a stuck
// slot or a server gone for good.

func init() {
	fleet.Version = version
	registerSub("fleet", "upgrade", "the servers upgraded as one cluster through etcd ([fleet] in the configuration)",
		&cli.Command{
			Name:  "status",
			Usage: "every member's group, versions, stage, maintenance mode, slot and last report; the cluster version and free slots",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON for programs"}},
			Action: fleetAction(func(ctx context.Context, c *cli.Context, e *env, f *fleet.Fleet) error {
				if c.NArg() > 0 {
					return host.Usage("fleet status takes no arguments")
				}
				st, err := fleetStatus(ctx, f)
				if err != nil {
					return err
				}
				if e.JSON || c.Bool("json") {
					return writeJSON(e, st)
				}
				printFleetStatus(e, st)
				return nil
			}),
		},
		memberCommand("release", "free the slot a member holds (a member that died mid-upgrade); logged",
			func(ctx context.Context, f *fleet.Fleet, id string) (bool, error) { return f.Release(ctx, "", id) },
			"freed the slot of member %s", "member %s held no slot"),
		memberCommand("remove", "remove a decommissioned member from the cluster (its record and its slot); logged",
			func(ctx context.Context, f *fleet.Fleet, id string) (bool, error) { return f.Remove(ctx, id) },
			"removed member %s from the cluster", "member %s is not in the cluster"),
	)
}

// publish tells the fleet (if any) this server's record after a check run
// or a change of maintenance mode; a failure is a warning.
func publish(e *env) {
	if err := stage.Publish(stageHost(e, e.Err)); err != nil {
		fmt.Fprintf(e.Err, "upgradectl: warning: fleet: %s\n", host.OneLine(err.Error()))
	}
}

func fleetAction(f func(ctx context.Context, c *cli.Context, e *env, fl *fleet.Fleet) error) cli.ActionFunc {
	return action(func(c *cli.Context, e *env) error {
		if !e.Config.Fleet.Enabled() {
			return host.WithHint(host.Usage("this server is in no fleet: [fleet] endpoints is empty in %s", e.Config.Source),
				"see docs/fleet.md")
		}
		// Not as a member: these commands need no id of their own.
		fl, err := fleet.Open(e.Config.Fleet, e.Root, "")
		if err != nil {
			return err
		}
		defer fl.Close()
		ctx, stop := signalContext()
		defer stop()
		return f(ctx, c, e, fl)
	})
}

// memberCommand is fleet VERB MEMBER: do acts on the member, logged when
// it changed something; done and none say what happened, of the member.
func memberCommand(verb, usage string, do func(ctx context.Context, f *fleet.Fleet, id string) (bool, error), done, none string) *cli.Command {
	return &cli.Command{
		Name:      verb,
		Usage:     usage,
		ArgsUsage: "MEMBER",
		Action: fleetAction(func(ctx context.Context, c *cli.Context, e *env, f *fleet.Fleet) error {
			if c.NArg() != 1 || strings.TrimSpace(c.Args().First()) == "" {
				return host.Usage("fleet %s needs one member id: upgradectl fleet %s MEMBER", verb, verb)
			}
			id := c.Args().First()
			changed, err := do(ctx, f, id)
			if err != nil {
				return err
			}
			msg := fmt.Sprintf(none, id)
			if changed {
				msg = fmt.Sprintf(done, id)
				e.Log().Append(host.LogEntry{Action: "fleet " + verb, Scope: "cluster", Result: host.ResultSuccess,
					Message: fmt.Sprintf("%s (cluster %s)", msg, f.Config.Cluster)})
			}
			if e.JSON {
				return writeJSON(e, map[string]any{"message": msg, "changed": changed})
			}
			fmt.Fprintln(e.Out, msg)
			return nil
		}),
	}
}

// FleetStatus is what fleet status shows.
type FleetStatus struct {
	Cluster string               `json:"cluster"`
	Version fleet.ClusterVersion `json:"version"`
	Groups  []FleetGroup         `json:"groups"`
	Members []FleetMember        `json:"members"`
}

// FleetGroup is one group's slots.
type FleetGroup struct {
	Group      string   `json:"group"`
	TotalSlots uint64   `json:"total_slots"`
	Free       int      `json:"free"`
	Holders    []string `json:"holders"`
}

// FleetMember is a member's record with the slot it holds.
type FleetMember struct {
	fleet.Member
	Slot bool `json:"slot"`
}

func fleetStatus(ctx context.Context, f *fleet.Fleet) (*FleetStatus, error) {
	cv, _, err := f.ClusterVersion(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := f.Members(ctx)
	if err != nil {
		return nil, err
	}
	st := &FleetStatus{Cluster: f.Config.Cluster, Version: cv, Groups: []FleetGroup{}, Members: []FleetMember{}}
	groups := append([]string{f.Config.Group}, f.Config.Order...)
	for _, m := range ms {
		groups = append(groups, m.Group)
	}
	slices.Sort(groups)
	holds := map[string]bool{}
	for _, g := range slices.Compact(groups) {
		if g == "" {
			continue
		}
		sem, _, err := f.Semaphore(ctx, g)
		if err != nil {
			return nil, err
		}
		st.Groups = append(st.Groups, FleetGroup{Group: g, TotalSlots: sem.TotalSlots, Free: sem.Free(), Holders: sem.Holders})
		for _, h := range sem.Holders {
			holds[g+"\x00"+h] = true
		}
	}
	for _, m := range ms {
		st.Members = append(st.Members, FleetMember{Member: m, Slot: holds[m.Group+"\x00"+m.ID]})
	}
	return st, nil
}

func printFleetStatus(e *env, st *FleetStatus) {
	w := e.Out
	v := st.Version
	fmt.Fprintf(w, "cluster %s: version %s", st.Cluster, host.OrDash(v.Version))
	if v.Previous != "" {
		fmt.Fprintf(w, " (switched from %s by %s at %s)", v.Previous, v.By, stamp(v.Time))
	}
	fmt.Fprintln(w)
	for _, g := range st.Groups {
		held := ""
		if len(g.Holders) > 0 {
			held = "; held by " + strings.Join(g.Holders, ", ")
		}
		fmt.Fprintf(w, "group %s: %s, %d free%s\n", g.Group, host.Plural(int(g.TotalSlots), "slot"), g.Free, held)
	}
	other := false
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tHOST\tGROUP\tRUNNING\tACTIVE\tNEW\tSTAGE\tSTATUS\tMAINTENANCE\tSLOT\tLAST SEEN")
	for _, m := range st.Members {
		slot := "-"
		if m.Slot {
			slot = "held"
		}
		running := host.OrDash(m.Running)
		if v.Version != "" && m.Running != v.Version {
			running += "*"
			other = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", host.OneLine(m.ID), host.OneLine(host.OrDash(m.Host)), m.Group, running,
			host.OrDash(m.Active), host.OrDash(m.New), host.OrDash(m.Stage), host.OrDash(m.Status), host.OrDash(m.Maintenance), slot, seen(m.Time))
	}
	tw.Flush()
	fmt.Fprint(w, host.Plural(len(st.Members), "member"))
	if other {
		fmt.Fprint(w, "; * runs another version than the cluster's")
	}
	fmt.Fprintln(w)
}

func seen(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", stamp(t), time.Since(t).Round(time.Second))
}
