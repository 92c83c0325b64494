package iso

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// Mount methods.
const (
	MethodKernel = "kernel" // loop device and the kernel's iso9660
	MethodFUSE   = "fuse"   // this program's reader served over FUSE
	// MethodExtract is no mount: the image extracted into a directory of
	// the state directory, where neither the kernel nor FUSE can mount
	// (MountOptions.Extract).
	MethodExtract = "extracted"
)

// Mount states, as MountRecord.State reports them.
const (
	StateMounted    = "mounted"
	StateStale      = "stale"       // the mount is gone
	StateServerGone = "server-gone" // FUSE mount left without its server, or a mount a crash left half recorded
	StateStarting   = "starting"    // FUSE server running, its mount not there yet (its mount command may be gone)
	StatePartial    = "partial"     // an extraction that did not finish
)

// fuseType is the filesystem type of our FUSE mounts in mountinfo.
const fuseType = "fuse.upgradectl-iso"

// MountsFile is the mount record in the state directory.
const MountsFile = "iso-mounts.json"

const mountsFormat = 1

// MountRecord is one image mounted by upgradectl.
type MountRecord struct {
	Dir       string    `json:"dir"`   // mount point, absolute, symlinks resolved
	Image     string    `json:"image"` // image file, absolute
	Method    string    `json:"method"`
	Device    string    `json:"device,omitempty"`    // loop device (kernel)
	PID       int       `json:"pid,omitempty"`       // FUSE server
	PIDStart  uint64    `json:"pid_start,omitempty"` // its start time, against pid reuse
	MountedAt time.Time `json:"mounted_at"`
	// Partial marks an extraction under way (or cut short); Why says why
	// the image was extracted rather than mounted.
	Partial bool   `json:"partial,omitempty"`
	Why     string `json:"why,omitempty"`
	// State is worked out when the records are read, never stored.
	State string `json:"state,omitempty"`
}

type mountsFile struct {
	Format int           `json:"format"`
	Mounts []MountRecord `json:"mounts"`
}

// MountOptions are what Mount and Unmount need besides the paths.
type MountOptions struct {
	// Method is MethodKernel, MethodFUSE or "" for the kernel with a
	// fallback to FUSE where the kernel has no iso9660 or loop devices.
	Method string
	// StateDir is the state directory on the running system; the caller
	// holds its lock.
	StateDir string
	// Root is where kernel modules are looked for first.
	Root host.Root
	// Exe is the upgradectl binary that serves FUSE mounts; the running
	// executable when empty.
	Exe string
	// Log, when set, gets one entry per mount and unmount.
	Log *host.UpgradeLog
	// Extract lets Mount (method "") extract the image into dir when
	// neither the kernel nor FUSE can mount it (a rescue system, a
	// container without /dev/fuse). dir must be inside StateDir: it is
	// emptied before and after.
	Extract bool
}

func readMounts(stateDir string) ([]MountRecord, error) {
	p := filepath.Join(stateDir, MountsFile)
	b, err := host.ReadRegularFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, host.CannotRun("cannot read mount records %s: %v", p, errors.Unwrap(err))
	}
	var f mountsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, host.CannotRun("cannot read mount records %s: %v", p, err)
	}
	if f.Format != mountsFormat {
		return nil, host.CannotRun("cannot read mount records %s: format %d, this upgradectl knows %d", p, f.Format, mountsFormat)
	}
	return f.Mounts, nil
}

func writeMounts(stateDir string, ms []MountRecord) error {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return host.CannotRun("cannot create state directory %s: %v", stateDir, errors.Unwrap(err))
	}
	clean := make([]MountRecord, len(ms))
	for i, m := range ms {
		m.State = ""
		clean[i] = m
	}
	b, err := json.MarshalIndent(mountsFile{Format: mountsFormat, Mounts: clean}, "", "  ")
	if err != nil {
		return err
	}
	return host.WriteFileAtomic(filepath.Join(stateDir, MountsFile), append(b, '\n'), 0o644)
}

