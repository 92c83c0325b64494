package checksum

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary checksum files to Parse: it must never panic,
// and what it accepts must hold valid entries (a digest of a known
// algorithm and its length) with the line numbers they came from, and
// Lookup must give no weaker digest for a name than one the file lists. The seeds
// cover every dialect with MD5, SHA-256 and SHA-512 digests, mixed.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		emptyMD5 + "  a.iso\n",
		emptyMD5 + " *a.iso\r\n",
		`\` + emptyMD5 + `  a\\b\nc` + "\n",
		"MD5 (a b) = " + emptyMD5 + "\n",
		`\MD5 (a\nb) = ` + emptyMD5,
		"MD5(a)= " + emptyMD5,
		seedMD5 + "/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso\n",
		"\xef\xbb\xbf# c\n\n" + strings.ToUpper(emptyMD5) + "\n",
		"SHA256 (a) = " + strings.Repeat("0", 64),
		emptySHA256 + "  a.iso\n" + emptySHA512 + " *a.iso\n" + emptyMD5 + "  a.iso\n",
		`\` + emptySHA256 + ` *a\\b\nc` + "\r\n",
		"\xef\xbb\xbfSHA512 (a) = " + strings.ToUpper(emptySHA512) + "\r\n",
		`\SHA256 (a\nb) = ` + emptySHA256,
		"SHA2-256(a)= " + emptySHA256 + "\nSHA2-512(a)= " + emptySHA512,
		"SHA256 (a) = " + emptyMD5,
		"SHA1 (a) = " + strings.Repeat("ab", 20),
		strings.Repeat("ab", 20) + "  a\n",
		emptySHA256 + "/home/build/a.iso\n" + strings.ToUpper(emptySHA512),
		"MD5 (a = ",
		`\` + emptyMD5 + `  a\`,
		"\\\n(\n)=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(strings.NewReader(string(data)), "fuzz")
		if err != nil {
			if s != nil {
				t.Fatal("error with a result")
			}
			return
		}
		lines := strings.Count(string(data), "\n") + 1
		if len(s.Entries) == 0 || len(s.Dialects) == 0 {
			t.Fatalf("accepted with no entries: %q", data)
		}
		last := 0
		for _, e := range s.Entries {
			if e.Line <= last || e.Line > lines {
				t.Fatalf("entry line %d after %d (of %d)", e.Line, last, lines)
			}
			last = e.Line
			if (e.Dialect == Bare) != (e.Name == "") {
				t.Fatalf("entry %+v: name and dialect disagree", e)
			}
			if a := e.Digest.Algorithm(); a.Size() == 0 || len(e.Digest.String()) != 2*a.Size() {
				t.Fatalf("entry %+v: no algorithm, or a digest of the wrong length", e)
			}
			if e.Name != "" {
				got, err := s.Lookup(e.Name)
				if err != nil && !strings.Contains(err.Error(), "different digests") {
					t.Fatalf("entry %q not found by Lookup: %v", e.Name, err)
				}
				if err == nil && got.Digest.Algorithm() < e.Digest.Algorithm() {
					t.Fatalf("Lookup(%q) gives the %s of line %d, not the stronger %s of line %d",
						e.Name, got.Digest.Algorithm(), got.Line, e.Digest.Algorithm(), e.Line)
				}
			}
		}
	})
}
