package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// The fleet against a real etcd (Debian's etcd-server) on loopback.

func testConfig(endpoints []string, member, group string, slots int) host.FleetConfig {
	c := host.DefaultConfig().Fleet
	c.Endpoints, c.Member, c.Group, c.Slots = endpoints, member, group, slots
	c.Cluster = "test"
	c.RequestTimeout.Duration = 3 * time.Second
	c.DialTimeout.Duration = 2 * time.Second
	return c
}

func open(t testing.TB, cfg host.FleetConfig) *Fleet {
	t.Helper()
	root, _ := host.NewRoot(t.TempDir())
	f, err := Open(cfg, root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestSemaphoreIsAirlocks(t *testing.T) {
	e := hosttest.NewEtcd(t, 1)
	ctx := context.Background()
	a := open(t, testConfig(e.Endpoints(), "b-member", "workers", 2))
	b := open(t, testConfig(e.Endpoints(), "a-member", "workers", 2))
	c := open(t, testConfig(e.Endpoints(), "c-member", "workers", 2))
	for _, f := range []*Fleet{a, b, b} { // b twice: taking again is free
		if err := f.Take(ctx, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Take(ctx, 0, nil)
	if host.KindOf(err) != host.KindBusy || !strings.Contains(err.Error(), "a-member, b-member") {
		t.Fatalf("third member in 2 slots: %v", err)
	}
	// The key and the value are airlock's, byte for byte.
	resp, err := a.cli.Get(ctx, "com.coreos.airlock/groups/workers/v1/semaphore")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("no airlock semaphore key: %v", err)
	}
	if got, want := string(resp.Kvs[0].Value), `{"total_slots":2,"holders":["a-member","b-member"]}`; got != want {
		t.Errorf("semaphore value %s, want %s", got, want)
	}
	if was, err := a.Release(ctx, "", "b-member"); !was || err != nil {
		t.Fatalf("release: %v %v", was, err)
	}
	if err := a.Take(ctx, 0, nil); err != nil {
		t.Fatal(err)
	}
	// c waits and gets the slot b gives back.
	done := make(chan error)
	var seen atomic.Int32
	go func() { done <- c.Take(ctx, 20*time.Second, func([]string) { seen.Add(1) }) }()
	// Given back once c has found no free slot and shown the holders.
	for deadline := time.Now().Add(15 * time.Second); seen.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a waiting member was not shown the holders")
		}
	}
	if was, err := b.Release(ctx, "", "a-member"); !was || err != nil {
		t.Fatalf("release: %v %v", was, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a waiting member did not get the slot given back")
	}
	if held, _ := c.Holds(ctx, "workers", "c-member"); !held {
		t.Error("c-member does not hold its slot")
	}
}

// TestSlotsUnderContention: 100 members contend for 5 slots, each taking
// and giving back its slot in a loop; an observer of its own counts how
// many hold one at once. No slot is lost or granted twice.
func TestSlotsUnderContention(t *testing.T) {
	e := hosttest.NewEtcd(t, 1)
	members, slots, rounds := 100, 5, 3
	if testing.Short() {
		members = 20
	}
	var out, most, grants atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, members)
	for i := 0; i < members; i++ {
		f := open(t, testConfig(e.Endpoints(), fmt.Sprintf("m%03d", i), "default", slots))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for r := 0; r < rounds; r++ {
				if err := f.Take(ctx, time.Minute, nil); err != nil {
					errs <- err
					return
				}
				n := out.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				grants.Add(1)
				time.Sleep(time.Millisecond)
				out.Add(-1)
				if was, err := f.Release(ctx, "default", f.ID); err != nil || !was {
					errs <- fmt.Errorf("%s gave back a slot it did not hold (%v)", f.ID, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if most.Load() > int32(slots) || most.Load() == 0 {
		t.Errorf("%d held slots at once, with %d slots", most.Load(), slots)
	}
	if int(grants.Load()) != members*rounds {
		t.Errorf("%d grants, want %d", grants.Load(), members*rounds)
	}
	f := open(t, testConfig(e.Endpoints(), "observer", "default", slots))
	if s, _, err := f.Semaphore(context.Background(), "default"); err != nil || len(s.Holders) != 0 {
		t.Errorf("slots left held: %+v %v", s, err)
	}
}

func TestSwitchOnceWhenAllRolled(t *testing.T) {
	e := hosttest.NewEtcd(t, 1)
	ctx := context.Background()
	var fs []*Fleet
	for i := 0; i < 3; i++ {
		f := open(t, testConfig(e.Endpoints(), fmt.Sprintf("m%d", i), "default", 1))
		if err := f.Publish(ctx, Member{Running: "1", Active: "1", New: "2"}); err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
	cv, _, err := fs[0].ClusterVersion(ctx)
	if err != nil || cv.Version != "1" {
		t.Fatalf("cluster version %+v %v, want 1 from the first record", cv, err)
	}
	fs[0].Publish(ctx, Member{Running: "2", Active: "1", New: "2"})
	_, err = fs[0].Switch(ctx, "1", "2")
	if host.KindOf(err) != host.KindRefused || !strings.Contains(err.Error(), "2 of 3 members have not rolled") || !strings.Contains(err.Error(), "m1") {
		t.Fatalf("switch before all rolled: %v", err)
	}
	for _, f := range fs[1:] {
		f.Publish(ctx, Member{Running: "2", Active: "1", New: "2"})
	}
	var wg sync.WaitGroup
	var made atomic.Int32
	for _, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			already, err := f.Switch(ctx, "1", "2")
			if err != nil {
				t.Error(err)
			} else if !already {
				made.Add(1)
			}
		}()
	}
	wg.Wait()
	if made.Load() != 1 {
		t.Errorf("%d members made the switch, want 1", made.Load())
	}
	cv, _, _ = fs[2].ClusterVersion(ctx)
	if cv.Version != "2" || cv.Previous != "1" {
		t.Errorf("cluster version after the switch: %+v", cv)
	}
	if _, err := fs[0].Switch(ctx, "0", "1"); host.KindOf(err) != host.KindRefused {
		t.Errorf("switch from a version the cluster does not run: %v", err)
	}
}

func TestGroupOrder(t *testing.T) {
	cfg := testConfig([]string{"http://127.0.0.1:1"}, "a1", "active", 1)
	cfg.Order = []string{"standby", "active"}
	f := &Fleet{Config: cfg}
	ms := []Member{
		{ID: "s1", Group: "standby", Running: "2"},
		{ID: "s2", Group: "standby", Running: "1", Stage: "install", Status: "done", OutOfService: true},
		{ID: "a2", Group: "active", Running: "1"},
	}
	if got := f.OrderBlocks(ms, "2"); len(got) != 1 || !strings.HasPrefix(got[0], "s2 of group standby") {
		t.Errorf("blocks: %q", got)
	}
	ms[1].Running, ms[1].OutOfService = "2", true
	if got := f.OrderBlocks(ms, "2"); len(got) != 1 {
		t.Errorf("a member still out of service does not block: %q", got)
	}
	ms[1].OutOfService = false
	if got := f.OrderBlocks(ms, "2"); got != nil {
		t.Errorf("blocks after the standby group finished: %q", got)
	}
	f.Config.Group = "standby"
	ms[0].Running, ms[1].Running = "1", "1"
	if got := f.OrderBlocks(ms, "2"); got != nil {
		t.Errorf("the first group is blocked: %q", got)
	}
}

// TestFleetLock: slots through the FleetLock protocol, from a server that
// speaks it over the same etcd semaphore (no FleetLock server can be
// installed here).
func TestFleetLock(t *testing.T) {
	e := hosttest.NewEtcd(t, 1)
	ctx := context.Background()
	backend := open(t, testConfig(e.Endpoints(), "server", "default", 1))
	var calls atomic.Int32
	srv := httptest.NewServer(FleetLockTestHandler(t, backend, &calls))
	defer srv.Close()
	cfg := testConfig(e.Endpoints(), "x", "default", 1)
	cfg.FleetlockURL = srv.URL + "/"
	x := open(t, cfg)
	cfg.Member = "y"
	y := open(t, cfg)
	if err := x.Take(ctx, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := y.Take(ctx, 0, nil); host.KindOf(err) != host.KindBusy || !strings.Contains(err.Error(), "409") {
		t.Fatalf("y while x holds the only slot: %v", err)
	}
	if held, _ := backend.Holds(ctx, "default", "x"); !held {
		t.Error("x's slot is not in the semaphore")
	}
	if _, err := x.Release(ctx, "default", "x"); err != nil {
		t.Fatal(err)
	}
	if err := y.Take(ctx, 0, nil); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 4 {
		t.Errorf("%d FleetLock requests, want at least 4", calls.Load())
	}
	srv.Close()
	if err := x.Take(ctx, 0, nil); host.KindOf(err) != host.KindCannotRun {
		t.Errorf("FleetLock server gone: %v, want exit 3", err)
	}
}

// FleetLockTestHandler serves the FleetLock protocol from f's semaphore,
// checking what a client must send.
func FleetLockTestHandler(t testing.TB, f *Fleet, calls *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var body struct {
			ClientParams struct{ ID, Group string } `json:"client_params"`
		}
		if r.Method != http.MethodPost || r.Header.Get("fleet-lock-protocol") != "true" ||
			json.NewDecoder(r.Body).Decode(&body) != nil || body.ClientParams.ID == "" || body.ClientParams.Group == "" {
			http.Error(w, `{"kind":"bad_request","value":"not a FleetLock request"}`, http.StatusBadRequest)
			return
		}
		sem := &semaphore{f: f}
		switch r.URL.Path {
		case "/v1/pre-reboot":
			got, _, _, err := sem.take(r.Context(), body.ClientParams.Group, body.ClientParams.ID)
			if err != nil || !got {
				http.Error(w, `{"kind":"failed_lock","value":"all slots are held"}`, http.StatusConflict)
				return
			}
		case "/v1/steady-state":
			if _, err := sem.release(r.Context(), body.ClientParams.Group, body.ClientParams.ID); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		default:
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

func TestUnreachableIsExit3(t *testing.T) {
	cfg := testConfig([]string{"http://127.0.0.1:9"}, "m", "default", 1)
	cfg.RequestTimeout.Duration = 500 * time.Millisecond
	f := open(t, cfg)
	start := time.Now()
	err := f.Publish(context.Background(), Member{Active: "1"})
	if host.KindOf(err) != host.KindCannotRun || !strings.Contains(err.Error(), "unreachable or has no quorum") {
		t.Fatalf("publish without etcd: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s with a 500ms request timeout", d)
	}
	// With a user the client signs in when it is made: the same error,
	// without the password.
	cfg.User, cfg.Password = "upgradectl", "s3cret-pass"
	root, _ := host.NewRoot(t.TempDir())
	if _, err := Open(cfg, root, t.TempDir()); host.KindOf(err) != host.KindCannotRun || strings.Contains(err.Error(), "s3cret") ||
		!strings.Contains(err.Error(), "fleet.dial_timeout") {
		t.Errorf("signing in without etcd: %v", err)
	}
	if ok, lines := f.Health(context.Background()); ok || len(lines) != 2 || !strings.HasPrefix(lines[1], "no quorum") {
		t.Errorf("health without etcd: %v %q", ok, lines)
	}
}

func TestMemberIDFromMachineID(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o444)
	root, _ := host.NewRoot(dir)
	state := filepath.Join(dir, "var/lib/upgradectl")
	cfg := testConfig([]string{"http://127.0.0.1:9"}, "", "default", 1)
	// Read only, as status reads it: nothing kept.
	if id, err := MemberID(cfg, root, state); err != nil || id != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("id %q %v", id, err)
	}
	if _, err := os.Stat(filepath.Join(state, MemberFile)); !os.IsNotExist(err) {
		t.Fatalf("MemberID kept the id: %v", err)
	}
	id, err := memberID(cfg, root, state, true)
	if err != nil || id != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("id %q %v", id, err)
	}
	// Kept: a new machine id does not change the member.
	os.WriteFile(filepath.Join(dir, "etc/machine-id"), []byte("ffffffffffffffffffffffffffffffff\n"), 0o444)
	if id2, _ := memberID(cfg, root, state, true); id2 != id {
		t.Errorf("id changed with the machine id: %q", id2)
	}
	os.Remove(filepath.Join(state, MemberFile))
	os.WriteFile(filepath.Join(dir, "etc/machine-id"), nil, 0o444)
	if _, err := memberID(cfg, root, state, true); err == nil || !strings.Contains(err.Error(), "machine-id") {
		t.Errorf("empty machine id: %v", err)
	}
}

// TestQuorumLost: with two of three etcd nodes gone a request fails (exit
// 3) within the request timeout, and works again after they return.
func TestQuorumLost(t *testing.T) {
	e := hosttest.NewEtcd(t, 3)
	cfg := testConfig(e.Endpoints(), "m", "default", 1)
	cfg.RequestTimeout.Duration = 2 * time.Second
	f := open(t, cfg)
	ctx := context.Background()
	if err := f.Publish(ctx, Member{Active: "1"}); err != nil {
		t.Fatal(err)
	}
	e.Kill(0)
	// Node 0 may have been the leader: wait for the two others to elect
	// one, which on a loaded machine can take longer than this request
	// timeout of 2 s.
	e.WaitHealthy(30 * time.Second)
	if err := f.Take(ctx, 0, nil); err != nil {
		t.Fatalf("one node of three down: %v", err)
	}
	e.Kill(1)
	if err := f.Publish(ctx, Member{Active: "1"}); host.KindOf(err) != host.KindCannotRun {
		t.Fatalf("two nodes of three down: %v", err)
	}
	if ok, _ := f.Health(ctx); ok {
		t.Error("healthy without quorum")
	}
	e.Restart(0)
	e.Restart(1)
	e.WaitHealthy(30 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f.Publish(ctx, Member{Active: "1"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quorum back, publish still fails: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if held, err := f.Holds(ctx, "default", "m"); !held || err != nil {
		t.Errorf("the slot taken before the outage is gone: %v", err)
	}
}

// TestTLS: an etcd that serves clients over TLS only and requires a
// client certificate, with the CA, certificate and key read under the
// root as fleet.ca, fleet.cert and fleet.key.
func TestTLS(t *testing.T) {
	e := hosttest.NewEtcdTLS(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc/upgradectl/tls"), 0o755)
	for _, f := range []string{"ca.pem", "client.pem", "client.key"} {
		b, err := os.ReadFile(filepath.Join(e.TLSDir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "etc/upgradectl/tls", f), b, 0o600)
	}
	root, _ := host.NewRoot(dir)
	cfg := testConfig(e.Endpoints(), "m", "default", 1)
	cfg.RequestTimeout.Duration = 2 * time.Second
	cfg.CA, cfg.Cert, cfg.Key = "/etc/upgradectl/tls/ca.pem", "/etc/upgradectl/tls/client.pem", "/etc/upgradectl/tls/client.key"
	publish := func(cfg host.FleetConfig) error {
		f, err := Open(cfg, root, t.TempDir())
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Publish(context.Background(), Member{Active: "1"})
	}
	if err := publish(cfg); err != nil {
		t.Fatalf("over TLS with a client certificate: %v", err)
	}
	noCert := cfg
	noCert.Cert, noCert.Key = "", ""
	if err := publish(noCert); host.KindOf(err) != host.KindCannotRun {
		t.Errorf("without a client certificate: %v, want exit 3", err)
	}
	noCA := cfg
	noCA.CA = ""
	if err := publish(noCA); host.KindOf(err) != host.KindCannotRun {
		t.Errorf("without the CA: %v, want exit 3", err)
	}
	missing := cfg
	missing.CA = "/etc/upgradectl/tls/none.pem"
	if err := publish(missing); err == nil || !strings.Contains(err.Error(), "cannot read fleet.ca /etc/upgradectl/tls/none.pem") {
		t.Errorf("a missing CA file: %v", err)
	}
}

// TestAuth: an etcd with authentication on and a user whose role may
// write the fleet's keys only. The password signs in and is never shown;
// a wrong one is refused (exit 3).
func TestAuth(t *testing.T) {
	e := hosttest.NewEtcd(t, 1)
	ctx := context.Background()
	admin, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pass"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "fleet"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "fleet", "upgradectl/", clientv3.GetPrefixRangeEnd("upgradectl/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "fleet", "com.coreos.airlock/", clientv3.GetPrefixRangeEnd("com.coreos.airlock/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "upgradectl", "s3cret-pass"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "upgradectl", "fleet"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(e.Endpoints(), "m", "default", 1)
	cfg.User, cfg.Password = "upgradectl", "s3cret-pass"
	f := open(t, cfg)
	if err := f.Publish(ctx, Member{Active: "1"}); err != nil {
		t.Fatalf("publish as a fleet user: %v", err)
	}
	if err := f.Take(ctx, 0, nil); err != nil {
		t.Fatalf("take a slot as a fleet user: %v", err)
	}
	cfg.Password = "wrong-pass"
	root, _ := host.NewRoot(t.TempDir())
	_, err = Open(cfg, root, t.TempDir())
	if host.KindOf(err) != host.KindCannotRun || strings.Contains(err.Error(), "wrong-pass") || !strings.Contains(err.Error(), `refused user "upgradectl"`) {
		t.Errorf("a wrong password: %v", err)
	}
}
