package iso

import (
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"upgradectl/host/hosttest"
)

// BenchmarkStage stages an image (one read: copy and MD5 in the same pass,
// the copy synced before it is put in place) against the same by hand:
// 'cp', 'sync' of the copy, then 'md5sum' of the copy. It reports their
// time over ours.
func BenchmarkStage(b *testing.B) {
	hosttest.RequireCommand(b, "xorriso", "md5sum", "cp")
	src := b.TempDir()
	hosttest.RandomFile(b, filepath.Join(src, "payload"), hosttest.BenchSize(512<<20, 16<<20))
	img := filepath.Join(b.TempDir(), "cmp-1.0-x86_64.iso")
	hosttest.Run(b, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", img, src)
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	h := md5.New()
	n, _ := io.Copy(h, f)
	f.Close()
	sum := fmt.Sprintf("%x", h.Sum(nil))
	b.SetBytes(n)
	work := b.TempDir()
	dst := filepath.Join(work, "by-hand.iso")
	staging := filepath.Join(work, "staging")
	ours, tool := hosttest.VersusTool(b, "cp+sync+md5sum/ours", func() {
		if _, err := Stage(context.Background(), img, StageOptions{StagingDir: staging, MD5: sum}); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(staging)
	}, "sh", "-c", `cp "$1" "$2" && sync "$2" && md5sum "$2" >/dev/null && rm "$2"`, "sh", img, dst)
	// Each side's own time, to tell which one a slow run was.
	b.ReportMetric(ours.Seconds()/float64(b.N), "ours-s/op")
	b.ReportMetric(tool.Seconds()/float64(b.N), "cp+sync+md5sum-s/op")
}
