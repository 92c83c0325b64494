package boot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"upgradectl/host"
)

// EnterOptions are Enter's choices.
type EnterOptions struct {
	// Message is the banner and login-block text; "" for the
	// configuration's maintenance.message.
	Message string
	// Reboot makes the host boot into maintenance mode instead of
	// isolating the maintenance target now.
	Reboot bool
	// Locked says the caller already holds the state-directory lock.
	Locked bool
}

// ExitOptions are Exit's choices.
type ExitOptions struct {
	// Reboot makes the host reboot into its previous default target
	// instead of isolating it now.
	Reboot bool
	// Locked says the caller already holds the state-directory lock.
	Locked bool
}

// Outcome says what Enter or Exit did.
type Outcome struct {
	// Live is true when systemd acted now (isolate or reboot); false when
	// only the files under the root changed, for the next boot.
	Live bool `json:"live"`
	// Target is the target isolated now, or the one the next boot starts.
	Target string `json:"target"`
	// Rebooting is true when a reboot was queued.
	Rebooting bool `json:"rebooting"`
	// Already is true when there was nothing to do (Exit when out).
	Already bool `json:"already,omitempty"`
	// Notes are plain sentences for the operator.
	Notes []string `json:"notes,omitempty"`
}

func (o *Outcome) note(format string, args ...any) {
	o.Notes = append(o.Notes, fmt.Sprintf(format, args...))
}

// summary is the upgrade log's message for o.
func (o *Outcome) summary(target string) string {
	switch {
	case o == nil:
		return ""
	case o.Target != "":
		target = o.Target
	}
	switch {
	case o.Rebooting:
		return "rebooting into " + target
	case o.Live:
		return target
	}
	return target + " at the next boot (files only)"
}

const nextBootNote = "systemd does not run %s: the change takes effect at the next boot"

// Enter puts the host into maintenance mode: it records what Exit needs
// (the default target, the banner files as they are), makes the
// maintenance target the default, puts up the banner, blocks non-root
// logins, tells logged-in users, and isolates the maintenance target, or
// with Reboot reboots into it. Running it again while in maintenance
// completes what a crash left undone and keeps the first originals.
func Enter(ctx context.Context, s *System, opts EnterOptions) (*Outcome, error) {
	start := time.Now()
	o, err := enter(ctx, s, opts)
	s.logResult("maintenance enter", start, err, o.summary(TargetUnit))
	return o, err
}

func enter(ctx context.Context, s *System, opts EnterOptions) (*Outcome, error) {
	unlock, st, sd, err := begin(s, opts.Locked)
	if err != nil {
		return nil, err
	}
	defer unlock()
	live := sd != nil
	if !unitsInstalled(s.Root) {
		if _, err := Install(ctx, s, InstallOptions{}); err != nil {
			return nil, err
		}
		s.printf("installed the boot units")
	}
	msg := opts.Message
	if msg == "" && s.Config != nil {
		msg = s.Config.Maintenance.Message
	}
	if msg == "" {
		msg = "SYSTEM SOFTWARE UPDATE IN PROGRESS"
	}
	if !st.In {
		saved := map[string]SavedFile{}
		paths := append([]string{defaultTargetLink}, bannerFiles...)
		if live {
			paths = append(paths, nologinPath)
		}
		for _, p := range paths {
			f, err := saveFile(s.Root, p)
			if err != nil {
				return nil, host.CannotRun("cannot enter maintenance mode: %v", err)
			}
			saved[p] = f
		}
		prev := defaultTarget(s.Root)
		if prev == TargetUnit || prev == "" {
			prev = fallbackTarget
		}
		*st = State{In: true, Since: time.Now().UTC(), Message: msg, Saved: saved, PreviousTarget: prev}
	} else if opts.Message != "" {
		st.Message = opts.Message
	}
	if live {
		// The caller is at work in this boot: the resume hook, which
		// the isolate below starts, leaves this boot to it.
		st.BootID = bootID()
	}
	// The state comes first: from here on, Exit knows how to undo.
	if err := saveState(s, st); err != nil {
		return nil, err
	}
	if err := setDefaultTarget(s.Root, TargetUnit); err != nil {
		return nil, err
	}
	// systemd must see default.target as an alias of the maintenance
	// target before it loads it, or the load fails ("File exists").
	if err := s.reload(ctx); err != nil {
		return nil, err
	}
	if err := putBanner(s, st); err != nil {
		return nil, err
	}
	o := &Outcome{Live: live, Target: TargetUnit}
	if !live {
		o.note(nextBootNote+" (it boots into %s)", s.Root.Dir(), TargetUnit)
		if opts.Reboot {
			o.note("not rebooting: reboot the host yourself to enter maintenance mode")
		}
		return o, nil
	}
	if opts.Reboot {
		tellUsers(s, st.Message+"\nThe system is going down for a reboot into maintenance mode NOW.")
		if err := sd.Reboot(ctx); err != nil {
			return o, host.CannotRun("%v", err)
		}
		o.Rebooting = true
		return o, nil
	}
	tellUsers(s, st.Message+"\nThe system is now in maintenance mode: applications are being stopped.")
	if err := sd.Isolate(ctx, TargetUnit); err != nil {
		return o, host.CannotRun("%v", err)
	}
	// Stopping systemd-user-sessions or a unit's ExecStop may have
	// rewritten /run/nologin meanwhile: put ours back.
	if err := putNologin(s, st); err != nil {
		return o, err
	}
	return o, nil
}

