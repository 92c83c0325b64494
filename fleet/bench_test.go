package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"upgradectl/host/hosttest"
)

// Benchmarks against a real etcd on loopback (goals in docs/fleet.md).

// BenchmarkTransition is what the fleet adds to one stage transition: the
// record published and the slot looked at before the stage, the record
// published again after it (goal: under 50 ms).
func BenchmarkTransition(b *testing.B) {
	e := hosttest.NewEtcd(b, 3)
	f := open(b, testConfig(e.Endpoints(), "m", "default", 1))
	ctx := context.Background()
	m := Member{Running: "1", Active: "1", New: "2", Stage: "install", Status: "running"}
	if err := f.Publish(ctx, m); err != nil { // connected
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := f.Publish(ctx, m); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Holds(ctx, "default", f.ID); err != nil {
			b.Fatal(err)
		}
		if err := f.Publish(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/transition")
}

// BenchmarkMembers1000 reads 1,000 member records, the cluster version and
// the semaphore: what fleet status reads (goal: under 1 s).
func BenchmarkMembers1000(b *testing.B) {
	e := hosttest.NewEtcd(b, 1)
	ctx := context.Background()
	f := open(b, testConfig(e.Endpoints(), "x", "default", 5))
	var wg sync.WaitGroup
	ids := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				g := *f
				g.ID = fmt.Sprintf("m%04d", i)
				if err := g.Publish(ctx, Member{Host: g.ID, Running: "1", Active: "1"}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < 1000; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		ms, err := f.Members(ctx)
		if err != nil || len(ms) != 1000 {
			b.Fatalf("%d members, %v", len(ms), err)
		}
		if _, _, err := f.ClusterVersion(ctx); err != nil {
			b.Fatal(err)
		}
		if _, _, err := f.Semaphore(ctx, "default"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/read")
	// The command itself, process start and table included.
	root := b.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/upgradectl"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"), []byte(fmt.Sprintf(
		"[fleet]\nendpoints = [%q]\ncluster = \"test\"\nmember = \"x\"\nslots = 5\n", e.Endpoints()[0])), 0o644)
	b.ReportMetric(hosttest.Timed(b, hosttest.Bin(b), "--root", root, "fleet", "status").Seconds(), "s/fleet-status")
}

// BenchmarkContention: 100 members contend for 5 slots, each taking and
// giving back its slot once per round. It reports grants per second and
// fails on a slot granted twice.
func BenchmarkContention(b *testing.B) {
	e := hosttest.NewEtcd(b, 3)
	ctx := context.Background()
	var fs []*Fleet
	for i := 0; i < 100; i++ {
		fs = append(fs, open(b, testConfig(e.Endpoints(), fmt.Sprintf("m%03d", i), "default", 5)))
	}
	var held, most, grants atomic.Int32
	b.ResetTimer()
	start := time.Now()
	for r := 0; r < b.N; r++ {
		var wg sync.WaitGroup
		for _, f := range fs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.Take(ctx, 5*time.Minute, nil); err != nil {
					b.Error(err)
					return
				}
				n := held.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				grants.Add(1)
				held.Add(-1)
				if _, err := f.Release(ctx, "default", f.ID); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	if most.Load() > 5 {
		b.Fatalf("%d slots held at once of 5", most.Load())
	}
	b.ReportMetric(float64(grants.Load())/time.Since(start).Seconds(), "grants/s")
}
