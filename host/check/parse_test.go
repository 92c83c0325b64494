package check

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseChrony(t *testing.T) {
	conf := `# comment
server ntp1.example.com iburst
pool 2.pool.example.org iburst maxsources 4
server 192.0.2.1 port 11123 minpoll 4   ! trailing comment
server 2001:db8::1 port 1234
peer peer.example.com
SERVER upper.example.com
server
server -bad
refclock PHC /dev/ptp0
include /etc/chrony/extra/*.conf
confdir /etc/chrony/conf.d /usr/lib/chrony/conf.d
sourcedir /run/chrony-dhcp
; server commented.example.com
`
	servers, incs := parseChrony([]byte(conf), "/etc/chrony/chrony.conf")
	want := []Server{
		{"ntp1.example.com", "/etc/chrony/chrony.conf:2"},
		{"2.pool.example.org", "/etc/chrony/chrony.conf:3"},
		{"192.0.2.1:11123", "/etc/chrony/chrony.conf:4"},
		{"[2001:db8::1]:1234", "/etc/chrony/chrony.conf:5"},
		{"peer.example.com", "/etc/chrony/chrony.conf:6"},
		{"upper.example.com", "/etc/chrony/chrony.conf:7"},
	}
	if !reflect.DeepEqual(servers, want) {
		t.Errorf("servers:\n got %v\nwant %v", servers, want)
	}
	wantInc := []include{{"/etc/chrony/extra/*.conf"}, {"/etc/chrony/conf.d/*.conf"}, {"/usr/lib/chrony/conf.d/*.conf"}, {"/run/chrony-dhcp/*.sources"}}
	if !reflect.DeepEqual(incs, wantInc) {
		t.Errorf("includes:\n got %v\nwant %v", incs, wantInc)
	}
}

func TestParseNTPConf(t *testing.T) {
	conf := `driftfile /var/lib/ntp/ntp.drift
server 127.127.1.0   # local clock driver, not a server
fudge 127.127.1.0 stratum 10
server -4 ntp1.example.com iburst
pool 0.debian.pool.ntp.org iburst
peer -6 -4 mate.example.com
restrict default kod nomodify
includefile /etc/ntp.d/servers.conf
`
	servers, incs := parseNTPConf([]byte(conf), "/etc/ntp.conf")
	want := []Server{
		{"ntp1.example.com", "/etc/ntp.conf:4"},
		{"0.debian.pool.ntp.org", "/etc/ntp.conf:5"},
		{"mate.example.com", "/etc/ntp.conf:6"},
	}
	if !reflect.DeepEqual(servers, want) {
		t.Errorf("servers:\n got %v\nwant %v", servers, want)
	}
	if !reflect.DeepEqual(incs, []include{{"/etc/ntp.d/servers.conf"}}) {
		t.Errorf("includes: %v", incs)
	}
}

func TestParseTimesyncd(t *testing.T) {
	var ts timesyncd
	ts.parse([]byte("[Time]\n#NTP=commented\nNTP=a.example.com b.example.com\nFallbackNTP=f.example.com\n[Other]\nNTP=ignored\n"), "/etc/systemd/timesyncd.conf")
	ts.parse([]byte("[Time]\nNTP=\nNTP=c.example.com\n"), "/etc/systemd/timesyncd.conf.d/10.conf")
	want := []Server{{"c.example.com", "/etc/systemd/timesyncd.conf.d/10.conf:3"}}
	if got := ts.servers(); !reflect.DeepEqual(got, want) {
		t.Errorf("after reset: got %v want %v", got, want)
	}
	var fb timesyncd
	fb.parse([]byte("[Time]\nFallbackNTP=f.example.com\n"), "x")
	if got := fb.servers(); len(got) != 1 || got[0].Address != "f.example.com" {
		t.Errorf("fallback: got %v", got)
	}
	var none timesyncd
	none.parse([]byte("[Time]\n#NTP=\n"), "x")
	if none.set {
		t.Errorf("commented assignments count as set")
	}
}

