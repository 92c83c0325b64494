package tagfs

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// makeUsr writes a tree like a small /usr: files of sizes spread as on a
// real system (many small, a few large), total bytes in all, in
// directories of about twenty files, three levels deep.
func makeUsr(b *testing.B, dir string, files int, total int64) {
	b.Helper()
	rng := rand.New(rand.NewSource(1))
	sizes := make([]float64, files)
	var sum float64
	for i := range sizes {
		sizes[i] = rng.ExpFloat64() * rng.ExpFloat64() // heavy tail
		sum += sizes[i]
	}
	buf := randBytes(7, 8<<20)
	for i := 0; i < files; i++ {
		n := int(sizes[i] / sum * float64(total))
		p := filepath.Join(dir, fmt.Sprintf("d%d/e%d/f%d/file%05d", i%10, (i/10)%10, (i/100)%10, i))
		if i%25 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.Symlink(fmt.Sprintf("file%05d", i+1), p); err != nil {
				b.Fatal(err)
			}
			continue
		}
		f, err := createAll(p)
		if err != nil {
			b.Fatal(err)
		}
		for n > 0 {
			off := rng.Intn(len(buf) / 2)
			k := min(n, len(buf)-off)
			if _, err := f.Write(buf[off : off+k]); err != nil {
				b.Fatal(err)
			}
			n -= k
		}
		f.Close()
	}
}

func createAll(p string) (*os.File, error) {
	f, err := os.Create(p)
	if os.IsNotExist(err) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		f, err = os.Create(p)
	}
	return f, err
}

func usedBytes(b *testing.B, dir string) int64 {
	b.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		b.Fatal(err)
	}
	return int64(s.Blocks-s.Bfree) * s.Bsize
}

// measured is one timed run of a benchmark: wall and CPU time, and the
// new space it took.
type measured struct {
	wall, cpu time.Duration
	space     int64
}

// benchRun counts the paired runs of BenchmarkCreateUsr, so that every
// other run puts the standard tool first.
var benchRun int

// BenchmarkCreateUsr tags a tree like a small /usr (10,000 files, 400 MB)
// and copies it with the standard tool in the same run, on the same
// filesystem, the order of the two swapped every other run: on btrfs and
// xfs cp -a --reflink=always (cloning every file with cp's own per-file
// work), on ext4 cp -a. Both times include syncing the filesystem (tag
// create syncs before it records the set); the tree is in the page cache
// for both. It reports the ratio and the new space each took. Goals: at
// least 1.0x cp -a --reflink=always on btrfs and xfs, with no more new
// space than cp's clones; at least 1.3x cp -a on ext4.
func BenchmarkCreateUsr(b *testing.B) {
	files, total := 10000, int64(400e6)
	// UPGRADECTL_BENCH_SCALE=N multiplies the tree (N=2: 20,000 files,
	// 800 MB); UPGRADECTL_BENCH_SCALE=1/N divides it.
	if s := os.Getenv("UPGRADECTL_BENCH_SCALE"); s != "" {
		if d, ok := strings.CutPrefix(s, "1/"); ok {
			if n, err := strconv.Atoi(d); err == nil && n > 1 {
				files, total = files/n, total/int64(n)
			}
		} else if n, err := strconv.Atoi(s); err == nil && n > 1 {
			files, total = files*n, total*int64(n)
		}
	}
	// UPGRADECTL_BENCH_DIGEST=1 measures tag create --digest.
	digest := os.Getenv("UPGRADECTL_BENCH_DIGEST") != ""
	// UPGRADECTL_BENCH_LIST=1 gives tag create every file of the tree, as
	// --list and --iso do, instead of its directory.
	list := os.Getenv("UPGRADECTL_BENCH_LIST") != ""
	for _, fs := range []struct {
		name string
		cp   []string
		tool string // the metric's name for the standard tool
	}{
		{"btrfs", []string{"-a", "--reflink=always"}, "cp-reflink"},
		{"xfs", []string{"-a", "--reflink=always"}, "cp-reflink"},
		{"ext4", []string{"-a"}, "cp"},
	} {
		b.Run(fs.name, func(b *testing.B) {
			hosttest.RequireCommand(b, "cp")
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				root := hosttest.LoopFS(b, fs.name, max(4<<30, 4*total))
				usr := filepath.Join(root, "usr")
				makeUsr(b, usr, files, total)
				hosttest.SyncFS(b, root)
				paths := []string{"/usr"}
				if list {
					paths = nil
					filepath.WalkDir(usr, func(p string, e os.DirEntry, err error) error {
						if err == nil && !e.IsDir() {
							paths = append(paths, strings.TrimPrefix(p, root))
						}
						return err
					})
				}

				// cp's times (with the sync) and the space its copy took.
				cp := func() (m measured) {
					used := usedBytes(b, root)
					start := time.Now()
					cmd := exec.Command("cp", append(fs.cp, usr, filepath.Join(root, "cp-copy"))...)
					out, err := cmd.CombinedOutput()
					if err != nil {
						b.Fatalf("cp: %v %s", err, out)
					}
					cpu := hosttest.SelfCPU()
					hosttest.SyncFS(b, root)
					m.wall = time.Since(start)
					m.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() + hosttest.SelfCPU() - cpu
					m.space = usedBytes(b, root) - used
					if err := os.RemoveAll(filepath.Join(root, "cp-copy")); err != nil {
						b.Fatal(err)
					}
					hosttest.SyncFS(b, root)
					return m
				}
				// tag create's time (with the sync it does) and the space
				// its copies took. The record goes elsewhere: only the
				// copies are measured.
				var rep *Report
				var recordSize int64
				tag := func() (m measured) {
					hr, _ := host.NewRoot(root)
					state := b.TempDir()
					tg := New(hr, host.DefaultConfig(), state)
					defer tg.Close()
					used := usedBytes(b, root)
					b.StartTimer()
					start, cpu := time.Now(), hosttest.SelfCPU()
					var err error
					rep, err = tg.Create("1", paths, CreateOptions{Digest: digest})
					m.wall, m.cpu = time.Since(start), hosttest.SelfCPU()-cpu
					b.StopTimer()
					if err != nil {
						b.Fatal(err)
					}
					hosttest.SyncFS(b, root)
					if fi, err := os.Stat(filepath.Join(state, RecordFile)); err == nil {
						recordSize = fi.Size()
					}
					m.space = usedBytes(b, root) - used
					// Gone again, so that a cp after it copies the tree
					// alone.
					if _, err := tg.Clean(CleanOptions{}); err != nil {
						b.Fatal(err)
					}
					hosttest.SyncFS(b, root)
					return m
				}
				var c, t measured
				if benchRun%2 == 0 {
					c = cp()
					t = tag()
				} else {
					t = tag()
					c = cp()
				}
				benchRun++
				b.ReportMetric(c.wall.Seconds()/t.wall.Seconds(), "x-faster-than-"+fs.tool)
				// The same of CPU time (the processes' own, not the kernel's
				// writeback threads), which other load disturbs less.
				b.ReportMetric(c.cpu.Seconds()/t.cpu.Seconds(), "x-cpu-"+fs.tool)
				b.ReportMetric(float64(t.space)/float64(total)*100, "%-new-space")
				b.ReportMetric(float64(c.space)/float64(total)*100, "%-new-space-"+fs.tool)
				b.ReportMetric(t.wall.Seconds(), "s-tag")
				b.ReportMetric(c.wall.Seconds(), "s-"+fs.tool)
				b.Logf("%s: tag create %v (cpu %v; %d clones, %d copies), cp %s %v (cpu %v); new space %d bytes (cp %d); record %d bytes",
					fs.name, t.wall, t.cpu, rep.Cloned, rep.Copied, strings.Join(fs.cp, " "), c.wall, c.cpu, t.space, c.space, recordSize)
			}
		})
	}
}

