package check

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"upgradectl/host"
)

// Server is an NTP server this host is configured to use.
type Server struct {
	// Address is "host" or "host:port" ("[v6]:port").
	Address string `json:"address"`
	// Source says where it is configured: "FILE:LINE" (a host path) or
	// "checks.ntp.servers".
	Source string `json:"source"`
}

// include is a file a time daemon configuration pulls in.
type include struct {
	pattern string // host path glob
}

// maxLine bounds one configuration line; longer lines are ignored.
const maxLine = 64 * 1024

// lines calls f for each line of data with its number, comments and
// surrounding space removed, split into fields. Empty lines are skipped.
func lines(data []byte, comment string, f func(n int, fields []string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		if i := strings.IndexAny(l, comment); i >= 0 {
			l = l[:i]
		}
		if fs := strings.Fields(l); len(fs) > 0 {
			f(n, fs)
		}
	}
}

// serverAddress joins a host and an optional port into Server.Address.
func serverAddress(h string, port int) string {
	if port == 0 {
		return h
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), strconv.Itoa(port))
}

// validHost is a plausible server in a configuration file: "host" or
// "host:port" whose host is a name or an address (letters, digits and
// . - _ : %, brackets around an IPv6 address), not an option.
func validHost(a string) bool {
	if a == "" || len(a) > 255 || a[0] == '-' {
		return false
	}
	alnum := false
	for _, r := range serverHost(a) {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			alnum = true
		case strings.ContainsRune(".-_:%", r):
		default:
			return false
		}
	}
	return alnum
}

// parseChrony reads a chrony.conf (or a .sources file): the server, pool
// and peer directives with their port option, and the files it includes
// (include, confdir, sourcedir). Anything else is ignored.
func parseChrony(data []byte, file string) ([]Server, []include) {
	var servers []Server
	var incs []include
	lines(data, "#%;!", func(n int, f []string) {
		switch strings.ToLower(f[0]) {
		case "server", "pool", "peer":
			if len(f) < 2 || !validHost(f[1]) {
				return
			}
			port := 0
			for i := 2; i+1 < len(f); i++ {
				if strings.ToLower(f[i]) == "port" {
					if p, err := strconv.Atoi(f[i+1]); err == nil && p > 0 && p < 65536 {
						port = p
					}
				}
			}
			servers = append(servers, Server{serverAddress(f[1], port), fmt.Sprintf("%s:%d", file, n)})
		case "include":
			for _, p := range f[1:] {
				incs = append(incs, include{p})
			}
		case "confdir":
			for _, d := range f[1:] {
				incs = append(incs, include{path.Join(d, "*.conf")})
			}
		case "sourcedir":
			for _, d := range f[1:] {
				incs = append(incs, include{path.Join(d, "*.sources")})
			}
		}
	})
	return servers, incs
}

// parseNTPConf reads an ntp.conf of ntpd or ntpsec: server, pool and peer
// (skipping "-4"/"-6" and the 127.127.t.u reference clock pseudo-addresses)
// and includefile.
func parseNTPConf(data []byte, file string) ([]Server, []include) {
	var servers []Server
	var incs []include
	lines(data, "#", func(n int, f []string) {
		switch strings.ToLower(f[0]) {
		case "server", "pool", "peer":
			args := f[1:]
			for len(args) > 0 && (args[0] == "-4" || args[0] == "-6") {
				args = args[1:]
			}
			if len(args) == 0 || !validHost(args[0]) || strings.HasPrefix(args[0], "127.127.") {
				return
			}
			servers = append(servers, Server{args[0], fmt.Sprintf("%s:%d", file, n)})
		case "includefile":
			if len(f) > 1 {
				incs = append(incs, include{f[1]})
			}
		}
	})
	return servers, incs
}

