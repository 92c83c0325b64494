package stage

import (
	"os"
	"path/filepath"
	"sort"
	"time"

	"upgradectl/host"
)

// Upgrade outcomes.
const (
	OutcomeComplete   = "complete"    // clean is done
	OutcomeFailed     = "failed"      // a stage or an undo failed and nothing ran since
	OutcomeUndone     = "undone"      // backed out to setup
	OutcomeInProgress = "in progress" // anything else
)

// Past is one upgrade as the history lists it.
type Past struct {
	Upgrade    string    `json:"upgrade"`
	OldVersion string    `json:"old_version,omitempty"`
	Version    string    `json:"version"` // the version it brought
	Start      time.Time `json:"start,omitzero"`
	End        time.Time `json:"end,omitzero"`
	Result     string    `json:"result"`
	// Dir is its archive, relative to the state directory; empty for
	// the upgrade in progress.
	Dir string `json:"dir,omitempty"`
}

// upgradeOutcome is where st has got to.
func upgradeOutcome(st *State) string {
	if st.Stage(Clean).Status == Done {
		return OutcomeComplete
	}
	for _, r := range st.Stages {
		if r.Status == Failed || r.Status == UndoFailed {
			return OutcomeFailed
		}
	}
	if st.Stage(Setup).Status == Undone {
		return OutcomeUndone
	}
	return OutcomeInProgress
}

// pastOf sums up st: its start is setup's first start, its end the last
// stage's end once it has ended.
func pastOf(st *State, dir string) Past {
	p := Past{Upgrade: st.Upgrade, OldVersion: st.OldVersion, Version: st.NewVersion, Result: upgradeOutcome(st), Dir: dir}
	if t, err := time.Parse("20060102T150405Z", st.Upgrade); err == nil {
		p.Start = t
	}
	if p.Result != OutcomeInProgress {
		for _, r := range st.Stages {
			if r.Ended.After(p.End) {
				p.End = r.Ended
			}
		}
	}
	return p
}

// History lists the archived upgrades under stateDir, oldest first, and
// the upgrade in progress (or last backed out) last. An archive that
// cannot be read is listed with its problem as its result.
func History(stateDir string) ([]Past, error) {
	base := filepath.Join(stateDir, HistoryDir)
	vers, err := os.ReadDir(base)
	if err != nil && !os.IsNotExist(err) {
		return nil, host.CannotRun("cannot read the upgrade history %s: %v", base, err)
	}
	var out []Past
	for _, v := range vers {
		if !v.IsDir() {
			continue
		}
		ups, _ := os.ReadDir(filepath.Join(base, v.Name()))
		for _, u := range ups {
			if !u.IsDir() {
				continue
			}
			rel := filepath.Join(HistoryDir, v.Name(), u.Name())
			st, err := loadState(filepath.Join(stateDir, rel))
			if err != nil || st == nil {
				why := "no " + StateFile
				if err != nil {
					why = err.Error()
				}
				out = append(out, Past{Upgrade: u.Name(), Version: v.Name(), Result: "unreadable: " + why, Dir: rel})
				continue
			}
			out = append(out, pastOf(st, rel))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Upgrade < out[j].Upgrade })
	st, err := loadState(stateDir)
	if err != nil {
		return out, err
	}
	if st != nil {
		out = append(out, pastOf(st, ""))
	}
	return out, nil
}

// PastLog returns upgrade id from the history with its log: the
// archived one, or the current log for the upgrade in progress.
func PastLog(stateDir, id string) (Past, *host.UpgradeLog, error) {
	all, err := History(stateDir)
	if err != nil {
		return Past{}, nil, err
	}
	for _, p := range all {
		if p.Upgrade != id {
			continue
		}
		if p.Dir == "" {
			return p, host.OpenLog(stateDir, ""), nil
		}
		return p, host.OpenLog(filepath.Join(stateDir, p.Dir), ""), nil
	}
	return Past{}, nil, host.WithHint(host.Usage("cannot show upgrade %q: no such upgrade in %s", id, filepath.Join(stateDir, HistoryDir)),
		"list the upgrades with 'upgradectl log --history'")
}

// lastUpgrade is the newest upgrade: the one in progress, or the last
// archived; ok is false when there was none.
func lastUpgrade(stateDir string) (Past, bool) {
	all, _ := History(stateDir)
	if len(all) == 0 {
		return Past{}, false
	}
	return all[len(all)-1], true
}
