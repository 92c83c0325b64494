package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"upgradectl/host"
)

// Handler is the work of one stage, do and undo side by side. Both must be
// idempotent and resumable: after a crash at any point, running the same
// one again completes the work.
type Handler struct {
	Do func(r *Run) error
	// Undo reverses Do, also a partial Do (a failed or interrupted
	// stage). Nil: the stage cannot be undone.
	Undo func(r *Run) error
	// Verify returns what on the host contradicts the stage being done,
	// one sentence each; nil when the host agrees with the record.
	Verify func(r *Run) []string
}

// ErrReboot is returned by a Do that has asked the host to reboot: the
// stage stays running, and the boot hook (Resume) runs Do again after the
// reboot to complete it.
var ErrReboot = errors.New("the host is rebooting")

// DefaultMaxResumes is how many automatic resumes at boot may find the
// same stage unfinished before the boot hook stops acting.
const DefaultMaxResumes = 3

// Engine runs the stages of an upgrade on one host.
type Engine struct {
	Root     host.Root
	StateDir string // the state directory on the running system
	Config   *host.Config
	Log      *host.UpgradeLog
	Handlers map[Name]Handler
	// Facts, when set, adds what status shows about the host besides the
	// stages: version lookup, maintenance mode, mounts.
	Facts func() []Fact
	// Out receives one plain line per stage event.
	Out io.Writer
	// Automatic marks a run from a boot hook.
	Automatic  bool
	MaxResumes int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Notify, when set, is told of every stage transition and of the
	// upgrade's start and end, after the state is saved (journal, metrics).
	Notify func(Event)
	// Gate, when set, is asked before a stage or its undo runs by hand
	// (not at boot), after every local rule allowed it: the fleet's slot,
	// group order and cluster-wide switch. Its error means nothing was
	// changed, and is the command's.
	Gate func(ctx context.Context, st *State, n Name, undo bool, opts Options) error
}

// Options are what a command adds to a stage run.
type Options struct {
	// Force redoes a done stage (repair), and acts even where the host
	// contradicts the record.
	Force bool
	// Vars are set in the shared state before the stage runs (setup's
	// image, install's command).
	Vars map[string]string
	// Wait is how long to wait for a fleet slot or for the groups before
	// this one; 0: refuse at once (busy).
	Wait time.Duration
}

type op int

const (
	opNone op = iota
	opDo
	opUndo
)

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) printf(format string, args ...any) {
	if e.Out != nil {
		fmt.Fprintf(e.Out, format+"\n", args...)
	}
}

func (e *Engine) maxResumes() int {
	if e.MaxResumes > 0 {
		return e.MaxResumes
	}
	return DefaultMaxResumes
}

// begin takes the state-directory lock and reads the state. Any stage found
// at work is an interrupted one (no process holds the lock but us): it is
// counted and logged once.
func (e *Engine) begin() (*State, *host.Lock, error) {
	lock, err := host.LockStateDir(e.StateDir)
	if err != nil {
		return nil, nil, err
	}
	st, err := loadState(e.StateDir)
	if err != nil {
		lock.Unlock()
		return nil, nil, err
	}
	if st != nil {
		if err := e.noteInterrupted(st); err != nil {
			lock.Unlock()
			return nil, nil, err
		}
	}
	return st, lock, nil
}

func (e *Engine) noteInterrupted(st *State) error {
	changed := false
	for i := range st.Stages {
		r := &st.Stages[i]
		if !r.active() || r.PID == 0 {
			continue
		}
		what := r.Name
		verb := "do"
		if r.Status == Undoing {
			verb = "undo"
		}
		r.Interrupted++
		r.PID = 0
		changed = true
		// What its command left running must not race this run.
		if mark := r.Data[markKey]; mark != "" {
			killMarked(mark)
			delete(r.Data, markKey)
		}
		e.Log.Append(host.LogEntry{Action: string(what), Parent: r.LogID, Scope: "server", Result: host.ResultFailed,
			Message: fmt.Sprintf("%s attempt %d was interrupted (process gone: killed, crashed or power lost); found at the next run", verb, r.Attempt)})
	}
	if !changed {
		return nil
	}
	return saveState(e.StateDir, st)
}

