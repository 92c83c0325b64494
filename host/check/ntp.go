package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/beevik/ntp"
	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// timeDaemons are the process names of the time daemons reported by
// ntp.synced.
var timeDaemons = map[string]string{
	"chronyd": "chronyd", "ntpd": "ntpd", "systemd-timesyn": "systemd-timesyncd",
	"openntpd": "openntpd", "ptp4l": "ptp4l", "phc2sys": "phc2sys", "timemaster": "timemaster",
}

// runningTimeDaemons lists the time daemons running on this machine, from
// /proc/*/comm.
func runningTimeDaemons() []string {
	ents, _ := os.ReadDir("/proc")
	found := map[string]bool{}
	buf := make([]byte, 64)
	for _, e := range ents {
		if c := e.Name()[0]; c < '1' || c > '9' {
			continue
		}
		f, err := os.Open("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		n, _ := f.Read(buf)
		f.Close()
		if name, ok := timeDaemons[strings.TrimSpace(string(buf[:n]))]; ok {
			found[name] = true
		}
	}
	return sortedKeys(found)
}

// syncedData is the structured result of ntp.synced.
type syncedData struct {
	Synced        bool     `json:"synced"`
	MaxError      float64  `json:"max_error_seconds"`
	EstError      float64  `json:"est_error_seconds"`
	Offset        float64  `json:"offset_seconds"`
	KernelState   string   `json:"kernel_state"`
	STAUnsync     bool     `json:"sta_unsync"`
	Daemons       []string `json:"daemons"`
	DaemonsOnHost bool     `json:"daemons_on_running_system,omitempty"`
}

var kernelStates = map[int]string{
	unix.TIME_OK: "ok", unix.TIME_INS: "leap second insert", unix.TIME_DEL: "leap second delete",
	unix.TIME_OOP: "leap second in progress", unix.TIME_WAIT: "leap second done", unix.TIME_ERROR: "unsynchronised",
}

// checkNTPSynced reads the kernel's synchronisation state with adjtimex
// (modes 0: read only). Like systemd, the clock counts as synchronised
// when the maximum error is below checks.ntp.max_error; STA_UNSYNC is
// reported but not used, since daemons set it to keep the kernel off the
// RTC. The kernel clock is the running machine's, also with --root.
func checkNTPSynced(ctx context.Context, e *env) Result {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return Result{Status: Fail, Message: fmt.Sprintf("cannot read the kernel clock state (adjtimex): %v", err)}
	}
	return judgeSynced(&tx, state, e.cfg.Checks.NTP.MaxError.Duration, runningTimeDaemons(), !e.root.IsLive())
}

// judgeSynced turns the kernel's answer into the result of ntp.synced.
func judgeSynced(tx *unix.Timex, state int, limit time.Duration, daemons []string, notRoot bool) Result {
	maxErr := time.Duration(tx.Maxerror) * time.Microsecond
	estErr := time.Duration(tx.Esterror) * time.Microsecond
	d := syncedData{
		MaxError:      maxErr.Seconds(),
		EstError:      estErr.Seconds(),
		KernelState:   kernelStates[state],
		STAUnsync:     tx.Status&unix.STA_UNSYNC != 0,
		Daemons:       daemons,
		DaemonsOnHost: notRoot,
	}
	if tx.Status&unix.STA_NANO != 0 {
		d.Offset = (time.Duration(tx.Offset) * time.Nanosecond).Seconds()
	} else {
		d.Offset = (time.Duration(tx.Offset) * time.Microsecond).Seconds()
	}
	if d.KernelState == "" {
		d.KernelState = fmt.Sprintf("state %d", state)
	}
	daemon := "no time daemon running"
	if len(d.Daemons) > 0 {
		daemon = strings.Join(d.Daemons, ", ") + " running"
	}
	d.Synced = maxErr < limit
	if !d.Synced {
		return Result{Status: Fail, Data: d, Message: fmt.Sprintf("system clock not synchronised: maximum error %s, not below the limit %s, %s",
			maxErr.Round(time.Millisecond), limit, daemon)}
	}
	return Result{Status: Pass, Data: d, Message: fmt.Sprintf("system clock synchronised: estimated error %s, maximum %s, %s",
		estErr.Round(time.Microsecond), maxErr.Round(time.Millisecond), daemon)}
}

// serverResult is one server of ntp.servers.
type serverResult struct {
	Address   string `json:"address"`
	Source    string `json:"source"`
	Status    Status `json:"status"`
	Message   string `json:"message"`
	Reachable bool   `json:"reachable"`
	Stratum   int    `json:"stratum,omitempty"`
	Leap      int    `json:"leap"`
	RefID     string `json:"refid,omitempty"`
	// AddressUsed is the address that the result is from, when Address
	// is a name.
	AddressUsed string  `json:"address_used,omitempty"`
	Offset      float64 `json:"offset_seconds"`
	RTT         float64 `json:"rtt_seconds"`
	// Synced: the server answered and is synchronised itself, so our
	// offset to it says something about our clock.
	Synced bool `json:"synced"`
}

