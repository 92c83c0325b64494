package iso

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// vtImageData is the size of the random data in the test images: several MB,
// checkisomd5 fails intact images under 672 KiB.
const vtImageData = 6 << 20

// vtBuildImages builds real images in the test's directory: xorriso -as
// mkisofs -R -J of random files, one with implantisomd5 run on it, one
// without, and a small one (under 672 KiB) with it.
func vtBuildImages(t testing.TB) (implanted, plain, small string) {
	t.Helper()
	hosttest.RequireCommand(t, "xorriso", "implantisomd5", "checkisomd5")
	dir := t.TempDir()
	var err error
	if implanted, err = vtMakeISO(dir, "cmp-12.1.2-x86_64.iso", vtImageData, true); err != nil {
		t.Fatal(err)
	}
	if plain, err = vtMakeISO(dir, "plain.iso", vtImageData, false); err != nil {
		t.Fatal(err)
	}
	if small, err = vtMakeISO(dir, "small.iso", 100<<10, true); err != nil {
		t.Fatal(err)
	}
	return implanted, plain, small
}

// vtMakeISO writes an image of random files holding about size bytes.
func vtMakeISO(dir, name string, size int, implant bool) (string, error) {
	src, err := os.MkdirTemp(dir, "src-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	if err := os.MkdirAll(filepath.Join(src, "Packages"), 0o755); err != nil {
		return "", err
	}
	for i, part := 0, size/3; i < 3; i++ {
		data := make([]byte, part+i*1000)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(src, "Packages", "pkg"+string(rune('a'+i))+".rpm"), data, 0o644); err != nil {
			return "", err
		}
	}
	iso := filepath.Join(dir, name)
	if out, err := exec.Command("xorriso", "-as", "mkisofs", "-R", "-J", "-V", "TEST", "-o", iso, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("xorriso: %v\n%s", err, out)
	}
	if implant {
		if out, err := exec.Command("implantisomd5", iso).CombinedOutput(); err != nil {
			return "", fmt.Errorf("implantisomd5: %v\n%s", err, out)
		}
	}
	return iso, nil
}

var vtCheckResult = regexp.MustCompile(`the result is: (PASS|FAIL|NA)`)

// vtCheckisomd5 runs the real checkisomd5 and returns its verdict in this
// package's words.
func vtCheckisomd5(t testing.TB, path string) string {
	t.Helper()
	cmd := exec.Command("checkisomd5", path)
	cmd.Stdin = nil // /dev/null: no Esc to abort
	out, _ := cmd.CombinedOutput()
	m := vtCheckResult.FindSubmatch(out)
	if m == nil {
		t.Fatalf("checkisomd5 %s: no verdict in %q", path, out)
	}
	return map[string]string{"PASS": EmbeddedPass, "FAIL": EmbeddedFail, "NA": EmbeddedAbsent}[string(m[1])]
}

