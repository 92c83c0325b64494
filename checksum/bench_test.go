package checksum

import (
	"path/filepath"
	"sync"
	"testing"

	"upgradectl/host/hosttest"
)

// BenchmarkSumFile hashes a 1 GiB file of random data (64 MiB under -short)
// with SumReader and with md5sum in the same run and reports the ratio of
// their times (md5sum/ours: above 1 is faster than md5sum). Both read the
// file from the page cache.
func BenchmarkSumFile(b *testing.B) { benchSumFiles(b, MD5, 1) }

// BenchmarkSHA256File is BenchmarkSumFile for SHA-256 against sha256sum.
func BenchmarkSHA256File(b *testing.B) { benchSumFiles(b, SHA256, 1) }

// BenchmarkSHA256TwoFiles hashes two such files at once, one goroutine
// each (as iso verify does with several images), against "sha256sum a b".
func BenchmarkSHA256TwoFiles(b *testing.B) { benchSumFiles(b, SHA256, 2) }

// benchSumFiles hashes n files of random data with SumReader, one goroutine
// each, and with the algorithm's coreutils tool given them all, in the same
// run, and reports the ratio of their times (TOOL/ours) and both speeds.
func benchSumFiles(b *testing.B, alg Algorithm, n int) {
	tool := alg.Flag() + "sum"
	hosttest.RequireCommand(b, tool)
	size := hosttest.BenchSize(1<<30, 64<<20)
	var paths []string
	for i := 0; i < n; i++ {
		p := filepath.Join(b.TempDir(), string(rune('a'+i))+".bin")
		hosttest.RandomFile(b, p, size)
		paths = append(paths, p)
	}
	hosttest.Timed(b, tool, paths...) // warm the cache for both
	total := size * int64(n)
	b.SetBytes(total)
	ours, theirs := hosttest.VersusTool(b, tool+"/ours", func() {
		var wg sync.WaitGroup
		for _, p := range paths {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := sumFileOf(b, alg, p); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}, tool, paths...)
	b.ReportMetric(float64(total)*float64(b.N)/ours.Seconds()/(1<<20), "ours-MiB/s")
	b.ReportMetric(float64(total)*float64(b.N)/theirs.Seconds()/(1<<20), tool+"-MiB/s")
}