type serversData struct {
	Servers []serverResult `json:"servers"`
	// Problems are configuration files that could not be read.
	Problems []string `json:"problems,omitempty"`
}

// checkNTPServers queries every configured server once (SNTP), all at the
// same time and within the one shared timeout. A server is good when it
// answers, is synchronised itself (leap indicator not 3, stratum 1-15) and
// our offset to it is within the thresholds. The check fails when no
// server is usable or the clock is off by more than checks.ntp.fail_offset
// from every usable server; it warns when some server is not good.
func checkNTPServers(ctx context.Context, e *env) Result {
	cfg := e.cfg.Checks.NTP
	var servers []Server
	for _, s := range cfg.Servers {
		servers = append(servers, Server{s, "checks.ntp.servers"})
	}
	var problems []string
	if cfg.FromHost {
		hs, p := hostServers(e.root)
		servers = append(servers, hs...)
		problems = p
	}
	servers = dedupe(servers)
	if len(servers) == 0 {
		msg := "no NTP servers configured in checks.ntp.servers"
		if cfg.FromHost {
			msg = "no NTP servers found in the chrony, ntpd or systemd-timesyncd configuration or in checks.ntp.servers"
		}
		st := Warn
		if len(problems) > 0 {
			st = Fail
			msg += "; " + strings.Join(problems, "; ")
		}
		return Result{Status: st, Message: msg, Data: serversData{Servers: []serverResult{}, Problems: problems}}
	}
	res := make([]serverResult, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = queryServer(ctx, s, cfg.WarnOffset.Duration, cfg.FailOffset.Duration)
		}()
	}
	wg.Wait()
	return judgeServers(res, problems, cfg.FailOffset.Duration)
}

// judgeServers turns the server results (each already judged against the
// offset thresholds) into the check result.
func judgeServers(res []serverResult, problems []string, fail time.Duration) Result {
	d := serversData{Servers: res, Problems: problems}
	var usable []serverResult
	var notes []string
	bad := 0
	for _, r := range res {
		if r.Synced {
			usable = append(usable, r)
		}
		if r.Status != Pass {
			bad++
			notes = append(notes, r.Address+" "+r.Message)
		}
	}
	notes = append(notes, problems...)
	detail := ""
	if len(notes) > 0 {
		detail = ": " + strings.Join(notes, "; ")
	}
	if len(usable) == 0 {
		return Result{Status: Fail, Data: d, Message: fmt.Sprintf("no usable NTP server (%s)%s", host.Plural(len(res), "server"), detail)}
	}
	sort.Slice(usable, func(i, j int) bool { return abs(usable[i].Offset) < abs(usable[j].Offset) })
	best := usable[0]
	off := time.Duration(best.Offset * float64(time.Second))
	switch {
	case abs(best.Offset) > fail.Seconds():
		return Result{Status: Fail, Data: d, Message: fmt.Sprintf("clock off by %s from the closest server %s (limit %s)%s", fmtOffset(off), best.Address, fail, detail)}
	case bad > 0 || len(problems) > 0:
		return Result{Status: Warn, Data: d, Message: fmt.Sprintf("%d of %s good, offset %s to %s%s",
			len(res)-bad, host.Plural(len(res), "server"), fmtOffset(off), best.Address, detail)}
	}
	return Result{Status: Pass, Data: d, Message: fmt.Sprintf("%s reachable and synchronised, offset %s to %s",
		host.Plural(len(res), "server"), fmtOffset(off), best.Address)}
}

// maxAddresses is how many addresses of one server name are queried: as
// many as chrony takes from a pool by default (maxsources 4).
const maxAddresses = 4

// queryServer asks one configured server for the time, giving up when
// ctx ends. A name is resolved and up to maxAddresses of its addresses
// are asked at the same time, as a time daemon would use the others when
// one is down (a pool member, most often); the entry is judged by the
// best answer, and the first good answer ends the wait for the others.
func queryServer(ctx context.Context, s Server, warn, fail time.Duration) serverResult {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	if time.Until(deadline) <= 0 {
		return serverResult{Address: s.Address, Source: s.Source, Status: Fail, Message: "unreachable: not queried before the timeout"}
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	host := serverHost(s.Address)
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return serverResult{Address: s.Address, Source: s.Source, Status: Fail, Message: "unreachable: " + queryError(err)}
	}
	if len(addrs) == 1 && addrs[0] == host {
		return queryAddress(ctx, s, s.Address, warn, fail)
	}
	if len(addrs) > maxAddresses {
		addrs = addrs[:maxAddresses]
	}
	port := serverPort(s.Address)
	results := make(chan serverResult, len(addrs))
	for _, a := range addrs {
		go func() {
			addr := net.JoinHostPort(a, port)
			r := queryAddress(ctx, s, addr, warn, fail)
			r.AddressUsed = addr
			results <- r
		}()
	}
	var best serverResult
	for i := range addrs {
		r := <-results
		if i == 0 || betterAnswer(r, best) {
			best = r
		}
		if best.Status == Pass {
			cancel() // the others are not needed
		}
	}
	if len(addrs) > 1 {
		if best.Reachable {
			best.Message += fmt.Sprintf(" (from %s, one of %d addresses)", best.AddressUsed, len(addrs))
		} else {
			best.Message += fmt.Sprintf(" (all %d addresses)", len(addrs))
			best.AddressUsed = ""
		}
	}
	return best
}

