package host

import "fmt"

// The bounds CheckTOMLShape puts on a TOML document before it is decoded.
// No configuration or manifest of this tool comes near them.
const (
	// MaxTOMLKeyParts is the most parts of one dotted key or table header.
	MaxTOMLKeyParts = 64
	// MaxTOMLKeyLen is the longest key or table header, in bytes.
	MaxTOMLKeyLen = 1024
	// MaxTOMLDepth is the deepest nesting of arrays and inline tables.
	MaxTOMLDepth = 8
)

// CheckTOMLShape refuses a TOML document whose structure is larger than
// any this tool reads, before a decoder sees it. github.com/BurntSushi/toml
// (v1.6.0) spends time and memory that grow with the square of the parts of
// one dotted key or header (a 64 KiB line "a.a.a...b = 1" took 87 s and
// 15 GB) and faster still with the depth of nested inline tables; the
// bounds keep every accepted document far from that. The error names the
// line and the bound, never the text.
//
// The scan knows just enough of TOML to tell keys from values: comments,
// the four kinds of strings, table headers, arrays and inline tables.
// Whatever it does not understand is left to the decoder, which refuses it.
func CheckTOMLShape(data []byte) error {
	type frame byte // '[' or '{'
	var (
		stack  []frame
		line   = 1
		inKey  = true // at the start of a key: line start at depth 0, after '{' or ','
		header = false
		parts  = 1
		keyLen = 0
	)
	keyEnd := func() {
		inKey, header, parts, keyLen = false, false, 1, 0
	}
	countKey := func(n int) error {
		if !inKey && !header {
			return nil
		}
		keyLen += n
		if keyLen > MaxTOMLKeyLen {
			return fmt.Errorf("line %d: a key longer than %d bytes", line, MaxTOMLKeyLen)
		}
		return nil
	}
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '\n':
			line++
			if header {
				// A header ends at its line; what is unclosed the
				// decoder refuses.
				keyEnd()
			}
			if len(stack) == 0 {
				inKey, parts, keyLen = true, 1, 0
			}
		case c == '#':
			for i+1 < len(data) && data[i+1] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			start := i
			end, nl := skipTOMLString(data, i)
			line += nl
			i = end
			if err := countKey(end - start + 1); err != nil {
				return err
			}
		case (inKey || header) && c == '.':
			parts++
			if parts > MaxTOMLKeyParts {
				return fmt.Errorf("line %d: a key of more than %d parts", line, MaxTOMLKeyParts)
			}
			if err := countKey(1); err != nil {
				return err
			}
		case inKey && len(stack) == 0 && c == '[':
			// A table header, [a.b] or [[a.b]].
			header, inKey = true, false
			if i+1 < len(data) && data[i+1] == '[' {
				i++
			}
		case header && c == ']':
			keyEnd()
			if i+1 < len(data) && data[i+1] == ']' {
				i++
			}
		case inKey && c == '=':
			keyEnd()
		case !inKey && !header && (c == '[' || c == '{'):
			stack = append(stack, frame(c))
			if len(stack) > MaxTOMLDepth {
				return fmt.Errorf("line %d: arrays or inline tables nested deeper than %d", line, MaxTOMLDepth)
			}
			if c == '{' {
				inKey, parts, keyLen = true, 1, 0
			}
		case !header && (c == ']' || c == '}'):
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			inKey = false
		case !header && c == ',' && len(stack) > 0 && stack[len(stack)-1] == '{':
			inKey, parts, keyLen = true, 1, 0
		case c == ' ' || c == '\t' || c == '\r':
		default:
			if err := countKey(1); err != nil {
				return err
			}
		}
	}
	return nil
}

// skipTOMLString returns the index of the last byte of the string that
// starts at data[i] (a quote), and the newlines inside it. An unterminated
// string runs to the end of the data, or of its line for a one-line string.
func skipTOMLString(data []byte, i int) (end, newlines int) {
	q := data[i]
	multi := i+2 < len(data) && data[i+1] == q && data[i+2] == q
	if multi {
		for j := i + 3; j < len(data); j++ {
			switch {
			case data[j] == '\n':
				newlines++
			case q == '"' && data[j] == '\\':
				if j+1 < len(data) && data[j+1] == '\n' {
					newlines++
				}
				j++
			case data[j] == q && j+2 < len(data) && data[j+1] == q && data[j+2] == q:
				// Up to two more quotes may belong to the string.
				j += 2
				for k := 0; k < 2 && j+1 < len(data) && data[j+1] == q; k++ {
					j++
				}
				return j, newlines
			}
		}
		return len(data) - 1, newlines
	}
	// An empty string "" is a one-line string whose end is its second quote.
	for j := i + 1; j < len(data); j++ {
		switch {
		case data[j] == '\n':
			return j - 1, 0
		case q == '"' && data[j] == '\\':
			j++
		case data[j] == q:
			return j, 0
		}
	}
	return len(data) - 1, 0
}
