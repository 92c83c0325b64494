package checksum

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	emptyMD5 = "d41d8cd98f00b204e9800998ecf8427e"
	seedMD5  = "cca84e669c8db680f3264a93fe83aab7"
)

func TestParseDialects(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		dialects string
		entries  []Entry // Line and Digest filled from want
	}{
		{"gnu text", emptyMD5 + "  a.iso\n", "gnu",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 1}}},
		{"gnu binary", emptyMD5 + " *a.iso\n", "gnu",
			[]Entry{{Name: "a.iso", Binary: true, Dialect: GNU, Line: 1}}},
		{"gnu one space", emptyMD5 + " a.iso", "gnu",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 1}}},
		{"gnu name with spaces", emptyMD5 + "   two  spaces \n", "gnu",
			[]Entry{{Name: " two  spaces ", Dialect: GNU, Line: 1}}},
		{"gnu name starting with (", emptyMD5 + "  (x)\n", "gnu",
			[]Entry{{Name: "(x)", Dialect: GNU, Line: 1}}},
		{"gnu escaped", `\` + emptyMD5 + `  a\\b\nc\rd` + "\n", "gnu",
			[]Entry{{Name: "a\\b\nc\rd", Dialect: GNU, Line: 1}}},
		{"gnu unescaped backslash kept", emptyMD5 + `  a\nb` + "\n", "gnu",
			[]Entry{{Name: `a\nb`, Dialect: GNU, Line: 1}}},
		{"bsd", "MD5 (a b.iso) = " + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "a b.iso", Binary: true, Dialect: BSD, Line: 1}}},
		{"bsd name with parens and equals", "MD5 (x) = (y).iso) = " + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "x) = (y).iso", Binary: true, Dialect: BSD, Line: 1}}},
		{"bsd escaped", `\MD5 (a\nb) = ` + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "a\nb", Binary: true, Dialect: BSD, Line: 1}}},
		{"openssl", "MD5(a.iso)= " + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "a.iso", Binary: true, Dialect: BSD, Line: 1}}},
		{"seed", seedMD5 + "/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso\n", "seed",
			[]Entry{{Name: "/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso", Dialect: Seed, Line: 1}}},
		{"seed relative", seedMD5 + "./cmp.iso", "seed",
			[]Entry{{Name: "./cmp.iso", Dialect: Seed, Line: 1}}},
		{"bare", strings.ToUpper(emptyMD5) + "\r\n", "bare",
			[]Entry{{Dialect: Bare, Line: 1}}},
		{"bom crlf upper blank comment mixed",
			"\xef\xbb\xbf# made on the build host\r\n\r\n  \t\r\n" +
				strings.ToUpper(emptyMD5) + "  a.iso\r\n" +
				"MD5 (b.iso) = " + strings.ToUpper(emptyMD5) + "\r\n",
			"gnu+bsd",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 4}, {Name: "b.iso", Binary: true, Dialect: BSD, Line: 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tt.in), "sums")
			if err != nil {
				t.Fatal(err)
			}
			if got := s.DialectString(); got != tt.dialects {
				t.Errorf("dialects %q, want %q", got, tt.dialects)
			}
			if len(s.Entries) != len(tt.entries) {
				t.Fatalf("entries %+v, want %+v", s.Entries, tt.entries)
			}
			for i, want := range tt.entries {
				want.Digest = mustDigest(t, emptyMD5)
				if strings.HasPrefix(tt.in, seedMD5) {
					want.Digest = mustDigest(t, seedMD5)
				}
				if s.Entries[i] != want {
					t.Errorf("entry %d: %+v, want %+v", i, s.Entries[i], want)
				}
			}
		})
	}
}

func TestParseErrorsNameLines(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error, in order
	}{
		{"garbage", "hello world\n", []string{"line 1: not a checksum line"}},
		{"short digest", "# c\n" + emptyMD5[:31] + "  a\n", []string{"line 2: digest has 31 hex digits"}},
		{"sha256", strings.Repeat("ab", 32) + "  a\n", []string{"line 1: a 64-digit digest is not MD5"}},
		{"sha tag", "SHA256 (a) = " + strings.Repeat("ab", 32) + "\n", []string{"line 1: SHA256 digests are not supported"}},
		{"bad escape", `\` + emptyMD5 + `  a\tb` + "\n", []string{`line 1: unknown escape "\t"`}},
		{"lone backslash", `\` + emptyMD5 + `  a\` + "\n", []string{`line 1: name ends in a lone`}},
		{"tag without digest", "MD5 (a) = \n", []string{"line 1: ", "is not an MD5 digest"}},
		{"tag without paren", "MD5 (a = " + emptyMD5 + "\n", []string{`line 1: tagged line without ")"`}},
		{"every bad line", emptyMD5 + "  ok\nbad\n" + emptyMD5 + "  ok2\nworse\n",
			[]string{"line 2: not a checksum line", "line 4: not a checksum line"}},
		{"empty", "", []string{"no checksum line"}},
		{"only comments", "# x\n\n", []string{"no checksum line"}},
		{"long line", emptyMD5 + "  " + strings.Repeat("x", MaxLine+10) + "\nbad\n",
			[]string{"line 1: longer than", "line 2: not a checksum line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.in), "md5sum.out")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "cannot read md5sum.out: ") {
				t.Errorf("error %q does not name the file", msg)
			}
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (in order)", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestLookup(t *testing.T) {
	a := mustDigest(t, emptyMD5)
	in := seedMD5 + "/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso\n" +
		emptyMD5 + "  sub/mpe.iso\n" +
		seedMD5 + "  mpe.iso\n" +
		emptyMD5 + "  mra.iso\n" +
		seedMD5 + "  other/mra.iso\n"
	s, err := Parse(strings.NewReader(in), "/srv/iso/md5sum.out")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		want    string // digest, or "" for an error
		wantErr string
	}{
		{"/srv/iso/cmp-12.1.2.x.x.x.iso", seedMD5, ""},
		{"/elsewhere/cmp-12.1.2.x.x.x.iso", seedMD5, ""},
		{"/srv/iso/sub/mpe.iso", a.String(), ""}, // exact relative path beats base name
		{"/srv/iso/mpe.iso", seedMD5, ""},
		{"/srv/iso/mra.iso", a.String(), ""},
		{"/tmp/mra.iso", "", "different digests in /srv/iso/md5sum.out (lines 4 and 5)"},
		{"/srv/iso/nothere.iso", "", "nothere.iso is not listed in /srv/iso/md5sum.out"},
	}
	for _, tt := range tests {
		e, err := s.Lookup(tt.name)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Lookup(%s) = %v, %v; want error %q", tt.name, e, err, tt.wantErr)
			}
			continue
		}
		if err != nil || e.Digest.String() != tt.want {
			t.Errorf("Lookup(%s) = %v, %v; want %s", tt.name, e.Digest, err, tt.want)
		}
	}
	if _, err := s.Lookup("/srv/iso/nothere.iso"); !errors.Is(err, ErrNotListed) {
		t.Errorf("not listed: %v is not ErrNotListed", err)
	}
	// A checksum file in / itself: names relative to / match exactly.
	root, err := Parse(strings.NewReader(emptyMD5+"  x.iso\n"+seedMD5+"  old/x.iso\n"), "/MD5SUMS")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := root.Lookup("/x.iso"); err != nil || e.Digest != a {
		t.Errorf("in /: Lookup(/x.iso) = %v, %v; want line 1", e, err)
	}
	if e, err := root.Lookup("/old/x.iso"); err != nil || e.Digest.String() != seedMD5 {
		t.Errorf("in /: Lookup(/old/x.iso) = %v, %v; want line 2", e, err)
	}
	bare, err := Parse(strings.NewReader(emptyMD5+"\n"), "/srv/iso/x.iso.md5")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := bare.Lookup("/srv/iso/x.iso"); err != nil || e.Digest != a {
		t.Errorf("bare lookup: %v %v", e, err)
	}
}

// TestRealMD5sum writes files with awkward names, has the real md5sum (and
// md5sum --tag, and the seed form) describe them, and checks that Parse reads
// back every name and digest md5sum computed.
func TestRealMD5sum(t *testing.T) {
	if _, err := exec.LookPath("md5sum"); err != nil {
		t.Skip("needs md5sum (Debian package coreutils)")
	}
	dir := t.TempDir()
	names := []string{"plain.iso", "with space.iso", " leading space", "back\\slash", "new\nline",
		"cr\rname", "both\\and\nmore", "star*name", "(paren)", "MD5 (x) = y", "ünïcode.iso"}
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(strings.Repeat(n, i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]Digest{}
	for _, n := range names {
		d, _, err := sumFile(t, filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = d
	}
	run := func(args ...string) string {
		cmd := exec.Command("md5sum", append(args, names...)...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("md5sum %v: %v", args, err)
		}
		return string(out)
	}
	seed := ""
	for _, n := range names {
		if !strings.ContainsAny(n, "\n\r\\") {
			seed += want[n].String() + "/home/build/build/PLATFORM-70/iso/" + n + "\n"
		}
	}
	for _, tc := range []struct {
		dialect string
		text    string
	}{
		{"gnu", run()},
		{"gnu", run("-b")},
		{"bsd", run("--tag")},
		{"gnu", strings.ReplaceAll(run(), "\n", "\r\n")},
		{"seed", seed},
	} {
		s, err := Parse(strings.NewReader(tc.text), filepath.Join(dir, "md5sum.out"))
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.dialect, err, tc.text)
		}
		if s.DialectString() != tc.dialect {
			t.Errorf("dialect %s, want %s", s.DialectString(), tc.dialect)
		}
		n := 0
		for _, name := range names {
			if tc.dialect == "seed" && strings.ContainsAny(name, "\n\r\\") {
				continue
			}
			n++
			e, err := s.Lookup(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("%s: %q: %v", tc.dialect, name, err)
				continue
			}
			if e.Digest != want[name] {
				t.Errorf("%s: %q: digest %s, md5sum says %s", tc.dialect, name, e.Digest, want[name])
			}
		}
		if len(s.Entries) != n {
			t.Errorf("%s: %d entries, want %d", tc.dialect, len(s.Entries), n)
		}
	}
}

func mustDigest(t *testing.T, s string) Digest {
	t.Helper()
	d, err := ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func sumFile(t testing.TB, p string) (Digest, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return Digest{}, 0, err
	}
	defer f.Close()
	return SumReader(t.Context(), f, nil)
}
