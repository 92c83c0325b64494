package boot

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"upgradectl/host"
)

//go:embed units/*
var unitFS embed.FS

// unitNames are the units Install writes, in order.
var unitNames = []string{TargetUnit, NologinUnit, ResumeUnit}

// wantedUnits are wanted by the maintenance target whether or not they are
// enabled: the basic system's login and bus services. A Wants= on a unit
// that does not exist is ignored by systemd.
var wantedUnits = []string{"getty.target", "systemd-logind.service", "systemd-user-sessions.service",
	"dbus.service", "network.target"}

// enabledUnits are kept only when enabled under the root (a link in a
// .wants directory of /etc/systemd/system, or an alias there): networking,
// sshd under both of its names, time synchronisation and logging. Starting
// a network service that was not enabled could break the network.
var enabledUnits = []string{"ssh.service", "sshd.service", "networking.service", "systemd-networkd.service",
	"systemd-resolved.service", "NetworkManager.service", "wicked.service", "systemd-timesyncd.service",
	"chrony.service", "chronyd.service", "ntp.service", "ntpsec.service", "ntpd.service",
	"rsyslog.service", "auditd.service"}

// DefaultBin is where the units run upgradectl from when the binary
// running is not inside the root.
const DefaultBin = "/usr/local/bin/upgradectl"

// InstallOptions says how the units run upgradectl.
type InstallOptions struct {
	// Bin is upgradectl's path inside the root; "" for the running
	// binary (or DefaultBin when that is not inside the root).
	Bin string
}

// UnitChange is one file Install or Remove changed.
type UnitChange struct {
	Path   string `json:"path"`   // host path
	Action string `json:"action"` // "written", "linked", "removed"
}

var unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|mount|automount|path|timer|slice|scope|swap|device)$`)

// safeArg is a path systemd's ExecStart= takes as it is (no quoting,
// specifiers or variables).
var safeArg = regexp.MustCompile(`^/[A-Za-z0-9/._+:@-]*$`)

type unitData struct {
	Wants    []string
	StateDir string
	Command  string
}

// renderUnits returns the unit files' contents for s.
func renderUnits(s *System, opts InstallOptions) (map[string][]byte, error) {
	var problems []string
	bin := opts.Bin
	if bin == "" {
		bin = defaultBin(s.Root)
	}
	for _, a := range []struct{ what, val string }{{"binary path", bin}, {"state directory", s.StateDir}, {"configuration path", s.ConfigPath}} {
		if a.val != "" && !safeArg.MatchString(a.val) {
			problems = append(problems, fmt.Sprintf("%s %q is not an absolute path of letters, digits and /._+:@-", a.what, a.val))
		}
	}
	// A binary named by --bin must be there, inside the root, to run: the
	// units would fail at every boot.
	if opts.Bin != "" && safeArg.MatchString(opts.Bin) {
		if real, err := s.Root.Resolve(opts.Bin); err != nil {
			problems = append(problems, fmt.Sprintf("binary %s: %v", opts.Bin, err))
		} else if fi, err := os.Stat(real); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			problems = append(problems, fmt.Sprintf("binary %s is not an executable file inside the root", opts.Bin))
		}
	}
	keep := []string{}
	if s.Config != nil {
		keep = s.Config.Maintenance.KeepUnits
	}
	for _, u := range keep {
		if !unitNameRE.MatchString(u) {
			problems = append(problems, fmt.Sprintf("maintenance.keep_units entry %q is not a unit name", u))
		}
	}
	if len(problems) > 0 {
		return nil, host.Usage("cannot write the boot units: %s", strings.Join(problems, "; "))
	}
	d := unitData{StateDir: s.StateDir, Command: bin + " --automatic --state-dir " + s.StateDir}
	if s.ConfigPath != "" && s.ConfigPath != host.DefaultConfigPath {
		d.Command += " --config " + s.ConfigPath
	}
	seen := map[string]bool{}
	add := func(u string) {
		if !seen[u] {
			seen[u] = true
			d.Wants = append(d.Wants, u)
		}
	}
	for _, u := range wantedUnits {
		add(u)
	}
	for _, u := range enabledUnits {
		if unitEnabled(s.Root, u) {
			add(u)
		}
	}
	for _, u := range keep {
		add(u)
	}
	out := map[string][]byte{}
	for _, n := range unitNames {
		t, err := template.ParseFS(unitFS, "units/"+n)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, d); err != nil {
			return nil, err
		}
		out[n] = b.Bytes()
	}
	return out, nil
}

// defaultBin is the running binary's path inside the root, or DefaultBin.
func defaultBin(r host.Root) string {
	exe, err := os.Executable()
	if err != nil {
		return DefaultBin
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	rel, err := r.Rel(exe)
	if err != nil || !safeArg.MatchString(rel) || strings.HasSuffix(rel, ".test") {
		return DefaultBin
	}
	return rel
}

// unitEnabled reports whether unit is enabled under the root: linked from a
// .wants or .requires directory of /etc/systemd/system, or an alias there.
func unitEnabled(r host.Root, unit string) bool {
	if _, err := lstatIn(r, unitDir+"/"+unit); err == nil {
		return true
	}
	base, err := r.Resolve(unitDir)
	if err != nil {
		return false
	}
	for _, pat := range []string{"*.wants", "*.requires"} {
		m, _ := filepath.Glob(filepath.Join(base, pat, unit))
		if len(m) > 0 {
			return true
		}
	}
	return false
}

// wantsLink is the enablement link of one of our services in the target's
// .wants directory.
func wantsLink(unit string) string {
	return unitDir + "/" + TargetUnit + ".wants/" + unit
}

// unitsInstalled reports whether the maintenance target is under the root.
func unitsInstalled(r host.Root) bool {
	_, err := lstatIn(r, unitDir+"/"+TargetUnit)
	return err == nil
}

// Install writes the embedded units under ROOT/etc/systemd/system and
// enables the services in the maintenance target, then makes a running
// systemd read them. It is idempotent: files already right are left alone.
func Install(ctx context.Context, s *System, opts InstallOptions) ([]UnitChange, error) {
	units, err := renderUnits(s, opts)
	if err != nil {
		return nil, err
	}
	var changes []UnitChange
	for _, n := range unitNames {
		p := unitDir + "/" + n
		real, err := hostPath(s.Root, p)
		if err != nil {
			return changes, host.CannotRun("cannot write %s: %v", p, err)
		}
		if b, err := os.ReadFile(real); err == nil && bytes.Equal(b, units[n]) {
			continue
		}
		if err := writeFile(real, units[n], 0o644, 0, 0); err != nil {
			return changes, host.CannotRun("cannot write %s: %v", p, err)
		}
		changes = append(changes, UnitChange{Path: p, Action: "written"})
	}
	for _, n := range []string{NologinUnit, ResumeUnit} {
		p := wantsLink(n)
		real, err := hostPath(s.Root, p)
		if err != nil {
			return changes, host.CannotRun("cannot link %s: %v", p, err)
		}
		if l, err := os.Readlink(real); err == nil && l == unitDir+"/"+n {
			continue
		}
		if err := symlinkAtomic(unitDir+"/"+n, real); err != nil {
			return changes, host.CannotRun("cannot link %s: %v", p, err)
		}
		changes = append(changes, UnitChange{Path: p, Action: "linked"})
	}
	if len(changes) > 0 {
		if err := s.reload(ctx); err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// Remove takes the units away again. It is refused while the host is in
// maintenance mode: the default target and the resume hook depend on them.
func Remove(ctx context.Context, s *System) ([]UnitChange, error) {
	lock, err := host.LockStateDir(s.Root.Path(s.StateDir))
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	st, err := loadState(s)
	if err != nil {
		return nil, err
	}
	if st.In {
		return nil, host.WithHint(host.Refused("cannot remove the boot units: the host is in maintenance mode"),
			"leave it first: upgradectl maintenance exit")
	}
	if defaultTarget(s.Root) == TargetUnit {
		return nil, host.WithHint(host.Refused("cannot remove the boot units: default.target is %s", TargetUnit),
			"upgradectl maintenance exit sets it back")
	}
	var changes []UnitChange
	paths := []string{wantsLink(NologinUnit), wantsLink(ResumeUnit)}
	for _, n := range unitNames {
		paths = append(paths, unitDir+"/"+n)
	}
	for _, p := range paths {
		real, err := hostPath(s.Root, p)
		if err != nil {
			return changes, host.CannotRun("cannot remove %s: %v", p, err)
		}
		if _, err := os.Lstat(real); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := host.RemoveDurable(real); err != nil {
			return changes, host.CannotRun("cannot remove %s: %v", p, errors.Unwrap(err))
		}
		changes = append(changes, UnitChange{Path: p, Action: "removed"})
	}
	wants, err := hostPath(s.Root, unitDir+"/"+TargetUnit+".wants")
	if err != nil {
		return changes, host.CannotRun("%v", err)
	}
	if err := os.Remove(wants); err == nil {
		changes = append(changes, UnitChange{Path: unitDir + "/" + TargetUnit + ".wants", Action: "removed"})
	}
	if len(changes) > 0 {
		if err := s.reload(ctx); err != nil {
			return changes, err
		}
	}
	return changes, nil
}
