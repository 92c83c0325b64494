package checksum

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Dialect is a way of writing checksum lines.
type Dialect string

const (
	// GNU is the output of md5sum, sha256sum and sha512sum (and of openssl
	// dgst -r): "HEX  name" (text mode) or "HEX *name" (binary mode). A line starting with a backslash has a name in which
	// "\\", "\n" and "\r" stand for a backslash, a newline and a carriage
	// return.
	GNU Dialect = "gnu"
	// BSD is the tagged form of BSD md5, sha256 and sha512 and of
	// coreutils --tag: "MD5 (name) = HEX", "SHA256 (name) = HEX",
	// "SHA512 (name) = HEX"; OpenSSL's "SHA256(name)= HEX" and
	// "SHA2-256(name)= HEX" are read as the same.
	BSD Dialect = "bsd"
	// Seed is the build machine's form: the digest directly followed by the
	// absolute path of the image on the build machine, no separator
	// ("cca84e...aab7/home/build/.../cmp-12.1.2.iso"). Names match local
	// files by base name.
	Seed Dialect = "seed"
	// Bare is a line with only a digest, as in a FILE.md5 written with
	// "md5sum FILE | cut -d' ' -f1". It names no file.
	Bare Dialect = "bare"
)

// Entry is one checksum line.
type Entry struct {
	Digest  Digest  `json:"digest"`
	Name    string  `json:"name,omitempty"` // unescaped; empty for Bare
	Binary  bool    `json:"binary,omitempty"`
	Dialect Dialect `json:"dialect"`
	Line    int     `json:"line"`
}

// Sums is a parsed checksum file.
type Sums struct {
	Path     string    // where it was read from, for messages
	Entries  []Entry   // in file order
	Dialects []Dialect // the dialects seen, in order of first appearance
}

// DialectString names the dialects read, as "gnu" or "gnu+bsd".
func (s *Sums) DialectString() string {
	parts := make([]string, len(s.Dialects))
	for i, d := range s.Dialects {
		parts[i] = string(d)
	}
	return strings.Join(parts, "+")
}

// LineError is one line that could not be read.
type LineError struct {
	Line int
	Msg  string
}

// ParseError lists every line of a checksum file that could not be read.
type ParseError struct {
	Path  string
	Lines []LineError
}

func (e *ParseError) Error() string {
	var b strings.Builder
	name := e.Path
	if name == "" {
		name = "checksum file"
	}
	fmt.Fprintf(&b, "cannot read %s: ", name)
	const show = 3
	for i, l := range e.Lines {
		if i == show {
			fmt.Fprintf(&b, "; and %d more bad line(s)", len(e.Lines)-show)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "line %d: %s", l.Line, l.Msg)
	}
	return b.String()
}

// MaxLine is the longest line Parse accepts (a name is at most PATH_MAX
// bytes, escaped at most twice that).
const MaxLine = 16 << 10

// maxErrors is how many bad lines Parse collects before it gives up: a
// binary file given as a checksum file should not produce a million.
const maxErrors = 100

var bom = []byte("\xef\xbb\xbf")

// Parse reads a checksum file in any of the dialects, which may be mixed,
// with MD5, SHA-256 and SHA-512 digests, which may be mixed too: the
// algorithm is the tag's, or else the digest's length tells it (32, 64 or
// 128 hex digits). It tolerates a UTF-8 byte order mark, CRLF line ends, upper-case hex,
// leading white space, blank lines and comment lines starting with '#'.
// Every line that matches no dialect is reported in a *ParseError, with its
// line number; a file with no entry at all is an error too.
func Parse(r io.Reader, name string) (*Sums, error) {
	s := &Sums{Path: name}
	perr := &ParseError{Path: name}
	br := bufio.NewReaderSize(r, 64<<10)
	seen := map[Dialect]bool{}
	for lineNo := 1; ; lineNo++ {
		line, err := readLine(br)
		if err == errLongLine {
			perr.Lines = append(perr.Lines, LineError{lineNo, fmt.Sprintf("longer than %d bytes", MaxLine)})
		} else if err != nil && err != io.EOF {
			return nil, fmt.Errorf("cannot read %s: %w", name, err)
		}
		if err == io.EOF && line == nil {
			break
		}
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, bom)
		}
		e, ok, msg := parseLine(line)
		switch {
		case msg != "":
			perr.Lines = append(perr.Lines, LineError{lineNo, msg})
		case ok:
			e.Line = lineNo
			s.Entries = append(s.Entries, e)
			if !seen[e.Dialect] {
				seen[e.Dialect] = true
				s.Dialects = append(s.Dialects, e.Dialect)
			}
		}
		if len(perr.Lines) >= maxErrors || err == io.EOF {
			break
		}
	}
	if len(perr.Lines) > 0 {
		return nil, perr
	}
	if len(s.Entries) == 0 {
		return nil, fmt.Errorf("cannot read %s: no checksum line in it", displayName(name))
	}
	return s, nil
}

