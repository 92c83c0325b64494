package host

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

//go:embed default.toml
var defaultConfig string

// DefaultConfigText is the embedded default configuration.
func DefaultConfigText() string { return defaultConfig }

// DefaultConfigPath is where the configuration lives under the root.
const DefaultConfigPath = "/etc/upgradectl/upgradectl.toml"

// Duration is a time.Duration written as "5s", "500ms", "24h".
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (like 5s, 500ms, 24h)", b)
	}
	if v < 0 {
		return fmt.Errorf("%q is negative", b)
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Size is a byte count written as a number or with a unit: "3GiB", "500MB".
type Size int64

func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

func (s Size) MarshalText() ([]byte, error) { return []byte(FormatSize(int64(s))), nil }

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseSize reads "3GiB", "10MB", "4096".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || !(f >= 0) || f*float64(mult) > 1<<62 { // !(f >= 0): NaN too
		return 0, fmt.Errorf("%q is not a size (like 3GiB, 500MB, 4096)", s)
	}
	return int64(f * float64(mult)), nil
}

// FormatSize prints a byte count in binary units.
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Config is upgradectl's configuration.
type Config struct {
	Product     ProductConfig     `toml:"product"`
	Checks      ChecksConfig      `toml:"checks"`
	ISO         ISOConfig         `toml:"iso"`
	Tag         TagConfig         `toml:"tag"`
	Maintenance MaintenanceConfig `toml:"maintenance"`
	Stages      StagesConfig      `toml:"stages"`
	Metrics     MetricsConfig     `toml:"metrics"`
	Fleet       FleetConfig       `toml:"fleet"`

	// Source says where the configuration came from: a path under the
	// root, or "embedded default".
	Source string `toml:"-"`
}

type ProductConfig struct {
	Type    string `toml:"type"`
	Version string `toml:"version"`
}

type ChecksConfig struct {
	Accept  []string `toml:"accept"`
	Timeout Duration `toml:"timeout"`
	// Severity overrides a check's severity on failure: check id ->
	// "inhibitor" or "warning".
	Severity map[string]string `toml:"severity"`
	NTP      NTPConfig         `toml:"ntp"`
	RTC      RTCConfig         `toml:"rtc"`
	Disk     []DiskConfig      `toml:"disk"`
	Backup   BackupConfig      `toml:"backup"`
	Auth     AuthConfig        `toml:"auth"`
}

type NTPConfig struct {
	Servers    []string `toml:"servers"`
	FromHost   bool     `toml:"from_host"`
	WarnOffset Duration `toml:"warn_offset"`
	FailOffset Duration `toml:"fail_offset"`
	MaxError   Duration `toml:"max_error"`
}

type RTCConfig struct {
	Device    string   `toml:"device"`
	WarnDrift Duration `toml:"warn_drift"`
	FailDrift Duration `toml:"fail_drift"`
}

type DiskConfig struct {
	Path           string  `toml:"path"`
	MinFree        Size    `toml:"min_free"`
	MinFreePercent float64 `toml:"min_free_percent"`
	MinFreeInodes  int64   `toml:"min_free_inodes"`
	// Profiles limits the entry to the "pre" or "post" checks; empty: both.
	Profiles []string `toml:"profiles"`
}

type BackupConfig struct {
	Paths  []string `toml:"paths"`
	MaxAge Duration `toml:"max_age"`
}

type AuthConfig struct {
	Accounts []string `toml:"accounts"`
}

type ISOConfig struct {
	StagingDir string `toml:"staging_dir"`
	// KeysDir holds the vendor's OpenPGP public keys (host path).
	KeysDir string `toml:"keys_dir"`
	// RequireSignature refuses to stage an image whose checksum file is
	// not covered by a good signature from a key in KeysDir.
	RequireSignature bool `toml:"require_signature"`
}

type TagConfig struct {
	Attribute string `toml:"attribute"`
}

