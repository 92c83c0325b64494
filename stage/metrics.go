package stage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"upgradectl/boot"
	"upgradectl/host"
	"upgradectl/host/check"
)

// MetricsFile is the file written in metrics.textfile_dir for the node
// exporter's textfile collector.
const MetricsFile = "upgradectl.prom"

// checksFile keeps the last result of each check in the state directory,
// for the metrics.
const checksFile = "checks-last.json"

// lastCheck is the last result of one check.
type lastCheck struct {
	Profile string       `json:"profile"`
	Status  check.Status `json:"status"`
	Blocks  bool         `json:"blocks"`
	At      time.Time    `json:"at"`
}

// metricsDir is the textfile directory on the running system, or "" when
// metrics are off (not configured, or the directory is not there).
func (a *actions) metricsDir() string {
	if a.h.Config == nil || a.h.Config.Metrics.TextfileDir == "" {
		return ""
	}
	dir, err := a.h.Root.Resolve(a.h.Config.Metrics.TextfileDir)
	if err != nil {
		return ""
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return ""
	}
	return dir
}

// noteChecks keeps the results of rep as the last of each check and
// writes the metrics.
func (a *actions) noteChecks(rep check.Report) {
	if a.fleetOn() && os.MkdirAll(a.state, 0o755) == nil {
		host.WriteFileAtomic(filepath.Join(a.state, lastCheckFile),
			[]byte(fmt.Sprintf("%s %s: %s\n", rep.End.UTC().Format(time.RFC3339), rep.Profile, rep.Summary())), 0o644)
	}
	if a.metricsDir() == "" {
		return
	}
	last := a.lastChecks()
	for _, c := range rep.Checks {
		last[c.ID] = lastCheck{Profile: rep.Profile, Status: c.Status, Blocks: c.Blocks(), At: rep.End.UTC()}
	}
	if b, err := json.MarshalIndent(last, "", "  "); err == nil {
		if err := os.MkdirAll(a.state, 0o755); err == nil {
			host.WriteFileAtomic(filepath.Join(a.state, checksFile), append(b, '\n'), 0o644)
		}
	}
	a.writeMetrics()
}

func (a *actions) lastChecks() map[string]lastCheck {
	last := map[string]lastCheck{}
	if b, err := host.ReadSmallFile(filepath.Join(a.state, checksFile)); err == nil {
		json.Unmarshal(b, &last)
	}
	return last
}

// writeMetrics writes upgradectl.prom in the textfile directory, atomically
// (the collector never reads half a file), when metrics are on. A failure
// to write is reported to Out and never fails what called it.
func (a *actions) writeMetrics() {
	dir := a.metricsDir()
	if dir == "" {
		return
	}
	b, err := a.metrics()
	if err == nil {
		err = host.WriteFileAtomic(filepath.Join(dir, MetricsFile), b, 0o644)
	}
	if err != nil && a.h.Out != nil {
		fmt.Fprintf(a.h.Out, "warning: metrics not written: %v\n", err)
	}
}

// metrics is the text of upgradectl.prom, written by the Prometheus client
// library's text format encoder.
func (a *actions) metrics() ([]byte, error) {
	reg := prometheus.NewPedanticRegistry()
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "upgradectl_" + name, Help: help}, labels)
		reg.MustRegister(g)
		return g
	}
	active := gauge("active_version_info", "The version this host runs as active (switch makes the new one active).", "version")
	running := gauge("running_version_info", "The version of the files on this host (the new one once install is done).", "version")
	newer := gauge("new_version_info", "The version the upgrade in progress brings (the active one when none is in progress).", "version")
	inProgress := gauge("upgrade_in_progress", "1 while an upgrade is in progress (setup run, clean not done).")
	current := gauge("stage_info", "The current stage of the upgrade in progress and its status.", "stage", "status")
	checkStatus := gauge("check_status_info", "The last result of each check, by id.", "id", "profile", "status")
	checkBlocks := gauge("check_blocking", "1 when the last result of the check blocks the upgrade (a failed inhibitor, not waived).", "id")
	checkAt := gauge("check_timestamp_seconds", "When each check last ran.", "id")
	lastInfo := gauge("last_upgrade_info", "The last upgrade (in progress or archived), its versions and outcome.", "upgrade", "old_version", "new_version", "outcome")
	lastStart := gauge("last_upgrade_start_timestamp_seconds", "When the last upgrade started.")
	lastEnd := gauge("last_upgrade_end_timestamp_seconds", "When the last upgrade ended (absent while it is in progress).")
	maint := gauge("maintenance_mode", "1 while the host is in maintenance mode.")

	st, err := loadState(a.state)
	if err != nil {
		return nil, err
	}
	act := ActiveVersion(a.state, a.h.Config)
	active.WithLabelValues(act).Set(1)
	if st == nil || st.Stage(Setup).Status == Undone {
		running.WithLabelValues(act).Set(1)
		newer.WithLabelValues(act).Set(1)
		inProgress.WithLabelValues().Set(0)
	} else {
		running.WithLabelValues(st.RunningVersion()).Set(1)
		newer.WithLabelValues(st.NewVersion).Set(1)
		inProgress.WithLabelValues().Set(1)
		cur := st.Stage(Setup)
		for i := range st.Stages {
			if s := st.Stages[i].Status; s != NotStarted && s != Undone {
				cur = &st.Stages[i]
			}
		}
		current.WithLabelValues(string(cur.Name), string(cur.Status)).Set(1)
	}
	for id, c := range a.lastChecks() {
		checkStatus.WithLabelValues(id, c.Profile, string(c.Status)).Set(1)
		blocks := 0.0
		if c.Blocks {
			blocks = 1
		}
		checkBlocks.WithLabelValues(id).Set(blocks)
		checkAt.WithLabelValues(id).Set(float64(c.At.Unix()))
	}
	if p, ok := lastUpgrade(a.state); ok {
		lastInfo.WithLabelValues(p.Upgrade, p.OldVersion, p.Version, p.Result).Set(1)
		if !p.Start.IsZero() {
			lastStart.WithLabelValues().Set(float64(p.Start.Unix()))
		}
		if !p.End.IsZero() {
			lastEnd.WithLabelValues().Set(float64(p.End.Unix()))
		}
	}
	sys := a.system()
	ms, err := boot.Status(context.Background(), sys)
	sys.Close()
	if err == nil {
		in := 0.0
		if ms.In {
			in = 1
		}
		maint.WithLabelValues().Set(in)
	}

	fams, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			return nil, errors.Join(errors.New("cannot write the metrics"), err)
		}
	}
	return buf.Bytes(), nil
}