// Do runs stage n.
func (e *Engine) Do(ctx context.Context, n Name, opts Options) error {
	st, lock, err := e.begin()
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if st == nil {
		if n != Setup {
			return host.WithHint(host.Refused("cannot run %s: no upgrade in progress", n), "start one with 'upgradectl setup --iso IMAGE'")
		}
		st = newState(e.now())
	}
	if err := e.allowDo(st, n, opts); err != nil {
		return err
	}
	return e.byHand(ctx, st, n, false, opts)
}

// Undo undoes stage n: only the latest stage not undone, only before switch.
func (e *Engine) Undo(ctx context.Context, n Name, opts Options) error {
	st, lock, err := e.begin()
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if st == nil {
		return host.Refused("cannot undo %s: no upgrade in progress", n)
	}
	if err := e.allowUndo(st, n); err != nil {
		return err
	}
	return e.byHand(ctx, st, n, true, opts)
}

// Continue runs the next action, whatever it is: it completes an
// interrupted stage (or its interrupted undo), retries a failed one, or
// runs the next stage. It returns the stage it acted on.
func (e *Engine) Continue(ctx context.Context, opts Options) (Name, error) {
	st, lock, err := e.begin()
	if err != nil {
		return "", err
	}
	defer lock.Unlock()
	if st == nil {
		return "", host.WithHint(host.Refused("cannot continue: no upgrade in progress"), "start one with 'upgradectl setup --iso IMAGE'")
	}
	n, o := next(st)
	switch o {
	case opNone:
		// Clean is done but the archive was cut short.
		return Clean, e.archive(st)
	case opUndo:
		return n, e.byHand(ctx, st, n, true, opts)
	}
	if err := e.allowDo(st, n, opts); err != nil {
		return n, err
	}
	return n, e.byHand(ctx, st, n, false, opts)
}

// Resume is the boot hook's action: it completes a stage (or an undo) that
// a reboot, a crash or a power loss cut short, and does nothing else. After
// MaxResumes resumes at boot without a stage finishing it refuses, so that a
// stage that reboots the host every time cannot loop forever.
func (e *Engine) Resume(ctx context.Context) (Name, error) {
	st, lock, err := e.begin()
	if err != nil {
		return "", err
	}
	defer lock.Unlock()
	if st == nil {
		return "", nil
	}
	var rec *Record
	for i := range st.Stages {
		if st.Stages[i].active() {
			rec = &st.Stages[i]
		}
	}
	if rec == nil {
		if _, o := next(st); o == opNone {
			return Clean, e.archive(st)
		}
		return "", nil
	}
	n := rec.Name
	if st.Resumes >= e.maxResumes() {
		msg := fmt.Sprintf("not resuming %s at boot: %d resumes at boot have not finished it (a reboot loop?)", n, st.Resumes)
		e.Log.Append(host.LogEntry{Action: "resume " + string(n), Parent: rec.LogID, Scope: "server", Result: host.ResultFailed, Message: msg})
		return n, host.WithHint(host.Refused("%s", msg),
			fmt.Sprintf("look at 'upgradectl log', then run 'upgradectl continue' or 'upgradectl undo %s' by hand", n))
	}
	st.Resumes++
	if err := saveState(e.StateDir, st); err != nil {
		return n, err
	}
	if rec.Status == Undoing {
		if err := e.checkRepair(st, index(n)-1, false); err != nil {
			return n, err
		}
		return n, e.runUndo(ctx, st, n)
	}
	if err := e.checkRepair(st, index(n), false); err != nil {
		return n, err
	}
	return n, e.runDo(ctx, st, n, Options{})
}

// byHand runs stage n (its undo when undo) for a command, once allowed:
// the done stages before it are held to the host, the gate (the fleet) is
// asked, then it runs.
func (e *Engine) byHand(ctx context.Context, st *State, n Name, undo bool, opts Options) error {
	upto := index(n)
	if undo {
		upto--
	}
	if err := e.checkRepair(st, upto, opts.Force); err != nil {
		return err
	}
	if e.Gate != nil {
		if err := e.Gate(ctx, st, n, undo, opts); err != nil {
			return err
		}
	}
	if undo {
		return e.runUndo(ctx, st, n)
	}
	return e.runDo(ctx, st, n, opts)
}

// next is the preferred next action on st.
func next(st *State) (Name, op) {
	for _, r := range st.Stages {
		switch r.Status {
		case Done:
			continue
		case Undoing, UndoFailed:
			return r.Name, opUndo
		default:
			return r.Name, opDo
		}
	}
	return "", opNone
}