type MaintenanceConfig struct {
	Message   string   `toml:"message"`
	KeepUnits []string `toml:"keep_units"`
	// ResumeChecks runs the post health checks at every resume at boot,
	// before the pending upgrade action.
	ResumeChecks bool `toml:"resume_checks"`
}

type StagesConfig struct {
	Maintenance  bool   `toml:"maintenance"`
	RebootOnRoll bool   `toml:"reboot_on_roll"`
	HooksDir     string `toml:"hooks_dir"`
}

// MetricsConfig is where the Prometheus node exporter's textfile collector
// reads upgradectl.prom. Empty, or a directory that does not exist under
// the root: no metrics are written.
type MetricsConfig struct {
	TextfileDir string `toml:"textfile_dir"`
}

// FleetConfig is the [fleet] section: the etcd cluster that coordinates a
// rolling upgrade across servers. Without endpoints there is no fleet and
// the server upgrades alone. Password is a secret: never print or log it.
type FleetConfig struct {
	Endpoints      []string `toml:"endpoints"`
	CA             string   `toml:"ca"`
	Cert           string   `toml:"cert"`
	Key            string   `toml:"key"`
	User           string   `toml:"user"`
	Password       string   `toml:"password"`
	Cluster        string   `toml:"cluster"`
	Member         string   `toml:"member"`
	Group          string   `toml:"group"`
	Slots          int      `toml:"slots"`
	Order          []string `toml:"order"`
	DialTimeout    Duration `toml:"dial_timeout"`
	RequestTimeout Duration `toml:"request_timeout"`
	FleetlockURL   string   `toml:"fleetlock_url"`
}

// Enabled says whether a fleet is configured.
func (f FleetConfig) Enabled() bool { return len(f.Endpoints) > 0 }

// DefaultConfig returns the embedded default configuration.
func DefaultConfig() *Config {
	c, err := ParseConfig([]byte(defaultConfig), "embedded default")
	if err != nil {
		panic("embedded default configuration is invalid: " + err.Error())
	}
	return c
}

// maxConfig bounds a configuration file: the default with every key
// commented is a few KiB, and a decode allocates hundreds of times the
// input (see CheckTOMLShape).
const maxConfig = 256 << 10

// ParseConfig reads a configuration on top of the embedded default: keys
// present in data replace the default's, arrays of tables ([[checks.disk]])
// replace the default's list whole. Every problem is reported, not just the
// first.
func ParseConfig(data []byte, source string) (*Config, error) {
	if len(data) > maxConfig {
		return nil, Usage("invalid configuration %s: larger than %s", source, FormatSize(maxConfig))
	}
	if err := CheckTOMLShape(data); err != nil {
		return nil, Usage("invalid configuration %s: %s", source, err)
	}
	c, md, problems, err := decodeConfig(data, source)
	if err != nil {
		return nil, Usage("cannot read configuration %s: %s", source, oneLine(err))
	}
	if source != "embedded default" && !md.IsDefined("checks", "disk") {
		c.Checks.Disk = DefaultConfig().Checks.Disk
	}
	for _, k := range md.Undecoded() {
		problems = append(problems, fmt.Sprintf("unknown key %s", k))
	}
	problems = append(problems, c.validate()...)
	if len(problems) > 0 {
		return nil, Usage("invalid configuration %s: %s", source, strings.Join(problems, "; "))
	}
	c.Source = source
	return c, nil
}

// maxValueProblems bounds how many keys of the wrong type or with a bad
// value decodeConfig reports before it gives up on the rest.
const maxValueProblems = 20

