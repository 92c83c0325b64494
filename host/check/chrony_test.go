package check

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/beevik/ntp"
	"golang.org/x/sys/unix"

	"upgradectl/host/hosttest"
)

// chronyd starts a real chronyd serving NTP on 127.0.0.1 at a free port,
// never touching the clock (-x), with every file it writes in a temporary
// directory. With local, it serves its own clock at stratum 8 (a
// synchronised server); without, it answers as unsynchronised. It returns
// "127.0.0.1:PORT" once chronyd answers.
func chronyd(t testing.TB, local bool) string {
	t.Helper()
	return chronydAt(t, local, "127.0.0.1", closedPort(t))
}

// chronydAt is chronyd on another loopback address and a given port.
func chronydAt(t testing.TB, local bool, ip string, port int) string {
	t.Helper()
	hosttest.RequireCommand(t, "chronyd")
	hosttest.RequireRoot(t) // chronyd refuses to start otherwise
	dir := t.TempDir()
	conf := fmt.Sprintf("port %d\nbindaddress %s\nallow 127.0.0.0/8\ncmdport 0\nbindcmdaddress /\n"+
		"pidfile %s/chronyd.pid\ndriftfile %s/drift\n", port, ip, dir, dir)
	if local {
		conf += "local stratum 8\n"
	}
	cf := filepath.Join(dir, "chrony.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "chronyd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("chronyd", "-f", cf, "-x", "-n", "-u", "root")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	// Wait for it to answer: a readiness wait, generous for a loaded machine.
	for end := time.Now().Add(30 * time.Second); ; {
		if _, err := ntp.QueryWithOptions(addr, ntp.QueryOptions{Timeout: 200 * time.Millisecond}); err == nil {
			return addr
		}
		if time.Now().After(end) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("chronyd on %s does not answer:\n%s", addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// silentServer is a UDP socket that takes queries and never answers: a
// server that is down behind a filter, so a query waits the whole timeout.
func silentServer(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().String()
}

func serversResult(t testing.TB, timeout string, servers ...string) (Result, map[string]serverResult) {
	t.Helper()
	cfg := config(t, fmt.Sprintf("[checks]\ntimeout = %q\n[checks.ntp]\nfrom_host = false\nservers = [\"%s\"]\n", timeout, strings.Join(servers, `", "`)))
	r := result(t, run(t, Options{Root: fakeRoot(t, nil), Config: cfg, Only: []string{"ntp.servers"}}), "ntp.servers")
	by := map[string]serverResult{}
	for _, s := range r.Data.(serversData).Servers {
		by[s.Address] = s
	}
	return r, by
}

func TestNTPServersChronyd(t *testing.T) {
	synced := chronyd(t, true)
	unsynced := chronyd(t, false)
	dead := "127.0.0.1:" + strconv.Itoa(closedPort(t))

	r, by := serversResult(t, "10s", synced)
	if r.Status != Pass || !strings.Contains(r.Message, "1 server reachable and synchronised") {
		t.Errorf("synchronised server: %+v", r)
	}
	if s := by[synced]; !s.Reachable || !s.Synced || s.Stratum != 8 || s.Leap != 0 || s.RTT <= 0 {
		t.Errorf("synchronised server: %+v", s)
	}

	r, by = serversResult(t, "10s", unsynced)
	if r.Status != Fail || !r.Blocks() {
		t.Errorf("unsynchronised only: %+v", r)
	}
	if s := by[unsynced]; !s.Reachable || s.Synced || s.Leap != 3 || !strings.Contains(s.Message, "not synchronised itself (leap indicator 3") {
		t.Errorf("unsynchronised server: %+v", s)
	}

	r, by = serversResult(t, "10s", dead)
	if s := by[dead]; r.Status != Fail || s.Reachable || !strings.Contains(s.Message, "unreachable: port closed") {
		t.Errorf("dead port: %+v %+v", r, s)
	}

	// One good server is enough to judge the clock; the others make it warn.
	r, by = serversResult(t, "10s", synced, unsynced, dead)
	if r.Status != Warn || !strings.Contains(r.Message, "1 of 3 servers good") {
		t.Errorf("mixed: %+v", r)
	}
	for _, a := range []string{unsynced, dead} {
		if !strings.Contains(r.Message, a) {
			t.Errorf("mixed: message does not name %s: %s", a, r.Message)
		}
	}
	if by[synced].Status != Pass || by[unsynced].Status != Fail || by[dead].Status != Fail {
		t.Errorf("mixed: %+v", by)
	}
}

func TestNTPServersSilentServer(t *testing.T) {
	// A server that never answers costs the one timeout, shared with the
	// others (the benchmark measures how long).
	synced := chronyd(t, true)
	silent := silentServer(t)
	r, by := serversResult(t, "4s", synced, silent)
	if r.Status != Warn || by[synced].Status != Pass {
		t.Errorf("got %+v", r)
	}
	if s := by[silent]; s.Reachable || s.Message != "unreachable: no answer within the timeout" {
		t.Errorf("silent server: %+v", s)
	}
}

// TestNTPServerNameAddresses: a server name with several addresses, the
// first of which does not answer (a pool member that is down), is judged
// by the address that answers. The names are in an /etc/hosts that only
// a child process of this test sees, in a mount namespace of its own:
// the real resolver reads them.
func TestNTPServerNameAddresses(t *testing.T) {
	const hostsEnv = "UPGRADECTL_TEST_HOSTS"
	if hosts := os.Getenv(hostsEnv); hosts != "" {
		// The child: its own /etc/hosts, then the checks.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Fatalf("making / private: %v", err)
		}
		if err := unix.Mount(hosts, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind mount over /etc/hosts: %v", err)
		}
		serverNameChild(t, os.Getenv("UPGRADECTL_TEST_NTP_PORT"))
		return
	}
	hosttest.RequireRoot(t)
	port := closedPort(t)
	chronydAt(t, true, "127.0.0.2", port)
	// 127.0.0.1 at that port takes queries and never answers; nothing
	// listens on 127.0.0.3 at all.
	silent, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 ntp-pool.test\n127.0.0.2 ntp-pool.test\n"+
		"127.0.0.1 ntp-dead.test\n127.0.0.3 ntp-dead.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNTPServerNameAddresses$", "-test.v")
	cmd.Env = append(os.Environ(), hostsEnv+"="+hosts, "UPGRADECTL_TEST_NTP_PORT="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNTPServerNameAddresses") {
		t.Fatalf("the child in its own mount namespace: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func serverNameChild(t *testing.T, port string) {
	if a, err := net.LookupHost("ntp-pool.test"); err != nil || len(a) != 2 || a[0] != "127.0.0.1" {
		t.Fatalf("ntp-pool.test resolves to %v (%v), want the silent 127.0.0.1 first", a, err)
	}
	pool := "ntp-pool.test:" + port
	start := time.Now()
	r, by := serversResult(t, "20s", pool)
	took := time.Since(start)
	s := by[pool]
	if r.Status != Pass || s.AddressUsed != "127.0.0.2:"+port || s.Stratum != 8 ||
		!strings.Contains(s.Message, "(from 127.0.0.2:"+port+", one of 2 addresses)") {
		t.Errorf("a name whose first address is silent: %+v\n%+v", r, s)
	}
	// The good answer ends the wait for the silent address.
	if took > 10*time.Second {
		t.Errorf("the check took %v: it waited for the silent address", took)
	}
	t.Logf("%s: %s (%v)", pool, s.Message, took.Round(time.Millisecond))

	dead := "ntp-dead.test:" + port
	r, by = serversResult(t, "2s", dead)
	if s := by[dead]; r.Status != Fail || s.Reachable || s.AddressUsed != "" || !strings.Contains(s.Message, "unreachable") ||
		!strings.HasSuffix(s.Message, "(all 2 addresses)") {
		t.Errorf("a name with no address answering: %+v\n%+v", r, s)
	}
	t.Logf("%s: %s", dead, by[dead].Message)
}

func TestJudgeServers(t *testing.T) {
	fail := 5 * time.Second
	good := func(addr string, off float64) serverResult {
		return serverResult{Address: addr, Reachable: true, Synced: true, Status: Pass, Offset: off}
	}
	bad := serverResult{Address: "down", Status: Fail, Message: "unreachable: no answer within the timeout"}
	offBy := func(s serverResult, st Status) serverResult { s.Status = st; return s }
	for _, c := range []struct {
		name    string
		servers []serverResult
		status  Status
		msg     string
	}{
		{"all good", []serverResult{good("a", 0.001), good("b", -0.002)}, Pass, "offset +1ms to a"},
		{"closest is within warn", []serverResult{good("a", 0.01), offBy(good("b", 7), Fail)}, Warn, "1 of 2 servers good"},
		{"warn offset", []serverResult{offBy(good("a", -0.7), Warn)}, Warn, "offset -700ms to a"},
		{"fail offset everywhere", []serverResult{offBy(good("a", 6), Fail), offBy(good("b", -9), Fail)}, Fail, "clock off by +6s from the closest server a (limit 5s)"},
		{"none usable", []serverResult{bad}, Fail, "no usable NTP server (1 server): down unreachable"},
		{"good and down", []serverResult{good("a", 0), bad}, Warn, "down unreachable"},
	} {
		r := judgeServers(c.servers, nil, fail)
		if r.Status != c.status || !strings.Contains(r.Message, c.msg) {
			t.Errorf("%s: got %s %q, want %s containing %q", c.name, r.Status, r.Message, c.status, c.msg)
		}
	}
}

func TestQueryAfterDeadline(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	s := queryServer(ctx, Server{Address: "127.0.0.1:1"}, time.Second, 2*time.Second)
	if s.Status != Fail || s.Reachable {
		t.Errorf("got %+v", s)
	}
}

func TestNTPSynced(t *testing.T) {
	// The real kernel state of this machine, whatever it is: a result
	// with its numbers, and a running chronyd is named.
	chronyd(t, true)
	r := result(t, run(t, Options{Root: fakeRoot(t, nil), Only: []string{"ntp.synced"}}), "ntp.synced")
	d := r.Data.(syncedData)
	if (r.Status == Pass) != d.Synced || r.Status == Skip || d.KernelState == "" {
		t.Errorf("got %+v", r)
	}
	if !strings.Contains(strings.Join(d.Daemons, " "), "chronyd") || !strings.Contains(r.Message, "chronyd running") || !d.DaemonsOnHost {
		t.Errorf("chronyd not seen: %+v", r)
	}

	// A synchronised kernel cannot be made here without setting this
	// machine's clock: the judgement on adjtimex's answers.
	for _, c := range []struct {
		maxErr int64 // µs
		status Status
		msg    string
	}{
		{15_999_999, Pass, "system clock synchronised: estimated error 2ms, maximum 16s, ntpd running"},
		{16_000_000, Fail, "system clock not synchronised: maximum error 16s, not below the limit 16s, ntpd running"},
		{250_000, Pass, "maximum 250ms"},
	} {
		tx := unix.Timex{Maxerror: c.maxErr, Esterror: 2000, Status: unix.STA_UNSYNC}
		r := judgeSynced(&tx, unix.TIME_OK, 16*time.Second, []string{"ntpd"}, false)
		if r.Status != c.status || !strings.Contains(r.Message, c.msg) {
			t.Errorf("maxerror %dµs: %s %q", c.maxErr, r.Status, r.Message)
		}
	}
}
