// Package fleet coordinates the upgrade of many servers through etcd (v3
// API): each member publishes its state, takes a slot of its group before it
// leaves service (an airlock-compatible semaphore, or a FleetLock server),
// waits for the groups before it, and the cluster's version moves from old
// to new once for all. It uses host only; the stage engine calls it.
package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"upgradectl/host"
)

// Version is upgradectl's version, published in every member record.
var Version = "dev"

// MemberFile is where the member id taken from /etc/machine-id is kept, in
// the state directory, so that a server keeps its id when the machine id
// changes (a cloned image, a reinstalled system).
const MemberFile = "fleet-member"

// Member is one server's record, as it publishes it.
type Member struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Group   string `json:"group"`
	Running string `json:"running_version"`
	Active  string `json:"active_version"`
	New     string `json:"new_version,omitempty"`
	Upgrade string `json:"upgrade,omitempty"`
	Stage   string `json:"stage,omitempty"`
	Status  string `json:"status,omitempty"`
	// OutOfService: the upgrade has taken the member out of service
	// (from the stage that leaves service until roll is done).
	OutOfService bool      `json:"out_of_service"`
	Maintenance  string    `json:"maintenance"`
	Checks       string    `json:"checks,omitempty"`
	Time         time.Time `json:"time"`
	Upgradectl   string    `json:"upgradectl"`
}

// Runs says whether the member runs version v: it has rolled to it, or it
// is its active version.
func (m Member) Runs(v string) bool { return v != "" && m.Running == v }

// ClusterVersion is the version the cluster runs, moved once by the
// cluster-wide switch.
type ClusterVersion struct {
	Version  string    `json:"version"`
	Previous string    `json:"previous,omitempty"`
	By       string    `json:"switched_by,omitempty"`
	Time     time.Time `json:"time"`
}

// Fleet is this server's connection to its fleet.
type Fleet struct {
	Config  host.FleetConfig
	ID      string // this member
	cli     *clientv3.Client
	timeout time.Duration
	slots   slotKeeper
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Open connects to the fleet of cfg for the server at root, whose state
// directory (on the running system) is stateDir ("": to read the fleet,
// not as a member). It does not talk to etcd:
// the first request does, and its failure is exit 3.
func Open(cfg host.FleetConfig, root host.Root, stateDir string) (*Fleet, error) {
	if !cfg.Enabled() {
		return nil, host.Usage("no fleet: [fleet] endpoints is empty in the configuration")
	}
	id := ""
	if stateDir != "" { // "": only to read the fleet (checks)
		var err error
		if id, err = memberID(cfg, root, stateDir, true); err != nil {
			return nil, err
		}
	}
	tlsc, err := tlsConfig(cfg, root)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout.Duration,
		TLS:         tlsc,
		Username:    cfg.User,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		// With a user, the client signs in at once: a dial that timed out.
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within fleet.dial_timeout %s", cfg.DialTimeout.Duration)
		}
		return nil, unreachable(cfg, err)
	}
	f := &Fleet{Config: cfg, ID: id, cli: cli, timeout: cfg.RequestTimeout.Duration}
	if cfg.FleetlockURL != "" {
		f.slots = &fleetLock{url: strings.TrimRight(cfg.FleetlockURL, "/"), timeout: f.timeout,
			client: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsc}}}
	} else {
		f.slots = &semaphore{f: f}
	}
	return f, nil
}

// Close ends the connection.
func (f *Fleet) Close() error {
	if f == nil || f.cli == nil {
		return nil
	}
	return f.cli.Close()
}

// MemberID is this server's member id as Open finds it, without
// connecting and without keeping a new one (status shows it).
func MemberID(cfg host.FleetConfig, root host.Root, stateDir string) (string, error) {
	return memberID(cfg, root, stateDir, false)
}

