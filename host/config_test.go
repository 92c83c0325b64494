package host

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Source != "embedded default" {
		t.Errorf("source %q", c.Source)
	}
	if c.Checks.Timeout.Duration != 5*time.Second || c.Checks.NTP.MaxError.Duration != 16*time.Second {
		t.Errorf("durations: %+v", c.Checks)
	}
	if len(c.Checks.Disk) != 4 || c.Checks.Disk[0].MinFree != 3<<30 {
		t.Errorf("disk defaults: %+v", c.Checks.Disk)
	}
	if c.Tag.Attribute != "trusted.upgradectl.version" || c.ISO.StagingDir != "/var/lib/upgradectl/iso" {
		t.Errorf("defaults: %+v %+v", c.Tag, c.ISO)
	}
}

func TestParseConfigOverlay(t *testing.T) {
	c, err := ParseConfig([]byte(`
[product]
type = "cmp"
version = "12.1.2"
[checks.ntp]
warn_offset = "1s"
`), "/etc/upgradectl/upgradectl.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Product.Type != "cmp" || c.Checks.NTP.WarnOffset.Duration != time.Second {
		t.Errorf("values not read: %+v", c)
	}
	// Unset keys keep the default, including the disk list.
	if c.Checks.NTP.FailOffset.Duration != 5*time.Second || len(c.Checks.Disk) != 4 {
		t.Errorf("defaults lost: %+v %d", c.Checks.NTP, len(c.Checks.Disk))
	}
	c, err = ParseConfig([]byte("[[checks.disk]]\npath = \"/data\"\nmin_free = \"1GiB\"\n"), "x")
	if err != nil || len(c.Checks.Disk) != 1 || c.Checks.Disk[0].Path != "/data" {
		t.Fatalf("disk list not replaced: %+v %v", c.Checks.Disk, err)
	}
}

