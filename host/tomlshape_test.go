package host

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestCheckTOMLShape(t *testing.T) {
	deep := func(open, close string, n int) string {
		return "x = " + strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	dotted := func(n int) string { return strings.Repeat("a.", n-1) + "b" }
	for _, tc := range []struct {
		name, doc, err string
	}{
		{"default configuration", DefaultConfigText(), ""},
		{"64 parts", dotted(64) + " = 1", ""},
		{"65 parts", dotted(65) + " = 1", "line 1: a key of more than 64 parts"},
		{"65 parts in a header", "a = 1\n[" + dotted(65) + "]", "line 2: a key of more than 64 parts"},
		{"65 parts in an array header", "[[" + dotted(65) + "]]", "line 1: a key of more than 64 parts"},
		{"65 quoted parts", strings.Repeat(`"a".`, 64) + `"b" = 1`, "line 1: a key of more than 64 parts"},
		{"65 parts in an inline table", "x = {y = 1, " + dotted(65) + " = 2}", "line 1: a key of more than 64 parts"},
		{"dots in values", "x = [" + strings.Repeat("1.5, ", 500) + "2.5]\ny = 1979-05-27T07:32:00.999\nz = \"" + strings.Repeat(".", 5000) + "\"", ""},
		{"dots in a multi-line string", "x = \"\"\"\n" + strings.Repeat("a.", 200) + "\n\"\"\"\n" + dotted(64) + " = 1", ""},
		{"dots in a literal string", "x = '''" + strings.Repeat(".", 300) + "'''\ny = '" + strings.Repeat(".", 300) + "'", ""},
		{"dots in a comment", "# " + strings.Repeat("a.", 300) + "\nx = 1 # " + strings.Repeat(".", 300), ""},
		{"a quote in a string", `x = "a\"` + strings.Repeat(".", 300) + `"` + "\n[" + dotted(65) + "]", "line 2: a key of more than 64 parts"},
		{"lines counted through strings", "x = \"\"\"\n\n\n\"\"\"\n[" + dotted(65) + "]", "line 5: a key of more than 64 parts"},
		{"depth 8", deep("[", "]", 8) + "\n" + strings.Replace(deep("{a=", "}", 7), "x", "y", 1), ""},
		{"arrays deeper than 8", deep("[", "]", 9), "line 1: arrays or inline tables nested deeper than 8"},
		{"inline tables deeper than 8", "\n" + deep("{a=", "}", 9), "line 2: arrays or inline tables nested deeper than 8"},
		{"a long key", strings.Repeat("k", 1024) + " = 1", ""},
		{"a key too long", strings.Repeat("k", 1025) + " = 1", "line 1: a key longer than 1024 bytes"},
		{"a quoted key too long", `"` + strings.Repeat("k", 1030) + `" = 1`, "line 1: a key longer than 1024 bytes"},
		{"a long value", "k = \"" + strings.Repeat("v", 5000) + "\"", ""},
		{"the decoder's problem", "[a\nb = ", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTOMLShape([]byte(tc.doc))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && (err == nil || err.Error() != tc.err):
				t.Fatalf("got %v, want %q", err, tc.err)
			}
			if tc.err == "" && !strings.Contains(tc.name, "decoder") {
				var v map[string]any
				if _, err := toml.Decode(tc.doc, &v); err != nil {
					t.Fatalf("the case is not valid TOML: %v", err)
				}
			}
		})
	}
}

// TestHostileConfiguration is the configuration whose decoding took
// minutes and gigabytes: a header of thousands of parts, and inline tables
// nested thousands deep. Both are refused in one short line.
func TestHostileConfiguration(t *testing.T) {
	for _, doc := range []string{
		"[" + strings.Repeat("a.", 32000) + "b]\n",
		strings.Repeat("a.", 32000) + "b = 1\n",
		"x = " + strings.Repeat("{a=", 20000) + "1" + strings.Repeat("}", 20000),
	} {
		_, err := ParseConfig([]byte(doc), "hostile.toml")
		if err == nil || KindOf(err) != KindUsage || len(err.Error()) > 200 {
			t.Fatalf("got %v", err)
		}
	}
}

// decodeCeiling is the most a document within the bounds may make a
// decode allocate; the hostile documents above took gigabytes.
const decodeCeiling = 64 << 20

// allocated returns what f allocated, in bytes.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeWithinBounds decodes the worst documents of 64 KiB (a manifest's limit) the bounds
// let through and checks what they allocate.
func TestDecodeWithinBounds(t *testing.T) {
	var keys, tables strings.Builder
	for keys.Len() < 64<<10 {
		fmt.Fprintf(&keys, "%s.k%d = 1\n", strings.Repeat("a.", 62), keys.Len())
	}
	for tables.Len() < 64<<10 {
		fmt.Fprintf(&tables, "x%d = %s1%s\n", tables.Len(), strings.Repeat("{a=", 7), strings.Repeat("}", 7))
	}
	for name, doc := range map[string]string{"dotted keys": keys.String(), "nested tables": tables.String()} {
		if err := CheckTOMLShape([]byte(doc)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n := allocated(func() { ParseConfig([]byte(doc), "bounds.toml") })
		t.Logf("%s: %d bytes allocated for %d bytes", name, n, len(doc))
		if n > decodeCeiling {
			t.Errorf("%s: %d bytes allocated, over %d", name, n, decodeCeiling)
		}
	}
}

func FuzzCheckTOMLShape(f *testing.F) {
	f.Add([]byte(DefaultConfigText()))
	f.Add([]byte("a.b.c = {d.e = [1, {f = 2}]}\n[[g.h]]\n'i'.\"j\" = \"\"\"\n.\"\"\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		if CheckTOMLShape(data) != nil {
			return
		}
		var v map[string]any
		if n := allocated(func() { toml.Decode(string(data), &v) }); n > decodeCeiling {
			t.Fatalf("%d bytes allocated by a document within the bounds", n)
		}
	})
}