// decodeConfig decodes data on top of the default. The decoder stops at the
// first value of the wrong type (or one its type refuses, such as a bad
// duration), which would hide every other problem: such a key is reported,
// left out and the rest decoded again, so that the caller can also report
// the unknown keys and impossible values of the whole file. The error is
// for a file that is not TOML at all.
func decodeConfig(data []byte, source string) (*Config, toml.MetaData, []string, error) {
	fresh := func() *Config {
		if source == "embedded default" {
			return &Config{}
		}
		c := DefaultConfig()
		c.Checks.Disk = nil
		return c
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, toml.MetaData{}, nil, err
	}
	doc := string(data)
	var problems []string
	for {
		c := fresh()
		md, err := toml.Decode(doc, c)
		if err == nil {
			// The decoder meets the keys in no fixed order.
			sort.Strings(problems)
			return c, md, problems, nil
		}
		pe, ok := parseError(err)
		if !ok || pe.LastKey == "" || len(problems) >= maxValueProblems || !deleteKey(raw, pe.LastKey) {
			return nil, md, problems, err
		}
		problems = append(problems, fmt.Sprintf("%s: %s", pe.LastKey, strings.ReplaceAll(pe.Message, "\n", " ")))
		var b strings.Builder
		if err := toml.NewEncoder(&b).Encode(raw); err != nil {
			return nil, md, problems, err
		}
		doc = b.String()
	}
}

// deleteKey removes the dotted key k, as the decoder names it (a part with
// a dot in it is quoted: checks.severity."clock.rtc"), from a decoded
// document, and from every table of an array of tables on the way. It
// reports whether it removed anything.
func deleteKey(m map[string]any, k string) bool {
	return deleteParts(m, splitKey(k))
}

func deleteParts(m map[string]any, parts []string) bool {
	if len(parts) == 0 {
		return false
	}
	v, ok := m[parts[0]]
	if !ok {
		return false
	}
	if len(parts) == 1 {
		delete(m, parts[0])
		return true
	}
	removed := false
	switch v := v.(type) {
	case map[string]any:
		removed = deleteParts(v, parts[1:])
	case []map[string]any:
		for _, t := range v {
			removed = deleteParts(t, parts[1:]) || removed
		}
	case []any:
		for _, t := range v {
			if t, ok := t.(map[string]any); ok {
				removed = deleteParts(t, parts[1:]) || removed
			}
		}
	}
	return removed
}

// splitKey splits a dotted key into its parts, unquoting quoted ones.
func splitKey(k string) []string {
	var parts []string
	for k != "" {
		if k[0] == '"' {
			if end := strings.IndexByte(k[1:], '"'); end >= 0 {
				parts = append(parts, k[1:end+1])
				k = strings.TrimPrefix(k[end+2:], ".")
				continue
			}
		}
		part, rest, _ := strings.Cut(k, ".")
		parts = append(parts, part)
		k = rest
	}
	return parts
}

func sortedKeys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// parseError finds the decoder's ParseError in err. github.com/BurntSushi/toml
// (v1.6.0) returns it as a value, but for a value inside a table of an
// array of tables ([[checks.disk]] path = 7) only as the text of one
// (errors.New(pe.Error())): that text is read back here.
// TestDecoderFlattensParseError shows it.
func parseError(err error) (toml.ParseError, bool) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe, true
	}
	if m := flatParseError.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		key, _ := strconv.Unquote(`"` + m[2] + `"`)
		return toml.ParseError{Message: m[3], Position: toml.Position{Line: line}, LastKey: key}, true
	}
	return pe, false
}

var flatParseError = regexp.MustCompile(`^toml: line (\d+) \(last key "((?:[^"\\]|\\.)*)"\): (.*)$`)

