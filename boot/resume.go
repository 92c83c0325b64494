package boot

import (
	"context"
	"fmt"
	"sync"
	"time"

	"upgradectl/host"
	"upgradectl/host/check"
)

// ResumeAction is the pending upgrade work that the boot hook runs at every
// boot into maintenance mode. It gets the System the hook runs on (root,
// state directory, configuration, Out for the journal) and must be safe to
// run again after a crash or reboot in its middle. It is run without the
// state-directory lock held, so it can take the lock itself. A non-nil error
// counts as a failed resume for the boot-loop guard.
type ResumeAction func(ctx context.Context, s *System) error

var (
	actionMu   sync.Mutex
	actionName = checkPostName
	action     ResumeAction
)

// SetResumeAction makes a the action `boot resume` runs, named name in the
// log and the journal ("stage install"). The stage engine calls it from its
// init; until it does, the action is the post-upgrade health checks.
func SetResumeAction(name string, a ResumeAction) {
	actionMu.Lock()
	defer actionMu.Unlock()
	actionName, action = name, a
}

func currentAction() (string, ResumeAction) {
	actionMu.Lock()
	defer actionMu.Unlock()
	if action == nil {
		return checkPostName, checkPost
	}
	return actionName, action
}

const checkPostName = "check post"

// checksFirst runs the post checks, then act if they pass
// (maintenance.resume_checks).
func checksFirst(act ResumeAction) ResumeAction {
	return func(ctx context.Context, s *System) error {
		if err := checkPost(ctx, s); err != nil {
			return err
		}
		return act(ctx, s)
	}
}

// checkPost is the resume action until the stage engine sets its own: the
// post-upgrade health checks, recorded in the upgrade log like `upgradectl
// check post`. An inhibitor that fails fails the resume.
func checkPost(ctx context.Context, s *System) error {
	rep, err := check.Run(ctx, check.Options{Root: s.Root, Config: s.Config, Profile: check.Post, Extra: s.Checks})
	if err != nil {
		return err
	}
	if _, err := check.Log(s.log(), rep, 0); err != nil {
		s.printf("warning: post checks not recorded in the upgrade log: %v", err)
	}
	for _, r := range rep.Checks {
		s.printf("  %s: %s: %s", r.ID, r.Status, r.Message)
	}
	if rep.Inhibited {
		return fmt.Errorf("post checks: %s", rep.Summary())
	}
	return nil
}

// ResumeOptions are Resume's choices.
type ResumeOptions struct {
	// Reset clears the boot-loop guard's count first (the operator fixed
	// the cause) and implies Now.
	Reset bool
	// Now acts even in the boot that entered maintenance mode.
	Now bool
}

// ResumeReport says what Resume did.
type ResumeReport struct {
	Acted    bool   `json:"acted"`
	Action   string `json:"action,omitempty"`
	Result   string `json:"result"` // "success", "failed", "skipped", "halted"
	Reason   string `json:"reason,omitempty"`
	Failures int    `json:"failures"`
}

// lockWait is how long Resume waits for another upgradectl holding the
// state-directory lock (an operator's command at boot).
const lockWait = 5 * time.Minute