func (e *Engine) allowDo(st *State, n Name, opts Options) error {
	i := index(n)
	for _, r := range st.Stages[:i] {
		if r.Status != Done {
			return e.refuse(st, "cannot run %s: %s is %s", n, r.Name, r.Status)
		}
	}
	rec := st.Stage(n)
	switch rec.Status {
	case Done:
		if !opts.Force {
			return e.refuse(st, "cannot run %s: it is done", n)
		}
	case Undoing, UndoFailed:
		return host.WithHint(host.Refused("cannot run %s: its undo is unfinished (%s)", n, rec.Status),
			fmt.Sprintf("finish it with 'upgradectl undo %s'", n))
	}
	for _, r := range st.Stages[i+1:] {
		if r.Status != NotStarted && r.Status != Undone {
			return e.refuse(st, "cannot run %s: %s is %s", n, r.Name, r.Status)
		}
	}
	if n == Setup && (rec.Status == Running || rec.Status == Failed || rec.Status == Done) {
		if img, ok := opts.Vars["iso"]; ok && st.Vars["iso"] != "" && img != st.Vars["iso"] {
			return host.WithHint(host.Refused("cannot run setup with %s: setup with %s is %s", img, st.Vars["iso"], rec.Status),
				"undo it first with 'upgradectl undo setup', or finish it with 'upgradectl continue'")
		}
	}
	return nil
}

func (e *Engine) allowUndo(st *State, n Name) error {
	i := index(n)
	if e.Handlers[n].Undo == nil {
		return host.Refused("cannot undo %s: %s has no undo (there is no undo after switch)", n, n)
	}
	if sw := st.Stage(Switch); sw.Status != NotStarted && sw.Status != Undone {
		return host.Refused("cannot undo %s: switch is %s, and there is no undo after switch", n, sw.Status)
	}
	rec := st.Stage(n)
	if rec.Status == NotStarted || rec.Status == Undone {
		return e.refuse(st, "cannot undo %s: it is %s", n, rec.Status)
	}
	for j := len(st.Stages) - 1; j > i; j-- {
		r := st.Stages[j]
		if r.Status != NotStarted && r.Status != Undone {
			return host.WithHint(host.Refused("cannot undo %s: %s is %s; stages are undone in reverse order", n, r.Name, r.Status),
				fmt.Sprintf("undo %s first: 'upgradectl undo %s'", r.Name, r.Name))
		}
	}
	return nil
}

// refuse is a refusal with the next action as its hint.
func (e *Engine) refuse(st *State, format string, args ...any) error {
	return host.WithHint(host.Refused(format, args...), "next: "+nextText(st))
}

// checkRepair verifies the done stages up to index upto against the host.
// Where the host contradicts the record the upgrade needs manual repair:
// the disagreements are recorded for status and the action is refused,
// unless forced.
func (e *Engine) checkRepair(st *State, upto int, force bool) error {
	bad := e.verify(st, upto)
	if force || len(bad) == 0 {
		if len(st.Repair) > 0 {
			st.Repair = nil
			return saveState(e.StateDir, st)
		}
		return nil
	}
	st.Repair = bad
	if err := saveState(e.StateDir, st); err != nil {
		return err
	}
	e.Log.Append(host.LogEntry{Action: "verify", Parent: st.LogID, Scope: "server", Result: host.ResultFailed,
		Message: "needs manual repair: " + strings.Join(bad, "; ")})
	more := ""
	if len(bad) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(bad)-1)
	}
	return host.WithHint(host.Refused("the host needs manual repair: %s%s", bad[0], more),
		"'upgradectl status' lists what disagrees; redo the stage with 'upgradectl STAGE --force' or act anyway with --force")
}

func (e *Engine) verify(st *State, upto int) []string {
	// A stage left unfinished (interrupted, failed, or its undo) has
	// changed the host half-way, often what earlier stages made (clean
	// removes setup's tagged files, undo install uses them up): the host
	// is only held to the record at rest, and the unfinished stage's rerun
	// or undo, being idempotent, finishes the change.
	for _, r := range st.Stages {
		if r.Status == Running || r.Status == Failed || r.Status == Undoing || r.Status == UndoFailed {
			return nil
		}
	}
	var bad []string
	for i := 0; i <= upto && i < len(st.Stages); i++ {
		r := &st.Stages[i]
		h := e.Handlers[r.Name]
		if r.Status != Done || h.Verify == nil {
			continue
		}
		for _, s := range h.Verify(e.newRun(context.Background(), st, r, false)) {
			bad = append(bad, fmt.Sprintf("%s is done but %s", r.Name, s))
		}
	}
	return bad
}