// timesyncd is the state of systemd-timesyncd's configuration while its
// files are read in order: later assignments add to the lists, an empty
// assignment clears them.
type timesyncd struct {
	ntp, fallback []Server
	// set records that a file assigned NTP= or FallbackNTP= at all.
	set bool
	// haveFallbacks records a FallbackNTP= with servers: without one,
	// timesyncd falls back on its built-in list (as systemd does).
	haveFallbacks bool
	// builtin is that list where it is known.
	builtin []Server
}

// parse reads one timesyncd.conf or drop-in: NTP= and FallbackNTP= in the
// [Time] section.
func (t *timesyncd) parse(data []byte, file string) {
	section := ""
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		n++
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		if l[0] == '[' {
			section = strings.Trim(l, "[] \t")
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section != "Time" {
			continue
		}
		var list *[]Server
		switch strings.TrimSpace(k) {
		case "NTP":
			list = &t.ntp
		case "FallbackNTP":
			list = &t.fallback
		default:
			continue
		}
		t.set = true
		fs := strings.Fields(v)
		if len(fs) == 0 {
			*list = nil
			continue
		}
		if list == &t.fallback {
			t.haveFallbacks = true
		}
		for _, h := range fs {
			if validHost(h) {
				*list = append(*list, Server{h, fmt.Sprintf("%s:%d", file, n)})
			}
		}
	}
}

// servers are the servers timesyncd uses: NTP= if any, else FallbackNTP=,
// else (no FallbackNTP= with servers read) the built-in list.
func (t *timesyncd) servers() []Server {
	if len(t.ntp) > 0 {
		return t.ntp
	}
	if !t.haveFallbacks {
		return t.builtin
	}
	return t.fallback
}

// builtinFallback finds timesyncd's built-in fallback servers in its
// pristine configuration file, where systemd's build writes them as the
// commented default "#FallbackNTP=...".
func builtinFallback(data []byte, file string) []Server {
	var out []Server
	lines(data, "", func(n int, f []string) {
		if len(out) > 0 {
			return
		}
		v, ok := strings.CutPrefix(strings.Join(f, " "), "#FallbackNTP=")
		if !ok {
			return
		}
		for _, h := range strings.Fields(v) {
			if validHost(h) {
				out = append(out, Server{h, fmt.Sprintf("%s:%d (systemd-timesyncd's built-in default)", file, n)})
			}
		}
	})
	return out
}

// maxIncludeDepth bounds include chains (and loops).
const maxIncludeDepth = 8

// configReader reads daemon configuration files inside the root.
type configReader struct {
	root host.Root
	seen map[string]bool
	// problems are files that exist but could not be read.
	problems []string
}

// read returns the content of host path p, or nil if it does not exist.
func (c *configReader) read(p string) []byte {
	real, err := c.root.Resolve(p)
	if err == nil {
		if c.seen[real] {
			return nil
		}
		c.seen[real] = true
		var data []byte
		data, err = host.ReadSmallFile(real)
		if err == nil {
			return data
		}
	}
	if !os.IsNotExist(err) {
		c.problems = append(c.problems, fmt.Sprintf("cannot read %s: %v", p, unwrapPath(err)))
	}
	return nil
}

// glob expands a host path pattern inside the root, sorted.
func (c *configReader) glob(pattern string) []string {
	m, err := rootGlob(c.root, pattern)
	if err != nil {
		c.problems = append(c.problems, fmt.Sprintf("cannot read %s: %v", pattern, unwrapPath(err)))
	}
	return m
}

// walk reads file with parse, following its includes.
func (c *configReader) walk(file string, depth int, parse func([]byte, string) ([]Server, []include)) []Server {
	data := c.read(file)
	if data == nil {
		return nil
	}
	servers, incs := parse(data, file)
	if depth >= maxIncludeDepth {
		return servers
	}
	for _, inc := range incs {
		if !strings.HasPrefix(inc.pattern, "/") {
			inc.pattern = path.Join(path.Dir(file), inc.pattern)
		}
		for _, f := range c.glob(inc.pattern) {
			servers = append(servers, c.walk(f, depth+1, parse)...)
		}
	}
	return servers
}

