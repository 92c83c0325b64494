package checksum

import (
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary checksum files to Parse: it must never panic,
// and what it accepts must hold valid entries with the line numbers they
// came from.
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
			if e.Name != "" {
				if _, err := s.Lookup(e.Name); err != nil && !strings.Contains(err.Error(), "different digests") {
					t.Fatalf("entry %q not found by Lookup: %v", e.Name, err)
				}
			}
		}
	})
}
