package hosttest

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RandomFile writes size bytes of real random data (not a sparse file: a
// digest of zeros is no measurement) to path.
func RandomFile(tb testing.TB, path string, size int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(time.Now().UnixNano() >> (i % 8))
	}
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		rng.Read(buf)
		n := min(left, int64(len(buf)))
		if _, err := f.Write(buf[:n]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchSize is big in a full benchmark run and small under -short.
func BenchSize(full, short int64) int64 {
	if testing.Short() {
		return short
	}
	return full
}

// Timed runs a standard tool for a benchmark that compares against it and
// returns how long it took; the tool must succeed.
func Timed(tb testing.TB, name string, args ...string) time.Duration {
	d, _ := TimedCPU(tb, name, args...)
	return d
}

// TimedCPU is Timed that also returns the CPU time (user and system) the
// tool used.
func TimedCPU(tb testing.TB, name string, args ...string) (wall, cpu time.Duration) {
	tb.Helper()
	RequireCommand(tb, name)
	start := time.Now()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	wall = time.Since(start)
	if err != nil {
		tb.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// SelfCPU is the CPU time this process has used so far (all its threads,
// user and system).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// versusRuns counts the runs of VersusTool in this process, so that the
// tool goes first every other run also when each benchmark runs once
// (-benchtime 1x -count N).
var versusRuns int

// VersusTool runs ours and the standard tool (name args...) b.N times each,
// alternating which goes first, and reports the ratio of the tool's wall
// time to ours as the metric unit ("md5sum/ours": above 1 means faster than
// the tool), and the same ratio of CPU time as unit+"-cpu" (which other
// load on the machine disturbs less). It returns both total wall times.
func VersusTool(b *testing.B, unit string, ours func(), name string, args ...string) (oursTime, toolTime time.Duration) {
	b.Helper()
	RequireCommand(b, name)
	var oursCPU, toolCPU time.Duration
	tool := func() {
		w, c := TimedCPU(b, name, args...)
		toolTime += w
		toolCPU += c
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		toolFirst := versusRuns%2 == 0
		versusRuns++
		if toolFirst {
			tool()
		}
		start, cpu := time.Now(), SelfCPU()
		ours()
		oursTime += time.Since(start)
		oursCPU += SelfCPU() - cpu
		if !toolFirst {
			tool()
		}
	}
	b.ReportMetric(float64(toolTime)/float64(oursTime), unit)
	b.ReportMetric(float64(toolCPU)/float64(oursCPU), unit+"-cpu")
	return oursTime, toolTime
}

// SyncFS writes out everything dirty on the filesystem of dir: a
// benchmark calls it before each timed run, so that no run is slowed by
// the writeback of what an earlier one wrote, and where the tool compared
// against syncs.
func SyncFS(tb testing.TB, dir string) {
	tb.Helper()
	f, err := os.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		tb.Fatal(err)
	}
}