// Mounts returns the recorded mounts with their State worked out from the
// kernel's mount table and the FUSE servers' processes.
func Mounts(stateDir string) ([]MountRecord, error) {
	ms, err := readMounts(stateDir)
	if err != nil {
		return nil, err
	}
	table, err := mountTable()
	if err != nil {
		return nil, err
	}
	for i := range ms {
		ms[i].State = stateOf(ms[i], table)
	}
	return ms, nil
}

func stateOf(m MountRecord, table map[string]mountEntry) string {
	if m.Method == MethodExtract {
		return extractState(m)
	}
	e, ok := table[m.Dir]
	if !ok {
		// A FUSE server that may still mount: its process runs, or it was
		// (perhaps) started by a mount killed before it recorded the pid.
		if m.Method == MethodFUSE && (m.PID > 0 && processAlive(m.PID, m.PIDStart) ||
			m.PID == 0 && time.Since(m.MountedAt) < fuseStartTimeout+time.Second) {
			return StateStarting
		}
		return StateStale
	}
	switch m.Method {
	case "":
		// Recorded just before a mount that never recorded its details.
		if e.FSType != "iso9660" && e.FSType != fuseType {
			return StateStale
		}
		return StateServerGone
	case MethodKernel:
		if e.FSType != "iso9660" {
			return StateStale
		}
	case MethodFUSE:
		if e.FSType != fuseType {
			return StateStale
		}
		if !processAlive(m.PID, m.PIDStart) {
			return StateServerGone
		}
	}
	return StateMounted
}

