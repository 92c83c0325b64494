package stage_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"upgradectl/fleet"
	"upgradectl/host"
	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// A fleet of members, each its own --root and state directory with the
// product at version 1, coordinated through a real etcd cluster. Each
// member tells an observer that does not use etcd when it goes out of
// service (install's pre hook) and back (roll's post hook), appending to
// one file under flock.

type fleetOpts struct {
	endpoints []string
	fleetlock string // a FleetLock server's URL
	group     string
	slots     int
	order     []string
	observer  string // the observer's file
}

func fleetConfig(o fleetOpts, id string) string {
	ends, _ := json.Marshal(o.endpoints)
	order, _ := json.Marshal(o.order)
	if o.order == nil {
		order = []byte("[]")
	}
	return fmt.Sprintf("\n[fleet]\nendpoints = %s\ncluster = \"acme\"\nmember = %q\ngroup = %q\nslots = %d\norder = %s\nrequest_timeout = \"3s\"\ndial_timeout = \"2s\"\nfleetlock_url = %q\n",
		ends, id, o.group, o.slots, order, o.fleetlock)
}

const observeHook = `#!/bin/sh
flock "$OBSERVER" sh -c 'echo "$0 $1" >> "$OBSERVER"' "$1" "$MEMBER"
`

func fleetMember(t *testing.T, dir, id string, o fleetOpts) runner {
	t.Helper()
	root := filepath.Join(dir, id)
	setUpHost(t, root, false, false)
	f, err := os.OpenFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(fleetConfig(o, id))
	f.Close()
	for hook, what := range map[string]string{"install.pre.d": "out", "roll.post.d": "in"} {
		p := filepath.Join(root, "etc/upgradectl/hooks.d", hook, "10-observe")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(strings.Replace(observeHook, `"$1" "$MEMBER"`, what+` "$MEMBER"`, 1)), 0o755)
	}
	r := runner{bin: hosttest.Bin(t), root: root, env: []string{"OBSERVER=" + o.observer, "MEMBER=" + id}}
	t.Cleanup(func() { r.run("iso", "umount", "--all") })
	return r
}

// rollOut runs continue --wait on r until its upgrade is done, retrying a
// switch refused while other members have not rolled.
func rollOut(r runner, log *strings.Builder) error {
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		out, code := r.run("continue", "--wait", "5m")
		log.WriteString(out)
		switch {
		case code == 5 && strings.Contains(out, "have not rolled"):
			time.Sleep(300 * time.Millisecond)
		case code != 0:
			return fmt.Errorf("continue: exit %d:\n%s", code, out)
		}
		var rep stage.Report
		out, _ = r.run("status", "--json")
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			return fmt.Errorf("status: %v: %s", err, out)
		}
		if !rep.InProgress {
			return nil
		}
	}
	return fmt.Errorf("not done after 10 minutes")
}

// observed reads the observer's file: the most members out of service at
// once, and the order of events.
func observed(t *testing.T, file string) (most int, events []string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		what, id, _ := strings.Cut(l, " ")
		switch what {
		case "out":
			if out[id] {
				t.Errorf("%s went out of service twice", id)
			}
			out[id] = true
		case "in":
			delete(out, id)
		}
		most = max(most, len(out))
		events = append(events, l)
	}
	return most, events
}

func fleetMembers(t *testing.T, n int, o fleetOpts, groupOf func(int) string) []runner {
	dir := t.TempDir()
	var rs []runner
	for i := 0; i < n; i++ {
		oi := o
		if groupOf != nil {
			oi.group = groupOf(i)
		}
		rs = append(rs, fleetMember(t, dir, fmt.Sprintf("m%d", i), oi))
	}
	img := acmeISO(t, t.TempDir(), "2", "1")
	for _, r := range rs {
		r.must(t, "setup", "--iso", img)
	}
	return rs
}

// newFleet starts an etcd cluster of nodes for a fleet of slots per group.
func newFleet(t *testing.T, nodes, slots int) (*hosttest.Etcd, fleetOpts) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "xorriso", "flock")
	e := hosttest.NewEtcd(t, nodes)
	return e, fleetOpts{endpoints: e.Endpoints(), group: "default", slots: slots, observer: filepath.Join(t.TempDir(), "observer")}
}