// Resume is the boot hook (upgradectl-resume.service runs `upgradectl
// --automatic boot resume`). While the host is in maintenance mode it puts
// the login block and banner back, then runs the pending action and records
// its outcome in the state, the upgrade log and on Out (the journal). It
// does nothing when the host is not in maintenance, in the boot that
// entered maintenance (unless opts.Now), or when the kernel command line
// chose another unit for this boot (the operator asked for that boot).
// After MaxResumeFailures failures in a row it stops acting: the banner says
// that manual intervention is needed and the error is of KindRefused.
func Resume(ctx context.Context, s *System, opts ResumeOptions) (*ResumeReport, error) {
	st, err := loadState(s)
	if err != nil {
		return nil, err
	}
	if !st.In {
		return &ResumeReport{Result: "skipped", Reason: "not in maintenance mode"}, nil
	}
	if !opts.Now && !opts.Reset && st.BootID != "" && st.BootID == bootID() {
		return &ResumeReport{Result: "skipped", Reason: "maintenance mode was entered in this boot: the upgrade continues after the next reboot"}, nil
	}
	if s.Live() {
		if u := liveBootOverride(); u != "" && u != TargetUnit {
			r := &ResumeReport{Result: "skipped", Reason: fmt.Sprintf("the kernel command line chose %s for this boot", u)}
			s.logResult("boot resume", time.Now(), nil, "skipped: "+r.Reason)
			return r, nil
		}
	}
	lock, err := lockWaiting(ctx, s)
	if err != nil {
		return nil, err
	}
	defer func() { lock.Unlock() }()
	if st, err = loadState(s); err != nil {
		return nil, err
	}
	if !st.In {
		return &ResumeReport{Result: "skipped", Reason: "not in maintenance mode"}, nil
	}
	if opts.Reset {
		st.ResumeFailures, st.Halted = 0, ""
	}
	if st.ResumeFailures >= MaxResumeFailures && st.Halted == "" {
		st.Halted = fmt.Sprintf("%d failed resumes in a row", st.ResumeFailures)
	}
	name, act := currentAction()
	if s.Config != nil && s.Config.Maintenance.ResumeChecks && name != checkPostName {
		name, act = checkPostName+", "+name, checksFirst(act)
	}
	r := &ResumeReport{Action: name, Failures: st.ResumeFailures}
	if st.Halted != "" {
		// The guard holds: say so everywhere, do nothing else.
		if err := saveState(s, st); err != nil {
			return nil, err
		}
		if err := putBanner(s, st); err != nil {
			return nil, err
		}
		r.Result, r.Reason = "halted", st.Halted
		err := host.WithHint(host.Refused("cannot resume the upgrade: stopped by the boot-loop guard after %s (last error: %s)", st.Halted, st.LastResumeError),
			"fix the cause, then 'upgradectl boot resume --reset', or leave with 'upgradectl maintenance exit'")
		s.logResult("boot resume", time.Now(), err, name)
		return r, err
	}
	// Count the attempt as a failure before acting: a crash or a hang
	// that ends in a reboot is one too.
	start := time.Now()
	st.ResumeFailures++
	st.LastResume, st.LastResumeResult, st.LastResumeError = start.UTC(), host.ResultStarted, ""
	if err := saveState(s, st); err != nil {
		return nil, err
	}
	if err := putBanner(s, st); err != nil {
		return nil, err
	}
	s.printf("resuming the upgrade: %s (attempt %d of %d)", name, st.ResumeFailures, MaxResumeFailures)
	lock.Unlock()
	actErr := act(ctx, s)
	if lock, err = lockWaiting(ctx, s); err != nil {
		return nil, err
	}
	if st, err = loadState(s); err != nil {
		return nil, err
	}
	r.Acted = true
	if actErr == nil {
		st.ResumeFailures, st.LastResumeResult = 0, host.ResultSuccess
		r.Result, r.Failures = "success", 0
		s.printf("resumed: %s succeeded", name)
	} else {
		st.LastResumeResult, st.LastResumeError = host.ResultFailed, actErr.Error()
		r.Result, r.Reason, r.Failures = "failed", actErr.Error(), st.ResumeFailures
		s.printf("resume failed (%d of %d): %v", st.ResumeFailures, MaxResumeFailures, actErr)
		if st.ResumeFailures >= MaxResumeFailures && st.In {
			st.Halted = fmt.Sprintf("%d failed resumes in a row", st.ResumeFailures)
			s.printf("the boot-loop guard stops the resume hook: manual intervention is needed")
		}
	}
	// Also when the action left maintenance (the last stage): the state
	// then tells how the last resume went.
	if err := saveState(s, st); err != nil {
		return r, err
	}
	if st.In {
		if err := putBanner(s, st); err != nil {
			return r, err
		}
	}
	if actErr != nil {
		actErr = host.Bad("cannot resume the upgrade: %s failed: %v", name, actErr)
	}
	s.logResult("boot resume", start, actErr, name)
	return r, actErr
}

// lockWaiting takes the state-directory lock, waiting while another
// upgradectl holds it.
func lockWaiting(ctx context.Context, s *System) (*host.Lock, error) {
	deadline := time.Now().Add(lockWait)
	for {
		l, err := s.lock()
		if err == nil || host.KindOf(err) != host.KindBusy || time.Now().After(deadline) {
			return l, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// Nologin re-creates /run/nologin (and the banner) while the host is in
// maintenance mode; upgradectl-nologin.service runs it at boot, after
// systemd-user-sessions removed the file and before the gettys and sshd
// take logins. It takes no lock (Enter may hold it while it isolates the
// target that starts this) and is a no-op outside maintenance.
func Nologin(ctx context.Context, s *System) (bool, error) {
	st, err := loadState(s)
	if err != nil || !st.In {
		return false, err
	}
	if !s.Live() {
		return false, nil
	}
	return true, putNologin(s, st)
}