func (e *Engine) newRun(ctx context.Context, st *State, rec *Record, undo bool) *Run {
	return &Run{Ctx: ctx, Stage: rec.Name, Undoing: undo, Root: e.Root, StateDir: e.StateDir, Config: e.Config,
		State: st, Automatic: e.Automatic, Out: e.Out, e: e, rec: rec}
}

func (e *Engine) runDo(ctx context.Context, st *State, n Name, opts Options) error {
	h, ok := e.Handlers[n]
	if !ok || h.Do == nil {
		return host.CannotRun("cannot run %s: no action for it in this build", n)
	}
	rec := st.Stage(n)
	start := e.now()
	fresh := n == Setup && (rec.Status == NotStarted || rec.Status == Undone)
	if fresh {
		// A new upgrade begins.
		// Only the image carries over from an upgrade that was undone
		// (setup retried without --iso); nothing else of it does.
		fresh := newState(start)
		if _, given := opts.Vars[VarISO]; !given {
			for _, k := range []string{VarISO, VarSums, VarMD5, VarSHA256Digest} {
				if v := st.Vars[k]; v != "" {
					fresh.Vars[k] = v
				}
			}
		}
		*st = *fresh
		st.OldVersion = ActiveVersion(e.StateDir, e.Config)
		ent, err := e.Log.Append(host.LogEntry{Action: "upgrade", Scope: "server", Result: host.ResultStarted,
			Message: fmt.Sprintf("upgrade %s from version %s", st.Upgrade, orUnknown(st.OldVersion))})
		if err != nil {
			return err
		}
		st.LogID = ent.ID
		rec = st.Stage(n)
	}
	for k, v := range opts.Vars {
		if v == "" {
			delete(st.Vars, k)
		} else {
			st.Vars[k] = v
		}
	}
	rec.Status = Running
	rec.Attempt++
	rec.Started, rec.Ended, rec.Error = start, time.Time{}, ""
	rec.PID = os.Getpid()
	if !e.Automatic {
		st.Resumes = 0
	}
	ent, err := e.Log.Append(host.LogEntry{Action: string(n), Parent: st.LogID, Start: start, End: start, Scope: "server",
		Result: host.ResultStarted, Message: fmt.Sprintf("attempt %d", rec.Attempt)})
	if err != nil {
		return err
	}
	rec.LogID = ent.ID
	// Recorded before acting.
	if err := saveState(e.StateDir, st); err != nil {
		return err
	}
	if fresh {
		e.notify(KindUpgradeStarted, st, nil, fmt.Sprintf("upgradectl: upgrade %s from version %s started", st.Upgrade, orUnknown(st.OldVersion)))
	}
	e.notify(KindStage, st, rec, "")
	e.printf("%s: running (attempt %d)", n, rec.Attempt)
	r := e.newRun(ctx, st, rec, false)
	err = e.runHooks(r, "pre", nil)
	if err == nil {
		err = h.Do(r)
		if errors.Is(err, ErrReboot) {
			rec.PID = 0
			if err := r.Set(waitingKey, "reboot"); err != nil {
				return err
			}
			e.Log.Append(host.LogEntry{Action: string(n), Parent: rec.LogID, Scope: "server", Result: host.ResultSuccess,
				Message: "rebooting; the boot hook completes the stage"})
			e.notify(KindStage, st, rec, "")
			e.printf("%s: rebooting; the boot hook completes the stage after the reboot", n)
			return nil
		}
	}
	if err == nil {
		err = e.runHooks(r, "post", nil)
	}
	end := e.now()
	rec.Ended, rec.PID = end, 0
	delete(rec.Data, waitingKey)
	if err != nil {
		e.runHooks(r, "fail", err)
		rec.Status, rec.Error = Failed, oneLine(err.Error())
		if serr := saveState(e.StateDir, st); serr != nil {
			return serr
		}
		e.Log.Append(host.LogEntry{Action: string(n), Parent: rec.LogID, Start: start, End: end, Scope: "server",
			Result: host.ResultFailed, Message: "UPGRADE_OPERATION_FAILED: " + rec.Error})
		e.notifyFailed(st, rec, string(n))
		e.printf("%s: failed: %s", n, rec.Error)
		hint := fmt.Sprintf("fix the cause and run 'upgradectl %s' again", n)
		if undoable(n) {
			hint += fmt.Sprintf(", or back it out with 'upgradectl undo %s'", n)
		}
		return failure(fmt.Sprintf("%s failed", n), err, hint)
	}
	rec.Status = Done
	st.Resumes = 0
	if err := saveState(e.StateDir, st); err != nil {
		return err
	}
	e.Log.Append(host.LogEntry{Action: string(n), Parent: rec.LogID, Start: start, End: end, Scope: "server",
		Result: host.ResultSuccess, Message: "done"})
	e.notify(KindStage, st, rec, "")
	e.printf("%s: done in %s", n, end.Sub(start).Round(time.Millisecond))
	if n == Clean {
		return e.archive(st)
	}
	return nil
}

