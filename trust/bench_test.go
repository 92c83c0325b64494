package trust

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"upgradectl/host/hosttest"
)

// BenchmarkSignatureCost is what a signature adds to iso verify for a
// checksum file: the keys directory read and the detached signature
// checked, for an RSA 3072 and an Ed25519 key made by gpg (goal: under
// 10 ms).
func BenchmarkSignatureCost(b *testing.B) {
	g := hosttest.NewGPG(b)
	for _, c := range []struct{ name, algo string }{{"rsa3072", "rsa3072"}, {"ed25519", "ed25519"}} {
		b.Run(c.name, func(b *testing.B) {
			uid := c.name + "@bench.example"
			fpr := g.Key(uid, c.algo, "0")
			dir := b.TempDir()
			keys := filepath.Join(dir, "keys.d")
			os.Mkdir(keys, 0o755)
			g.Export(fpr, filepath.Join(keys, "vendor.asc"), true)
			sums := filepath.Join(dir, "md5sum.out")
			os.WriteFile(sums, []byte(sumsText), 0o644)
			g.Run("--local-user", uid, "--armor", "--detach-sign", sums)
			data, _ := os.ReadFile(sums)
			b.ResetTimer()
			start := time.Now()
			for i := -1; i < b.N; i++ {
				if i == 0 { // the first one warmed up (code paged in, tables built)
					start = time.Now()
				}
				k, err := LoadKeys(keys)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := k.Verify(sums, data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/verify")
		})
	}
}