func displayName(name string) string {
	if name == "" {
		return "checksum file"
	}
	return name
}

var errLongLine = errors.New("line too long")

// readLine returns the next line without its "\n" or "\r\n"; nil and io.EOF
// at the end. An over-long line is skipped and reported as errLongLine.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	long := false
	for {
		frag, err := br.ReadSlice('\n')
		if !long {
			if len(line)+len(frag) > MaxLine+2 {
				long = true
				line = nil
			} else {
				line = append(line, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if long {
			return []byte{}, errLongLine
		}
		if err == io.EOF {
			if len(line) == 0 {
				return nil, io.EOF
			}
			return bytes.TrimSuffix(line, []byte("\r")), io.EOF
		}
		if err != nil {
			return nil, err
		}
		line = line[:len(line)-1]
		return bytes.TrimSuffix(line, []byte("\r")), nil
	}
}

// parseLine reads one line. ok is false for blank and comment lines; msg
// says why a line is bad.
func parseLine(b []byte) (e Entry, ok bool, msg string) {
	line := string(b)
	trimmed := strings.TrimLeft(line, " \t")
	if strings.TrimSpace(trimmed) == "" || strings.HasPrefix(trimmed, "#") {
		return e, false, ""
	}
	escaped := false
	if strings.HasPrefix(trimmed, `\`) {
		escaped = true
		trimmed = trimmed[1:]
	}
	if tag, rest, isTag := cutTag(trimmed); isTag {
		return parseBSD(tag, rest, escaped)
	}
	n := hexRun(trimmed)
	alg := algorithmOfHex(n)
	switch {
	case alg != 0:
	case n < 16:
		return e, false, "not a checksum line (no digest, no \"SHA256 (name) = digest\")"
	default:
		return e, false, fmt.Sprintf("digest has %d hex digits: an MD5 has 32, a SHA-256 64, a SHA-512 128", n)
	}
	d, _ := ParseDigestOf(alg, trimmed[:n])
	rest := trimmed[n:]
	e.Digest = d
	switch {
	case strings.TrimRight(rest, " \t") == "":
		if escaped {
			return e, false, "a backslash before a digest with no name"
		}
		e.Dialect = Bare
		return e, true, ""
	case rest[0] == ' ' || rest[0] == '\t':
		// GNU: one white space, then ' ' (text) or '*' (binary), then the
		// name, which may itself start with spaces.
		rest = rest[1:]
		if rest != "" && (rest[0] == ' ' || rest[0] == '*') {
			e.Binary = rest[0] == '*'
			rest = rest[1:]
		}
		e.Dialect = GNU
	default:
		// Seed: the name follows the digest directly.
		e.Dialect = Seed
	}
	name, err := unescapeName(rest, escaped)
	if err != "" {
		return Entry{}, false, err
	}
	if name == "" {
		return Entry{}, false, "no file name after the digest"
	}
	e.Name = name
	return e, true, ""
}

// cutTag recognises "TAG (" or "TAG(" and returns the tag and what
// follows.
func cutTag(s string) (tag, rest string, ok bool) {
	i := 0
	for i < len(s) && (isAlnum(s[i]) || s[i] == '-') {
		i++
	}
	if i == 0 || hexRun(s) >= i {
		// No name, or a digest ("HEX  (name)" is a GNU line).
		return "", "", false
	}
	j := i
	for j < len(s) && s[j] == ' ' {
		j++
	}
	if j >= len(s) || s[j] != '(' {
		return "", "", false
	}
	return s[:i], s[j+1:], true
}

// tags are the algorithm names of tagged lines, in any case: BSD md5,
// sha256 and sha512 and coreutils --tag write "SHA256", OpenSSL 1 writes
// the same and OpenSSL 3 "SHA2-256".
var tags = map[string]Algorithm{
	"MD5":    MD5,
	"SHA256": SHA256, "SHA2-256": SHA256, "SHA-256": SHA256,
	"SHA512": SHA512, "SHA2-512": SHA512, "SHA-512": SHA512,
}

// parseBSD reads "name) = HEX", the part after "TAG (".
func parseBSD(tag, rest string, escaped bool) (e Entry, ok bool, msg string) {
	alg := tags[strings.ToUpper(tag)]
	if alg == 0 {
		return e, false, fmt.Sprintf("%s digests are not supported (MD5, SHA256 and SHA512 are)", tag)
	}
	// The name ends at the last ')': the digest holds none.
	close := strings.LastIndexByte(rest, ')')
	if close < 0 {
		return e, false, `tagged line without ")"`
	}
	after := strings.TrimLeft(rest[close+1:], " ")
	if !strings.HasPrefix(after, "=") {
		return e, false, `tagged line without "=" after the name`
	}
	hexPart := strings.TrimSpace(after[1:])
	d, err := ParseDigestOf(alg, hexPart)
	if err != nil {
		return e, false, err.Error()
	}
	name, bad := unescapeName(rest[:close], escaped)
	if bad != "" {
		return e, false, bad
	}
	if name == "" {
		return e, false, "tagged line with an empty name"
	}
	return Entry{Digest: d, Name: name, Binary: true, Dialect: BSD}, true, ""
}

// unescapeName undoes GNU md5sum's escapes when the line started with a
// backslash.
func unescapeName(s string, escaped bool) (string, string) {
	if !escaped {
		return s, ""
	}
	if !strings.Contains(s, `\`) {
		return s, ""
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+1 == len(s) {
			return "", `name ends in a lone "\"`
		}
		i++
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		default:
			return "", fmt.Sprintf(`unknown escape "\%c" in the name`, s[i])
		}
	}
	return b.String(), ""
}

