package stage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"upgradectl/boot"
	"upgradectl/fleet"
	"upgradectl/host"
	"upgradectl/host/check"
)

// The engine's part in a fleet ([fleet] configured). Before a stage runs by
// hand the member publishes its record, which proves etcd answers: without
// it nothing changes and the stage exits 3. Before the first stage that
// takes the member out of service it waits for the groups before its own
// and takes a slot of its group (exit 4 when none is free, or it waits with
// --wait); switch moves the cluster version, once all members have rolled
// (exit 5 before). After every transition it publishes again, and once the
// member is back in service (roll done with its post checks, or backed out)
// it gives its slot back. The boot hook needs no etcd: it completes the
// stage, and what it could not publish or give back the next run does.

// lastCheckFile keeps the summary of the last check run, for the record.
const lastCheckFile = "last-check"

// fleetOn says whether this host is a member of a fleet.
func (a *actions) fleetOn() bool { return a.h.Config != nil && a.h.Config.Fleet.Enabled() }

// openFleet connects to the fleet, once per engine.
func (a *actions) openFleet() (*fleet.Fleet, error) {
	if a.fleet == nil {
		f, err := fleet.Open(a.h.Config.Fleet, a.h.Root, a.state)
		if err != nil {
			return nil, err
		}
		a.fleet = f
	}
	return a.fleet, nil
}

// outStage is the first stage that takes the member out of service:
// preinstall enters maintenance mode, else install replaces the files.
func outStage(cfg *host.Config) Name {
	if cfg.Stages.Maintenance {
		return Preinstall
	}
	return Install
}

// outOfService says whether a member whose stages have the statuses of
// status is out of service: from its out stage on until roll is done.
func outOfService(cfg *host.Config, status func(Name) Status) bool {
	if s := status(outStage(cfg)); s == NotStarted || s == Undone {
		return false
	}
	return status(Roll) != Done
}

func stateStatus(st *State) func(Name) Status {
	return func(n Name) Status {
		if st == nil {
			return NotStarted
		}
		return st.Stage(n).Status
	}
}

// record is this member's record for the fleet, from st (nil: no upgrade
// in progress).
func (a *actions) record(st *State) fleet.Member {
	m := fleet.Member{Host: a.hostname(), Active: ActiveVersion(a.state, a.h.Config), Maintenance: a.maintenance()}
	m.Running = m.Active
	if b, err := host.ReadSmallFile(filepath.Join(a.state, lastCheckFile)); err == nil {
		m.Checks = strings.TrimSpace(string(b))
	}
	if st == nil || st.Stage(Setup).Status == NotStarted {
		return m
	}
	m.Upgrade, m.New = st.Upgrade, st.NewVersion
	if st.Stage(Roll).Status == Done && st.NewVersion != "" {
		m.Running = st.NewVersion
	} else if st.OldVersion != "" {
		m.Running = st.OldVersion
	}
	for _, r := range st.Stages {
		if r.Status != NotStarted {
			m.Stage, m.Status = string(r.Name), string(r.Status)
		}
	}
	m.OutOfService = outOfService(a.h.Config, stateStatus(st))
	return m
}

// maintenance is "in" or "out" by maintenance mode's state under the root.
func (a *actions) maintenance() string {
	sys := a.system()
	defer sys.Close()
	if in, err := boot.InMaintenance(sys); err != nil {
		return "unknown"
	} else if in {
		return "in"
	}
	return "out"
}

// hostname is the root's /etc/hostname; on the live system, the kernel's
// when that file says nothing.
func (a *actions) hostname() string {
	if p, err := a.h.Root.Resolve("/etc/hostname"); err == nil {
		if b, err := host.ReadSmallFile(p); err == nil {
			if s := strings.TrimSpace(string(b)); s != "" {
				return host.OneLine(s)
			}
		}
	}
	if !a.h.Root.IsLive() {
		return ""
	}
	h, _ := os.Hostname()
	return h
}

// gate is what the fleet asks before stage n (its undo when undo) runs by
// hand. An error means nothing was changed.
func (a *actions) gate(ctx context.Context, st *State, n Name, undo bool, opts Options) error {
	f, err := a.openFleet()
	if err != nil {
		return err
	}
	if err := f.Publish(ctx, a.record(st)); err != nil {
		return err
	}
	// The member as it will be once n has begun.
	need := outOfService(a.h.Config, func(s Name) Status {
		switch {
		case s == n && undo:
			return Undoing
		case s == n:
			return Running
		}
		return stateStatus(st)(s)
	})
	held, err := f.Holds(ctx, f.Config.Group, f.ID)
	if err != nil {
		return err
	}
	switch {
	case need && !held:
		if !undo && n == outStage(a.h.Config) {
			if err := a.waitOrder(ctx, f, st.NewVersion, opts.Wait); err != nil {
				return err
			}
		}
		if err := f.Take(ctx, opts.Wait, func(holders []string) {
			a.say("fleet: waiting for a slot of group %s, held by %s", f.Config.Group, strings.Join(holders, ", "))
		}); err != nil {
			return err
		}
		a.say("fleet: took a slot of group %s", f.Config.Group)
	case !need && held && !undo:
		// Given back late: etcd was down when the member came back.
		if _, err := f.Release(ctx, f.Config.Group, f.ID); err != nil {
			return err
		}
		a.say("fleet: gave back the slot of group %s", f.Config.Group)
	}
	if n == Switch && !undo {
		already, err := f.Switch(ctx, st.OldVersion, st.NewVersion)
		if err != nil {
			return err
		}
		if already {
			a.say("fleet: the cluster runs version %s already", st.NewVersion)
		} else {
			a.say("fleet: switched the cluster from version %s to %s", orUnknown(st.OldVersion), st.NewVersion)
		}
	}
	return nil
}