// memberID is the configured id, else the one kept in the state
// directory, else /etc/machine-id under the root (then kept, with keep).
func memberID(cfg host.FleetConfig, root host.Root, stateDir string, keep bool) (string, error) {
	if cfg.Member != "" {
		return cfg.Member, nil
	}
	kept := filepath.Join(stateDir, MemberFile)
	if b, err := host.ReadSmallFile(kept); err == nil {
		id := strings.TrimSpace(string(b))
		if !idRE.MatchString(id) {
			return "", host.CannotRun("fleet member id in %s is not a name: %q", kept, id)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", host.CannotRun("cannot read the fleet member id: %v", err)
	}
	mid, err := root.Resolve("/etc/machine-id")
	if err != nil {
		return "", host.CannotRun("cannot find /etc/machine-id: %v", err)
	}
	b, err := host.ReadSmallFile(mid)
	id := strings.TrimSpace(string(b))
	if err != nil || !idRE.MatchString(id) {
		return "", host.WithHint(host.CannotRun("no fleet member id: /etc/machine-id is missing or empty (%v)", err),
			"set [fleet] member in the configuration, or create /etc/machine-id with systemd-machine-id-setup")
	}
	if !keep {
		return id, nil
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return "", host.CannotRun("cannot keep the fleet member id: %v", err)
	}
	if err := host.WriteFileAtomic(kept, []byte(id+"\n"), 0o644); err != nil {
		return "", host.CannotRun("cannot keep the fleet member id: %v", err)
	}
	return id, nil
}

func tlsConfig(cfg host.FleetConfig, root host.Root) (*tls.Config, error) {
	secure := false
	for _, e := range cfg.Endpoints {
		if u, err := url.Parse(e); err == nil && u.Scheme == "https" {
			secure = true
		}
	}
	if !secure && cfg.CA == "" && cfg.Cert == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	read := func(key, p string) ([]byte, error) {
		full, err := root.Resolve(p)
		if err == nil {
			var b []byte
			if b, err = host.ReadSmallFile(full); err == nil {
				return b, nil
			}
		}
		return nil, host.CannotRun("cannot read fleet.%s %s: %v", key, p, err)
	}
	if cfg.CA != "" {
		b, err := read("ca", cfg.CA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, host.Usage("fleet.ca %s: no PEM certificate in it", cfg.CA)
		}
		c.RootCAs = pool
	}
	if cfg.Cert != "" {
		cb, err := read("cert", cfg.Cert)
		if err != nil {
			return nil, err
		}
		kb, err := read("key", cfg.Key)
		if err != nil {
			return nil, err
		}
		pair, err := tls.X509KeyPair(cb, kb)
		if err != nil {
			return nil, host.Usage("fleet.cert %s and fleet.key %s: %v", cfg.Cert, cfg.Key, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// unreachable is the error of a fleet that cannot coordinate: exit 3.
func unreachable(cfg host.FleetConfig, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "authentication failed") || strings.Contains(msg, "permission denied") {
		return host.WithHint(host.CannotRun("etcd (%s) refused user %q: %s", strings.Join(cfg.Endpoints, ", "), cfg.User, host.OneLine(msg)),
			"nothing was changed; check fleet.user and fleet.password, and that the user's role may read and write upgradectl/ and com.coreos.airlock/")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "no answer within fleet.request_timeout " + cfg.RequestTimeout.Duration.String()
	}
	return host.WithHint(host.CannotRun("etcd (%s) is unreachable or has no quorum: %s", strings.Join(cfg.Endpoints, ", "), host.OneLine(msg)),
		"nothing was changed; start etcd or repair its quorum, then run the command again (the boot hook finishes an interrupted stage without etcd)")
}

func (f *Fleet) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, f.timeout)
}

// do runs op, again while it fails, for fleet.request_timeout in all. A
// request in flight when the etcd leader dies waits in vain until it
// times out while the new leader answers at once: each attempt gets a
// third of the time. Every op here is safe to repeat: a put of the same
// record, or a transaction guarded by a compare that an earlier success
// makes fail.
func (f *Fleet) do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	deadline := time.Now().Add(f.timeout)
	per := max(f.timeout/3, 500*time.Millisecond)
	for {
		actx, cancel := context.WithTimeout(ctx, min(per, time.Until(deadline)))
		resp, err := f.cli.Do(actx, op)
		cancel()
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil || time.Until(deadline) < 50*time.Millisecond {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w (each try %s)", context.DeadlineExceeded, per)
			}
			return resp, f.fail(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *Fleet) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := f.do(ctx, clientv3.OpGet(key, opts...))
	return resp.Get(), err
}

// txn commits if cmps then ops, and says whether cmps held.
func (f *Fleet) txn(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, error) {
	resp, err := f.do(ctx, clientv3.OpTxn(cmps, ops, nil))
	if err != nil {
		return false, err
	}
	return resp.Txn().Succeeded, nil
}

func (f *Fleet) fail(err error) error {
	if err == nil || host.KindOf(err) != 0 {
		return err
	}
	return unreachable(f.Config, err)
}

func (f *Fleet) prefix() string { return "upgradectl/" + f.Config.Cluster + "/" }

// MemberKey is the key of member id's record.
func (f *Fleet) MemberKey(id string) string { return f.prefix() + "members/" + id }

// VersionKey is the key of the cluster version.
func (f *Fleet) VersionKey() string { return f.prefix() + "version" }

// Publish writes this member's record (a member writes only its own) and
// creates the cluster version from its active version when there is none.
func (f *Fleet) Publish(ctx context.Context, m Member) error {
	m.ID, m.Group, m.Upgradectl = f.ID, f.Config.Group, Version
	if m.Time.IsZero() {
		m.Time = time.Now().UTC()
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	// One transaction: the record, and the cluster version where there is
	// none yet.
	put := clientv3.OpPut(f.MemberKey(f.ID), string(b))
	var (
		cmps []clientv3.Cmp
		then = []clientv3.Op{put}
		els  []clientv3.Op
	)
	if m.Active != "" {
		cv, _ := json.Marshal(ClusterVersion{Version: m.Active, By: f.ID, Time: m.Time})
		vk := f.VersionKey()
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.Version(vk), "=", 0)}
		then, els = append(then, clientv3.OpPut(vk, string(cv))), []clientv3.Op{put}
	}
	_, err = f.do(ctx, clientv3.OpTxn(cmps, then, els))
	return err
}

// Members are the records of every member, by id.
func (f *Fleet) Members(ctx context.Context) ([]Member, error) {
	resp, err := f.get(ctx, f.prefix()+"members/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	ms := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			m = Member{ID: strings.TrimPrefix(string(kv.Key), f.prefix()+"members/"), Status: "unreadable record: " + err.Error()}
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, nil
}

// Version is the cluster version and the revision it was read at; a
// cluster without one yet has the zero value.
func (f *Fleet) ClusterVersion(ctx context.Context) (ClusterVersion, int64, error) {
	resp, err := f.get(ctx, f.VersionKey())
	if err != nil {
		return ClusterVersion{}, 0, err
	}
	var cv ClusterVersion
	if len(resp.Kvs) == 0 {
		return cv, 0, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &cv); err != nil {
		return cv, 0, host.Bad("the cluster version in etcd (%s) is unreadable: %v", f.VersionKey(), err)
	}
	return cv, resp.Kvs[0].ModRevision, nil
}

// Switch moves the cluster version from old to new in one transaction,
// once every member has rolled to new. The first member to switch makes
// the move; for the others it is done already. A member that has not
// rolled refuses it (exit 5).
func (f *Fleet) Switch(ctx context.Context, old, new string) (already bool, err error) {
	for attempt := 0; attempt < 10; attempt++ {
		cv, rev, err := f.ClusterVersion(ctx)
		if err != nil {
			return false, err
		}
		if cv.Version == new {
			return true, nil
		}
		if cv.Version != "" && cv.Version != old {
			return false, host.Refused("cannot switch the cluster to %s: it runs version %s, not %s", new, cv.Version, old)
		}
		ms, err := f.Members(ctx)
		if err != nil {
			return false, err
		}
		var not []string
		for _, m := range ms {
			if !m.Runs(new) {
				not = append(not, fmt.Sprintf("%s (%s)", m.ID, memberWhere(m)))
			}
		}
		if len(not) > 0 {
			return false, host.WithHint(host.Refused("cannot switch the cluster to %s: %d of %d members have not rolled to it: %s",
				new, len(not), len(ms), strings.Join(not, ", ")),
				"every member must run roll first; 'upgradectl fleet status' shows where each stands")
		}
		b, _ := json.Marshal(ClusterVersion{Version: new, Previous: old, By: f.ID, Time: time.Now().UTC()})
		ok, err := f.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(f.VersionKey()), "=", rev)},
			clientv3.OpPut(f.VersionKey(), string(b)))
		if err != nil || ok {
			return false, err
		}
	}
	return false, host.Busy("cannot switch the cluster to %s: the cluster version kept changing under the switch", new)
}