// hostServers returns the servers configured for chrony, ntpd/ntpsec and
// systemd-timesyncd under the root, in that order, and the files that could
// not be read.
func hostServers(root host.Root) ([]Server, []string) {
	c := &configReader{root: root, seen: map[string]bool{}}
	var out []Server
	for _, f := range []string{"/etc/chrony/chrony.conf", "/etc/chrony.conf"} {
		out = append(out, c.walk(f, 0, parseChrony)...)
	}
	for _, f := range []string{"/etc/ntp.conf", "/etc/ntpsec/ntp.conf"} {
		out = append(out, c.walk(f, 0, parseNTPConf)...)
	}
	// timesyncd: the main file (the first of /etc, /run, /usr/local/lib
	// and /usr/lib, as newer systemd reads it; older systemd reads /etc
	// only and ships nothing in the others), then the drop-ins of every
	// directory ordered by file name, where /etc overrides /run overrides
	// /usr/lib.
	var ts timesyncd
	for _, f := range timesyncdMain {
		if data := c.read(f); data != nil {
			ts.parse(data, f)
			ts.builtin = builtinFallback(data, f)
			break
		}
	}
	if ts.builtin == nil {
		// The pristine copy, where /etc has none or an edited one.
		for _, f := range timesyncdPristine {
			if data := c.read(f); data != nil {
				if ts.builtin = builtinFallback(data, f); ts.builtin != nil {
					break
				}
			}
		}
	}
	dropins := map[string]string{}
	for _, d := range []string{"/usr/lib/systemd/timesyncd.conf.d", "/usr/local/lib/systemd/timesyncd.conf.d", "/run/systemd/timesyncd.conf.d", "/etc/systemd/timesyncd.conf.d"} {
		for _, f := range c.glob(d + "/*.conf") {
			dropins[path.Base(f)] = f
		}
	}
	names := make([]string, 0, len(dropins))
	for n := range dropins {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if data := c.read(dropins[n]); data != nil {
			ts.parse(data, dropins[n])
		}
	}
	// An installed timesyncd uses its built-in list when nothing is set;
	// a configuration left behind by a removed one counts only where it
	// names servers.
	if ts.set || c.exists(timesyncdBinaries...) {
		out = append(out, ts.servers()...)
	}
	return out, c.problems
}

var (
	timesyncdMain = []string{"/etc/systemd/timesyncd.conf", "/run/systemd/timesyncd.conf",
		"/usr/local/lib/systemd/timesyncd.conf", "/usr/lib/systemd/timesyncd.conf"}
	timesyncdPristine = []string{"/usr/lib/systemd/timesyncd.conf", "/usr/share/factory/etc/systemd/timesyncd.conf"}
	timesyncdBinaries = []string{"/usr/lib/systemd/systemd-timesyncd", "/lib/systemd/systemd-timesyncd"}
)

// exists says whether any of the host paths exists in the root.
func (c *configReader) exists(paths ...string) bool {
	for _, p := range paths {
		if real, err := c.root.Resolve(p); err == nil {
			if _, err := os.Stat(real); err == nil {
				return true
			}
		}
	}
	return false
}

// dedupe drops servers whose address was seen before, keeping the first.
func dedupe(in []Server) []Server {
	seen := map[string]bool{}
	var out []Server
	for _, s := range in {
		k := serverKey(s.Address)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, s)
	}
	return out
}

// serverKey is an address with the default port made explicit, for
// comparing: "a" and "a:123" are the same server.
func serverKey(a string) string {
	return strings.ToLower(serverHost(a)) + " " + serverPort(a)
}

// serverHost is the host part of an address ("host" or "host:port").
func serverHost(a string) string {
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return strings.Trim(a, "[]")
}

// serverPort is the port of an address, "123" when it has none.
func serverPort(a string) string {
	if _, p, err := net.SplitHostPort(a); err == nil {
		return p
	}
	return "123"
}
