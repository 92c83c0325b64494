package checksum

import (
	"path/filepath"
	"testing"

	"upgradectl/host/hosttest"
)

// BenchmarkSumFile hashes a 1 GiB file of random data (64 MiB under -short)
// with SumReader and with md5sum in the same run and reports the ratio of
// their times (md5sum/ours: above 1 is faster than md5sum). Both read the
// file from the page cache.
func BenchmarkSumFile(b *testing.B) {
	hosttest.RequireCommand(b, "md5sum")
	size := hosttest.BenchSize(1<<30, 64<<20)
	p := filepath.Join(b.TempDir(), "a.bin")
	hosttest.RandomFile(b, p, size)
	hosttest.Timed(b, "md5sum", p) // warm the cache for both
	b.SetBytes(size)
	ours, theirs := hosttest.VersusTool(b, "md5sum/ours", func() {
		if _, _, err := sumFile(b, p); err != nil {
			b.Fatal(err)
		}
	}, "md5sum", p)
	b.ReportMetric(float64(size)*float64(b.N)/ours.Seconds()/(1<<20), "ours-MiB/s")
	b.ReportMetric(float64(size)*float64(b.N)/theirs.Seconds()/(1<<20), "md5sum-MiB/s")
}