// betterAnswer says whether a is a better answer than b: good before
// warning before failing, an answer from a synchronised server before
// any other answer before none, then the smaller offset.
func betterAnswer(a, b serverResult) bool {
	rank := func(r serverResult) int {
		switch {
		case r.Status == Pass:
			return 0
		case r.Status == Warn:
			return 1
		case r.Synced:
			return 2
		case r.Reachable:
			return 3
		}
		return 4
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra < rb
	}
	return abs(a.Offset) < abs(b.Offset)
}

// queryAddress asks one address for the time (one SNTP packet). ctx ending
// ends the wait for the answer.
func queryAddress(ctx context.Context, s Server, addr string, warn, fail time.Duration) serverResult {
	r := serverResult{Address: s.Address, Source: s.Source, Status: Fail}
	deadline, _ := ctx.Deadline()
	timeout := time.Until(deadline)
	if timeout <= 0 || ctx.Err() != nil {
		r.Message = "unreachable: not queried before the timeout"
		return r
	}
	resp, err := ntp.QueryWithOptions(addr, ntp.QueryOptions{
		Timeout: timeout,
		Dialer: func(_, remote string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "udp", remote)
			if err == nil {
				// Closing the socket is what ends a read early.
				context.AfterFunc(ctx, func() { c.Close() })
			}
			return c, err
		},
	})
	if err != nil {
		if errors.Is(err, net.ErrClosed) && ctx.Err() != nil {
			err = ctx.Err() // the socket was closed because ctx ended
		}
		r.Message = "unreachable: " + queryError(err)
		return r
	}
	r.Reachable = true
	r.Stratum = int(resp.Stratum)
	r.Leap = int(resp.Leap)
	r.Offset = resp.ClockOffset.Seconds()
	r.RTT = resp.RTT.Seconds()
	if resp.Stratum > 1 && resp.Stratum < 16 {
		ip := net.IPv4(byte(resp.ReferenceID>>24), byte(resp.ReferenceID>>16), byte(resp.ReferenceID>>8), byte(resp.ReferenceID))
		r.RefID = ip.String()
	} else if resp.Stratum == 1 {
		r.RefID = resp.ReferenceString()
	}
	off := abs(r.Offset)
	switch {
	case resp.Leap == ntp.LeapNotInSync:
		r.Message = fmt.Sprintf("not synchronised itself (leap indicator 3, stratum %d)", resp.Stratum)
		return r
	case resp.Stratum == 0:
		r.Message = fmt.Sprintf("refused to serve (kiss of death %q)", resp.KissCode)
		return r
	case resp.Stratum >= 16:
		r.Message = fmt.Sprintf("not synchronised itself (stratum %d)", resp.Stratum)
		return r
	}
	r.Synced = true
	switch {
	case off > fail.Seconds():
		r.Message = fmt.Sprintf("stratum %d, offset %s above %s", resp.Stratum, fmtOffset(resp.ClockOffset), fail)
	case off > warn.Seconds():
		r.Status = Warn
		r.Message = fmt.Sprintf("stratum %d, offset %s above %s", resp.Stratum, fmtOffset(resp.ClockOffset), warn)
	default:
		r.Status = Pass
		r.Message = fmt.Sprintf("stratum %d, offset %s", resp.Stratum, fmtOffset(resp.ClockOffset))
	}
	return r
}

// queryError says in few words why a query failed.
func queryError(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "port closed (ICMP port unreachable)"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "no answer within the timeout"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "host name not found"
		}
		if dnsErr.IsTimeout {
			return "name lookup timed out"
		}
		return "name lookup failed: " + dnsErr.Err
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "no answer within the timeout"
	}
	return err.Error()
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// fmtOffset prints an offset with a sign and a sensible precision.
func fmtOffset(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign = "-"
		d = -d
	}
	switch {
	case d >= time.Second:
		return sign + d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return sign + d.Round(10*time.Microsecond).String()
	}
	return sign + d.Round(time.Microsecond).String()
}