// BenchmarkLookup: version lookups (goal under 10 microseconds a path),
// against a plain lstat of the same path on the running system.
func BenchmarkLookup(b *testing.B) {
	hosttest.RequireRoot(b)
	root := b.TempDir()
	var paths []string
	for i := 0; i < 200; i++ {
		h := fmt.Sprintf("/usr/lib/x86_64-linux-gnu/d%d/lib%03d.so", i%10, i)
		writeFile(b, filepath.Join(root, h), []byte("x"), 0o644)
		paths = append(paths, h)
	}
	tg := newTestTags(b, root)
	if _, err := tg.Create("1", paths[:100], CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := tg.Enable(false); err != nil {
		b.Fatal(err)
	}
	l, err := tg.Lookuper()
	if err != nil {
		b.Fatal(err)
	}
	// Each operation looks up every path many times, so that a single
	// iteration (build.sh bench runs -benchtime 1x) is a fair measure.
	const rounds = 100
	var st unix.Stat_t
	start := time.Now()
	for r := 0; r < rounds; r++ {
		for _, p := range paths {
			unix.Lstat(filepath.Join(root, p), &st)
		}
	}
	perLstat := time.Since(start) / time.Duration(rounds*len(paths))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for _, p := range paths {
				if _, err := l.Lookup(p); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N*rounds*len(paths))
	b.ReportMetric(float64(per.Nanoseconds())/1000, "µs/path")
	b.ReportMetric(float64(per)/float64(perLstat), "x-lstat")
}

// BenchmarkScan: tag list --scan of 100,000 files (goal under 1 second),
// against find DIR -name '.Old..*' in the same run.
func BenchmarkScan(b *testing.B) {
	hosttest.RequireCommand(b, "find")
	root := hosttest.LoopFS(b, "ext4", 1<<30, "-N", "150000")
	const files = 100000
	var tagged []string
	for i := 0; i < files; i++ {
		h := fmt.Sprintf("/usr/d%03d/e%02d/f%05d", i%100, (i/100)%20, i)
		f, err := createAll(filepath.Join(root, h))
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		if i%100 == 0 {
			tagged = append(tagged, h)
		}
	}
	tg := newTestTags(b, root)
	if _, err := tg.Create("1", tagged, CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command("find", filepath.Join(root, "usr"), "-name", ".Old..*").Output()
	if err != nil {
		b.Fatal(err)
	}
	tFind := time.Since(start)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		found, err := tg.Scan("/usr")
		if err != nil || len(found) != len(tagged) {
			b.Fatalf("found %d of %d: %v (find: %d bytes)", len(found), len(tagged), err, len(out))
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(per.Seconds(), "s/scan")
	b.ReportMetric(per.Seconds()/tFind.Seconds(), "x-find")
}
