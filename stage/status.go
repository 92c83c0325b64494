package stage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"upgradectl/host"
)

// Fact is one line of what status shows about the host besides the
// stages (version lookup, maintenance mode, a mount).
type Fact struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// StageStatus is one stage as status shows it.
type StageStatus struct {
	Name    Name      `json:"name"`
	Status  Status    `json:"status"`
	Attempt int       `json:"attempt,omitempty"`
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	Error   string    `json:"error,omitempty"`
	// Interrupted: recorded as running or undoing, but no process holds
	// the state lock.
	Interrupted bool `json:"interrupted,omitempty"`
	// Waiting is what a running stage waits for ("reboot").
	Waiting string `json:"waiting,omitempty"`
}

// Report is the status of the upgrade on this host.
type Report struct {
	InProgress     bool          `json:"in_progress"`
	Upgrade        string        `json:"upgrade,omitempty"`
	Image          string        `json:"image,omitempty"`
	Signer         string        `json:"signer,omitempty"` // who signed its checksum file, or "not signed"
	OldVersion     string        `json:"old_version,omitempty"`
	RunningVersion string        `json:"running_version"`
	NewVersion     string        `json:"new_version"`
	ActiveVersion  string        `json:"active_version"`
	Stages         []StageStatus `json:"stages"`
	// Busy is the process that holds the state lock, if any.
	Busy int `json:"busy_pid,omitempty"`
	// Repair lists what on the host contradicts the record.
	Repair []string `json:"repair,omitempty"`
	Next   string   `json:"next"`
	Facts  []Fact   `json:"facts,omitempty"`
	// History lists archived upgrades (history/VERSION/UPGRADE).
	History []string `json:"history,omitempty"`
}

// Status reports the upgrade without taking the lock (a running stage is
// shown as running, by its process).
func (e *Engine) Status() (*Report, error) {
	st, err := loadState(e.StateDir)
	if err != nil {
		return nil, err
	}
	rep := &Report{ActiveVersion: ActiveVersion(e.StateDir, e.Config), History: e.history()}
	rep.Busy = host.LockHolder(e.StateDir)
	if e.Facts != nil {
		rep.Facts = e.Facts()
	}
	if st == nil {
		rep.RunningVersion = rep.ActiveVersion
		rep.NewVersion = rep.ActiveVersion
		for _, n := range Order {
			rep.Stages = append(rep.Stages, StageStatus{Name: n, Status: NotStarted})
		}
		rep.Next = nextText(nil)
		return rep, nil
	}
	rep.InProgress = true
	rep.Upgrade, rep.Image, rep.Signer = st.Upgrade, st.Vars["iso"], st.Vars[VarSigner]
	rep.OldVersion, rep.NewVersion, rep.RunningVersion = st.OldVersion, st.NewVersion, st.RunningVersion()
	for _, r := range st.Stages {
		ss := StageStatus{Name: r.Name, Status: r.Status, Attempt: r.Attempt, Started: r.Started, Ended: r.Ended,
			Error: r.Error, Waiting: r.Data[waitingKey]}
		ss.Interrupted = r.active() && rep.Busy == 0 && ss.Waiting == ""
		rep.Stages = append(rep.Stages, ss)
	}
	if rep.Busy != 0 {
		rep.Repair = st.Repair
		rep.Next = fmt.Sprintf("wait: process %d is working on the upgrade", rep.Busy)
		return rep, nil
	}
	rep.Repair = e.verify(st, len(Order)-1)
	rep.Next = nextText(st)
	if len(rep.Repair) > 0 {
		rep.Next = "repair: redo the stage that disagrees with 'upgradectl STAGE --force', or act anyway with 'upgradectl continue --force' / 'upgradectl undo STAGE --force'"
	}
	return rep, nil
}