func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := ParseConfig([]byte(`
bogus = 1
[checks]
timeout = "soon"
`), "f.toml")
	if KindOf(err) != KindUsage || !strings.Contains(err.Error(), "f.toml") {
		t.Fatalf("err = %v", err)
	}
	_, err = ParseConfig([]byte(`
bogus = 1
[checks.ntp]
warn_offset = "10s"
fail_offset = "1s"
[iso]
staging_dir = "relative"
[tag]
attribute = "security.x"
`), "f.toml")
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{"unknown key bogus", "warn_offset is above", "staging_dir \"relative\" is not an absolute path below /", "tag.attribute"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not report %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	_, err = ParseConfig([]byte("[checks\n"), "broken.toml")
	if err == nil || !strings.Contains(err.Error(), "line ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("syntax error: %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	r, _ := NewRoot(dir)
	c, err := LoadConfig(r, "", false)
	if err != nil || c.Source != "embedded default" {
		t.Fatalf("absent config: %v %v", c, err)
	}
	if _, err := LoadConfig(r, "/etc/other.toml", true); KindOf(err) != KindUsage {
		t.Fatalf("explicit missing config: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "etc/upgradectl"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/upgradectl/upgradectl.toml"), []byte("[product]\ntype = \"mpe\"\n"), 0o644)
	c, err = LoadConfig(r, "", false)
	if err != nil || c.Product.Type != "mpe" || c.Source != DefaultConfigPath {
		t.Fatalf("config under the root: %+v %v", c, err)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{"3GiB": 3 << 30, "10MB": 10e6, "4096": 4096, "1.5K": 1536, "0": 0} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "GiB", "-1", "1e30GiB", "x1"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	if s := FormatSize(3 << 30); s != "3.0GiB" {
		t.Errorf("FormatSize = %q", s)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(DefaultConfigText()))
	f.Add([]byte("[product]\ntype = \"cmp\"\n[[checks.disk]]\npath = \"/\"\nmin_free = \"1G\"\n"))
	f.Add([]byte("[checks.ntp]\nservers = [\"a:123\", \"\"]\n"))
	f.Add([]byte("[checks.severity]\n\"clock.rtc\" = \"inhibitor\"\n\"x\" = \"fatal\"\n[[checks.disk]]\npath = \"/\"\nprofiles = [\"pre\", \"during\"]\nmin_free_inodes = -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "fuzz.toml")
		if err != nil {
			if KindOf(err) != KindUsage {
				t.Fatalf("error without usage kind: %v", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if len(c.validate()) != 0 {
			t.Fatal("accepted a configuration that does not validate")
		}
	})
}

func TestChecksConfigValidation(t *testing.T) {
	_, err := ParseConfig([]byte(`
[checks.severity]
"clock.rtc" = "fatal"
[checks.ntp]
servers = ["ok.example.com:123", "two words", ""]
[[checks.disk]]
path = "/"
profiles = ["pre", "during"]
min_free_inodes = -1
`), "f.toml")
	for _, want := range []string{`checks.severity."clock.rtc" = "fatal" is not inhibitor or warning`,
		`checks.disk[0].profiles: "during" is not pre or post`, "checks.disk[0].min_free_inodes -1 is negative",
		`checks.ntp.servers: "two words" is not a host or host:port`, `checks.ntp.servers: "" is not a host or host:port`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	// A user file's severities add to the (empty) default.
	c, err := ParseConfig([]byte("[checks.severity]\n\"clock.rtc\" = \"inhibitor\"\n"), "x")
	if err != nil || c.Checks.Severity["clock.rtc"] != "inhibitor" || DefaultConfig().Checks.Severity["clock.rtc"] != "" {
		t.Errorf("severity: %+v %v", c.Checks.Severity, err)
	}
	if d := DefaultConfig().Checks.Disk; d[0].Path != "/var/lib/upgradectl/iso" || len(d[0].Profiles) != 1 || d[0].Profiles[0] != "pre" {
		t.Errorf("staging entry: %+v", d[0])
	}
}

// TestConfigRefusesWhatMakesNoSense: values a check could never pass with,
// or that would overflow, or that are not one line, are refused.
func TestConfigRefusesWhatMakesNoSense(t *testing.T) {
	for _, c := range []struct{ toml, want string }{
		{"[checks]\ntimeout = \"2562047h47m16s\"", "checks.timeout 2562047h47m16s is not above zero and at most 24h0m0s"},
		{"[[checks.disk]]\npath = \"/\"\nmin_free = \"NaN\"", "is not a size"},
		{"[[checks.disk]]\npath = \"/\"\nmin_free_percent = nan", "min_free_percent NaN is not between 0 and 100"},
		{"[checks.ntp]\nmax_error = \"0s\"", "checks.ntp.max_error 0s must be above zero"},
		{"[checks.backup]\nmax_age = \"0s\"", "checks.backup.max_age 0s must be above zero"},
		{"[checks.rtc]\nwarn_drift = \"0s\"", "checks.rtc.warn_drift 0s must be above zero"},
		{"[checks.ntp]\nservers = [\"127.0.0.1:abc\"]", `"127.0.0.1:abc" is not a host or host:port`},
		{"[checks.ntp]\nservers = [\"127.0.0.1:99999\"]", `"127.0.0.1:99999" is not a host or host:port`},
		{"[checks.ntp]\nservers = [\"a\\nb\"]", `checks.ntp.servers "a\nb" has a control character`},
		{"[checks.rtc]\ndevice = \"\"", `checks.rtc.device "" is not an absolute path below /`},
		{"[iso]\nstaging_dir = \"\"", `iso.staging_dir "" is not an absolute path below /`},
		{"[iso]\nstaging_dir = \"/\"", `iso.staging_dir "/" is not an absolute path below /`},
		{"[stages]\nhooks_dir = \"\"", `stages.hooks_dir "" is not an absolute path below /`},
		{"[metrics]\ntextfile_dir = \"relative\"", `metrics.textfile_dir "relative" is not an absolute path`},
		{"[maintenance]\nkeep_units = [\"a\\nb.service\"]", "maintenance.keep_units"},
		{"[checks.auth]\naccounts = [\"root\\n\"]", "checks.auth.accounts"},
		{"[checks.backup]\npaths = [\"\"]", `checks.backup.paths[0] "" is not an absolute pattern`},
		{"[checks.backup]\npaths = [\"backup\"]", `checks.backup.paths[0] "backup" is not an absolute pattern`},
	} {
		_, err := ParseConfig([]byte(c.toml), "f.toml")
		if KindOf(err) != KindUsage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a usage error with %q", c.toml, err, c.want)
		}
	}
	for _, ok := range []string{
		"[checks.ntp]\nservers = [\"ntp.example.com\", \"10.0.0.1:123\", \"[::1]:123\", \"::1\", \"fe80::1\"]",
		"[checks.backup]\npaths = [\"/backup/*.tar\"]",
	} {
		if _, err := ParseConfig([]byte(ok), "f.toml"); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// TestConfigReportsEverything: a value of the wrong type stopped the
// decoder and hid every other problem of the file; all are reported in one
// line now, in a fixed order.
func TestConfigReportsEverything(t *testing.T) {
	doc := "[checks]\ntimeout = \"5x\"\nbogus = 1\n[checks.ntp]\nservers = \"x\"\nmax_error = \"0s\"\n" +
		"[product]\ntype = 3\n[checks.severity]\n\"clock.rtc\" = 5\n[[checks.disk]]\npath = 7\nmin_free = \"1G\"\n"
	var first string
	for i := 0; i < 10; i++ {
		_, err := ParseConfig([]byte(doc), "all.toml")
		if err == nil || KindOf(err) != KindUsage || strings.Contains(err.Error(), "\n") {
			t.Fatalf("got %v", err)
		}
		for _, want := range []string{
			`checks.timeout: "5x" is not a duration`, "checks.disk.path: incompatible types", "checks.ntp.servers: incompatible types",
			`checks.severity."clock.rtc": incompatible types`, "product.type: incompatible types", "unknown key checks.bogus",
			"checks.ntp.max_error 0s must be above zero",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q is missing from %v", want, err)
			}
		}
		if i == 0 {
			first = err.Error()
		} else if err.Error() != first {
			t.Fatalf("the report changed between runs:\n%s\n%s", first, err)
		}
	}
	// Not TOML at all: the syntax error alone, with its line.
	if _, err := ParseConfig([]byte("[checks]\ntimeout = \"5s\n"), "bad.toml"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("syntax error: %v", err)
	}
}

// TestDecoderFlattensParseError keeps the library defect parseError works
// around in sight: for a value in a table of an array of tables the
// decoder returns the text of a ParseError, not the ParseError.
func TestDecoderFlattensParseError(t *testing.T) {
	var c Config
	_, err := toml.Decode("[[checks.disk]]\npath = 7\n", &c)
	var pe toml.ParseError
	if err == nil || errors.As(err, &pe) {
		t.Logf("the decoder now returns a ParseError (%v): parseError's text fallback may go", err)
	}
	got, ok := parseError(err)
	if !ok || got.LastKey != "checks.disk.path" || got.Position.Line != 2 {
		t.Fatalf("parseError(%v) = %+v, %v", err, got, ok)
	}
}

func TestFleetConfig(t *testing.T) {
	d := DefaultConfig().Fleet
	if d.Enabled() || d.Group != "default" || d.Slots != 1 || d.Cluster == "" {
		t.Fatalf("default fleet: %+v", d)
	}
	const on = "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\n"
	for _, c := range []struct{ toml, want string }{
		{on + "slots = 0", "fleet.slots 0 must be at least 1"},
		{"[fleet]\nendpoints = [\"127.0.0.1:2379\"]", `fleet.endpoints[0] "127.0.0.1:2379" is not an http:// or https:// URL with a port`},
		{on + "cluster = \"a/b\"", `fleet.cluster "a/b" is not a name`},
		{on + "group = \"\"", `fleet.group "" is not a name`},
		{on + "member = \"a\\nb\"", `fleet.member "a\nb" is not a name`},
		{on + "order = [\"standby\", \"active\"]", `fleet.group "default" is not in fleet.order`},
		{on + "order = [\"default\", \"default\"]", `fleet.order lists group "default" twice`},
		{on + "cert = \"/c.pem\"", "fleet.cert and fleet.key go together"},
		{on + "ca = \"ca.pem\"", `fleet.ca "ca.pem" is not an absolute path`},
		{on + "user = \"u\"", "fleet.user and fleet.password go together"},
		{on + "fleetlock_url = \"ftp://x\"", `fleet.fleetlock_url "ftp://x" is not an http:// or https:// URL`},
		{"[fleet]\nrequest_timeout = \"0s\"", "fleet.request_timeout 0s is not above zero"},
		{"[fleet]\ndial_timeout = \"25h\"", "fleet.dial_timeout 25h0m0s is not above zero and at most 24h0m0s"},
	} {
		_, err := ParseConfig([]byte(c.toml), "f.toml")
		if KindOf(err) != KindUsage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a usage error with %q", c.toml, err, c.want)
		}
	}
	// Fleet problems are reported with every other one.
	_, err := ParseConfig([]byte(on+"slots = 0\n[checks]\ntimeout = \"0s\""), "f.toml")
	if err == nil || !strings.Contains(err.Error(), "fleet.slots") || !strings.Contains(err.Error(), "checks.timeout") {
		t.Errorf("fleet problems not reported with the others: %v", err)
	}
	c, err := ParseConfig([]byte(on+"password = \"s3cret\"\nuser = \"u\"\ngroup = \"active\"\norder = [\"standby\", \"active\"]\nslots = 2\nfleetlock_url = \"http://127.0.0.1:3333\""), "f.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Fleet.Enabled() || c.Fleet.Slots != 2 || c.Fleet.Group != "active" {
		t.Errorf("parsed fleet: %+v", c.Fleet)
	}
}