func (e *Engine) runUndo(ctx context.Context, st *State, n Name) error {
	h := e.Handlers[n]
	rec := st.Stage(n)
	start := e.now()
	rec.Status = Undoing
	rec.Attempt++
	rec.Started, rec.Ended, rec.Error = start, time.Time{}, ""
	rec.PID = os.Getpid()
	if !e.Automatic {
		st.Resumes = 0
	}
	ent, err := e.Log.Append(host.LogEntry{Action: "undo " + string(n), Parent: st.LogID, Start: start, End: start,
		Scope: "server", Result: host.ResultStarted, Message: fmt.Sprintf("attempt %d", rec.Attempt)})
	if err != nil {
		return err
	}
	rec.LogID = ent.ID
	if err := saveState(e.StateDir, st); err != nil {
		return err
	}
	e.notify(KindStage, st, rec, "")
	e.printf("undo %s: running", n)
	err = h.Undo(e.newRun(ctx, st, rec, true))
	end := e.now()
	rec.Ended, rec.PID = end, 0
	if err != nil {
		rec.Status, rec.Error = UndoFailed, oneLine(err.Error())
		if serr := saveState(e.StateDir, st); serr != nil {
			return serr
		}
		e.Log.Append(host.LogEntry{Action: "undo " + string(n), Parent: rec.LogID, Start: start, End: end, Scope: "server",
			Result: host.ResultFailed, Message: "UPGRADE_OPERATION_FAILED: " + rec.Error})
		e.notifyFailed(st, rec, "undo "+string(n))
		e.printf("undo %s: failed: %s", n, rec.Error)
		return failure(fmt.Sprintf("undo %s failed", n), err, fmt.Sprintf("fix the cause and run 'upgradectl undo %s' again", n))
	}
	rec.Status, rec.Data = Undone, nil
	st.Resumes = 0
	if err := saveState(e.StateDir, st); err != nil {
		return err
	}
	e.Log.Append(host.LogEntry{Action: "undo " + string(n), Parent: rec.LogID, Start: start, End: end, Scope: "server",
		Result: host.ResultSuccess, Message: "undone"})
	e.notify(KindStage, st, rec, "")
	if n == Setup {
		e.notify(KindUpgradeUndone, st, rec, fmt.Sprintf("upgradectl: upgrade %s undone: version %s stays", st.Upgrade, orUnknown(st.OldVersion)))
	}
	e.printf("undo %s: done in %s", n, end.Sub(start).Round(time.Millisecond))
	return nil
}

const waitingKey = "waiting"

func orUnknown(v string) string {
	if v == "" {
		return "(unknown)"
	}
	return v
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	return s
}

// failure is a failed stage's error: its own kind (bad when it has none)
// and a hint that says how to retry or back out.
func failure(what string, err error, hint string) error {
	kind := host.KindOf(err)
	if kind == 0 {
		kind = host.KindBad
	}
	// The cause's own hint says what to fix first ("run 'upgradectl tag
	// disable' first"); the stage's hint says how to go on after.
	if h := host.HintOf(err); h != "" {
		hint = h + "; then " + hint
	}
	return &host.Error{Kind: kind, Err: fmt.Errorf("%s: %w", what, err), Hint: hint}
}