func rollAll(t *testing.T, rs []runner) string {
	t.Helper()
	var wg sync.WaitGroup
	logs := make([]strings.Builder, len(rs))
	for i, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rollOut(r, &logs[i]); err != nil {
				t.Errorf("member %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	var all strings.Builder
	for i := range logs {
		all.WriteString(logs[i].String())
	}
	return all.String()
}

// TestFleetRollingUpgrade: 8 members, 2 slots, all at once.
func TestFleetRollingUpgrade(t *testing.T) {
	_, o := newFleet(t, 3, 2)
	rs := fleetMembers(t, 8, o, nil)
	out := rollAll(t, rs)
	most, events := observed(t, o.observer)
	if most > 2 || len(events) != 16 {
		t.Errorf("%d members out of service at once with 2 slots, %d events:\n%s", most, len(events), strings.Join(events, "\n"))
	}
	if most < 2 {
		t.Logf("never more than one member out at once: the slots were not contended")
	}
	if n := strings.Count(out, "fleet: switched the cluster"); n != 1 {
		t.Errorf("the cluster switched %d times", n)
	}
	for _, r := range rs {
		if v := status(t, r).ActiveVersion; v != "2" {
			t.Errorf("%s: active version %s", r.root, v)
		}
	}
	var st struct {
		Version struct{ Version, Previous string }
		Groups  []struct{ Free int }
		Members []struct {
			ID      string
			Running string `json:"running_version"`
			Slot    bool
		}
	}
	if err := json.Unmarshal([]byte(rs[0].must(t, "fleet", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version.Version != "2" || st.Version.Previous != "1" || len(st.Members) != 8 || st.Groups[0].Free != 2 {
		t.Errorf("fleet status after the upgrade: %+v", st)
	}
	for _, m := range st.Members {
		if m.Running != "2" || m.Slot {
			t.Errorf("member %+v", m)
		}
	}
	if out := rs[3].must(t, "check", "--only", "fleet.versions,fleet.etcd"); !strings.Contains(out, "PASS") {
		t.Errorf("fleet checks after the upgrade:\n%s", out)
	}
}

// TestFleetGroupOrder: the standby group upgrades before the active one.
func TestFleetGroupOrder(t *testing.T) {
	_, o := newFleet(t, 1, 2)
	o.order = []string{"standby", "active"}
	group := func(i int) string {
		if i%2 == 0 {
			return "active"
		}
		return "standby"
	}
	rs := fleetMembers(t, 4, o, group)
	// Without --wait an active member is refused while standby is not done.
	for _, r := range rs[:1] {
		r.must(t, "preinstall")
		wantExit(t, r, 4, "waits for the groups before it", "install")
	}
	rollAll(t, rs)
	_, events := observed(t, o.observer)
	standbyIn := 0
	for _, ev := range events {
		what, id, _ := strings.Cut(ev, " ")
		var i int
		fmt.Sscanf(id, "m%d", &i)
		switch {
		case group(i) == "standby" && what == "in":
			standbyIn++
		case group(i) == "active" && what == "out" && standbyIn < 2:
			t.Errorf("%s went out of service before the standby group was done:\n%s", id, strings.Join(events, "\n"))
		}
	}
}

// TestFleetFaults: a member killed mid-roll keeps its slot until an
// operator frees it; etcd losing one node of three does not stop the
// upgrade; losing two stops every stage (exit 3, nothing changed) until
// they are back.
func TestFleetFaults(t *testing.T) {
	e, o := newFleet(t, 3, 1)
	rs := fleetMembers(t, 3, o, nil)
	a, b, c := rs[0], rs[1], rs[2]
	for _, s := range []string{"preinstall", "install", "postinstall"} {
		a.must(t, s)
	}
	// a stops in its roll's pre hook, and is killed there.
	mark := filepath.Join(t.TempDir(), "in-roll")
	hook := filepath.Join(a.root, "etc/upgradectl/hooks.d/roll.pre.d/10-hang")
	os.MkdirAll(filepath.Dir(hook), 0o755)
	os.WriteFile(hook, []byte(fmt.Sprintf("#!/bin/sh\n[ -e %[1]s ] && exit 0\ntouch %[1]s\nsleep 60\n", mark)), 0o755)
	cmd := a.cmd("roll")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(mark); err == nil {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatal("roll did not reach its hook")
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	// Its slot stays held: b cannot leave service.
	b.must(t, "preinstall")
	wantExit(t, b, 4, "held by m0", "install")
	if out := b.must(t, "fleet", "status"); !strings.Contains(out, "held by m0") || !strings.Contains(out, "roll") {
		t.Errorf("fleet status with m0 killed in roll:\n%s", out)
	}
	// The operator frees it; b goes; a's continue takes a slot again
	// once b is back, and finishes its roll.
	if out := c.must(t, "fleet", "release", "m0"); !strings.Contains(out, "freed the slot of member m0") {
		t.Errorf("fleet release: %s", out)
	}
	b.must(t, "install")
	wantExit(t, a, 4, "held by m1", "continue")
	// One etcd node of three dies in the middle of b's roll: it goes on.
	e.Kill(2)
	// (If it was the leader, the others elect one first: on a loaded
	// machine that can outlast a request's timeout.)
	e.WaitHealthy(30 * time.Second)
	b.must(t, "postinstall")
	b.must(t, "roll")
	a.must(t, "continue")
	if st := status(t, a); stageOf(st, stage.Roll).Status != stage.Done {
		t.Fatalf("a's roll after continue: %+v", stageOf(st, stage.Roll))
	}
	// Two of three down: a stage changes nothing and exits 3.
	e.Kill(1)
	before := status(t, c)
	wantExit(t, c, 3, "unreachable or has no quorum", "preinstall")
	if out := c.must(t, "status"); !strings.Contains(out, "fleet: member m2 of cluster acme, group default (slots 1)") {
		t.Errorf("status without etcd does not say which member this is:\n%s", out)
	}
	if after := status(t, c); stageOf(after, stage.Preinstall).Status != stageOf(before, stage.Preinstall).Status {
		t.Errorf("preinstall changed without etcd: %s", stageOf(after, stage.Preinstall).Status)
	}
	// switch is refused while c has not rolled.
	e.Restart(1)
	e.Restart(2)
	e.WaitHealthy(60 * time.Second)
	wantExit(t, a, 5, "have not rolled", "switch")
	rollAll(t, rs)
	for _, r := range rs {
		if v := status(t, r).ActiveVersion; v != "2" {
			t.Errorf("%s: active version %s", r.root, v)
		}
	}
	// A decommissioned member leaves the cluster.
	if out := a.must(t, "fleet", "remove", "m2"); !strings.Contains(out, "removed member m2 from the cluster") {
		t.Errorf("fleet remove: %s", out)
	}
	if out := a.must(t, "fleet", "status"); strings.Contains(out, "\nm2 ") || !strings.Contains(out, "2 members") {
		t.Errorf("fleet status after remove:\n%s", out)
	}
}

// TestNoFleetNoEtcd: without [fleet] nothing talks to etcd and the fleet
// commands say there is no fleet.
func TestNoFleetNoEtcd(t *testing.T) {
	r := rootHost(t)
	wantExit(t, r, 2, "in no fleet", "fleet", "status")
	out := r.must(t, "check", "--only", "fleet.versions,fleet.etcd")
	if !strings.Contains(out, "SKIP") {
		t.Errorf("fleet checks without [fleet]:\n%s", out)
	}
}

// TestFleetLockMembers: 4 members take their slots from a FleetLock
// server (served here over the same etcd, as airlock does: none can be
// installed), one at a time.
func TestFleetLockMembers(t *testing.T) {
	e, o := newFleet(t, 1, 1)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var body struct {
			ClientParams struct{ ID, Group string } `json:"client_params"`
		}
		if r.Header.Get("fleet-lock-protocol") != "true" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "not a FleetLock request", http.StatusBadRequest)
			return
		}
		cfg := host.DefaultConfig().Fleet
		cfg.Endpoints, cfg.Member, cfg.Group, cfg.Slots = e.Endpoints(), body.ClientParams.ID, body.ClientParams.Group, o.slots
		f, err := fleet.Open(cfg, host.Root{}, "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		f.ID = body.ClientParams.ID
		switch r.URL.Path {
		case "/v1/pre-reboot":
			err = f.Take(r.Context(), 0, nil)
		case "/v1/steady-state":
			_, err = f.Release(r.Context(), body.ClientParams.Group, body.ClientParams.ID)
		}
		if err != nil {
			http.Error(w, `{"kind":"failed_lock","value":"`+err.Error()+`"}`, http.StatusConflict)
		}
	}))
	defer srv.Close()
	o.fleetlock = srv.URL
	rs := fleetMembers(t, 4, o, nil)
	rollAll(t, rs)
	if most, events := observed(t, o.observer); most != 1 || len(events) != 8 {
		t.Errorf("%d members out of service at once with 1 slot:\n%s", most, strings.Join(events, "\n"))
	}
	if calls.Load() < 8 {
		t.Errorf("%d FleetLock requests for 4 members", calls.Load())
	}
}