func hexRun(s string) int {
	n := 0
	for n < len(s) && isHex(s[n]) {
		n++
	}
	return n
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// ErrNotListed is returned by Lookup when no entry names the file.
var ErrNotListed = errors.New("not listed")

// Lookup returns the entry for the local file name (a path or a base name).
// An entry matches when its name is the file's path relative to the
// checksum file's directory (as md5sum -c reads it) or, failing that, when
// their base names are the same (the seed form names the file by its path
// on the build machine). A file holding one bare digest matches any name.
// When the matching entries give digests of several algorithms, the entry
// of the strongest is returned (SHA-512, then SHA-256, then MD5). Two
// matching entries of one algorithm with different digests are an error;
// Lookup returns an error wrapping ErrNotListed when nothing matches.
func (s *Sums) Lookup(name string) (Entry, error) {
	if len(s.Entries) == 1 && s.Entries[0].Dialect == Bare {
		return s.Entries[0], nil
	}
	rel := name
	if s.Path != "" && path.IsAbs(name) && path.IsAbs(s.Path) {
		dir := strings.TrimSuffix(path.Dir(s.Path), "/") + "/" // "/" for a file in /
		if strings.HasPrefix(name, dir) {
			rel = strings.TrimPrefix(name, dir)
		}
	}
	var exact, byBase []Entry
	base := path.Base(name)
	for _, e := range s.Entries {
		if e.Dialect == Bare {
			continue
		}
		if path.Clean(e.Name) == path.Clean(rel) || path.Clean(e.Name) == path.Clean(name) {
			exact = append(exact, e)
		}
		if path.Base(e.Name) == base {
			byBase = append(byBase, e)
		}
	}
	found := exact
	if len(found) == 0 {
		found = byBase
	}
	if len(found) == 0 {
		return Entry{}, fmt.Errorf("%s is %w in %s", base, ErrNotListed, displayName(s.Path))
	}
	// One digest an algorithm; the strongest is used.
	first := map[Algorithm]Entry{}
	var best Entry
	for _, e := range found {
		a := e.Digest.Algorithm()
		if f, ok := first[a]; ok {
			if f.Digest != e.Digest {
				return Entry{}, fmt.Errorf("%s is listed with different digests in %s (lines %d and %d)",
					base, displayName(s.Path), f.Line, e.Line)
			}
			continue
		}
		first[a] = e
		if a > best.Digest.Algorithm() {
			best = e
		}
	}
	return best, nil
}
