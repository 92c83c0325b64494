package checksum

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

const (
	emptyMD5    = "d41d8cd98f00b204e9800998ecf8427e"
	seedMD5     = "cca84e669c8db680f3264a93fe83aab7"
	emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	emptySHA512 = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce" +
		"47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

func TestParseDialects(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		dialects string
		entries  []Entry  // Line and Digest filled from want
		digests  []string // the entries' digests when not all emptyMD5
	}{
		{"gnu text", emptyMD5 + "  a.iso\n", "gnu",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 1}}, nil},
		{"gnu binary", emptyMD5 + " *a.iso\n", "gnu",
			[]Entry{{Name: "a.iso", Binary: true, Dialect: GNU, Line: 1}}, nil},
		{"gnu one space", emptyMD5 + " a.iso", "gnu",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 1}}, nil},
		{"gnu name with spaces", emptyMD5 + "   two  spaces \n", "gnu",
			[]Entry{{Name: " two  spaces ", Dialect: GNU, Line: 1}}, nil},
		{"gnu name starting with (", emptyMD5 + "  (x)\n", "gnu",
			[]Entry{{Name: "(x)", Dialect: GNU, Line: 1}}, nil},
		{"gnu escaped", `\` + emptyMD5 + `  a\\b\nc\rd` + "\n", "gnu",
			[]Entry{{Name: "a\\b\nc\rd", Dialect: GNU, Line: 1}}, nil},
		{"gnu unescaped backslash kept", emptyMD5 + `  a\nb` + "\n", "gnu",
			[]Entry{{Name: `a\nb`, Dialect: GNU, Line: 1}}, nil},
		{"bsd", "MD5 (a b.iso) = " + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "a b.iso", Binary: true, Dialect: BSD, Line: 1}}, nil},
		{"bsd name with parens and equals", "MD5 (x) = (y).iso) = " + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "x) = (y).iso", Binary: true, Dialect: BSD, Line: 1}}, nil},
		{"bsd escaped", `\MD5 (a\nb) = ` + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "a\nb", Binary: true, Dialect: BSD, Line: 1}}, nil},
		{"openssl", "MD5(a.iso)= " + emptyMD5 + "\n", "bsd",
			[]Entry{{Name: "a.iso", Binary: true, Dialect: BSD, Line: 1}}, nil},
		{"seed", seedMD5 + "/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso\n", "seed",
			[]Entry{{Name: "/home/build/build/PLATFORM-70/iso/cmp-12.1.2.x.x.x.iso", Dialect: Seed, Line: 1}}, nil},
		{"seed relative", seedMD5 + "./cmp.iso", "seed",
			[]Entry{{Name: "./cmp.iso", Dialect: Seed, Line: 1}}, nil},
		{"bare", strings.ToUpper(emptyMD5) + "\r\n", "bare",
			[]Entry{{Dialect: Bare, Line: 1}}, nil},
		{"bom crlf upper blank comment mixed",
			"\xef\xbb\xbf# made on the build host\r\n\r\n  \t\r\n" +
				strings.ToUpper(emptyMD5) + "  a.iso\r\n" +
				"MD5 (b.iso) = " + strings.ToUpper(emptyMD5) + "\r\n",
			"gnu+bsd",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 4}, {Name: "b.iso", Binary: true, Dialect: BSD, Line: 5}}, nil},
		{"sha256 gnu", emptySHA256 + "  a.iso\n", "gnu",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 1}}, []string{emptySHA256}},
		{"sha512 gnu binary escaped", `\` + emptySHA512 + ` *a\nb` + "\n", "gnu",
			[]Entry{{Name: "a\nb", Binary: true, Dialect: GNU, Line: 1}}, []string{emptySHA512}},
		{"sha256 bsd", "SHA256 (a.iso) = " + emptySHA256 + "\n", "bsd",
			[]Entry{{Name: "a.iso", Binary: true, Dialect: BSD, Line: 1}}, []string{emptySHA256}},
		{"sha512 bsd escaped", `\SHA512 (a\\b) = ` + emptySHA512 + "\n", "bsd",
			[]Entry{{Name: `a\b`, Binary: true, Dialect: BSD, Line: 1}}, []string{emptySHA512}},
		{"openssl 1 and 3", "SHA256(a)= " + emptySHA256 + "\nSHA2-512(b)= " + emptySHA512 + "\nsha2-256(c)= " + emptySHA256, "bsd",
			[]Entry{{Name: "a", Binary: true, Dialect: BSD, Line: 1}, {Name: "b", Binary: true, Dialect: BSD, Line: 2},
				{Name: "c", Binary: true, Dialect: BSD, Line: 3}}, []string{emptySHA256, emptySHA512, emptySHA256}},
		{"sha256 seed", emptySHA256 + "/home/build/a.iso\n", "seed",
			[]Entry{{Name: "/home/build/a.iso", Dialect: Seed, Line: 1}}, []string{emptySHA256}},
		{"sha512 bare upper", strings.ToUpper(emptySHA512) + "\r\n", "bare",
			[]Entry{{Dialect: Bare, Line: 1}}, []string{emptySHA512}},
		{"every algorithm mixed, bom crlf upper",
			"\xef\xbb\xbf" + emptyMD5 + "  a.iso\r\n" +
				"SHA256 (a.iso) = " + strings.ToUpper(emptySHA256) + "\r\n" +
				emptySHA512 + " *a.iso\r\n" +
				"MD5 (b.iso) = " + emptyMD5 + "\r\n",
			"gnu+bsd",
			[]Entry{{Name: "a.iso", Dialect: GNU, Line: 1}, {Name: "a.iso", Binary: true, Dialect: BSD, Line: 2},
				{Name: "a.iso", Binary: true, Dialect: GNU, Line: 3}, {Name: "b.iso", Binary: true, Dialect: BSD, Line: 4}},
			[]string{emptyMD5, emptySHA256, emptySHA512, emptyMD5}},
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
				if tt.digests != nil {
					want.Digest = mustDigest(t, tt.digests[i])
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
		{"sha1", strings.Repeat("ab", 20) + "  a\n", []string{"line 1: digest has 40 hex digits: an MD5 has 32, a SHA-256 64, a SHA-512 128"}},
		{"sha384", strings.Repeat("ab", 48) + "  a\n", []string{"line 1: digest has 96 hex digits"}},
		{"sha1 tag", "SHA1 (a) = " + strings.Repeat("ab", 20) + "\n", []string{"line 1: SHA1 digests are not supported (MD5, SHA256 and SHA512 are)"}},
		{"sha256 tag with an MD5", "# x\nSHA256 (a) = " + emptyMD5 + "\n", []string{"line 2: \"" + emptyMD5 + "\" is not a SHA-256 digest (64 hex digits)"}},
		{"sha512 tag with a SHA-256", "SHA512 (a) = " + emptySHA256 + "\n", []string{"line 1: ", "is not a SHA-512 digest (128 hex digits)"}},
		{"md5 tag with a SHA-256", "MD5 (a) = " + emptySHA256 + "\n", []string{"line 1: ", "is not an MD5 digest (32 hex digits)"}},
		{"sha256 one digit short", emptySHA256[1:] + "  a\n", []string{"line 1: digest has 63 hex digits"}},
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

// TestLookupStrongest: a file giving several digests for one image is read
// for its strongest, whatever the order of the lines; two digests of one
// algorithm that differ are still an error.
func TestLookupStrongest(t *testing.T) {
	other := strings.Repeat("1", 64)
	for _, tt := range []struct {
		name, in, want, wantErr string
	}{
		{"sha512 last", emptyMD5 + "  a.iso\nSHA256 (a.iso) = " + emptySHA256 + "\n" + emptySHA512 + "  a.iso\n", emptySHA512, ""},
		{"sha256 first", "SHA256 (a.iso) = " + emptySHA256 + "\nMD5 (a.iso) = " + emptyMD5 + "\n", emptySHA256, ""},
		{"by base name", emptyMD5 + "  /build/a.iso\n" + emptySHA256 + "/build/a.iso\n", emptySHA256, ""},
		{"exact name beats a stronger base name", emptyMD5 + "  a.iso\n" + emptySHA512 + "  old/a.iso\n", emptyMD5, ""},
		{"same algorithm differs", emptyMD5 + "  a.iso\n" + emptySHA256 + "  a.iso\n" + other + "  a.iso\n", "",
			"a.iso is listed with different digests in /srv/SUMS (lines 2 and 3)"},
		{"same digest twice", emptySHA256 + "  a.iso\nSHA256 (a.iso) = " + emptySHA256 + "\n", emptySHA256, ""},
	} {
		s, err := Parse(strings.NewReader(tt.in), "/srv/SUMS")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		e, err := s.Lookup("/srv/a.iso")
		switch {
		case tt.wantErr != "":
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: %v, want error %q", tt.name, err, tt.wantErr)
			}
		case err != nil || e.Digest.String() != tt.want:
			t.Errorf("%s: %s %v, want %s", tt.name, e.Digest, err, tt.want)
		}
	}
}

// awkwardNames are file names that checksum tools escape or that look like
// another dialect.
var awkwardNames = []string{"plain.iso", "with space.iso", " leading space", "back\\slash", "new\nline",
	"cr\rname", "both\\and\nmore", "star*name", "(paren)", "MD5 (x) = y", "SHA256 (x) = y", "ünïcode.iso"}

// TestRealSums writes files with awkward names, has the real md5sum,
// sha256sum, sha512sum (plain, -b, --tag) and openssl dgst (-r and tagged)
// describe them, and checks that Parse reads back every name and digest the
// tool computed. A file made of all their outputs together gives each name
// its SHA-512.
func TestRealSums(t *testing.T) {
	hosttest.RequireCommand(t, "md5sum", "sha256sum", "sha512sum", "openssl")
	dir := t.TempDir()
	names := awkwardNames
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(strings.Repeat(n, i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := map[Algorithm]map[string]Digest{}
	for _, alg := range Algorithms {
		want[alg] = map[string]Digest{}
		for _, n := range names {
			d, _, err := sumFileOf(t, alg, filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			want[alg][n] = d
		}
	}
	// OpenSSL escapes a newline in -r output but not a backslash, and writes
	// a newline as it is in tagged output: such names cannot be read back.
	noNewline := func(n string) bool { return !strings.Contains(n, "\n") }
	unambiguous := func(n string) bool { return !strings.Contains(n, "\n") || !strings.Contains(n, `\`) }
	noSeed := func(n string) bool { return !strings.ContainsAny(n, "\n\r\\") }
	run := func(ok func(string) bool, cmd string, args ...string) string {
		for _, n := range names {
			if ok == nil || ok(n) {
				args = append(args, n)
			}
		}
		c := exec.Command(cmd, args...)
		c.Dir = dir
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%s %v: %v", cmd, args, err)
		}
		return string(out)
	}
	seed := ""
	for _, n := range names {
		if noSeed(n) {
			seed += want[MD5][n].String() + "/home/build/build/PLATFORM-70/iso/" + n + "\n"
		}
	}
	all := run(nil, "md5sum") + run(nil, "sha256sum", "--tag") + run(nil, "sha512sum", "-b") + run(nil, "md5sum", "--tag")
	for _, tc := range []struct {
		what    string
		alg     Algorithm
		dialect string
		text    string
		listed  func(string) bool
	}{
		{"md5sum", MD5, "gnu", run(nil, "md5sum"), nil},
		{"md5sum -b", MD5, "gnu", run(nil, "md5sum", "-b"), nil},
		{"md5sum --tag", MD5, "bsd", run(nil, "md5sum", "--tag"), nil},
		{"md5sum, CRLF", MD5, "gnu", strings.ReplaceAll(run(nil, "md5sum"), "\n", "\r\n"), nil},
		{"seed", MD5, "seed", seed, noSeed},
		{"sha256sum", SHA256, "gnu", run(nil, "sha256sum"), nil},
		{"sha256sum -b", SHA256, "gnu", run(nil, "sha256sum", "-b"), nil},
		{"sha256sum --tag", SHA256, "bsd", run(nil, "sha256sum", "--tag"), nil},
		{"sha256sum, BOM and CRLF", SHA256, "gnu", "\xef\xbb\xbf" + strings.ReplaceAll(run(nil, "sha256sum"), "\n", "\r\n"), nil},
		{"sha512sum", SHA512, "gnu", run(nil, "sha512sum"), nil},
		{"sha512sum --tag", SHA512, "bsd", run(nil, "sha512sum", "--tag"), nil},
		{"openssl dgst -sha256 -r", SHA256, "gnu", run(unambiguous, "openssl", "dgst", "-sha256", "-r"), unambiguous},
		{"openssl dgst -sha512 -r", SHA512, "gnu", run(unambiguous, "openssl", "dgst", "-sha512", "-r"), unambiguous},
		{"openssl dgst -sha256", SHA256, "bsd", run(noNewline, "openssl", "dgst", "-sha256"), noNewline},
		{"openssl dgst -sha512", SHA512, "bsd", run(noNewline, "openssl", "dgst", "-sha512"), noNewline},
		{"openssl dgst -md5", MD5, "bsd", run(noNewline, "openssl", "dgst", "-md5"), noNewline},
		{"all mixed", SHA512, "gnu+bsd", all, nil},
	} {
		s, err := Parse(strings.NewReader(tc.text), filepath.Join(dir, "SUMS"))
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.what, err, tc.text)
		}
		if s.DialectString() != tc.dialect {
			t.Errorf("%s: dialect %s, want %s", tc.what, s.DialectString(), tc.dialect)
		}
		n := 0
		for _, name := range names {
			if tc.listed != nil && !tc.listed(name) {
				continue
			}
			n++
			e, err := s.Lookup(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("%s: %q: %v", tc.what, name, err)
				continue
			}
			if e.Digest != want[tc.alg][name] {
				t.Errorf("%s: %q: %s %s, the tool says %s", tc.what, name, e.Digest.Algorithm(), e.Digest, want[tc.alg][name])
			}
		}
		if tc.what != "all mixed" && len(s.Entries) != n {
			t.Errorf("%s: %d entries, want %d", tc.what, len(s.Entries), n)
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

func sumFileOf(t testing.TB, alg Algorithm, p string) (Digest, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return Digest{}, 0, err
	}
	defer f.Close()
	return SumReader(t.Context(), alg, f, nil)
}
