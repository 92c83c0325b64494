// Package check runs the local pre- and post-upgrade health checks: clock
// synchronisation, NTP servers, the hardware clock, free space, backups,
// failed systemd units and password hashes, and the checks callers add
// with Options.Extra (iso.keys, from package stage).
//
// Each check has a stable id, a status (pass, warn, fail, skip), a one-line
// message, structured data, and a severity that says what a failure means:
// an inhibitor blocks the upgrade, a warning does not. Checks run in
// parallel; the network checks share one timeout.
//
// Run is the whole API: the check command, the stage engine (setup runs the
// pre checks, postinstall the post checks) and the boot hook call it and
// look at Report.Inhibited.
package check

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"time"

	"upgradectl/host"
)

// Status is the outcome of one check.
type Status string

const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Severity says what a failed check means for the upgrade.
type Severity string

const (
	// Inhibitor: a failure blocks the upgrade unless waived.
	Inhibitor Severity = "inhibitor"
	// Warning: a failure is reported but does not block.
	Warning Severity = "warning"
)

// Profiles.
const (
	Pre  = "pre"
	Post = "post"
)

// Result is the outcome of one check.
type Result struct {
	ID       string   `json:"id"`
	Status   Status   `json:"status"`
	Severity Severity `json:"severity"`
	// Waived is set on a failed check whose id was accepted.
	Waived bool `json:"waived,omitempty"`
	// Message is one line for people; for a skip it says why.
	Message string `json:"message"`
	// Data is the structured detail, different for each check.
	Data     any     `json:"data,omitempty"`
	Duration float64 `json:"duration"` // seconds
}

// Blocks reports whether r stops the upgrade: a failed inhibitor that is
// not waived.
func (r Result) Blocks() bool {
	return r.Status == Fail && r.Severity == Inhibitor && !r.Waived
}

