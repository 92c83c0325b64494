package tagfs

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

func syncfs(b *testing.B, dir string) {
	b.Helper()
	f, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCreateUsr tags a tree like a small /usr (20,000 files, 1 GiB)
// and copies it with cp -a in the same run, on the same filesystem. Both
// times include syncing the filesystem (tag create syncs before it records
// the set). Goals: on btrfs and xfs at least 5x as fast as
// cp -a --reflink=never with under 1% of the data in new space; on ext4 at
// least as fast as cp -a. The tree is in the page cache for both.
func BenchmarkCreateUsr(b *testing.B) {
	files, total := 20000, int64(1<<30)
	// UPGRADECTL_BENCH_SCALE=N divides the tree (quicker runs while tuning).
	if n, err := strconv.Atoi(os.Getenv("UPGRADECTL_BENCH_SCALE")); err == nil && n > 1 {
		files, total = files/n, total/int64(n)
	}
	// UPGRADECTL_BENCH_DIGEST=1 measures tag create --digest.
	digest := os.Getenv("UPGRADECTL_BENCH_DIGEST") != ""
	for _, fs := range []struct {
		name string
		size int64
		cp   []string
	}{
		{"btrfs", 4 << 30, []string{"-a", "--reflink=never"}},
		{"xfs", 4 << 30, []string{"-a", "--reflink=never"}},
		{"ext4", 4 << 30, []string{"-a"}},
	} {
		b.Run(fs.name, func(b *testing.B) {
			hosttest.RequireCommand(b, "cp")
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				root := hosttest.LoopFS(b, fs.name, fs.size)
				usr := filepath.Join(root, "usr")
				makeUsr(b, usr, files, total)
				syncfs(b, root)

				// cp's time (with the sync) and the space its copy took.
				cp := func(args ...string) (time.Duration, int64) {
					used := usedBytes(b, root)
					start := time.Now()
					out, err := exec.Command("cp", append(args, usr, filepath.Join(root, "cp-copy"))...).CombinedOutput()
					if err != nil {
						b.Fatalf("cp: %v %s", err, out)
					}
					syncfs(b, root)
					d := time.Since(start)
					space := usedBytes(b, root) - used
					if err := os.RemoveAll(filepath.Join(root, "cp-copy")); err != nil {
						b.Fatal(err)
					}
					syncfs(b, root)
					return d, space
				}
				tCp, _ := cp(fs.cp...)
				// For reference where the filesystem clones: the floor that
				// cloning every file with cp's own per-file work sets, in
				// time and in new space.
				var tReflink time.Duration
				var reflinkSpace int64
				if fs.name != "ext4" {
					tReflink, reflinkSpace = cp("-a", "--reflink=always")
				}

				// The record goes elsewhere: only the copies are measured.
				hr, _ := host.NewRoot(root)
				state := b.TempDir()
				tg := New(hr, host.DefaultConfig(), state)
				used := usedBytes(b, root)
				b.StartTimer()
				start := time.Now()
				rep, err := tg.Create("1", []string{"/usr"}, CreateOptions{Digest: digest})
				tTag := time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				syncfs(b, root)
				newSpace := usedBytes(b, root) - used
				b.ReportMetric(tCp.Seconds()/tTag.Seconds(), "x-faster-than-cp")
				b.ReportMetric(float64(newSpace)/float64(total)*100, "%-new-space")
				b.ReportMetric(tTag.Seconds(), "s-tag")
				b.ReportMetric(tCp.Seconds(), "s-cp")
				if tReflink > 0 {
					b.ReportMetric(tReflink.Seconds()/tTag.Seconds(), "x-faster-than-cp-reflink")
					b.ReportMetric(tCp.Seconds()/tReflink.Seconds(), "x-cp-reflink-faster-than-cp")
					b.ReportMetric(float64(reflinkSpace)/float64(total)*100, "%-new-space-cp-reflink")
				}
				fi, _ := os.Stat(filepath.Join(state, RecordFile))
				b.Logf("%s: tag create %v (%d clones, %d copies), cp %s %v, cp -a --reflink=always %v; new space %d bytes (cp --reflink=always %d); record %d bytes",
					fs.name, tTag, rep.Cloned, rep.Copied, fs.cp, tCp, tReflink, newSpace, reflinkSpace, fi.Size())
				tg.Close()
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
