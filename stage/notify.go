package stage

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"upgradectl/host"
	"upgradectl/host/check"
)

// Kind is the kind of an event the engine reports to its observer.
type Kind string

// Event kinds. Each has a fixed journal MESSAGE_ID (docs/operations.md),
// so that `journalctl MESSAGE_ID=...` finds every one of its kind.
const (
	KindUpgradeStarted  Kind = "upgrade-started"  // setup began a new upgrade
	KindStage           Kind = "stage"            // a stage changed status
	KindUpgradeFailed   Kind = "upgrade-failed"   // a stage or its undo failed
	KindUpgradeComplete Kind = "upgrade-complete" // clean is done and the upgrade archived
	KindUpgradeUndone   Kind = "upgrade-undone"   // undo setup is done: the upgrade is backed out
	KindBootHook        Kind = "boot-hook"        // the boot hook's outcome
)

// MessageIDs are the journal MESSAGE_IDs of the event kinds.
var MessageIDs = map[Kind]string{
	KindUpgradeStarted:  "be5164f123a7469c91f5c20b7cdfb5e8",
	KindStage:           "914367835a0144349df111bbf1f5dd35",
	KindUpgradeFailed:   "f2d720157e5345238da1f86e46ac1cfc",
	KindUpgradeComplete: "ed4e22b2938646f499e44bba75ddb6e7",
	KindUpgradeUndone:   "75055c12a97148929d83a74b9846250e",
	KindBootHook:        "e3029bac8c834100bfd9b0a48d09d655",
}

// Event is one thing that happened to the upgrade, as the observer gets
// it: the state it names is already on disk.
type Event struct {
	Kind       Kind
	Upgrade    string
	Stage      Name
	Status     Status // the stage's status after the event
	Attempt    int
	OldVersion string
	NewVersion string
	Waiting    string // what a running stage waits for ("reboot")
	Error      string
	Automatic  bool
	// Message is the sentence for people; Result the boot hook's result.
	Message string
	Result  string
}

// notify tells the observer what happened to stage rec (nil: the upgrade
// as a whole). An observer never fails a stage: it is told after the state
// is saved, and what it does with the event is its own affair.
func (e *Engine) notify(k Kind, st *State, rec *Record, msg string) {
	if e.Notify == nil {
		return
	}
	ev := Event{Kind: k, Upgrade: st.Upgrade, OldVersion: st.OldVersion, NewVersion: st.NewVersion, Automatic: e.Automatic, Message: msg}
	if rec != nil {
		ev.Stage, ev.Status, ev.Attempt, ev.Error = rec.Name, rec.Status, rec.Attempt, rec.Error
		if rec.PID == 0 { // a stage at work again waits no more
			ev.Waiting = rec.Data[waitingKey]
		}
	}
	e.Notify(ev)
}

// observe is the real stages' observer: the event goes to the journal and
// the metrics file is written again.
func (a *actions) observe(ev Event) {
	sendJournal(a.h.Root, ev)
	a.writeMetrics()
}

// journalSocket is the running system's journal. It is a live effect: it
// is used only when the root is the running system (--root /), since with
// another root the events are about a system that is not running here,
// and this system's journal is not theirs (the upgrade log under the root
// has them).
const journalSocket = "/run/systemd/journal/socket"

// sendJournal sends ev to the journal when systemd's journal runs here. A
// journal that cannot take it, or takes longer than journalWait, is
// ignored: the upgrade log is the record.
func sendJournal(root host.Root, ev Event) {
	if !root.IsLive() {
		return
	}
	if _, err := os.Stat(journalSocket); err != nil {
		return
	}
	pri := journal.PriInfo
	switch ev.Kind {
	case KindUpgradeFailed:
		pri = journal.PriErr
	case KindUpgradeStarted, KindUpgradeComplete, KindUpgradeUndone:
		pri = journal.PriNotice
	case KindBootHook:
		if ev.Result == "failed" || ev.Result == "halted" {
			pri = journal.PriErr
		}
	}
	vars := map[string]string{
		"MESSAGE_ID":        MessageIDs[ev.Kind],
		"SYSLOG_IDENTIFIER": "upgradectl",
		"UPGRADECTL_EVENT":  string(ev.Kind),
	}
	set := func(k, v string) {
		if v != "" {
			vars[k] = v
		}
	}
	set("UPGRADECTL_UPGRADE_ID", ev.Upgrade)
	set("UPGRADECTL_STAGE", string(ev.Stage))
	set("UPGRADECTL_STATUS", string(ev.Status))
	set("UPGRADECTL_OLD_VERSION", ev.OldVersion)
	set("UPGRADECTL_NEW_VERSION", ev.NewVersion)
	set("UPGRADECTL_WAITING", ev.Waiting)
	set("UPGRADECTL_ERROR", ev.Error)
	set("UPGRADECTL_RESULT", ev.Result)
	if ev.Attempt > 0 {
		vars["UPGRADECTL_ATTEMPT"] = strconv.Itoa(ev.Attempt)
	}
	vars["UPGRADECTL_MODE"] = host.ModeManual
	if ev.Automatic {
		vars["UPGRADECTL_MODE"] = host.ModeAutomatic
	}
	// A journald that does not read (stopped, hung) must not hold up the
	// upgrade: the send is given a moment, then left behind.
	done := make(chan struct{})
	go func() {
		journal.Send(ev.text(), pri, vars)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(journalWait):
	}
}

// journalWait is how long one journal entry may take to send.
const journalWait = 2 * time.Second

// text is the journal's MESSAGE for ev.
func (ev Event) text() string {
	if ev.Message != "" {
		return ev.Message
	}
	s := fmt.Sprintf("upgradectl: %s %s", ev.Stage, ev.Status)
	if ev.Attempt > 0 {
		s += fmt.Sprintf(" (attempt %d)", ev.Attempt)
	}
	if ev.Waiting != "" {
		s += ", waiting for " + ev.Waiting
	}
	if ev.Error != "" {
		s += ": " + ev.Error
	}
	return s
}

// notifyFailed reports a failed stage (or undo, what) twice: as a stage
// transition and as the upgrade's failure.
func (e *Engine) notifyFailed(st *State, rec *Record, what string) {
	e.notify(KindStage, st, rec, "")
	e.notify(KindUpgradeFailed, st, rec, fmt.Sprintf("upgradectl: upgrade %s: %s failed: %s", st.Upgrade, what, rec.Error))
}

// NoteCheck is what the check command tells the observers: the last result
// of each check, in the metrics.
func NoteCheck(h Host, rep check.Report) { newActions(h).noteChecks(rep) }

// NoteBootHook sends the boot hook's outcome (result: success, failed,
// skipped, halted; reason: why) to the journal and writes the metrics.
func NoteBootHook(h Host, result, reason string) {
	a := newActions(h)
	ev := Event{Kind: KindBootHook, Result: result, Automatic: true,
		Message: "upgradectl: boot hook " + result}
	if reason != "" {
		ev.Message += ": " + reason
	}
	if st, err := loadState(a.state); err == nil && st != nil {
		ev.Upgrade, ev.OldVersion, ev.NewVersion = st.Upgrade, st.OldVersion, st.NewVersion
		for i := range st.Stages {
			if r := st.Stages[i]; r.Status != NotStarted && r.Status != Undone {
				ev.Stage, ev.Status = r.Name, r.Status
			}
		}
	}
	a.observe(ev)
}
