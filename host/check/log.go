package check

import (
	"fmt"

	"upgradectl/host"
)

// Log appends the run to the upgrade log: one entry for the run (under
// parent, 0 for none) and one entry per waived failure under it. It returns
// the run's entry.
func Log(l *host.UpgradeLog, rep Report, parent int64) (host.LogEntry, error) {
	run, err := l.Append(host.LogEntry{
		Parent: parent, Action: "check " + rep.Profile, Start: rep.Start, End: rep.End,
		Scope: "server", Result: rep.Result, Message: rep.Summary(),
	})
	if err != nil {
		return run, err
	}
	for _, c := range rep.Checks {
		if !c.Waived {
			continue
		}
		if _, err := l.Append(host.LogEntry{
			Parent: run.ID, Action: "waive " + c.ID, Start: rep.End, End: rep.End,
			Scope: "server", Result: host.ResultWaived,
			Message: fmt.Sprintf("accepted failed %s %s: %s", c.Severity, c.ID, c.Message),
		}); err != nil {
			return run, err
		}
	}
	return run, nil
}
