package host

import (
	"testing"
	"unicode/utf8"
)

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"/opt/app/bin":      "/opt/app/bin",
		"tab\there":         `tab\there`,
		"a\nb\r\n":          `a\nb\r\n`,
		"esc\x1b[31m":       `esc\x1b[31m`,
		"bad\xff\xfe":       `bad\xff\xfe`,
		"é and \ufffd kept": "é and \ufffd kept",
		"del\x7f":           `del\x7f`,
		`back\n`:            `back\\n`,
		"back\\":            `back\\`,
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzOneLine(f *testing.F) {
	f.Add("a\nb\xff\t\x1b")
	f.Fuzz(func(t *testing.T, s string) {
		out := OneLine(s)
		if !utf8.ValidString(out) {
			t.Fatalf("%q: not UTF-8: %q", s, out)
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("%q: control character in %q", s, out)
			}
		}
		if out == s {
			return
		}
		// Changed only where it had to be.
		clean := utf8.ValidString(s)
		for _, r := range s {
			if r < 0x20 || r == 0x7f || r == '\\' {
				clean = false
			}
		}
		if clean {
			t.Fatalf("%q changed to %q", s, out)
		}
	})
}
