package boot

import (
	"context"
	"fmt"
	"time"
)

// StatusReport is what `maintenance status` shows.
type StatusReport struct {
	In      bool      `json:"in"`
	Since   time.Time `json:"since,omitzero"`
	Message string    `json:"message,omitempty"`
	Exited  time.Time `json:"exited,omitzero"`
	// Live is true when systemd runs the root; CurrentTarget,
	// MaintenanceActive and BootOverride are known only then.
	Live              bool   `json:"live"`
	CurrentTarget     string `json:"current_target,omitempty"`
	MaintenanceActive bool   `json:"maintenance_active"`
	// BootOverride is the unit this boot's kernel command line named.
	BootOverride   string `json:"boot_override,omitempty"`
	DefaultTarget  string `json:"default_target"`
	PreviousTarget string `json:"previous_target,omitempty"`
	UnitsInstalled bool   `json:"units_installed"`
	NextBoot       string `json:"next_boot"`

	ResumeFailures   int       `json:"resume_failures"`
	LastResume       time.Time `json:"last_resume,omitzero"`
	LastResumeResult string    `json:"last_resume_result,omitempty"`
	LastResumeError  string    `json:"last_resume_error,omitempty"`
	// Halted says why the resume hook stopped acting.
	Halted string `json:"halted,omitempty"`
	// Problems are inconsistencies between the state and the host, each a
	// sentence with what to do.
	Problems []string `json:"problems,omitempty"`
}

// statusTargets are the targets reported as the current one, the first
// active one wins.
var statusTargets = []string{TargetUnit, "graphical.target", "multi-user.target", "rescue.target", "emergency.target"}

// Status reports maintenance mode without changing anything (and without
// the lock: the state file is replaced atomically).
func Status(ctx context.Context, s *System) (*StatusReport, error) {
	st, err := loadState(s)
	if err != nil {
		return nil, err
	}
	r := &StatusReport{In: st.In, Since: st.Since, Message: st.Message, Exited: st.Exited,
		DefaultTarget: defaultTarget(s.Root), PreviousTarget: st.PreviousTarget, UnitsInstalled: unitsInstalled(s.Root),
		ResumeFailures: st.ResumeFailures, LastResume: st.LastResume, LastResumeResult: st.LastResumeResult,
		LastResumeError: st.LastResumeError, Halted: st.Halted, Live: s.Live()}
	var unknown string
	if r.Live {
		r.BootOverride = liveBootOverride()
		sd, err := s.systemd()
		if err != nil {
			unknown = err.Error()
		}
		for _, t := range statusTargets {
			if unknown != "" {
				break
			}
			a, err := sd.ActiveState(ctx, t)
			if err != nil {
				unknown = err.Error()
				break
			}
			if a == "active" {
				if r.CurrentTarget == "" {
					r.CurrentTarget = t
				}
				if t == TargetUnit {
					r.MaintenanceActive = true
				}
			}
		}
	}
	if unknown != "" {
		// Not root, most likely: report the files, say what is unknown.
		r.Live = false
		r.Problems = append(r.Problems, "the current target is unknown: "+unknown)
	}
	r.NextBoot = nextBoot(r)
	r.Problems = append(problems(r), r.Problems...)
	return r, nil
}

func nextBoot(r *StatusReport) string {
	t := r.DefaultTarget
	if t == "" {
		t = "(no default target)"
	}
	s := "boots into " + t
	switch {
	case t == TargetUnit && r.Halted != "":
		s += " (maintenance mode; the resume hook will not act: manual intervention is needed)"
	case t == TargetUnit && r.In:
		s += " (maintenance mode; the resume hook continues the upgrade)"
	case t == TargetUnit:
		s += " (maintenance mode)"
	}
	return s + ", unless the kernel command line names another unit"
}

func problems(r *StatusReport) []string {
	var p []string
	if r.In && r.DefaultTarget != TargetUnit {
		p = append(p, fmt.Sprintf("in maintenance mode but default.target is %s: run 'upgradectl maintenance enter' to complete it or 'upgradectl maintenance exit' to leave", r.DefaultTarget))
	}
	if !r.In && r.DefaultTarget == TargetUnit {
		p = append(p, "not in maintenance mode but default.target is "+TargetUnit+": run 'upgradectl maintenance exit'")
	}
	if r.In && !r.UnitsInstalled {
		p = append(p, "in maintenance mode but the boot units are missing: run 'upgradectl boot install'")
	}
	if r.Live && r.In && !r.MaintenanceActive {
		if r.BootOverride != "" && r.BootOverride != TargetUnit {
			p = append(p, fmt.Sprintf("in maintenance mode but this boot's kernel command line chose %s: the maintenance target is not active and the upgrade does not continue in this boot", r.BootOverride))
		} else {
			p = append(p, "in maintenance mode but "+TargetUnit+" is not active: run 'upgradectl maintenance enter' to isolate it")
		}
	}
	if r.Live && !r.In && r.MaintenanceActive {
		p = append(p, TargetUnit+" is active outside maintenance mode: run 'upgradectl maintenance exit'")
	}
	if r.Halted != "" {
		p = append(p, "the resume hook stopped: "+r.Halted+"; fix the cause, then 'upgradectl boot resume --reset' or 'upgradectl maintenance exit'")
	}
	return p
}

// InMaintenance says whether the host is in maintenance mode by the state
// alone, without asking systemd (what the fleet publishes).
func InMaintenance(s *System) (bool, error) {
	st, err := loadState(s)
	if err != nil {
		return false, err
	}
	return st.In, nil
}
