package iso

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReader opens an image, walks it and reads every file and symlink:
// any input must give an error or a readable image, never a panic, a hang
// or a huge allocation. The input is the image after its 32 KiB system
// area, which the target puts back as zeros. The seeds are images of the
// test writer and, where xorriso is installed, small real images.
func FuzzReader(f *testing.F) {
	seeds := [][]byte{
		twBuild(corruptBase(), true),
		twBuild(corruptBase(), false),
		twBuild(twDir("", twFile(strings.Repeat("n", 300), "x"), twLink("l", "/a/./b/../c"),
			&twNode{name: "dev", mode: 0o020644}, twDir("d", twDir("e"))), true),
		twBuild(twDir("", &twNode{name: "split", data: bytes.Repeat([]byte("0123456789"), 700), split: 3}), true),
	}
	if _, err := exec.LookPath("xorriso"); err == nil {
		src := filepath.Join(f.TempDir(), "src")
		os.MkdirAll(filepath.Join(src, "d/e"), 0o755)
		os.WriteFile(filepath.Join(src, "d/e/.treeinfo"), []byte("tree"), 0o644)
		os.WriteFile(filepath.Join(src, "f"), []byte("f"), 0o4755)
		os.Symlink("../../x/y", filepath.Join(src, "d/l"))
		os.Link(filepath.Join(src, "f"), filepath.Join(src, "d/hard"))
		for _, args := range [][]string{{"-R", "-J"}, {"--norock", "-J"}, {"--norock"}} {
			out := filepath.Join(f.TempDir(), "seed.iso")
			all := append([]string{"-as", "mkisofs", "-quiet", "-no-pad", "-o", out}, args...)
			if err := exec.Command("xorriso", append(all, src)...).Run(); err != nil {
				f.Fatalf("xorriso %v: %v", args, err)
			}
			img, err := os.ReadFile(out)
			if err != nil {
				f.Fatal(err)
			}
			seeds = append(seeds, img)
		}
	}
	for _, s := range seeds {
		f.Add(s[firstDescriptor*sectorSize:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img := append(make([]byte, firstDescriptor*sectorSize), data...)
		readAll(img)
	})
}
