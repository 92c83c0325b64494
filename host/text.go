package host

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// OneLine makes text from outside (a file name, a name in an image, a
// command's output) safe to print on one line of a terminal or a table:
// control characters are written as Go escapes (\n, \t, \x1b), bytes
// that are not UTF-8 as \xNN, and a backslash as \\ (so that a name with a
// newline and one with a backslash and an n do not print alike). Other
// text is returned as it is.
func OneLine(s string) string {
	clean := true
	for i, r := range s {
		if r < 0x20 || r == 0x7f || r == '\\' || (r == utf8.RuneError && !isRuneError(s[i:])) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// isRuneError: s starts with a real U+FFFD, not a byte that is not UTF-8.
func isRuneError(s string) bool {
	r, n := utf8.DecodeRuneInString(s)
	return r == utf8.RuneError && n == 3
}

// Plural is "1 word" or "n words".
func Plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// OrDash is s, or "-" when s is empty (an empty cell of a table).
func OrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