// nextText says what to run next, for people.
func nextText(st *State) string {
	if st == nil {
		return "upgradectl setup --iso IMAGE"
	}
	n, o := next(st)
	switch o {
	case opNone:
		return "upgradectl continue (finishes archiving the upgrade)"
	case opUndo:
		return fmt.Sprintf("upgradectl undo %s (finishes the undo; 'upgradectl continue' does the same)", n)
	}
	rec := st.Stage(n)
	cmd := "upgradectl " + string(n)
	if n == Setup {
		if img := st.Vars[VarISO]; img != "" {
			cmd += " --iso " + img
		} else {
			cmd += " --iso IMAGE"
		}
	}
	undo := ""
	if undoable(n) {
		undo = ", or upgradectl undo " + string(n)
	}
	switch rec.Status {
	case Running:
		if rec.Data[waitingKey] == "reboot" {
			return fmt.Sprintf("reboot: the boot hook completes %s (or 'upgradectl continue')", n)
		}
		return fmt.Sprintf("upgradectl continue (completes the interrupted %s)%s", n, undo)
	case Failed:
		return fmt.Sprintf("%s (retry; 'upgradectl continue' does the same)%s", cmd, undo)
	}
	return cmd
}

// undoable: the stages before switch have an undo; switch and clean have
// none (there is no undo after switch).
func undoable(n Name) bool { return index(n) < index(Switch) }

// HistoryDir is where finished upgrades are archived, in the state
// directory: history/VERSION/UPGRADE/{stages.json,upgrade.log}.
const HistoryDir = "history"

func (e *Engine) history() []string {
	base := filepath.Join(e.StateDir, HistoryDir)
	vers, _ := os.ReadDir(base)
	var out []string
	for _, v := range vers {
		ups, _ := os.ReadDir(filepath.Join(base, v.Name()))
		for _, u := range ups {
			out = append(out, filepath.Join(HistoryDir, v.Name(), u.Name()))
		}
	}
	sort.Strings(out)
	return out
}

// archive ends a finished upgrade: its state and log move to the history
// for the new version and the state file goes, so that no upgrade is in
// progress. Each step is safe to repeat after a crash; the state file is
// removed last.
func (e *Engine) archive(st *State) error {
	ver := st.NewVersion
	if ver == "" {
		ver = "unknown"
	}
	rel := filepath.Join(HistoryDir, safeName(ver), safeName(st.Upgrade))
	dir := filepath.Join(e.StateDir, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return host.CannotRun("cannot archive the upgrade in %s: %v", dir, errors.Unwrap(err))
	}
	// An archive cut short by a crash is done again: the entry that says
	// the upgrade is complete is written once, and a log copied already
	// (the crash came before it was removed) is not copied twice.
	dst := filepath.Join(dir, host.LogFile)
	archived, _ := os.ReadFile(dst)
	current, _ := os.ReadFile(e.Log.Path)
	done := fmt.Sprintf("upgrade %s complete", st.Upgrade)
	if !bytes.Contains(archived, []byte(done)) && !bytes.Contains(current, []byte(done)) {
		e.Log.Append(host.LogEntry{Action: "upgrade", Parent: st.LogID, Scope: "server", Result: host.ResultSuccess,
			Message: fmt.Sprintf("%s: version %s to %s; archived in %s", done, orUnknown(st.OldVersion), ver, rel)})
	}
	if err := saveState(dir, st); err != nil {
		return err
	}
	err := e.Log.Take(func(b []byte) error {
		if !bytes.HasPrefix(b, archived) {
			b = append(archived, b...)
		}
		if err := host.WriteFileAtomic(dst, b, 0o644); err != nil {
			return fmt.Errorf("cannot archive the upgrade log: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := host.RemoveDurable(filepath.Join(e.StateDir, StateFile)); err != nil {
		return err
	}
	e.notify(KindUpgradeComplete, st, nil, fmt.Sprintf("upgradectl: upgrade %s complete: version %s to %s", st.Upgrade, orUnknown(st.OldVersion), ver))
	e.printf("upgrade complete: active version %s; log archived in %s", ver, filepath.Join(rel, host.LogFile))
	return nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, strings.TrimLeft(s, "."))
}
