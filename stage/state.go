// Package stage is the upgrade engine: the ordered stages of an upgrade
// (setup, preinstall, install, postinstall, roll, switch, clean), their
// persisted state, the rules of which stage may run or be undone next, the
// per-stage hooks and the upgrade log entries that tell the story.
//
// The engine knows nothing of ISO images, tagged files or maintenance mode:
// each stage's work is a Handler (do and undo side by side) given to it. The
// real handlers are in actions.go.
//
// Crash consistency rests on two habits. The state is written (durably,
// atomically) before acting on a transition: "running setup attempt 2" is
// on disk before setup does anything, "done" only after it did everything.
// And every do and undo is idempotent: run again after a crash at any point
// it completes the work. A record that says running while no process holds
// the state-directory lock is therefore an interrupted stage, which the next
// run (or the boot hook) completes or undoes.
package stage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"upgradectl/host"
)

// Name is a stage name.
type Name string

// The stages, in order.
const (
	Setup       Name = "setup"
	Preinstall  Name = "preinstall"
	Install     Name = "install"
	Postinstall Name = "postinstall"
	Roll        Name = "roll"
	Switch      Name = "switch"
	Clean       Name = "clean"
)

// Order is the order the stages run in.
var Order = []Name{Setup, Preinstall, Install, Postinstall, Roll, Switch, Clean}

// index returns the position of n in Order, or -1.
func index(n Name) int {
	for i, s := range Order {
		if s == n {
			return i
		}
	}
	return -1
}

// ParseName returns the stage called s.
func ParseName(s string) (Name, error) {
	if index(Name(s)) < 0 {
		return "", host.Usage("unknown stage %q (stages: setup, preinstall, install, postinstall, roll, switch, clean)", s)
	}
	return Name(s), nil
}

// Status is where a stage is.
type Status string

// Stage statuses.
const (
	NotStarted Status = "not started"
	Running    Status = "running"
	Done       Status = "done"
	Failed     Status = "failed"
	Undoing    Status = "undoing"
	UndoFailed Status = "undo failed"
	Undone     Status = "undone"
)

// Record is the persisted record of one stage.
type Record struct {
	Name    Name      `json:"name"`
	Status  Status    `json:"status"`
	Attempt int       `json:"attempt,omitempty"` // do or undo attempts so far
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	Error   string    `json:"error,omitempty"`
	PID     int       `json:"pid,omitempty"` // the process that ran the last attempt
	// Interrupted counts attempts found running (or undoing) with no
	// process holding the lock: killed, crashed or cut by power loss.
	Interrupted int   `json:"interrupted,omitempty"`
	LogID       int64 `json:"log_id,omitempty"` // the log entry of the last attempt
	// Data holds the stage's own checkpoints (Run.Set), kept across
	// attempts and cleared when the stage is undone.
	Data map[string]string `json:"data,omitempty"`
}

// active reports whether the record says a process is at work on it.
func (r *Record) active() bool { return r.Status == Running || r.Status == Undoing }

// FormatVersion is the version of the state file format.
const FormatVersion = 1

// StateFile is the name of the state file in the state directory.
const StateFile = "stages.json"

// State is the persisted state of the upgrade in progress.
type State struct {
	Format int `json:"format"`
	// Upgrade names this upgrade (its start time), LogID its log entry:
	// the parent of every stage entry.
	Upgrade string `json:"upgrade"`
	LogID   int64  `json:"log_id,omitempty"`
	// OldVersion is the active version when setup started, NewVersion the
	// version the image brings (known once setup read its manifest).
	OldVersion string   `json:"old_version,omitempty"`
	NewVersion string   `json:"new_version,omitempty"`
	Stages     []Record `json:"stages"`
	// Vars are values shared by the stages: the image, the install
	// command, what setup found.
	Vars map[string]string `json:"vars,omitempty"`
	// Resumes counts automatic resumes at boot since the last stage that
	// finished: the guard against a reboot loop.
	Resumes int `json:"resumes,omitempty"`
	// Repair lists what on disk contradicts this record, as last found.
	Repair []string `json:"repair,omitempty"`
}

func newState(now time.Time) *State {
	s := &State{Format: FormatVersion, Upgrade: now.UTC().Format("20060102T150405Z"), Vars: map[string]string{}}
	for _, n := range Order {
		s.Stages = append(s.Stages, Record{Name: n, Status: NotStarted})
	}
	return s
}