// CleanStaleMounts drops the records of mounts that are gone, logs each,
// and returns them. The caller holds the state lock.
func CleanStaleMounts(stateDir string, l *host.UpgradeLog) ([]MountRecord, error) {
	ms, err := Mounts(stateDir)
	if err != nil {
		return nil, err
	}
	var keep, gone []MountRecord
	for _, m := range ms {
		if m.State == StateStale {
			gone = append(gone, m)
		} else {
			keep = append(keep, m)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	if err := writeMounts(stateDir, keep); err != nil {
		return nil, err
	}
	for _, m := range gone {
		if l != nil {
			l.Append(host.LogEntry{Action: "iso mounts", Scope: m.Dir, Result: host.ResultWarning,
				Message: fmt.Sprintf("%s on %s is no longer mounted: record dropped", m.Image, m.Dir)})
		}
	}
	return gone, nil
}

// Mount mounts image read-only on dir (both paths on the running system)
// and records it. The caller holds the state lock.
func Mount(image, dir string, o MountOptions) (rec MountRecord, err error) {
	start := time.Now()
	defer func() {
		logAction(o.Log, "iso mount", dir, start, err, fmt.Sprintf("%s on %s (%s)", image, dir, rec.Method))
	}()
	if _, err := CleanStaleMounts(o.StateDir, o.Log); err != nil {
		return rec, err
	}
	img, err := filepath.Abs(image)
	if err != nil {
		return rec, host.Usage("cannot mount %s: %v", image, err)
	}
	fi, err := os.Stat(img)
	if err != nil {
		return rec, host.Bad("cannot mount %s: %v", image, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return rec, host.Usage("cannot mount %s: not a regular file", image)
	}
	mnt, err := mountPoint(dir)
	if err != nil {
		return rec, err
	}
	if o.Method != "" && o.Method != MethodKernel && o.Method != MethodFUSE {
		return rec, host.Usage("cannot mount %s: unknown method %q (kernel or fuse)", image, o.Method)
	}
	rec = MountRecord{Dir: mnt, Image: img, Method: o.Method, MountedAt: time.Now().UTC().Truncate(time.Second)}
	// Record first: a crash during the mount leaves a record that umount,
	// status and the next mount act on (a stale one is dropped, one left
	// mounted without its details is unmounted).
	ms, err := readMounts(o.StateDir)
	if err != nil {
		return rec, err
	}
	for _, m := range ms {
		if m.Dir == mnt && m.Method == MethodFUSE && m.PID > 0 && processAlive(m.PID, m.PIDStart) {
			return rec, host.WithHint(host.Busy("cannot mount on %s: the FUSE server (pid %d) of an earlier mount there is still running", dir, m.PID),
				"wait for it, or stop it with 'upgradectl iso umount "+dir+"'")
		}
	}
	if err := writeMounts(o.StateDir, append(ms[:len(ms):len(ms)], rec)); err != nil {
		return rec, err
	}
	// The FUSE server is recorded as soon as it runs: if this command is
	// killed while the server starts, the mount it makes is still ours.
	started := func(pid int, start uint64) {
		r := rec
		r.Method, r.PID, r.PIDStart = MethodFUSE, pid, start
		writeMounts(o.StateDir, append(ms[:len(ms):len(ms)], r))
	}
	switch o.Method {
	case MethodKernel:
		rec.Device, err = mountKernel(img, mnt, o.Root)
	case MethodFUSE:
		rec.PID, rec.PIDStart, err = startFUSE(img, mnt, o, started)
	case "":
		rec.Method = MethodKernel
		rec.Device, err = mountKernel(img, mnt, o.Root)
		var nk *noKernelSupport
		if errors.As(err, &nk) {
			rec.Method = MethodFUSE
			rec.PID, rec.PIDStart, err = startFUSE(img, mnt, o, started)
			var nf *noFUSE
			if errors.As(err, &nf) && o.Extract {
				rec.Method, rec.PID, rec.PIDStart = MethodExtract, 0, 0
				rec.Why = fmt.Sprintf("%v; %v", nk.Err, nf.Err)
				err = extractInstead(&rec, o, ms)
			} else if err != nil {
				err = fmt.Errorf("%w (the kernel mount was not possible either: %v)", err, nk.Err)
			}
		}
	}
	if err != nil {
		writeMounts(o.StateDir, ms)
		return rec, err
	}
	if werr := writeMounts(o.StateDir, append(ms[:len(ms):len(ms)], rec)); werr != nil {
		// Its details could not be recorded: undo it.
		unmountRecord(rec, false)
		writeMounts(o.StateDir, ms)
		return rec, werr
	}
	rec.State = StateMounted
	return rec, nil
}

// mountPoint checks dir for a mount and returns it absolute with symlinks
// resolved, as the kernel's mount table shows it.
func mountPoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", host.Usage("cannot mount on %s: %v", dir, unwrapPath(err))
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", host.Usage("cannot mount on %s: %v", dir, unwrapPath(err))
	}
	if !fi.IsDir() {
		return "", host.Usage("cannot mount on %s: not a directory", dir)
	}
	table, err := mountTable()
	if err != nil {
		return "", err
	}
	if e, ok := table[abs]; ok {
		return "", host.WithHint(host.Bad("cannot mount on %s: %s is already mounted there", dir, e.Source),
			"unmount it first ('upgradectl iso umount "+dir+"') or choose another directory")
	}
	return abs, nil
}

// Unmount unmounts the recorded mount on dir, stops its FUSE server and
// drops the record. A mount that is already gone is not an error: its
// record is dropped. lazy detaches a busy mount (MNT_DETACH).
func Unmount(dir string, lazy bool, o MountOptions) (err error) {
	start := time.Now()
	defer func() { logAction(o.Log, "iso umount", dir, start, err, "") }()
	abs, aerr := filepath.Abs(dir)
	if aerr != nil {
		return host.Usage("cannot unmount %s: %v", dir, aerr)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	ms, err := Mounts(o.StateDir)
	if err != nil {
		return err
	}
	idx := -1
	for i, m := range ms {
		if m.Dir == abs {
			idx = i
		}
	}
	if idx < 0 {
		return host.WithHint(host.Bad("cannot unmount %s: upgradectl did not mount an image there", dir),
			"see the recorded mounts with 'upgradectl iso mounts'")
	}
	if err := unmountRecord(ms[idx], lazy); err != nil {
		return err
	}
	return writeMounts(o.StateDir, append(ms[:idx:idx], ms[idx+1:]...))
}

// UnmountAll unmounts every recorded mount (a rescue session undoing what
// was left), reporting every failure.
func UnmountAll(lazy bool, o MountOptions) error {
	ms, err := Mounts(o.StateDir)
	if err != nil {
		return err
	}
	// Every mount is tried; the first failure gives the kind (busy: 4)
	// and the hint, and the message names them all.
	var first error
	var problems []string
	for _, m := range ms {
		if err := Unmount(m.Dir, lazy, o); err != nil {
			problems = append(problems, err.Error())
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		return nil
	}
	kind := host.KindOf(first)
	if kind == 0 {
		kind = host.KindCannotRun
	}
	return &host.Error{Kind: kind, Err: errors.New(strings.Join(problems, "; ")), Hint: host.HintOf(first)}
}

func unmountRecord(m MountRecord, lazy bool) error {
	if m.Method == MethodExtract {
		return emptyDir(m.Dir)
	}
	table, err := mountTable()
	if err != nil {
		return err
	}
	if m.State == "" {
		m.State = stateOf(m, table)
	}
	if m.State == StateStarting {
		// Stop the server before it mounts; should it have mounted in
		// the meantime, detach what it left.
		var err error
		if m.PID > 0 {
			err = stopServer(m, true)
		}
		if t, terr := mountTable(); terr == nil {
			if e, ok := t[m.Dir]; ok && e.FSType == fuseType {
				unix.Unmount(m.Dir, unix.MNT_DETACH)
			}
		}
		return err
	}
	if m.State != StateStale {
		flags := 0
		if lazy || m.State == StateServerGone {
			flags = unix.MNT_DETACH
		}
		if err := unix.Unmount(m.Dir, flags); err != nil && !errors.Is(err, unix.EINVAL) {
			if errors.Is(err, unix.EBUSY) {
				return host.WithHint(host.Busy("cannot unmount %s: it is in use", m.Dir),
					"find the users with 'fuser -vm "+m.Dir+"' or detach it with 'upgradectl iso umount --lazy "+m.Dir+"'")
			}
			return host.CannotRun("cannot unmount %s: %v", m.Dir, err)
		}
	}
	if m.Method == MethodFUSE && !(lazy && m.State == StateMounted) {
		return stopServer(m, false)
	}
	// A lazily detached FUSE mount may still be in use: its server serves
	// the users left and exits when the last one lets go.
	return nil
}

// stopServer waits for the FUSE server of m to exit after its unmount, then
// asks it with SIGTERM, then kills it; now skips the wait.
func stopServer(m MountRecord, now bool) error {
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{0, 30 * time.Second}, {syscall.SIGTERM, 10 * time.Second}, {syscall.SIGKILL, 10 * time.Second}}
	if now {
		steps = steps[1:]
	}
	for _, step := range steps {
		if step.sig != 0 && processAlive(m.PID, m.PIDStart) {
			syscall.Kill(m.PID, step.sig)
		}
		deadline := time.Now().Add(step.wait)
		for processAlive(m.PID, m.PIDStart) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !processAlive(m.PID, m.PIDStart) {
			return nil
		}
	}
	return host.CannotRun("cannot stop the FUSE server of %s: process %d does not exit", m.Dir, m.PID)
}

// processStart returns the start time of process pid (field 22 of
// /proc/PID/stat) and whether it is a zombie.
func processStart(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	// The command name is in parentheses and may hold anything.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, f[0] == "Z", err
}

func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, zombie, err := processStart(pid)
	return err == nil && !zombie && (start == 0 || st == start)
}

type mountEntry struct {
	Dir, FSType, Source string
}

// mountTable reads /proc/self/mountinfo, keyed by mount point; the last
// mount on a point (the visible one) wins.
func mountTable() (map[string]mountEntry, error) {
	ms, err := host.ReadMountInfo()
	if err != nil {
		return nil, err
	}
	return mountsByDir(ms), nil
}

func mountsByDir(ms []host.MountInfo) map[string]mountEntry {
	t := map[string]mountEntry{}
	for _, m := range ms {
		t[m.Dir] = mountEntry{Dir: m.Dir, FSType: m.FSType, Source: m.Source}
	}
	return t
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func logAction(l *host.UpgradeLog, action, scope string, start time.Time, err error, msg string) {
	if l == nil {
		return
	}
	e := host.LogEntry{Action: action, Scope: scope, Start: start, Result: host.ResultSuccess, Message: msg}
	if err != nil {
		e.Result, e.Message = host.ResultFailed, err.Error()
	}
	l.Append(e)
}