func memberWhere(m Member) string {
	if m.Stage == "" {
		return "running " + host.OrDash(m.Running)
	}
	return fmt.Sprintf("running %s, %s %s", host.OrDash(m.Running), m.Stage, m.Status)
}

// OrderBlocks names the members of the groups before this member's group
// in fleet.order that have not finished: rolled to version v and back in
// service. Nil: this member may start.
func (f *Fleet) OrderBlocks(ms []Member, v string) []string {
	var earlier []string
	for _, g := range f.Config.Order {
		if g == f.Config.Group {
			break
		}
		earlier = append(earlier, g)
	}
	var not []string
	for _, m := range ms {
		for _, g := range earlier {
			if m.Group == g && (!m.Runs(v) || m.OutOfService) {
				not = append(not, fmt.Sprintf("%s of group %s (%s)", m.ID, g, memberWhere(m)))
			}
		}
	}
	return not
}

// Remove deletes member id's record and gives back its slot: a
// decommissioned server leaves the cluster.
func (f *Fleet) Remove(ctx context.Context, id string) (existed bool, err error) {
	group := f.groupOf(ctx, id)
	if _, err := f.slots.release(ctx, group, id); err != nil {
		return false, err
	}
	resp, err := f.do(ctx, clientv3.OpDelete(f.MemberKey(id)))
	if err != nil {
		return false, err
	}
	return resp.Del().Deleted > 0, nil
}