// Stage returns the record of stage n.
func (s *State) Stage(n Name) *Record {
	i := index(n)
	if i < 0 || i >= len(s.Stages) {
		return nil
	}
	return &s.Stages[i]
}

// Var returns the shared value k.
func (s *State) Var(k string) string { return s.Vars[k] }

// RunningVersion is the version the host's files are at: the new one once
// install is done, the old one before.
func (s *State) RunningVersion() string {
	if s.NewVersion != "" && s.Stage(Install).Status == Done {
		return s.NewVersion
	}
	return s.OldVersion
}

// loadState reads the state file in dir; (nil, nil) when there is none.
func loadState(dir string) (*State, error) {
	path := filepath.Join(dir, StateFile)
	b, err := host.ReadRegularFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, host.CannotRun("cannot read upgrade state %s: %v", path, errors.Unwrap(err))
	}
	var probe struct {
		Format int `json:"format"`
	}
	const edited = "the file was changed by hand or by another program; restore it or move it away and repair the host with 'upgradectl tag list --scan' and 'upgradectl iso list'"
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, host.WithHint(host.Bad("cannot read upgrade state %s: %v", path, err), edited)
	}
	if probe.Format < 1 {
		return nil, host.WithHint(host.Bad("cannot read upgrade state %s: it has no format number", path), edited)
	}
	if probe.Format != FormatVersion {
		return nil, host.CannotRun("cannot read upgrade state %s: format %d, this upgradectl reads format %d", path, probe.Format, FormatVersion)
	}
	s := &State{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, host.Bad("cannot read upgrade state %s: %v", path, err)
	}
	if len(s.Stages) != len(Order) {
		return nil, host.Bad("cannot read upgrade state %s: %d stages recorded, want %d", path, len(s.Stages), len(Order))
	}
	for i, n := range Order {
		if s.Stages[i].Name != n {
			return nil, host.Bad("cannot read upgrade state %s: stage %d is %q, want %q", path, i+1, s.Stages[i].Name, n)
		}
		switch st := s.Stages[i].Status; st {
		case NotStarted, Running, Done, Failed, Undoing, UndoFailed, Undone:
		default:
			return nil, host.WithHint(host.Bad("cannot read upgrade state %s: stage %s has the unknown status %q", path, n, st), edited)
		}
	}
	if s.Vars == nil {
		s.Vars = map[string]string{}
	}
	return s, nil
}

// saveState writes s durably.
func saveState(dir string, s *State) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return host.CannotRun("cannot create state directory %s: %v", dir, errors.Unwrap(err))
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, StateFile)
	if err := host.WriteFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("upgrade state: %w", err)
	}
	return nil
}

// VersionFile holds the active version in the state directory once an
// upgrade switched it; before that the configuration's product.version is.
const VersionFile = "version"

// ActiveVersion returns the version this host runs as active: the one the
// last switch wrote, or the configuration's.
func ActiveVersion(stateDir string, cfg *host.Config) string {
	if b, err := os.ReadFile(filepath.Join(stateDir, VersionFile)); err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v
		}
	}
	if cfg != nil {
		return cfg.Product.Version
	}
	return ""
}

// SetupStatus is the status of the setup of the upgrade in progress under
// stateDir, and that upgrade's id; NotStarted when there is none. It reads
// the state alone, without what Status gathers about the host.
func SetupStatus(stateDir string) (Status, string, error) {
	st, err := loadState(stateDir)
	if err != nil || st == nil {
		return NotStarted, "", err
	}
	return st.Stage(Setup).Status, st.Upgrade, nil
}

// ImageInUse reports whether an upgrade in progress (setup neither not
// started nor undone) holds a staged image, its id and the image's path on
// the running system ("" when not known yet).
func ImageInUse(stateDir string) (upgrade, image string, inUse bool) {
	st, err := loadState(stateDir)
	if err != nil || st == nil {
		return "", "", false
	}
	if s := st.Stage(Setup).Status; s == NotStarted || s == Undone {
		return "", "", false
	}
	return st.Upgrade, st.Var(VarImage), true
}

// SetActiveVersion records v as the active version, durably.
func SetActiveVersion(stateDir, v string) error {
	return host.WriteFileAtomic(filepath.Join(stateDir, VersionFile), []byte(v+"\n"), 0o644)
}