func TestParseShadow(t *testing.T) {
	shadow := "root:$1$salt$abcdefghijklmnopqrstuv:19000:0:99999:7:::\n" +
		"admusr:$6$salt$hash:19000:0:99999:7:::\n" +
		"locked:!$1$salt$hash:19000::::::\n" +
		"daemon:*:19000:0:99999:7:::\n" +
		"yes:$y$j9T$salt$hash:19000::::::\n" +
		"nopw::19000::::::\n" +
		"broken line without colon\n" +
		// A second entry of a name is not the one used.
		"root:$6$salt$hash:19000:0:99999:7:::\n"
	got := parseShadow([]byte(shadow))
	want := map[string]shadowEntry{
		"root": {"md5", false}, "admusr": {"sha512", false}, "locked": {"md5", true},
		"daemon": {"no password login", false}, "yes": {"yescrypt", false}, "nopw": {"no password", false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func TestParseAdjtime(t *testing.T) {
	for _, c := range []struct {
		in, want string
		err      bool
	}{
		{"0.0 0 0.0\n0\nUTC\n", "UTC", false},
		{"0.0 0 0.0\n0\nLOCAL\n", "LOCAL", false},
		{"0.0 0 0.0\n0\n", "UTC", false},
		{"", "UTC", false},
		{"0.0 0 0.0\n0\nlocal\n", "", true},
		{"0.0 0 0.0\n0\nGMT+1\n", "", true},
	} {
		got, err := parseAdjtime([]byte(c.in))
		if got != c.want || (err != nil) != c.err {
			t.Errorf("parseAdjtime(%q) = %q, %v; want %q, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

// The parsers read files of the system being upgraded: whatever is in
// them, they must not panic, and what they return must be usable.
func FuzzParseChrony(f *testing.F) {
	f.Add([]byte("server a.example.com iburst port 123\npool p\nconfdir /x\nsourcedir /y\ninclude z\n"))
	f.Add([]byte("server [::1] port 99999\nserver a port -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		servers, incs := parseChrony(data, "f")
		checkServers(t, servers)
		for _, i := range incs {
			if i.pattern == "" {
				t.Errorf("empty include")
			}
		}
	})
}

func FuzzParseNTPConf(f *testing.F) {
	f.Add([]byte("server -4 a iburst\npool b\nincludefile /c\nserver 127.127.1.0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		servers, _ := parseNTPConf(data, "f")
		checkServers(t, servers)
	})
}

func FuzzParseTimesyncd(f *testing.F) {
	f.Add([]byte("[Time]\nNTP=a b\nFallbackNTP=c\nNTP=\n"))
	f.Add([]byte("[Time]\n#NTP=\n#FallbackNTP=0.pool.example 1.pool.example\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ts timesyncd
		ts.parse(data, "f")
		ts.builtin = builtinFallback(data, "f")
		checkServers(t, ts.servers())
		checkServers(t, ts.builtin)
	})
}

func FuzzParseShadow(f *testing.F) {
	f.Add([]byte("root:$1$salt$hash:1:::::\nx:!$6$s$h:::\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for name, e := range parseShadow(data) {
			if name == "" || e.scheme == "" {
				t.Errorf("entry %q %+v", name, e)
			}
			// The scheme is a name from a fixed list, never part of a hash.
			if strings.Contains(e.scheme, "$") {
				t.Errorf("scheme %q looks like a hash", e.scheme)
			}
		}
	})
}

func FuzzParseAdjtime(f *testing.F) {
	f.Add([]byte("0.0 0 0.0\n0\nLOCAL\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseAdjtime(data)
		if err == nil && m != "UTC" && m != "LOCAL" {
			t.Errorf("mode %q", m)
		}
	})
}

func checkServers(t *testing.T, servers []Server) {
	t.Helper()
	for _, s := range servers {
		if !validHost(s.Address) || serverHost(s.Address) == "" {
			t.Errorf("invalid server address %q", s.Address)
		}
	}
}

func TestMD5Settings(t *testing.T) {
	for _, c := range []struct {
		parse func([]byte, string) []string
		in    string
		want  string
	}{
		{md5LoginDefs, "MAIL_DIR /var/mail\nENCRYPT_METHOD MD5\n", "f:2: ENCRYPT_METHOD MD5"},
		{md5LoginDefs, "MD5_CRYPT_ENAB yes\n", "f:1: MD5_CRYPT_ENAB yes"},
		{md5LoginDefs, "MD5_CRYPT_ENAB yes\nENCRYPT_METHOD SHA512\n", ""},
		{md5LoginDefs, "#ENCRYPT_METHOD MD5\nENCRYPT_METHOD YESCRYPT\n", ""},
		{md5PAM, "password [success=1 default=ignore] pam_unix.so obscure md5\npassword requisite pam_deny.so\n", "f:1: pam_unix.so md5"},
		{md5PAM, "password sufficient pam_unix.so md5 shadow nullok try_first_pass use_authtok\n", "f:1: pam_unix.so md5"},
		{md5PAM, "password sufficient pam_unix.so sha512 shadow\nauth sufficient pam_unix.so md5\n", ""},
		{md5PAM, "-password optional /lib/security/pam_unix.so md5\n", "f:1: pam_unix.so md5"},
		{md5Libuser, "[import]\ncrypt_style = md5\n[defaults]\ncrypt_style = md5\n", "f:4: crypt_style = md5"},
		{md5Libuser, "[defaults]\ncrypt_style = sha512\n", ""},
	} {
		if got := strings.Join(c.parse([]byte(c.in), "f"), "|"); got != c.want {
			t.Errorf("%q: got %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzMD5Settings(f *testing.F) {
	f.Add([]byte("ENCRYPT_METHOD MD5\npassword [a=b pam_unix.so md5\n[defaults]\ncrypt_style=md5\n"))
	f.Add([]byte("password [success=1 default=ignore]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range []func([]byte, string) []string{md5LoginDefs, md5PAM, md5Libuser} {
			for _, s := range p(data, "f") {
				if !strings.HasPrefix(s, "f:") {
					t.Errorf("note %q", s)
				}
			}
		}
	})
}
