package boot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"upgradectl/host"
)

// StateFile is the name of the maintenance state in the state directory.
const StateFile = "maintenance.json"

// stateFormat is the version of the state file's format.
const stateFormat = 1

// MaxResumeFailures is the number of failed resumes in a row after which the
// boot hook stops acting (the boot-loop guard).
const MaxResumeFailures = 3

// State is what maintenance mode records to come back: it is written before
// each step that changes the host, so that a crash at any point leaves a
// state that Status explains and a rerun of Enter or Exit completes.
type State struct {
	Format  int       `json:"format"`
	In      bool      `json:"in"`
	Since   time.Time `json:"since,omitzero"`
	Message string    `json:"message,omitempty"`
	// BootID is the kernel boot id when Enter ran: the resume hook does
	// not act in the boot that entered maintenance.
	BootID string `json:"boot_id,omitempty"`
	// Saved holds the files as they were before Enter, by host path: the
	// default.target link, /etc/issue, /etc/motd, /run/nologin.
	Saved map[string]SavedFile `json:"saved,omitempty"`
	// Written holds the SHA-256 digests of the banners written, by host
	// path: a banner file that matches none was replaced during
	// maintenance (by the upgrade) and is kept by Exit.
	Written map[string][]string `json:"written,omitempty"`
	// PreviousTarget is the name of the default target before Enter
	// ("multi-user.target"), what Exit goes back to.
	PreviousTarget string `json:"previous_target,omitempty"`

	ResumeFailures   int       `json:"resume_failures"`
	LastResume       time.Time `json:"last_resume,omitzero"`
	LastResumeResult string    `json:"last_resume_result,omitempty"`
	LastResumeError  string    `json:"last_resume_error,omitempty"`
	// Halted says why the resume hook stopped acting (the boot-loop
	// guard); empty while it acts.
	Halted string `json:"halted,omitempty"`

	// Exited is when the last Exit finished.
	Exited time.Time `json:"exited,omitzero"`
}

func statePath(s *System) string {
	return filepath.Join(s.Root.Path(s.StateDir), StateFile)
}

// loadState reads the maintenance state; an absent file is "out".
func loadState(s *System) (*State, error) {
	p := statePath(s)
	b, err := host.ReadRegularFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return &State{Format: stateFormat}, nil
	}
	if err != nil {
		return nil, host.CannotRun("cannot read maintenance state %s: %v", p, errors.Unwrap(err))
	}
	st, err := parseState(b)
	if err != nil {
		return nil, host.WithHint(host.CannotRun("cannot read maintenance state %s: %v", p, err),
			"repair or move the file away; 'upgradectl maintenance exit' then restores what it can")
	}
	return st, nil
}

// parseState decodes a state file and checks its format version.
func parseState(b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("not a maintenance state: %v", err)
	}
	if st.Format != stateFormat {
		return nil, fmt.Errorf("format %d is not the supported %d", st.Format, stateFormat)
	}
	for p, f := range st.Saved {
		if err := f.valid(); err != nil {
			return nil, fmt.Errorf("saved %s: %v", p, err)
		}
	}
	if st.ResumeFailures < 0 {
		return nil, fmt.Errorf("negative resume failure count %d", st.ResumeFailures)
	}
	return &st, nil
}

// saveState writes the state durably.
func saveState(s *System, st *State) error {
	st.Format = stateFormat
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := s.Root.Path(s.StateDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return host.CannotRun("cannot create state directory %s: %v", dir, errors.Unwrap(err))
	}
	p := statePath(s)
	if err := host.WriteFileAtomic(p, append(b, '\n'), 0o600); err != nil {
		return host.CannotRun("maintenance state: %w", err)
	}
	return nil
}
