package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"upgradectl/host"
)

// Slots: how many members of a group may be out of service at once. The
// semaphore is airlock's: key com.coreos.airlock/groups/GROUP/v1/semaphore,
// value {"total_slots":N,"holders":[ids, sorted]}, changed only by a
// compare-and-swap on the key's version, so that servers under airlock
// (Fedora CoreOS with Zincati) and upgradectl members in one etcd draw from
// one budget. A slot is not tied to a lease: it survives its holder's crash
// and reboot, until the holder gives it back or an operator frees it.

// Semaphore is the value of a group's semaphore key.
type Semaphore struct {
	TotalSlots uint64   `json:"total_slots"`
	Holders    []string `json:"holders"`
}

// Free is how many slots nobody holds.
func (s Semaphore) Free() int {
	if n := int(s.TotalSlots) - len(s.Holders); n > 0 {
		return n
	}
	return 0
}

// SemaphoreKey is the airlock key of group's semaphore.
func SemaphoreKey(group string) string {
	return fmt.Sprintf("com.coreos.airlock/groups/%s/v1/semaphore", url.QueryEscape(group))
}

// slotKeeper hands out the slots: the etcd semaphore itself, or a FleetLock
// server in front of it.
type slotKeeper interface {
	// take takes a slot for id (recursively: a holder takes it again at
	// no cost); !got names the holders of a full group, as of etcd
	// revision rev (0: not known).
	take(ctx context.Context, group, id string) (got bool, holders []string, rev int64, err error)
	// release gives id's slot back; a slot not held is no error.
	release(ctx context.Context, group, id string) (was bool, err error)
}

type semaphore struct{ f *Fleet }

// Semaphore reads group's semaphore; a group without one has
// fleet.slots free slots and no holders.
func (f *Fleet) Semaphore(ctx context.Context, group string) (Semaphore, int64, error) {
	s, version, _, err := f.semaphore(ctx, group)
	return s, version, err
}

// semaphore is group's semaphore, its key's version and the revision
// of etcd it was read at.
func (f *Fleet) semaphore(ctx context.Context, group string) (Semaphore, int64, int64, error) {
	resp, err := f.get(ctx, SemaphoreKey(group))
	if err != nil {
		return Semaphore{}, 0, 0, err
	}
	rev := resp.Header.GetRevision()
	if len(resp.Kvs) == 0 {
		return Semaphore{TotalSlots: uint64(f.Config.Slots), Holders: []string{}}, 0, rev, nil
	}
	s, err := decodeSemaphore(resp.Kvs[0].Value)
	if err != nil {
		return s, 0, 0, host.Bad("the semaphore of group %s in etcd (%s) is unreadable: %v", group, SemaphoreKey(group), err)
	}
	return s, resp.Kvs[0].Version, rev, nil
}

// decodeSemaphore reads a semaphore value as another writer may have left
// it: holders sorted and each once, as the binary searches need.
func decodeSemaphore(b []byte) (Semaphore, error) {
	var s Semaphore
	if err := json.Unmarshal(b, &s); err != nil {
		return s, err
	}
	slices.Sort(s.Holders)
	s.Holders = slices.Compact(s.Holders)
	if s.Holders == nil {
		s.Holders = []string{}
	}
	return s, nil
}

// takeIn takes a slot of s for id, s sized to slots: got says whether id
// holds one now, changed whether s must be written.
func takeIn(s *Semaphore, id string, slots uint64) (got, changed bool) {
	changed = s.TotalSlots != slots
	s.TotalSlots = slots
	i, held := slices.BinarySearch(s.Holders, id)
	if held {
		return true, changed
	}
	if len(s.Holders) < int(s.TotalSlots) {
		s.Holders = slices.Insert(s.Holders, i, id)
		return true, true
	}
	return false, changed
}

// releaseIn gives back id's slot of s, and says whether it held one.
func releaseIn(s *Semaphore, id string) bool {
	i, held := slices.BinarySearch(s.Holders, id)
	if held {
		s.Holders = slices.Delete(s.Holders, i, i+1)
	}
	return held
}

// swap changes group's semaphore by change, compare-and-swap on the
// version read, again until no other writer came between. It returns the
// semaphore and the revision it was last read at.
func (f *Fleet) swap(ctx context.Context, group string, change func(*Semaphore) bool) (Semaphore, int64, error) {
	key := SemaphoreKey(group)
	for {
		s, version, rev, err := f.semaphore(ctx, group)
		if err != nil {
			return s, rev, err
		}
		if !change(&s) {
			return s, rev, nil
		}
		b, _ := json.Marshal(s)
		ok, err := f.txn(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.Version(key), "=", version)}, clientv3.OpPut(key, string(b)))
		if err != nil || ok {
			return s, rev, err
		}
		if err := ctx.Err(); err != nil {
			return s, rev, err
		}
	}
}

