package stage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"upgradectl/host"
	"upgradectl/host/check"
	"upgradectl/trust"
)

// Checks are the health checks that need more than package check may
// import: the check command, setup, postinstall and the boot hook pass
// them to check.Run.
func Checks() []check.Extra {
	return []check.Extra{
		{ID: "iso.keys", Severity: check.Inhibitor, Profiles: []string{check.Pre}, Run: checkKeys},
		{ID: "fleet.etcd", Severity: check.Inhibitor, Profiles: []string{check.Pre, check.Post}, Run: checkFleetEtcd},
		{ID: "fleet.versions", Severity: check.Inhibitor, Profiles: []string{check.Pre, check.Post}, Run: checkFleetVersions},
	}
}

// keysExpireSoon is how long before a key expires the iso.keys check
// warns about it.
const keysExpireSoon = 30 * 24 * time.Hour

// keysData is the iso.keys check's structured result.
type keysData struct {
	Dir  string      `json:"dir"`
	Keys []trust.Key `json:"keys"`
	// Expiring are the fingerprints of keys that have expired or expire
	// within 30 days.
	Expiring []string `json:"expiring"`
}

// checkKeys reads the vendor's keys in iso.keys_dir as staging does: it
// fails when a key file does not parse, naming it, and warns about a key
// that expires within 30 days (or has expired), naming its fingerprint and
// the date. No keys directory, or an empty one, passes with a note.
func checkKeys(_ context.Context, root host.Root, cfg *host.Config) check.Result {
	d := keysData{Dir: cfg.ISO.KeysDir, Keys: []trust.Key{}, Expiring: []string{}}
	if d.Dir == "" {
		return check.Result{Status: check.Pass, Data: d, Message: "no keys directory configured (iso.keys_dir): signatures cannot be checked"}
	}
	dir, err := root.Resolve(d.Dir)
	if err != nil {
		return check.Result{Status: check.Fail, Data: d, Message: fmt.Sprintf("cannot use keys directory %s: %v", d.Dir, err)}
	}
	keys, err := trust.LoadKeys(dir)
	if keys != nil {
		d.Keys = append(d.Keys, keys.Keys()...)
	}
	if err != nil {
		// LoadKeys names the directory as found on the running system.
		return check.Result{Status: check.Fail, Data: d, Message: strings.Replace(err.Error(), dir, d.Dir, 1)}
	}
	if len(d.Keys) == 0 {
		return check.Result{Status: check.Pass, Data: d, Message: fmt.Sprintf("no keys in %s: signatures cannot be checked", d.Dir)}
	}
	now := time.Now()
	var soon []string
	for _, k := range d.Keys {
		if k.Expires.IsZero() || k.Expires.Sub(now) > keysExpireSoon {
			continue
		}
		d.Expiring = append(d.Expiring, k.Fingerprint)
		when := "expires on"
		if !k.Expires.After(now) {
			when = "expired on"
		}
		from := k.File
		if k.UserID != "" {
			from = k.UserID + ", " + k.File
		}
		soon = append(soon, fmt.Sprintf("key %s (%s) %s %s", k.Fingerprint, from, when, k.Expires.UTC().Format(time.DateOnly)))
	}
	if len(soon) > 0 {
		return check.Result{Status: check.Warn, Data: d, Message: strings.Join(soon, "; ")}
	}
	return check.Result{Status: check.Pass, Data: d,
		Message: fmt.Sprintf("%d key(s) in %s, none expires within 30 days", len(d.Keys), d.Dir)}
}