// groupOf is the group member id published, else this member's group.
func (f *Fleet) groupOf(ctx context.Context, id string) string {
	if resp, err := f.get(ctx, f.MemberKey(id)); err == nil && len(resp.Kvs) == 1 {
		var m Member
		if json.Unmarshal(resp.Kvs[0].Value, &m) == nil && m.Group != "" {
			return m.Group
		}
	}
	return f.Config.Group
}

// Health says whether the etcd cluster answers and has a leader, with a
// sentence per endpoint. The endpoints are asked at once, so that a dead
// one costs one timeout, not one each.
func (f *Fleet) Health(ctx context.Context) (ok bool, lines []string) {
	lines = make([]string, len(f.Config.Endpoints))
	leader := make([]bool, len(f.Config.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range f.Config.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := f.ctx(ctx)
			defer cancel()
			st, err := f.cli.Status(cctx, ep)
			if err != nil {
				lines[i] = fmt.Sprintf("%s: no answer: %s", ep, host.OneLine(err.Error()))
				return
			}
			leader[i] = st.Leader != 0
			lines[i] = fmt.Sprintf("%s: etcd %s, leader %x", ep, st.Version, st.Leader)
		}()
	}
	// A linearizable read needs quorum.
	_, err := f.get(ctx, f.VersionKey())
	wg.Wait()
	if err != nil {
		return false, append(lines, "no quorum: "+host.OneLine(err.Error()))
	}
	return slices.Contains(leader, true), lines
}
