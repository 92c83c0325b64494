package check

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"upgradectl/host"
)

// fakeRoot writes files (host path -> content) into a new directory and
// returns it as a root.
func fakeRoot(t testing.TB, files map[string]string) host.Root {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		writeFile(t, filepath.Join(dir, p), content)
	}
	r, err := host.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// closedPort returns a UDP port on 127.0.0.1 that nothing listens on: a
// query to it gets ICMP port unreachable at once.
func closedPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	return port
}

// config returns the default configuration changed by toml.
func config(t testing.TB, toml string) *host.Config {
	t.Helper()
	c, err := host.ParseConfig([]byte(toml), "test config")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func run(t testing.TB, o Options) Report {
	t.Helper()
	rep, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func result(t testing.TB, rep Report, id string) Result {
	t.Helper()
	for _, r := range rep.Checks {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", id, rep.Checks)
	return Result{}
}

// jsonOf round-trips v through JSON into a generic value, as a program
// reading --json would see it.
func jsonOf(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRootServersFromEveryDaemon(t *testing.T) {
	p := func() string { return strconv.Itoa(closedPort(t)) }
	root := fakeRoot(t, map[string]string{
		"/etc/chrony/chrony.conf": "server 127.0.0.1 port " + p() + " iburst\n" +
			"confdir /etc/chrony/conf.d\nsourcedir /etc/chrony/sources.d\ninclude ../chrony/extra.conf\n",
		"/etc/chrony/conf.d/a.conf":            "pool 127.0.0.2 port " + p() + "\n",
		"/etc/chrony/sources.d/b.sources":      "server 127.0.0.3 port " + p() + "\n",
		"/etc/chrony/extra.conf":               "server 127.0.0.4 port " + p() + "\n# the same server twice is queried once\nserver 127.0.0.4 port 123\nserver 127.0.0.4\n",
		"/etc/ntpsec/ntp.conf":                 "server 127.127.1.0\nserver -4 127.0.0.5\n",
		"/etc/systemd/timesyncd.conf":          "[Time]\nNTP=127.0.0.6\n",
		"/etc/systemd/timesyncd.conf.d/z.conf": "[Time]\nNTP=\nNTP=127.0.0.7\n",
	})
	// A link that points out of the image must be read inside it.
	if err := os.Symlink("/etc/chrony/real.conf", filepath.Join(root.Dir(), "etc/chrony/conf.d/link.conf")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root.Dir(), "etc/chrony/real.conf"), "server 127.0.0.8 port "+p()+"\n")

	cfg := config(t, "[checks]\ntimeout = \"1s\"\n[checks.ntp]\nservers = [\"127.0.0.9:"+p()+"\"]\n")
	rep := run(t, Options{Root: root, Config: cfg, Only: []string{"ntp.servers"}})
	r := result(t, rep, "ntp.servers")
	d := r.Data.(serversData)
	var got []string
	for _, s := range d.Servers {
		got = append(got, serverHost(s.Address)+" "+s.Source)
		if s.Reachable || s.Status != Fail {
			t.Errorf("%s: nothing listens there, got %+v", s.Address, s)
		}
	}
	want := []string{
		"127.0.0.9 checks.ntp.servers",
		"127.0.0.1 /etc/chrony/chrony.conf:1",
		"127.0.0.2 /etc/chrony/conf.d/a.conf:1",
		"127.0.0.8 /etc/chrony/conf.d/link.conf:1",
		"127.0.0.3 /etc/chrony/sources.d/b.sources:1",
		"127.0.0.4 /etc/chrony/extra.conf:1",
		"127.0.0.4 /etc/chrony/extra.conf:3",
		"127.0.0.5 /etc/ntpsec/ntp.conf:2",
		"127.0.0.7 /etc/systemd/timesyncd.conf.d/z.conf:3",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("servers:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r.Status != Fail || !r.Blocks() || !rep.Inhibited || rep.Result != host.ResultFailed {
		t.Errorf("no server usable must fail as an inhibitor: %+v", r)
	}
	if !strings.Contains(r.Message, "no usable NTP server") {
		t.Errorf("message %q", r.Message)
	}
}

func TestRootNoServers(t *testing.T) {
	root := fakeRoot(t, map[string]string{"/etc/chrony/chrony.conf": "# nothing\n"})
	r := result(t, run(t, Options{Root: root, Only: []string{"ntp.servers"}}), "ntp.servers")
	if r.Status != Warn || !strings.Contains(r.Message, "no NTP servers found") {
		t.Errorf("got %+v", r)
	}
}

func TestRootPasswordHash(t *testing.T) {
	const secret = "Zq8secretHashNeverPrinted"
	root := fakeRoot(t, map[string]string{
		"/etc/shadow": "root:$1$salt$" + secret + ":19000:0:99999:7:::\n" +
			"admusr:$6$salt$" + secret + ":19000:0:99999:7:::\n" +
			"oper:!$1$salt$" + secret + ":19000:0:99999:7:::\n",
	})
	for _, c := range []struct {
		accounts string
		status   Status
		md5      string
	}{
		{`["admusr"]`, Fail, "root"},
		{`["admusr", "oper"]`, Fail, "root, oper"},
		{`["nobody"]`, Fail, "root"},
	} {
		cfg := config(t, "[checks.auth]\naccounts = "+c.accounts+"\n")
		rep := run(t, Options{Root: root, Config: cfg, Only: []string{"auth.password-hash"}})
		r := result(t, rep, "auth.password-hash")
		if r.Status != c.status || !strings.Contains(r.Message, "for "+c.md5) {
			t.Errorf("%s: got %+v", c.accounts, r)
		}
		b, _ := json.Marshal(rep)
		if strings.Contains(string(b), secret) || strings.Contains(string(b), "$salt") {
			t.Errorf("the report shows a hash: %s", b)
		}
	}
	good := fakeRoot(t, map[string]string{"/etc/shadow": "root:$6$s$" + secret + ":1::::::\nadmusr:$y$j$s$h:1::::::\n"})
	r := result(t, run(t, Options{Root: good, Config: config(t, "[checks.auth]\naccounts = [\"admusr\", \"gone\"]\n"), Only: []string{"auth.password-hash"}}), "auth.password-hash")
	if r.Status != Warn || !strings.Contains(r.Message, "not in /etc/shadow: gone") {
		t.Errorf("missing account: got %+v", r)
	}
	// Good hashes, but new passwords would get MD5: a warning.
	md5conf := fakeRoot(t, map[string]string{
		"/etc/shadow":                "root:$6$s$" + secret + ":1::::::\n",
		"/etc/login.defs":            "ENCRYPT_METHOD MD5\n",
		"/etc/pam.d/common-password": "password [success=1 default=ignore] pam_unix.so obscure md5\n",
	})
	r = result(t, run(t, Options{Root: md5conf, Only: []string{"auth.password-hash"}}), "auth.password-hash")
	if r.Status != Warn || !strings.Contains(r.Message, "new passwords would get MD5 hashes (/etc/login.defs:1: ENCRYPT_METHOD MD5; /etc/pam.d/common-password:1: pam_unix.so md5)") {
		t.Errorf("md5 settings: got %+v", r)
	}
	none := fakeRoot(t, map[string]string{"/etc/passwd": ""})
	if r := result(t, run(t, Options{Root: none, Only: []string{"auth.password-hash"}}), "auth.password-hash"); r.Status != Skip {
		t.Errorf("no shadow: got %+v", r)
	}
}

func TestRootAdjtime(t *testing.T) {
	// There is no RTC on most test machines; with one the drift is real.
	// Either way a bad /etc/adjtime must fail before the device is read.
	root := fakeRoot(t, map[string]string{"/etc/adjtime": "0.0 0 0.0\n0\nSOMETIMES\n"})
	r := result(t, run(t, Options{Root: root, Only: []string{"clock.rtc"}}), "clock.rtc")
	if r.Status != Fail || !strings.Contains(r.Message, "/etc/adjtime") || r.Severity != Warning || r.Blocks() {
		t.Errorf("got %+v", r)
	}
	root = fakeRoot(t, map[string]string{"/etc/adjtime": "0.0 0 0.0\n0\nLOCAL\n"})
	cfg := config(t, "[checks.rtc]\ndevice = \"/dev/upgradectl-test-no-rtc\"\n")
	r = result(t, run(t, Options{Root: root, Config: cfg, Only: []string{"clock.rtc"}}), "clock.rtc")
	if r.Status != Skip || !strings.Contains(r.Message, "no RTC device /dev/upgradectl-test-no-rtc") {
		t.Errorf("got %+v", r)
	}
	if m := r.Data.(rtcData).Mode; m != "LOCAL" {
		t.Errorf("mode %q, want LOCAL", m)
	}
	// A FIFO (or a device, a link to /dev/zero in an image) where
	// /etc/adjtime is: an error at once, not a read that never ends.
	root = fakeRoot(t, nil)
	os.MkdirAll(root.Path("/etc"), 0o755)
	if err := syscall.Mkfifo(root.Path("/etc/adjtime"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = config(t, "[checks]\ntimeout = \"20s\"\n")
	start := time.Now()
	r = result(t, run(t, Options{Root: root, Config: cfg, Only: []string{"clock.rtc"}}), "clock.rtc")
	if !strings.Contains(r.Message, "/etc/adjtime") || !strings.Contains(r.Message, "not a regular file") || time.Since(start) > 10*time.Second {
		t.Errorf("/etc/adjtime a FIFO: %+v after %v", r, time.Since(start))
	}
}

func TestRootBackup(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		files  map[string]time.Duration // host path -> age
		paths  string
		status Status
		newest string
	}{
		{"fresh file", map[string]time.Duration{"/backup/a.iso": 2 * time.Hour, "/backup/b.iso": 30 * time.Hour}, `["/backup/*.iso"]`, Pass, "/backup/a.iso"},
		{"all old", map[string]time.Duration{"/backup/a.iso": 25 * time.Hour, "/backup/b.iso": 30 * time.Hour}, `["/backup/*.iso"]`, Fail, "/backup/a.iso"},
		{"newest inside a directory", map[string]time.Duration{"/var/backup/server/x/old.tar": 72 * time.Hour, "/var/backup/server/y/new.tar": time.Hour}, `["/var/backup/server"]`, Pass, "/var/backup/server/y/new.tar"},
		{"two patterns", map[string]time.Duration{"/a/old.iso": 40 * time.Hour, "/b/new.tgz": 3 * time.Hour}, `["/a/*.iso", "/b/*.tgz"]`, Pass, "/b/new.tgz"},
		{"nothing matches", map[string]time.Duration{"/backup/a.txt": time.Hour}, `["/backup/*.iso"]`, Fail, ""},
		{"from the future only", map[string]time.Duration{"/backup/a.iso": -2 * time.Hour}, `["/backup/*.iso"]`, Warn, ""},
		// A file dated ahead cannot hide a stale backup, nor make a good
		// one pass without a word.
		{"old, and one from the future", map[string]time.Duration{"/backup/a.iso": 240 * time.Hour, "/backup/z.iso": -700000 * time.Hour}, `["/backup/*.iso"]`, Fail, "/backup/a.iso"},
		{"fresh, and one from the future", map[string]time.Duration{"/backup/a.iso": time.Hour, "/backup/z.iso": -2 * time.Hour}, `["/backup/*.iso"]`, Warn, "/backup/a.iso"},
		{"seconds ahead: just written", map[string]time.Duration{"/backup/a.iso": -30 * time.Second}, `["/backup/*.iso"]`, Pass, "/backup/a.iso"},
		{"not configured", map[string]time.Duration{"/backup/a.iso": time.Hour}, `[]`, Skip, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{}
			for p := range c.files {
				files[p] = "backup"
			}
			root := fakeRoot(t, files)
			for p, age := range c.files {
				mt := now.Add(-age)
				if err := os.Chtimes(root.Path(p), mt, mt); err != nil {
					t.Fatal(err)
				}
			}
			cfg := config(t, "[checks.backup]\npaths = "+c.paths+"\n")
			r := result(t, run(t, Options{Root: root, Config: cfg, Only: []string{"backup.recent"}}), "backup.recent")
			if r.Status != c.status {
				t.Errorf("status %s, want %s: %s", r.Status, c.status, r.Message)
			}
			if got := r.Data.(backupData).Newest; got != c.newest {
				t.Errorf("newest %q, want %q", got, c.newest)
			}
		})
	}
}

func TestBackupSymlinkStaysInRoot(t *testing.T) {
	// A backup directory that is an absolute symlink in the image points
	// into the image, not at this machine's directory of that name.
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "fresh.iso"), "not the image's")
	root := fakeRoot(t, map[string]string{"/data/backups/old.iso": "x"})
	old := time.Now().Add(-100 * time.Hour)
	os.Chtimes(root.Path("/data/backups/old.iso"), old, old)
	if err := os.Symlink("/data/backups", root.Path("/backup")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, root.Path("/data/escape")); err != nil {
		t.Fatal(err)
	}
	cfg := config(t, "[checks.backup]\npaths = [\"/backup/*.iso\", \"/data/escape/*.iso\"]\n")
	r := result(t, run(t, Options{Root: root, Config: cfg, Only: []string{"backup.recent"}}), "backup.recent")
	if r.Status != Fail || r.Data.(backupData).Newest != "/backup/old.iso" {
		t.Errorf("got %+v", r)
	}
}

func TestOptions(t *testing.T) {
	root := fakeRoot(t, map[string]string{"/etc/shadow": "root:$1$s$h:1::::::\n"})
	if _, err := Run(context.Background(), Options{Root: root, Only: []string{"ntp.sync"}}); host.KindOf(err) != host.KindUsage || !strings.Contains(err.Error(), `unknown check "ntp.sync"`) {
		t.Errorf("unknown --only: %v", err)
	}
	if _, err := Run(context.Background(), Options{Root: root, Accept: []string{"nope"}, Profile: "during"}); host.KindOf(err) != host.KindUsage ||
		!strings.Contains(err.Error(), `unknown profile "during"`) || !strings.Contains(err.Error(), `unknown check "nope"`) {
		t.Errorf("every problem must be reported: %v", err)
	}
	cfg := config(t, "[checks.severity]\n\"clock.rtcc\" = \"warning\"\n")
	if _, err := Run(context.Background(), Options{Root: root, Config: cfg}); host.KindOf(err) != host.KindUsage {
		t.Errorf("unknown id in checks.severity: %v", err)
	}

	// Accept waives a failure: it stays failed, but no longer blocks.
	rep := run(t, Options{Root: root, Only: []string{"auth.password-hash"}, Accept: []string{"auth.password-hash"}})
	if r := rep.Checks[0]; r.Status != Fail || !r.Waived || rep.Inhibited || rep.Result != host.ResultWarning {
		t.Errorf("accepted: %+v inhibited=%v result=%s", r, rep.Inhibited, rep.Result)
	}
	// The same from the configuration.
	rep = run(t, Options{Root: root, Config: config(t, "[checks]\naccept = [\"auth.password-hash\"]\n"), Only: []string{"auth.password-hash"}})
	if !rep.Checks[0].Waived || rep.Inhibited {
		t.Errorf("accept in config: %+v", rep.Checks[0])
	}
	// A severity override turns it into a warning.
	rep = run(t, Options{Root: root, Config: config(t, "[checks.severity]\n\"auth.password-hash\" = \"warning\"\n"), Only: []string{"auth.password-hash"}})
	if r := rep.Checks[0]; r.Severity != Warning || r.Blocks() || rep.Inhibited {
		t.Errorf("severity override: %+v", r)
	}
	if _, err := host.ParseConfig([]byte("[checks.severity]\n\"clock.rtc\" = \"fatal\"\n"), "x"); err == nil {
		t.Errorf("severity fatal accepted")
	}
}

func TestProfiles(t *testing.T) {
	root := fakeRoot(t, nil)
	cfg := config(t, "[checks.ntp]\nfrom_host = false\n")
	ids := func(rep Report) string {
		var s []string
		for _, r := range rep.Checks {
			s = append(s, r.ID)
		}
		return strings.Join(s, " ")
	}
	if got := ids(run(t, Options{Root: root, Config: cfg})); got != strings.Join(IDs(), " ") {
		t.Errorf("pre runs %s", got)
	}
	post := run(t, Options{Root: root, Config: cfg, Profile: Post})
	if got := ids(post); got != "ntp.synced ntp.servers clock.rtc disk.space systemd.failed-units" {
		t.Errorf("post runs %s", got)
	}
	// The staging space entry is for pre only.
	for _, d := range result(t, post, "disk.space").Data.([]diskData) {
		if d.Path == "/var/lib/upgradectl/iso" {
			t.Errorf("post measured the staging directory")
		}
	}
	if got := ids(run(t, Options{Root: root, Config: cfg, Profile: Post, Only: []string{"auth.password-hash", "backup.recent"}})); got != "backup.recent auth.password-hash" {
		t.Errorf("--only in post runs %s", got)
	}
	// A fake image has no running systemd.
	r := result(t, post, "systemd.failed-units")
	if r.Status != Skip || !strings.Contains(r.Message, "not the running system") {
		t.Errorf("systemd under --root: %+v", r)
	}
	// Nothing was written into the image.
	var written []string
	filepath.Walk(root.Dir(), func(p string, fi os.FileInfo, err error) error {
		if p != root.Dir() {
			written = append(written, p)
		}
		return nil
	})
	if len(written) > 0 {
		t.Errorf("check wrote %v", written)
	}
}

func TestHungCheck(t *testing.T) {
	// A check stuck in a syscall (a hung NFS mount) cannot be made to order;
	// a check that blocks stands for it. The run must still end, after the
	// shared timeout and the grace, and report it failed.
	saved := checkers
	defer func() { checkers = saved }()
	release := make(chan struct{})
	defer close(release)
	checkers = append(slices.Clone(saved), checker{"disk.space", Inhibitor, []string{Pre}, func(context.Context, *env) Result {
		<-release
		return Result{Status: Pass}
	}})
	checkers = checkers[len(checkers)-1:]
	rep := run(t, Options{Root: fakeRoot(t, nil), Config: config(t, "[checks]\ntimeout = \"100ms\"\n")})
	if r := rep.Checks[0]; r.Status != Fail || r.Message != "did not finish within 2.1s" || !rep.Inhibited {
		t.Errorf("got %+v", r)
	}
}

// debianTimesyncd is the start of the timesyncd.conf that Debian 12's
// systemd-timesyncd ships, the built-in fallback servers in its comment
// (here loopback addresses where Debian has its pool names).
const debianTimesyncd = "#  This file is part of systemd.\n#\n# Entries in this file show the compile time defaults.\n" +
	"[Time]\n#NTP=\n#FallbackNTP=127.0.0.11 127.0.0.12\n#RootDistanceMaxSec=5\n"

func TestRootTimesyncdServers(t *testing.T) {
	const bin = "/usr/lib/systemd/systemd-timesyncd"
	const builtin = " (systemd-timesyncd's built-in default)"
	for _, c := range []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"installed, nothing set: the built-in list",
			map[string]string{bin: "", "/etc/systemd/timesyncd.conf": debianTimesyncd},
			[]string{"127.0.0.11 /etc/systemd/timesyncd.conf:6" + builtin, "127.0.0.12 /etc/systemd/timesyncd.conf:6" + builtin}},
		{"removed, its configuration left behind",
			map[string]string{"/etc/systemd/timesyncd.conf": debianTimesyncd},
			nil},
		{"FallbackNTP= set",
			map[string]string{bin: "", "/etc/systemd/timesyncd.conf": debianTimesyncd + "FallbackNTP=127.0.0.13\n"},
			[]string{"127.0.0.13 /etc/systemd/timesyncd.conf:8"}},
		{"NTP= set",
			map[string]string{bin: "", "/etc/systemd/timesyncd.conf": debianTimesyncd,
				"/etc/systemd/timesyncd.conf.d/a.conf": "[Time]\nNTP=127.0.0.14\n"},
			[]string{"127.0.0.14 /etc/systemd/timesyncd.conf.d/a.conf:2"}},
		{"NTP= set and emptied again: the built-in list",
			map[string]string{bin: "", "/etc/systemd/timesyncd.conf": debianTimesyncd,
				"/etc/systemd/timesyncd.conf.d/a.conf": "[Time]\nNTP=127.0.0.14\nNTP=\n"},
			[]string{"127.0.0.11 /etc/systemd/timesyncd.conf:6" + builtin, "127.0.0.12 /etc/systemd/timesyncd.conf:6" + builtin}},
		{"an edited /etc file, the pristine copy in /usr/lib (newer systemd)",
			map[string]string{bin: "", "/etc/systemd/timesyncd.conf": "[Time]\n",
				"/usr/lib/systemd/timesyncd.conf": debianTimesyncd},
			[]string{"127.0.0.11 /usr/lib/systemd/timesyncd.conf:6" + builtin, "127.0.0.12 /usr/lib/systemd/timesyncd.conf:6" + builtin}},
		{"only the /usr/lib file, read as the main one",
			map[string]string{bin: "", "/usr/lib/systemd/timesyncd.conf": debianTimesyncd + "NTP=127.0.0.15\n"},
			[]string{"127.0.0.15 /usr/lib/systemd/timesyncd.conf:8"}},
		{"installed, no list known",
			map[string]string{bin: ""},
			nil},
	} {
		got := []string{}
		servers, problems := hostServers(fakeRoot(t, c.files))
		for _, s := range servers {
			got = append(got, s.Address+" "+s.Source)
		}
		if strings.Join(got, "\n") != strings.Join(c.want, "\n") || problems != nil {
			t.Errorf("%s:\n got %q %v\nwant %q", c.name, got, problems, c.want)
		}
	}
}