// vtCopy copies the image to a new file in the test's directory and applies
// change to its bytes.
func vtCopy(t testing.TB, src string, change func(b []byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		b = change(b)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestReadEmbeddedMD5(t *testing.T) {
	implanted, plain, _ := vtBuildImages(t)
	out := hosttest.Run(t, "checkisomd5", "--md5sumonly", implanted)
	f, err := os.Open(implanted)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := ReadEmbeddedMD5(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, implanted+":   "+m.MD5+"\n") || !strings.Contains(out, "Fragment sums: "+m.FragmentSums+"\n") {
		t.Errorf("read %+v; checkisomd5 --md5sumonly says\n%s", m, out)
	}
	if m.SkipSectors != 15 || m.FragmentCount != 20 || m.VolumeSize%2048 != 0 || m.VolumeSize < vtImageData {
		t.Errorf("unexpected values %+v", m)
	}
	p, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := ReadEmbeddedMD5(p); err == nil || !strings.Contains(err.Error(), "no embedded MD5") {
		t.Errorf("plain image: %v", err)
	}
}

// TestCheckEmbeddedAgreesWithCheckisomd5 corrupts real images in the ways
// media go bad and checks that CheckEmbedded says what checkisomd5 says.
func TestCheckEmbeddedAgreesWithCheckisomd5(t *testing.T) {
	implanted, plain, _ := vtBuildImages(t)
	f, err := os.Open(implanted)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadEmbeddedMD5(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	hashed := m.hashedSize()
	flip := func(off int64) func([]byte) []byte {
		return func(b []byte) []byte { b[off] ^= 0x40; return b }
	}
	tests := []struct {
		name     string
		image    string
		change   func([]byte) []byte
		want     string
		fragment bool // fails at a fragment, before the end
	}{
		{"intact", implanted, nil, EmbeddedPass, false},
		{"byte flipped early", implanted, flip(hashed / 10), EmbeddedFail, true},
		{"byte flipped in the middle", implanted, flip(hashed / 2), EmbeddedFail, true},
		{"byte flipped in the last hashed sector", implanted, flip(hashed - 100), EmbeddedFail, false},
		{"byte flipped in the skipped sectors", implanted, flip(hashed + 100), EmbeddedPass, false},
		{"byte flipped in the volume descriptor", implanted, flip(32768 + 40), EmbeddedFail, true},
		{"truncated", implanted, func(b []byte) []byte { return b[:len(b)/2] }, EmbeddedFail, false},
		{"no embedded MD5", plain, nil, EmbeddedAbsent, false},
		{"primary volume descriptor type changed", implanted, flip(32768), EmbeddedAbsent, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := vtCopy(t, tt.image, tt.change)
			theirs := vtCheckisomd5(t, img)
			res, err := CheckEmbedded(t.Context(), img, nil)
			if err != nil {
				t.Fatal(err)
			}
			if theirs != tt.want {
				t.Fatalf("checkisomd5 says %s, the test expected %s", theirs, tt.want)
			}
			if res.Status != theirs {
				t.Fatalf("CheckEmbedded says %s (%s), checkisomd5 says %s", res.Status, res.Reason, theirs)
			}
			if tt.fragment && (res.Fragment == 0 || res.Checked >= hashed) {
				t.Errorf("did not fail early at a fragment: %+v", res)
			}
			if !tt.fragment && res.Fragment != 0 {
				t.Errorf("failed at fragment %d, expected the whole MD5 to decide: %+v", res.Fragment, res)
			}
			if tt.want == EmbeddedPass && res.Computed != m.MD5 {
				t.Errorf("computed %s, stored %s", res.Computed, m.MD5)
			}
			if tt.want == EmbeddedFail && res.Reason == "" {
				t.Error("failure without a reason")
			}
		})
	}
}

// TestCheckEmbeddedDeliberateDifferences pins the two places where this
// check and checkisomd5 part ways on purpose (see embedded.go): an image
// under 672 KiB that is intact, which checkisomd5 fails, and an image whose
// last (skipped) sectors are cut off, which checkisomd5 passes.
func TestCheckEmbeddedDeliberateDifferences(t *testing.T) {
	implanted, _, small := vtBuildImages(t)

	img := vtCopy(t, small, nil)
	if got := vtCheckisomd5(t, img); got != EmbeddedFail {
		t.Logf("checkisomd5 now passes the small intact image (%s)", got)
	}
	res, err := CheckEmbedded(t.Context(), img, nil)
	if err != nil || res.Status != EmbeddedPass {
		t.Errorf("small intact image: %+v, %v", res, err)
	}
	bad := vtCopy(t, small, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })
	if res, _ := CheckEmbedded(t.Context(), bad, nil); res.Status != EmbeddedFail {
		t.Errorf("small corrupt image: %+v", res)
	}

	cut := vtCopy(t, implanted, func(b []byte) []byte { return b[:len(b)-2048] })
	if got := vtCheckisomd5(t, cut); got != EmbeddedPass {
		t.Logf("checkisomd5 now fails an image cut in its skipped sectors (%s)", got)
	}
	res, err = CheckEmbedded(t.Context(), cut, nil)
	if err != nil || res.Status != EmbeddedFail || !strings.Contains(res.Reason, "truncated") {
		t.Errorf("image cut in the skipped sectors: %+v, %v", res, err)
	}
}

func TestParseAppData(t *testing.T) {
	pad := func(s string) []byte {
		b := bytes.Repeat([]byte{' '}, embAppDataSize)
		copy(b, s)
		return b
	}
	md5 := strings.Repeat("a", 32)
	sums := strings.Repeat("b", 60)
	tests := []struct {
		in    string
		ok    bool
		skip  int64
		count int64
	}{
		{"ISO MD5SUM = " + md5 + ";SKIPSECTORS = 15;RHLISOSTATUS=0;FRAGMENT SUMS = " + sums + ";FRAGMENT COUNT = 20;", true, 15, 20},
		{"FRAGMENT COUNT = 10;SKIPSECTORS = 0;ISO MD5SUM = " + md5 + ";", true, 0, 10},
		{"ISO MD5SUM = " + md5 + ";", false, 15, 20},                // no SKIPSECTORS
		{"SKIPSECTORS = 15;", false, 15, 20},                        // no MD5
		{"ISO MD5SUM = " + md5 + ";SKIPSECTORS = 1x;", false, 0, 0}, // not a number
		{"ISO MD5SUM = " + md5 + ";SKIPSECTORS = 15", false, 0, 0},  // runs to the end
		{"", false, 0, 0},
	}
	for _, tt := range tests {
		m, ok := parseAppData(pad(tt.in))
		if ok != tt.ok {
			t.Errorf("%q: ok %v, want %v", tt.in, ok, tt.ok)
			continue
		}
		if ok && (m.SkipSectors != tt.skip || m.FragmentCount != tt.count || m.MD5 != md5) {
			t.Errorf("%q: %+v", tt.in, m)
		}
	}
}

// TestCheckEmbeddedAgreesAtRandomPlaces flips a byte at random places all
// over a real image, the stored values themselves included, and checks that
// CheckEmbedded and checkisomd5 reach the same verdict each time.
func TestCheckEmbeddedAgreesAtRandomPlaces(t *testing.T) {
	implanted, _, _ := vtBuildImages(t)
	fi, err := os.Stat(implanted)
	if err != nil {
		t.Fatal(err)
	}
	offs := []int64{
		0, 32768 + 883 + 20, // a digit of the stored MD5
		32768 + 883 + 500, // the padding of the application-use area: blanked while hashing
		32768 + 883 + 90,  // the key "FRAGMENT SUMS = "
		32768 + 883 + 99,  // a fragment sum digit
		32768 + 883 + 50,  // the key "SKIPSECTORS = "
	}
	rng := mrand.New(mrand.NewPCG(uint64(fi.Size()), 7))
	for i := 0; i < 12; i++ {
		offs = append(offs, rng.Int64N(fi.Size()))
	}
	for _, off := range offs {
		img := vtCopy(t, implanted, func(b []byte) []byte { b[off] ^= 0x20; return b })
		theirs := vtCheckisomd5(t, img)
		res, err := CheckEmbedded(t.Context(), img, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != theirs {
			t.Errorf("byte %d of %d flipped: CheckEmbedded says %s (%s), checkisomd5 says %s", off, fi.Size(), res.Status, res.Reason, theirs)
		}
	}
}