func (s *semaphore) take(ctx context.Context, group, id string) (bool, []string, int64, error) {
	got := false
	sem, rev, err := s.f.swap(ctx, group, func(sem *Semaphore) bool {
		// This member's configuration sets the size of its group.
		var changed bool
		got, changed = takeIn(sem, id, uint64(s.f.Config.Slots))
		return changed
	})
	return got, sem.Holders, rev, err
}

func (s *semaphore) release(ctx context.Context, group, id string) (bool, error) {
	was := false
	_, _, err := s.f.swap(ctx, group, func(sem *Semaphore) bool {
		was = releaseIn(sem, id)
		return was
	})
	return was, err
}

// Holds says whether id holds a slot of group.
func (f *Fleet) Holds(ctx context.Context, group, id string) (bool, error) {
	s, _, err := f.Semaphore(ctx, group)
	if err != nil {
		return false, err
	}
	_, held := slices.BinarySearch(s.Holders, id)
	return held, nil
}

// Take takes a slot of this member's group. When none is free it waits up
// to wait, calling progress with the holders whenever they change; with
// wait 0 (or at its end) it is busy (exit 4), naming the holders.
func (f *Fleet) Take(ctx context.Context, wait time.Duration, progress func(holders []string)) error {
	group := f.Config.Group
	deadline := time.Now().Add(wait)
	var last []string
	for {
		got, holders, rev, err := f.slots.take(ctx, group, f.ID)
		if err != nil || got {
			return err
		}
		if wait <= 0 || !time.Now().Before(deadline) {
			msg := fmt.Sprintf("no free slot in group %s: %d held by %s", group, len(holders), strings.Join(holders, ", "))
			if wait > 0 {
				msg += fmt.Sprintf(" (waited %s)", wait)
			}
			return host.WithHint(host.Busy("%s", msg),
				"wait with --wait DURATION, or free a slot of a member that is gone with 'upgradectl fleet release MEMBER'")
		}
		if progress != nil && !slices.Equal(holders, last) {
			progress(holders)
			last = holders
		}
		f.waitChange(ctx, group, rev, time.Until(deadline))
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// waitChange returns when group's semaphore changes after revision rev, or
// after d, or after a few seconds (a FleetLock server is asked again).
// Watching from the revision read, no change in between is missed.
func (f *Fleet) waitChange(ctx context.Context, group string, rev int64, d time.Duration) {
	if d > 5*time.Second {
		d = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var opts []clientv3.OpOption
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wc := f.cli.Watch(clientv3.WithRequireLeader(ctx), SemaphoreKey(group), opts...)
	select {
	case <-wc:
	case <-ctx.Done():
	}
}

// Release gives back member id's slot of group ("": this member's).
func (f *Fleet) Release(ctx context.Context, group, id string) (was bool, err error) {
	if group == "" {
		group = f.groupOf(ctx, id)
	}
	return f.slots.release(ctx, group, id)
}

// fleetLock takes and gives back slots through a FleetLock server
// (airlock, Kubernetes' fleetlock): POST /v1/pre-reboot and
// /v1/steady-state, header fleet-lock-protocol: true; 200 is success,
// anything else a refusal.
type fleetLock struct {
	url     string
	timeout time.Duration
	client  *http.Client // one for every request: its connections are kept
}

func (fl *fleetLock) post(ctx context.Context, path, group, id string) (int, string, error) {
	body, _ := json.Marshal(map[string]map[string]string{"client_params": {"id": id, "group": group}})
	ctx, cancel := context.WithTimeout(ctx, fl.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fl.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("fleet-lock-protocol", "true")
	req.Header.Set("Content-Type", "application/json")
	resp, err := fl.client.Do(req)
	if err != nil {
		return 0, "", host.WithHint(host.CannotRun("FleetLock server %s is unreachable: %v", fl.url, err),
			"nothing was changed; start the FleetLock server, then run the command again")
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, host.OneLine(strings.TrimSpace(string(b))), nil
}

func (fl *fleetLock) take(ctx context.Context, group, id string) (bool, []string, int64, error) {
	code, body, err := fl.post(ctx, "/v1/pre-reboot", group, id)
	if err != nil {
		return false, nil, 0, err
	}
	if code == http.StatusOK {
		return true, nil, 0, nil
	}
	return false, []string{fmt.Sprintf("(FleetLock server %s: %d %s)", fl.url, code, body)}, 0, nil
}

func (fl *fleetLock) release(ctx context.Context, group, id string) (bool, error) {
	code, body, err := fl.post(ctx, "/v1/steady-state", group, id)
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, host.CannotRun("FleetLock server %s refused to give back the slot of %s: %d %s", fl.url, id, code, body)
	}
	return true, nil
}