// begin takes the lock (unless the caller holds it), reads the state and,
// on a live system, connects to systemd (nil otherwise).
func begin(s *System, locked bool) (unlock func(), st *State, sd systemd, err error) {
	unlock = func() {}
	if !locked {
		l, err := s.lock()
		if err != nil {
			return nil, nil, nil, err
		}
		unlock = func() { l.Unlock() }
	}
	if st, err = loadState(s); err == nil && s.Live() {
		sd, err = s.systemd()
	}
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return unlock, st, sd, nil
}

// Exit takes the host out of maintenance mode and undoes Enter exactly:
// the default target link, /etc/issue and /etc/motd as they were (bytes,
// mode, owner), the login block removed, users told, and the previous
// default target isolated now, or with Reboot reached by a reboot. Run
// when the host is not in maintenance it repairs leftovers (default target
// still the maintenance target, the maintenance target still active).
func Exit(ctx context.Context, s *System, opts ExitOptions) (*Outcome, error) {
	start := time.Now()
	o, err := exit(ctx, s, opts)
	if o != nil && o.Already && err == nil {
		return o, nil
	}
	s.logResult("maintenance exit", start, err, o.summary(""))
	return o, err
}

func exit(ctx context.Context, s *System, opts ExitOptions) (*Outcome, error) {
	unlock, st, sd, err := begin(s, opts.Locked)
	if err != nil {
		return nil, err
	}
	defer unlock()
	live := sd != nil
	o := &Outcome{Live: live}
	if !st.In {
		o.Already = true
		o.note("not in maintenance mode")
		if defaultTarget(s.Root) == TargetUnit {
			// The state was lost: do not leave the host booting into
			// maintenance.
			if err := setDefaultTarget(s.Root, fallbackTarget); err != nil {
				return o, err
			}
			o.Already = false
			o.note("default.target pointed at %s without a maintenance state: set it to %s", TargetUnit, fallbackTarget)
		}
	} else {
		if err := restoreAll(s, st, o); err != nil {
			return o, err
		}
	}
	if err := s.reload(ctx); err != nil {
		return o, err
	}
	o.Target = defaultTarget(s.Root)
	if o.Target == "" {
		o.Target = fallbackTarget
	}
	wasIn := st.In
	if st.In {
		*st = State{Exited: time.Now().UTC(), LastResume: st.LastResume, LastResumeResult: st.LastResumeResult,
			LastResumeError: st.LastResumeError}
		if err := saveState(s, st); err != nil {
			return o, err
		}
	}
	if !live {
		if wasIn || !o.Already {
			o.note(nextBootNote+" (it boots into %s)", s.Root.Dir(), o.Target)
		}
		if opts.Reboot {
			o.note("not rebooting: reboot the host yourself to leave maintenance mode")
		}
		return o, nil
	}
	active, err := sd.ActiveState(ctx, TargetUnit)
	if err != nil {
		return o, host.CannotRun("%v", err)
	}
	inTarget := active == "active" || active == "activating"
	if !inTarget && !opts.Reboot {
		if !wasIn {
			return o, nil
		}
		// The kernel command line sent this boot elsewhere (a rescue
		// shell): stay where the operator is.
		if u := liveBootOverride(); u != "" && u != TargetUnit {
			o.note("this boot's kernel command line chose %s: staying there; the next boot goes to %s", u, o.Target)
			return o, nil
		}
		// Otherwise an isolate that failed half-way may have stopped
		// the applications: go back to the default target below.
	}
	o.Already = false
	if opts.Reboot {
		tellUsers(s, "Maintenance mode is over: the system is going down for a reboot NOW.")
		if err := sd.Reboot(ctx); err != nil {
			return o, host.CannotRun("%v", err)
		}
		o.Rebooting = true
		return o, nil
	}
	if err := sd.Isolate(ctx, o.Target); err != nil {
		return o, host.CannotRun("%v", err)
	}
	tellUsers(s, "Maintenance mode is over: logins are allowed again.")
	return o, nil
}

// restoreAll puts back every file Enter saved, except a banner file the
// upgrade replaced meanwhile. /run/nologin is put back
// only in the boot that saved it (it is on a tmpfs); in a later boot it is
// removed.
func restoreAll(s *System, st *State, o *Outcome) error {
	var errs []string
	live := s.Live()
	for _, p := range append(append([]string{}, bannerFiles...), defaultTargetLink) {
		if bannerReplaced(s, st, p) {
			o.note("kept %s: it was replaced during maintenance mode", p)
			continue
		}
		f, ok := st.Saved[p]
		if !ok {
			if p == defaultTargetLink {
				if err := setDefaultTarget(s.Root, fallbackTarget); err != nil {
					errs = append(errs, err.Error())
				}
			}
			continue
		}
		if err := restoreFile(s.Root, p, f); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if live {
		f, ok := st.Saved[nologinPath]
		if !ok || st.BootID != bootID() {
			f = SavedFile{Kind: kindAbsent}
		}
		if err := restoreFile(s.Root, nologinPath, f); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return host.CannotRun("cannot leave maintenance mode: %s", strings.Join(errs, "; "))
	}
	return nil
}
