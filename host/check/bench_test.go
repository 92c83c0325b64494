package check

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// BenchmarkCheckLocal runs the built binary, `upgradectl check` on this
// machine with the network checks off, and df on the same paths in the
// same run as the yardstick (the goal is under 50 ms per check run).
func BenchmarkCheckLocal(b *testing.B) {
	bin := hosttest.Bin(b)
	hosttest.RequireCommand(b, "df")
	dir := b.TempDir()
	conf := filepath.Join(dir, "upgradectl.toml")
	if err := os.WriteFile(conf, []byte("[checks.ntp]\nfrom_host = false\nservers = []\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"--config", conf, "--state-dir", filepath.Join(dir, "state"), "--json", "check"}
	var checkTime, dfTime time.Duration
	for b.Loop() {
		start := time.Now()
		out, err := exec.Command(bin, args...).Output()
		checkTime += time.Since(start)
		if err != nil && !strings.Contains(string(out), `"checks"`) {
			b.Fatalf("%v:\n%s", err, out)
		}
		start = time.Now()
		if out, err := exec.Command("df", "-i", "/", "/var", "/usr").CombinedOutput(); err != nil {
			b.Fatalf("df: %v\n%s", err, out)
		}
		dfTime += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(checkTime.Seconds()*1000/n, "ms/check")
	b.ReportMetric(dfTime.Seconds()*1000/n, "ms/df")
	b.ReportMetric(checkTime.Seconds()/dfTime.Seconds(), "check/df")
}

// BenchmarkCheckRunLocal is the same in process: check.Run without the
// network checks, without the process start.
func BenchmarkCheckRunLocal(b *testing.B) {
	root, _ := host.NewRoot("/")
	cfg := config(b, "[checks.ntp]\nfrom_host = false\nservers = []\n")
	for b.Loop() {
		if _, err := Run(context.Background(), Options{Root: root, Config: cfg}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckOneDeadServer runs the built binary, the whole `upgradectl
// check`, with three NTP servers, two real chronyd and one that never
// answers, and a 1s timeout: the run must take about one timeout, not
// three. Reported as wall time and in timeouts.
func BenchmarkCheckOneDeadServer(b *testing.B) {
	bin := hosttest.Bin(b)
	servers := []string{chronyd(b, true), chronyd(b, true), silentServer(b)}
	const timeout = time.Second
	dir := b.TempDir()
	conf := filepath.Join(dir, "upgradectl.toml")
	toml := fmt.Sprintf("[checks]\ntimeout = %q\n[checks.ntp]\nfrom_host = false\nservers = [\"%s\"]\n", timeout, strings.Join(servers, `", "`))
	if err := os.WriteFile(conf, []byte(toml), 0o644); err != nil {
		b.Fatal(err)
	}
	args := []string{"--config", conf, "--state-dir", filepath.Join(dir, "state"), "--json", "check"}
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		out, _ := exec.Command(bin, args...).Output()
		total += time.Since(start)
		if !strings.Contains(string(out), "2 of 3 servers good") {
			b.Fatalf("unexpected result:\n%s", out)
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/check")
	b.ReportMetric(total.Seconds()/float64(b.N)/timeout.Seconds(), "timeouts/check")
}
