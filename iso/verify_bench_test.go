package iso

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"upgradectl/host/hosttest"
)

// BenchmarkVerifyTwoFiles verifies two 1 GiB files of random data (64 MiB
// under -short) against a checksum file with Verify (one per core) and with
// "md5sum -c" and "md5sum a b" in the same run, and reports the ratio of
// their times (md5sum/ours; the goal on two cores is 1.7 or more).
func BenchmarkVerifyTwoFiles(b *testing.B) {
	hosttest.RequireCommand(b, "md5sum")
	size := hosttest.BenchSize(1<<30, 64<<20)
	dir := b.TempDir()
	files := []string{filepath.Join(dir, "a.iso"), filepath.Join(dir, "b.iso")}
	for _, f := range files {
		hosttest.RandomFile(b, f, size)
	}
	sums := filepath.Join(dir, "md5sum.out")
	cmd := exec.Command("md5sum", "a.iso", "b.iso") // also warms the cache
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(sums, out, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(2 * size)
	hosttest.VersusTool(b, "md5sum/ours", func() {
		rep, err := Verify(b.Context(), VerifyOptions{Files: files, Sums: sums})
		if err != nil || !rep.OK {
			b.Fatalf("verify: %v %+v", err, rep)
		}
	}, "md5sum", files...)
}

// BenchmarkVerifyEmbedded checks the embedded MD5 of a 1 GiB image (64 MiB
// under -short) built by xorriso and implantisomd5 with Verify --embedded
// and with checkisomd5 in the same run, and reports the ratio of their
// times (checkisomd5/ours; the goal is 1 or more).
func BenchmarkVerifyEmbedded(b *testing.B) {
	hosttest.RequireCommand(b, "xorriso", "implantisomd5", "checkisomd5")
	size := hosttest.BenchSize(1<<30, 64<<20)
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	hosttest.RandomFile(b, filepath.Join(src, "payload.bin"), size)
	img := filepath.Join(dir, "cmp.iso")
	hosttest.Run(b, "xorriso", "-as", "mkisofs", "-R", "-J", "-o", img, src)
	os.RemoveAll(src)
	hosttest.Run(b, "implantisomd5", img)
	b.SetBytes(size)
	hosttest.VersusTool(b, "checkisomd5/ours", func() {
		rep, err := Verify(b.Context(), VerifyOptions{Files: []string{img}, Embedded: true})
		if err != nil || !rep.OK {
			b.Fatalf("verify: %v %+v", err, rep)
		}
	}, "checkisomd5", img)
}
