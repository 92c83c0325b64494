package iso

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseImageName(t *testing.T) {
	for _, tc := range []struct {
		name, typ, version, arch, err string
	}{
		{name: "cmp-12.1.2.0.0_22.1.0-x86_64.iso", typ: "cmp", version: "12.1.2.0.0_22.1.0", arch: "x86_64"},
		{name: "mpe-li-12.1.2.0.0_22.1.0-x86_64.iso", typ: "mpe-li", version: "12.1.2.0.0_22.1.0", arch: "x86_64"},
		{name: "/var/TKLC/upgrade/mra-12.1.2.0.0_22.1.0-x86_64.ISO", typ: "mra", version: "12.1.2.0.0_22.1.0", arch: "x86_64"},
		{name: "Mpe-12.1.2.0.0_22.1.0-v8M_M.iso", typ: "mpe", version: "12.1.2.0.0_22.1.0", arch: "v8M_M"},
		{name: "FW2_MISC-2.2.8.0.0_10.43.0.iso", err: "fewer than three"},
		{name: "cmp-12.1.2.x.x.x.iso", err: "fewer than three"},
		{name: "cmp-12.1.2-x86_64.img", err: "does not end in .iso"},
		{name: "cmp-x86_64-12.1.iso", err: `arch "12.1" is not a word`},
		{name: "cmp-beta-x86_64.iso", err: "does not start with a digit"},
		{name: "7cmp-12.1-x86_64.iso", err: "type"},
		{name: "-12.1-x86_64.iso", err: "type"},
		{name: ".iso", err: "fewer than three"},
	} {
		id, err := ParseImageName(tc.name)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseImageName(%q) = %+v, %v; want error with %q", tc.name, id, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseImageName(%q): %v", tc.name, err)
			continue
		}
		want := Identity{Type: tc.typ, Version: tc.version, Arch: tc.arch, Source: FromFileName}
		if id != want {
			t.Errorf("ParseImageName(%q) = %+v, want %+v", tc.name, id, want)
		}
	}
}

const goodManifest = `
product = "policy"
type = "cmp"
version = "12.1.2.0.0_22.1.0"
arch = "x86_64"
install = "upgrade/install.sh"
files = ["/opt/camiant/bin/qp.pl", "/etc/camiant/x.conf"]
upgrades_from = ["12.1.1.*", "12.1.0.0.0_20.1.0"]
`

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest([]byte("\xef\xbb\xbf" + goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{Product: "policy", Type: "cmp", Version: "12.1.2.0.0_22.1.0", Arch: "x86_64",
		Install: "upgrade/install.sh", Files: []string{"/opt/camiant/bin/qp.pl", "/etc/camiant/x.conf"},
		UpgradesFrom: []string{"12.1.1.*", "12.1.0.0.0_20.1.0"}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got %+v, want %+v", m, want)
	}
	for _, tc := range []struct {
		v            string
		ok, declared bool
	}{
		{"12.1.1.0.0_21.1.0", true, true}, {"12.1.0.0.0_20.1.0", true, true}, {"12.1.0.0.0_20.1.1", false, true}, {"11.5", false, true},
	} {
		ok, declared := m.UpgradesFromVersion(tc.v)
		if ok != tc.ok || declared != tc.declared {
			t.Errorf("UpgradesFromVersion(%q) = %v, %v; want %v, %v", tc.v, ok, declared, tc.ok, tc.declared)
		}
	}
	if _, declared := (&Manifest{}).UpgradesFromVersion("1"); declared {
		t.Error("empty upgrades_from reported as declared")
	}
}

func TestParseManifestErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // every one must be in the error
	}{
		{`version = "1"`, []string{"type is missing"}},
		{`type = "cmp"`, []string{"version is missing"}},
		{"type = \"CMP\"\nversion = \"v1\"", []string{`type "CMP"`, `version "v1"`}},
		{"type = \"cmp\"\nversion = \"1\"\ninstall = \"/bin/sh\"\nfiles = [\"etc/x\", \"/a/../b\"]\nupgrades_from = [\"\", \"[\"]\nextra = 1",
			[]string{`install "/bin/sh"`, `files[0] "etc/x"`, `files[1] "/a/../b"`, `upgrades_from[0] ""`, `upgrades_from[1] "["`, `unknown key "extra"`}},
		{"type = \"cmp\"\nversion = \"1\"\ninstall = \"../x\"", []string{`install "../x"`}},
		{"type = \"cmp\"\nversion = \"1\"\narch = \"x 86\"", []string{`arch "x 86"`}},
		{"type = [", []string{"line 1"}},
		{"type = 1", []string{"invalid manifest"}},
		{strings.Repeat("#", maxManifest+1), []string{"larger than"}},
	} {
		_, err := ParseManifest([]byte(tc.in))
		if err == nil {
			t.Errorf("ParseManifest(%q) accepted", tc.in)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseManifest(%q) = %v; want %q in it", tc.in, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseManifest(%q): error spans lines: %q", tc.in, err)
		}
	}
}

