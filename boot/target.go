package boot

import (
	"path/filepath"
	"strings"

	"upgradectl/host"
)

// Unit names.
const (
	TargetUnit  = "upgradectl-maintenance.target"
	ResumeUnit  = "upgradectl-resume.service"
	NologinUnit = "upgradectl-nologin.service"
)

const (
	unitDir           = "/etc/systemd/system"
	defaultTargetLink = unitDir + "/default.target"
	// fallbackTarget is where Exit goes when what was the default before
	// Enter is not known (the state was lost).
	fallbackTarget = "multi-user.target"
)

// vendorUnitDirs are where the distribution's units are, in systemd's order
// after /etc.
var vendorUnitDirs = []string{"/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// defaultTarget returns the name of the unit default.target stands for under
// the root ("graphical.target"), as systemd finds it: the link in /etc first,
// then the vendor directories. "" when there is none.
func defaultTarget(r host.Root) string {
	for _, d := range append([]string{unitDir}, vendorUnitDirs...) {
		p := d + "/default.target"
		if _, err := lstatIn(r, p); err != nil {
			continue
		}
		real, err := r.Resolve(p)
		if err != nil {
			continue
		}
		// A regular file is its own unit, "default.target".
		return filepath.Base(real)
	}
	return ""
}

// setDefaultTarget points /etc/systemd/system/default.target at unit,
// atomically. unit is a unit name; the link target is the unit's file under
// /etc or the vendor directories, as `systemctl set-default` writes it.
func setDefaultTarget(r host.Root, unit string) error {
	target := unitFile(r, unit)
	real, err := hostPath(r, defaultTargetLink)
	if err != nil {
		return err
	}
	if err := symlinkAtomic(target, real); err != nil {
		return host.CannotRun("cannot set the default target to %s: %v", unit, err)
	}
	return nil
}

// unitFile finds the file of unit under the root, /etc first; a unit not
// found is linked to /etc/systemd/system/NAME.
func unitFile(r host.Root, unit string) string {
	for _, d := range append([]string{unitDir}, vendorUnitDirs[1:]...) {
		p := d + "/" + unit
		if fi, err := lstatIn(r, p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return unitDir + "/" + unit
}

// targetName is the unit a saved default.target link named.
func targetName(f SavedFile) string {
	if f.Kind != kindSymlink {
		return ""
	}
	n := filepath.Base(strings.TrimRight(f.Link, "/"))
	if !strings.HasSuffix(n, ".target") {
		return ""
	}
	return n
}