// Report is the outcome of one run.
type Report struct {
	Profile string    `json:"profile"`
	Root    string    `json:"root"`
	Config  string    `json:"config"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	// Result is host.ResultFailed when an inhibitor failed (not waived),
	// host.ResultWarning when anything else failed or warned or a failure
	// was waived, host.ResultSuccess otherwise (skips included).
	Result string `json:"result"`
	// Inhibited is set when the upgrade must not go on.
	Inhibited bool     `json:"inhibited"`
	Checks    []Result `json:"checks"`
}

// Count returns how many checks have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// Summary is one line for the log and for people.
func (r *Report) Summary() string {
	var parts []string
	var blocking, waived, failed []string
	for _, c := range r.Checks {
		switch {
		case c.Blocks():
			blocking = append(blocking, c.ID)
		case c.Status == Fail && c.Waived:
			waived = append(waived, c.ID)
		case c.Status == Fail:
			failed = append(failed, c.ID)
		}
	}
	if len(blocking) > 0 {
		parts = append(parts, fmt.Sprintf("%d inhibitor(s) failed (%s)", len(blocking), strings.Join(blocking, ", ")))
	}
	if len(failed) > 0 {
		parts = append(parts, fmt.Sprintf("%d warning check(s) failed (%s)", len(failed), strings.Join(failed, ", ")))
	}
	if len(waived) > 0 {
		parts = append(parts, fmt.Sprintf("%d failure(s) waived (%s)", len(waived), strings.Join(waived, ", ")))
	}
	for _, s := range []Status{Warn, Pass, Skip} {
		if n := r.Count(s); n > 0 {
			word := map[Status]string{Warn: "warned", Pass: "passed", Skip: "skipped"}[s]
			parts = append(parts, fmt.Sprintf("%d %s", n, word))
		}
	}
	if len(parts) == 0 {
		return "no checks run"
	}
	return strings.Join(parts, ", ")
}

// Options say what to check and where.
type Options struct {
	Root   host.Root
	Config *host.Config // nil: the embedded default
	// Profile is Pre (the default) or Post.
	Profile string
	// Only runs just these check ids, whatever the profile.
	Only []string
	// Accept waives the failure of these check ids, on top of the
	// configuration's checks.accept.
	Accept []string
	// Extra are checks from packages this one may not import, run after
	// the checks of this package.
	Extra []Extra
}

// Extra is a check that needs more than this package may import (it
// imports only host): the caller passes it in Options.Extra, as the check
// command and the stage engine pass stage.Checks (iso.keys, which reads
// OpenPGP keys).
type Extra struct {
	ID       string
	Severity Severity // on failure, unless checks.severity says otherwise
	Profiles []string // Pre, Post
	Run      func(ctx context.Context, root host.Root, cfg *host.Config) Result
}

// env is what a check gets.
type env struct {
	root    host.Root
	cfg     *host.Config
	profile string
	now     time.Time
}

// checker is one check.
type checker struct {
	id       string
	severity Severity // default severity on failure
	profiles []string
	run      func(ctx context.Context, e *env) Result
}

// checkers lists every check in report order.
var checkers = []checker{
	{"ntp.synced", Inhibitor, []string{Pre, Post}, checkNTPSynced},
	{"ntp.servers", Inhibitor, []string{Pre, Post}, checkNTPServers},
	{"clock.rtc", Warning, []string{Pre, Post}, checkRTC},
	{"disk.space", Inhibitor, []string{Pre, Post}, checkDisk},
	{"backup.recent", Inhibitor, []string{Pre}, checkBackup},
	{"systemd.failed-units", Inhibitor, []string{Pre, Post}, checkFailedUnits},
	{"auth.password-hash", Inhibitor, []string{Pre}, checkPasswordHash},
}

// IDs returns every check id in report order, those of extra last.
func IDs(extra ...Extra) []string {
	var ids []string
	for _, c := range withExtra(extra) {
		ids = append(ids, c.id)
	}
	return ids
}

// withExtra is every check in report order, those of extra last.
func withExtra(extra []Extra) []checker {
	all := slices.Clone(checkers)
	for _, x := range extra {
		all = append(all, checker{x.ID, x.Severity, x.Profiles, func(ctx context.Context, e *env) Result {
			return x.Run(ctx, e.root, e.cfg)
		}})
	}
	return all
}

// grace is how long past the shared timeout Run waits for a check that
// does not return (a hung filesystem, a stuck bus) before it reports it
// failed.
const grace = 2 * time.Second

// Run runs the checks of opts.Profile (or opts.Only) and returns the report.
// An error means the options are wrong (unknown profile or id, invalid
// severity); a check that cannot be done is a result, not an error.
func Run(ctx context.Context, opts Options) (Report, error) {
	cfg := opts.Config
	if cfg == nil {
		cfg = host.DefaultConfig()
	}
	profile := opts.Profile
	if profile == "" {
		profile = Pre
	}
	all := withExtra(opts.Extra)
	known := func(id string) bool {
		return slices.ContainsFunc(all, func(c checker) bool { return c.id == id })
	}
	var problems []string
	if profile != Pre && profile != Post {
		problems = append(problems, fmt.Sprintf("unknown profile %q (pre or post)", profile))
	}
	for _, id := range opts.Only {
		if !known(id) {
			problems = append(problems, fmt.Sprintf("unknown check %q in --only", id))
		}
	}
	accept := append(slices.Clone(cfg.Checks.Accept), opts.Accept...)
	for _, id := range accept {
		if !known(id) {
			problems = append(problems, fmt.Sprintf("unknown check %q to accept", id))
		}
	}
	severity := map[string]Severity{}
	for id, s := range cfg.Checks.Severity {
		if !known(id) {
			problems = append(problems, fmt.Sprintf("unknown check %q in checks.severity", id))
		}
		severity[id] = Severity(s)
	}
	if len(problems) > 0 {
		return Report{}, host.WithHint(host.Usage("cannot run checks: %s", strings.Join(problems, "; ")),
			"the checks are "+strings.Join(IDs(opts.Extra...), ", "))
	}

	var run []checker
	for _, c := range all {
		if len(opts.Only) > 0 {
			if slices.Contains(opts.Only, c.id) {
				run = append(run, c)
			}
		} else if slices.Contains(c.profiles, profile) {
			run = append(run, c)
		}
	}

	e := &env{root: opts.Root, cfg: cfg, profile: profile, now: time.Now()}
	rep := Report{Profile: profile, Root: opts.Root.Dir(), Config: cfg.Source, Start: e.now}
	if rep.Config == "" {
		rep.Config = "embedded default"
	}
	timeout := cfg.Checks.Timeout.Duration
	if timeout <= 0 { // a configuration built in code, not parsed
		timeout = 5 * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	type done struct {
		i int
		r Result
	}
	ch := make(chan done, len(run))
	for i, c := range run {
		go func() {
			start := time.Now()
			r := safeRun(cctx, c, e)
			r.Duration = time.Since(start).Round(time.Millisecond).Seconds()
			ch <- done{i, r}
		}()
	}
	results := make([]Result, len(run))
	got := make([]bool, len(run))
	limit := time.NewTimer(timeout + grace)
	defer limit.Stop()
wait:
	for n := 0; n < len(run); n++ {
		select {
		case d := <-ch:
			results[d.i], got[d.i] = d.r, true
		case <-limit.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	for i, c := range run {
		r := results[i]
		if !got[i] {
			r = Result{Status: Fail, Message: fmt.Sprintf("did not finish within %s", timeout+grace)}
			if ctx.Err() != nil {
				r.Message = "not finished: " + ctx.Err().Error()
			}
		}
		r.ID = c.id
		r.Severity = c.severity
		if s, ok := severity[c.id]; ok {
			r.Severity = s
		}
		r.Waived = r.Status == Fail && slices.Contains(accept, c.id)
		rep.Checks = append(rep.Checks, r)
	}
	rep.End = time.Now()
	rep.Result = host.ResultSuccess
	for _, r := range rep.Checks {
		switch {
		case r.Blocks():
			rep.Inhibited = true
			rep.Result = host.ResultFailed
		case (r.Status == Fail || r.Status == Warn) && rep.Result == host.ResultSuccess:
			rep.Result = host.ResultWarning
		}
	}
	return rep, nil
}

// safeRun runs one check; a panic becomes a failed result, never a crash.
func safeRun(ctx context.Context, c checker, e *env) (r Result) {
	defer func() {
		if p := recover(); p != nil {
			r = Result{Status: Fail, Message: fmt.Sprintf("internal error in check %s: %v", c.id, p)}
		}
	}()
	return c.run(ctx, e)
}

// unreadable is the result for a file a check could not read: a skip when
// only root may read it, a failure otherwise.
func unreadable(what string, err error) Result {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrPermission) {
		return Result{Status: Skip, Message: fmt.Sprintf("needs root to read %s", what)}
	}
	return Result{Status: Fail, Message: fmt.Sprintf("cannot read %s: %v", what, err)}
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