func oneLine(err error) string {
	if pe, ok := parseError(err); ok {
		return fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func (c *Config) validate() []string {
	var p []string
	if c.Checks.NTP.WarnOffset.Duration > c.Checks.NTP.FailOffset.Duration {
		p = append(p, "checks.ntp.warn_offset is above checks.ntp.fail_offset")
	}
	if c.Checks.RTC.WarnDrift.Duration > c.Checks.RTC.FailDrift.Duration {
		p = append(p, "checks.rtc.warn_drift is above checks.rtc.fail_drift")
	}
	if c.Checks.Timeout.Duration <= 0 || c.Checks.Timeout.Duration > maxTimeout {
		p = append(p, fmt.Sprintf("checks.timeout %s is not above zero and at most %s", c.Checks.Timeout.Duration, maxTimeout))
	}
	// A limit of zero (or less) could never be met.
	for _, d := range []struct {
		key string
		val time.Duration
	}{
		{"checks.ntp.warn_offset", c.Checks.NTP.WarnOffset.Duration}, {"checks.ntp.fail_offset", c.Checks.NTP.FailOffset.Duration},
		{"checks.ntp.max_error", c.Checks.NTP.MaxError.Duration}, {"checks.rtc.warn_drift", c.Checks.RTC.WarnDrift.Duration},
		{"checks.rtc.fail_drift", c.Checks.RTC.FailDrift.Duration}, {"checks.backup.max_age", c.Checks.Backup.MaxAge.Duration},
	} {
		if d.val <= 0 {
			p = append(p, fmt.Sprintf("%s %s must be above zero", d.key, d.val))
		}
	}
	// Names, paths and patterns are one line of printable text.
	text := func(key, v string) {
		if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			p = append(p, fmt.Sprintf("%s %q has a control character", key, v))
		}
	}
	for _, l := range []struct {
		key  string
		vals []string
	}{
		{"checks.accept", c.Checks.Accept}, {"checks.ntp.servers", c.Checks.NTP.Servers}, {"checks.backup.paths", c.Checks.Backup.Paths},
		{"checks.auth.accounts", c.Checks.Auth.Accounts}, {"maintenance.keep_units", c.Maintenance.KeepUnits},
	} {
		for _, v := range l.vals {
			text(l.key, v)
		}
	}
	for i, b := range c.Checks.Backup.Paths {
		if !strings.HasPrefix(b, "/") {
			p = append(p, fmt.Sprintf("checks.backup.paths[%d] %q is not an absolute pattern", i, b))
		}
	}
	for i, d := range c.Checks.Disk {
		if !strings.HasPrefix(d.Path, "/") {
			p = append(p, fmt.Sprintf("checks.disk[%d].path %q is not absolute", i, d.Path))
		}
		text(fmt.Sprintf("checks.disk[%d].path", i), d.Path)
		if !(d.MinFreePercent >= 0 && d.MinFreePercent <= 100) { // NaN too
			p = append(p, fmt.Sprintf("checks.disk[%d].min_free_percent %v is not between 0 and 100", i, d.MinFreePercent))
		}
		if d.MinFreeInodes < 0 {
			p = append(p, fmt.Sprintf("checks.disk[%d].min_free_inodes %d is negative", i, d.MinFreeInodes))
		}
		for _, pr := range d.Profiles {
			if pr != "pre" && pr != "post" {
				p = append(p, fmt.Sprintf("checks.disk[%d].profiles: %q is not pre or post", i, pr))
			}
		}
	}
	for _, id := range sortedKeys(c.Checks.Severity) {
		if s := c.Checks.Severity[id]; s != "inhibitor" && s != "warning" {
			p = append(p, fmt.Sprintf("checks.severity.%q = %q is not inhibitor or warning", id, s))
		}
	}
	for _, s := range c.Checks.NTP.Servers {
		if !validServer(s) {
			p = append(p, fmt.Sprintf("checks.ntp.servers: %q is not a host or host:port", s))
		}
	}
	for _, s := range []struct{ key, val string }{
		{"iso.staging_dir", c.ISO.StagingDir}, {"iso.keys_dir", c.ISO.KeysDir}, {"stages.hooks_dir", c.Stages.HooksDir}, {"checks.rtc.device", c.Checks.RTC.Device},
	} {
		text(s.key, s.val)
		if !strings.HasPrefix(s.val, "/") || path.Clean(s.val) == "/" {
			p = append(p, fmt.Sprintf("%s %q is not an absolute path below /", s.key, s.val))
		}
	}
	if d := c.Metrics.TextfileDir; d != "" {
		text("metrics.textfile_dir", d)
		if !strings.HasPrefix(d, "/") || path.Clean(d) == "/" {
			p = append(p, fmt.Sprintf("metrics.textfile_dir %q is not an absolute path below / (or empty: no metrics)", d))
		}
	}
	if a := c.Tag.Attribute; !strings.HasPrefix(a, "trusted.") && !strings.HasPrefix(a, "user.") {
		p = append(p, fmt.Sprintf("tag.attribute %q is not in the trusted. or user. namespace", a))
	}
	return append(p, c.Fleet.validate()...)
}

// validate reports what no fleet could work with; without endpoints the
// section is not used and only its timeouts are judged.
func (f FleetConfig) validate() []string {
	var p []string
	for _, d := range []struct {
		key string
		val time.Duration
	}{{"fleet.dial_timeout", f.DialTimeout.Duration}, {"fleet.request_timeout", f.RequestTimeout.Duration}} {
		if d.val <= 0 || d.val > maxTimeout {
			p = append(p, fmt.Sprintf("%s %s is not above zero and at most %s", d.key, d.val, maxTimeout))
		}
	}
	if !f.Enabled() {
		return p
	}
	for i, e := range f.Endpoints {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
			p = append(p, fmt.Sprintf("fleet.endpoints[%d] %q is not an http:// or https:// URL with a port", i, e))
		}
	}
	// Names are key parts: no slash, no control character, not empty.
	name := func(key, v string) {
		if v == "" || strings.ContainsAny(v, "/ ") || strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			p = append(p, fmt.Sprintf("%s %q is not a name (empty, or has a slash, space or control character)", key, v))
		}
	}
	name("fleet.cluster", f.Cluster)
	name("fleet.group", f.Group)
	if f.Member != "" {
		name("fleet.member", f.Member)
	}
	seen := map[string]bool{}
	for i, g := range f.Order {
		name(fmt.Sprintf("fleet.order[%d]", i), g)
		if seen[g] {
			p = append(p, fmt.Sprintf("fleet.order lists group %q twice", g))
		}
		seen[g] = true
	}
	if len(f.Order) > 0 && !seen[f.Group] {
		p = append(p, fmt.Sprintf("fleet.group %q is not in fleet.order", f.Group))
	}
	if f.Slots < 1 {
		p = append(p, fmt.Sprintf("fleet.slots %d must be at least 1", f.Slots))
	}
	for _, s := range []struct{ key, val string }{{"fleet.ca", f.CA}, {"fleet.cert", f.Cert}, {"fleet.key", f.Key}} {
		if s.val != "" && !strings.HasPrefix(s.val, "/") {
			p = append(p, fmt.Sprintf("%s %q is not an absolute path", s.key, s.val))
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		p = append(p, "fleet.cert and fleet.key go together")
	}
	if (f.User == "") != (f.Password == "") {
		p = append(p, "fleet.user and fleet.password go together")
	}
	if f.FleetlockURL != "" {
		if u, err := url.Parse(f.FleetlockURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p = append(p, fmt.Sprintf("fleet.fleetlock_url %q is not an http:// or https:// URL", f.FleetlockURL))
		}
	}
	return p
}

// maxTimeout bounds checks.timeout: longer is a mistake, and the time
// arithmetic on it must not overflow.
const maxTimeout = 24 * time.Hour

// validServer: "host", "host:port" or "[v6]:port", with a port from 1 to
// 65535, or a bare IPv6 address.
func validServer(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t/") {
		return false
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return !strings.Contains(s, ":") || net.ParseIP(s) != nil
	}
	n, err := strconv.Atoi(port)
	return host != "" && err == nil && n > 0 && n < 65536
}

// LoadConfig reads the configuration file at path (a host path, resolved
// inside root). If explicit is false and the file does not exist, the
// embedded default is used.
func LoadConfig(root Root, path string, explicit bool) (*Config, error) {
	if path == "" {
		path = DefaultConfigPath
	}
	real, err := root.Resolve(path)
	if err != nil {
		return nil, Usage("cannot read configuration %s: %v", path, err)
	}
	data, err := ReadSmallFile(real)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return DefaultConfig(), nil
	}
	if err != nil {
		return nil, Usage("cannot read configuration %s: %v", path, errors.Unwrap(err))
	}
	return ParseConfig(data, path)
}