func TestIdentityOf(t *testing.T) {
	withManifest := fstest.MapFS{ManifestName: {Data: []byte(goodManifest)}}
	id, err := IdentityOf(withManifest, "mra-1.0-x86_64.iso")
	if err != nil {
		t.Fatal(err)
	}
	if id.Type != "cmp" || id.Version != "12.1.2.0.0_22.1.0" || id.Source != FromManifest || id.Manifest == nil || id.Product != "policy" {
		t.Errorf("with manifest: %+v", id)
	}
	id, err = IdentityOf(fstest.MapFS{"README": {}}, "mra-1.0-x86_64.iso")
	if err != nil || id.Type != "mra" || id.Source != FromFileName {
		t.Errorf("without manifest: %+v, %v", id, err)
	}
	// A broken manifest is an error, not a reason to trust the name.
	_, err = IdentityOf(fstest.MapFS{ManifestName: {Data: []byte("type = 1")}}, "mra-1.0-x86_64.iso")
	if err == nil {
		t.Error("invalid manifest accepted")
	}
	_, err = IdentityOf(fstest.MapFS{ManifestName: {Mode: fs.ModeDir}}, "mra-1.0-x86_64.iso")
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("manifest directory: %v", err)
	}
	if _, err := ReadManifest(fstest.MapFS{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no manifest: %v, want fs.ErrNotExist", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(goodManifest))
	f.Add([]byte("type = \"mpe-li\"\nversion = \"1.2\"\nupgrades_from = [\"[\"]"))
	f.Add([]byte("type = [\n"))
	f.Add([]byte("\xef\xbb\xbf[a]\nb = 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			return
		}
		if problems := m.validate(); len(problems) > 0 {
			t.Errorf("accepted manifest is invalid: %v", problems)
		}
		m.UpgradesFromVersion("1.0")
	})
}

func FuzzParseImageName(f *testing.F) {
	for _, s := range []string{"cmp-12.1.2.0.0_22.1.0-x86_64.iso", "mpe-li-1-x.ISO", "a-b-c", "-1-x.iso", "a--1-x.iso"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		id, err := ParseImageName(name)
		if err != nil {
			return
		}
		m := Manifest{Type: id.Type, Version: id.Version, Arch: id.Arch}
		if p := m.validate(); len(p) > 0 {
			t.Errorf("%q gave an identity a manifest could not hold: %v", name, p)
		}
	})
}

// TestHostileManifest: a manifest within the size limit whose one dotted
// key has thousands of parts took 87 s and 15 GB to decode, before any
// checksum was looked at. It is refused in one short line that does not
// echo it.
func TestHostileManifest(t *testing.T) {
	for _, doc := range []string{
		strings.Repeat("a.", 32000) + "b = 1",
		"[" + strings.Repeat("a.", 32000) + "b]",
		"type = " + strings.Repeat("[", 30000) + strings.Repeat("]", 30000),
	} {
		_, err := ParseManifest([]byte(doc))
		if err == nil || len(err.Error()) > 200 || !strings.HasPrefix(err.Error(), "invalid manifest upgradectl.toml: line 1: ") {
			t.Fatalf("got %.300v", err)
		}
	}
}