// waitOrder waits until every member of the groups before this one in
// fleet.order has finished (rolled to v, back in service), up to wait;
// after that it is busy (exit 4) naming who has not.
func (a *actions) waitOrder(ctx context.Context, f *fleet.Fleet, v string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	said := ""
	for {
		ms, err := f.Members(ctx)
		if err != nil {
			return err
		}
		not := f.OrderBlocks(ms, v)
		if len(not) == 0 {
			return nil
		}
		msg := fmt.Sprintf("group %s waits for the groups before it (fleet.order): not finished: %s", f.Config.Group, strings.Join(not, ", "))
		if !time.Now().Before(deadline) {
			return host.WithHint(host.Busy("%s", msg), "wait with --wait DURATION; 'upgradectl fleet status' shows where each member stands")
		}
		if msg != said {
			a.say("fleet: %s", msg)
			said = msg
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *actions) say(format string, args ...any) {
	if a.h.Out != nil {
		fmt.Fprintf(a.h.Out, format+"\n", args...)
	}
}

// published tells the fleet of a transition: the record again, and the
// slot back once the member is in service. A failure is only said: the
// stage is done on this host whatever etcd says, and the next run catches
// up.
func (a *actions) published(ev Event) {
	f, err := a.openFleet()
	if err == nil {
		var st *State
		if st, err = loadState(a.state); err == nil {
			err = f.Publish(context.Background(), a.record(st))
			if err == nil && (ev.Status == Done || ev.Status == Undone) && !outOfService(a.h.Config, stateStatus(st)) {
				var was bool
				if was, err = f.Release(context.Background(), f.Config.Group, f.ID); was && err == nil {
					a.say("fleet: gave back the slot of group %s", f.Config.Group)
				}
			}
		}
	}
	if err != nil {
		a.say("warning: fleet: %s; the next run publishes it", host.OneLine(err.Error()))
	}
}

// Publish publishes this member's record after a check run or a change of
// maintenance mode (nothing without [fleet]; a failure is returned for the
// caller to say).
func Publish(h Host) error {
	a := newActions(h)
	if !a.fleetOn() {
		return nil
	}
	defer a.closeFleet()
	f, err := a.openFleet()
	if err != nil {
		return err
	}
	st, err := loadState(a.state)
	if err != nil {
		return err
	}
	return f.Publish(context.Background(), a.record(st))
}

func (a *actions) closeFleet() {
	if a.fleet != nil {
		a.fleet.Close()
		a.fleet = nil
	}
}

func openCheckFleet(root host.Root, cfg *host.Config) (*fleet.Fleet, *check.Result) {
	if cfg == nil || !cfg.Fleet.Enabled() {
		return nil, &check.Result{Status: check.Skip, Message: "no [fleet] configured"}
	}
	f, err := fleet.Open(cfg.Fleet, root, "")
	if err != nil {
		return nil, &check.Result{Status: check.Fail, Message: host.OneLine(err.Error())}
	}
	return f, nil
}

// checkFleetEtcd: the etcd cluster answers and has a leader.
func checkFleetEtcd(ctx context.Context, root host.Root, cfg *host.Config) check.Result {
	f, res := openCheckFleet(root, cfg)
	if res != nil {
		return *res
	}
	defer f.Close()
	ok, lines := f.Health(ctx)
	if !ok {
		return check.Result{Status: check.Fail, Message: "etcd has no leader or no quorum: " + strings.Join(lines, "; ")}
	}
	return check.Result{Status: check.Pass, Message: strings.Join(lines, "; ")}
}

// checkFleetVersions: every member runs the cluster version (seed 004:
// the versions of all members must match); while a rolling upgrade is in
// progress a difference is a warning.
func checkFleetVersions(ctx context.Context, root host.Root, cfg *host.Config) check.Result {
	f, res := openCheckFleet(root, cfg)
	if res != nil {
		return *res
	}
	defer f.Close()
	cv, _, err := f.ClusterVersion(ctx)
	if err == nil && cv.Version == "" {
		return check.Result{Status: check.Skip, Message: "no member has published a version yet"}
	}
	ms, err2 := f.Members(ctx)
	if err = errors.Join(err, err2); err != nil {
		return check.Result{Status: check.Fail, Message: host.OneLine(err.Error())}
	}
	var other []string
	rolling := false
	for _, m := range ms {
		if m.New != "" {
			rolling = true
		}
		if !m.Runs(cv.Version) {
			other = append(other, fmt.Sprintf("%s runs %s", m.ID, orUnknown(m.Running)))
		}
	}
	switch {
	case len(other) == 0:
		return check.Result{Status: check.Pass, Message: fmt.Sprintf("all %d members run the cluster version %s", len(ms), cv.Version)}
	case rolling:
		return check.Result{Status: check.Warn, Message: fmt.Sprintf("rolling upgrade in progress: cluster version %s; %s", cv.Version, strings.Join(other, ", "))}
	}
	return check.Result{Status: check.Fail, Message: fmt.Sprintf("members differ from the cluster version %s: %s", cv.Version, strings.Join(other, ", "))}
}

// fleetFact says which fleet member this is, for status, without asking
// etcd (status works while etcd is down).
func (a *actions) fleetFact() Fact {
	c := a.h.Config.Fleet
	id, err := fleet.MemberID(c, a.h.Root, a.state)
	if err != nil {
		return Fact{"fleet", "unknown: " + host.OneLine(err.Error())}
	}
	return Fact{"fleet", fmt.Sprintf("member %s of cluster %s, group %s (slots %d); 'upgradectl fleet status' shows every member",
		id, c.Cluster, c.Group, c.Slots)}
}
