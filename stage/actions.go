package stage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/boot"
	"upgradectl/fleet"
	"upgradectl/host"
	"upgradectl/host/check"
	"upgradectl/iso"
	"upgradectl/tagfs"
)

// The real stages. Each do is a series of steps that are each safe to run
// again: a rerun after a crash finds what is done and does the rest. Every
// step is a sub-action in the upgrade log under its stage's entry.

// Shared values (State.Vars).
const (
	VarISO            = "iso"             // the image as given to setup
	VarImage          = "image"           // the staged image, on the running system
	VarType           = "type"            // the image's product type
	VarFiles          = "files"           // JSON: manifest files present at setup (tagged)
	VarAbsent         = "absent"          // JSON: manifest files absent at setup (the install creates them)
	VarInstall        = "install"         // the manifest's install command, relative to the image root
	VarSHA256         = "sha256"          // JSON: the manifest's SHA-256 of installed files, by path
	VarNewDirs        = "new_dirs"        // JSON: directories of absent files that did not exist at setup
	VarInstallCommand = "install_command" // JSON: the install command given on the command line
)

// Host is the host the real stages act on, as the global flags name it.
type Host struct {
	Root       host.Root
	StateDir   string // inside the root (--state-dir)
	ConfigPath string // inside the root (--config)
	Config     *host.Config
	Mode       string // host.ModeManual or host.ModeAutomatic
	Out        io.Writer
}

// onHost is host path f on the running system: the directories on the
// way resolved inside the root, so that a symlink among them never leads
// out of it, and the last component not followed.
func (a *actions) onHost(f string) (string, error) {
	p, err := a.h.Root.ResolveParent(f)
	if err != nil {
		return "", host.CannotRun("cannot look at %s: %v", f, err)
	}
	return p, nil
}

// MountDir is where install mounts the image, in the state directory.
const MountDir = "mnt"

// New returns the engine with the real stages for h.
func New(h Host) *Engine {
	a := newActions(h)
	e := &Engine{Root: h.Root, StateDir: a.state, Config: h.Config, Log: a.log, Out: h.Out,
		Automatic: h.Mode == host.ModeAutomatic, Facts: a.facts, Notify: a.observe}
	if a.fleetOn() {
		e.Gate = a.gate
		e.Notify = func(ev Event) { a.observe(ev); a.published(ev) }
	}
	e.Handlers = map[Name]Handler{
		Setup:       {Do: a.setup, Undo: a.undoSetup, Verify: a.verifySetup},
		Preinstall:  {Do: a.preinstall, Undo: a.undoPreinstall, Verify: a.verifyPreinstall},
		Install:     {Do: a.install, Undo: a.undoInstall, Verify: a.verifyInstall},
		Postinstall: {Do: a.postinstall, Undo: a.undoPostinstall},
		Roll:        {Do: a.roll, Undo: a.undoRoll, Verify: a.verifyRoll},
		Switch:      {Do: a.doSwitch, Verify: a.verifySwitch},
		Clean:       {Do: a.clean},
	}
	return e
}

type actions struct {
	h     Host
	state string // the state directory on the running system
	log   *host.UpgradeLog
	fleet *fleet.Fleet // connected on first use
}

func newActions(h Host) *actions {
	state := h.Root.Path(h.StateDir)
	return &actions{h: h, state: state, log: host.OpenLog(state, h.Mode)}
}

func (a *actions) tags() *tagfs.Tags { return tagfs.New(a.h.Root, a.h.Config, a.state) }

func (a *actions) system() *boot.System {
	return &boot.System{Root: a.h.Root, StateDir: a.h.StateDir, ConfigPath: a.h.ConfigPath, Config: a.h.Config,
		Mode: a.h.Mode, Out: a.h.Out, Checks: Checks()}
}

// mountOpts leaves the log out: the stage logs each mount and unmount as
// its own sub-action. Where nothing can mount the image, it is extracted
// into the mount point (in the state directory).
func (a *actions) mountOpts() iso.MountOptions {
	return iso.MountOptions{StateDir: a.state, Root: a.h.Root, Extract: true}
}

// mountDir is the mount point, as the mount records name it (symlinks
// resolved).
func (a *actions) mountDir() string {
	dir := filepath.Join(a.state, MountDir)
	if r, err := filepath.EvalSymlinks(a.state); err == nil {
		dir = filepath.Join(r, MountDir)
	}
	return dir
}

func jsonList(s string) []string {
	var l []string
	json.Unmarshal([]byte(s), &l)
	return l
}

func toJSON(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

// ---- setup ---------------------------------------------------------------

func (a *actions) setup(r *Run) error {
	if err := a.runChecks(r, check.Pre); err != nil {
		return err
	}
	img, err := a.stageImage(r)
	if err != nil {
		return err
	}
	var id iso.Identity
	if err := r.Step("read manifest", func() (string, error) {
		im, err := iso.Open(img)
		if err != nil {
			return "", err
		}
		defer im.Close()
		id, err = iso.IdentityOf(im, filepath.Base(r.State.Var(VarISO)))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s %s (from the %s)", id.Type, id.Version, id.Arch, id.Source), nil
	}); err != nil {
		return err
	}
	old := r.State.OldVersion
	if err := r.Step("compatibility", func() (string, error) { return a.compatible(id, old) }); err != nil {
		return err
	}
	if err := r.SetVar(VarType, id.Type); err != nil {
		return err
	}
	if err := r.SetNewVersion(id.Version); err != nil {
		return err
	}
	var files []string
	install := ""
	digests := map[string]string{}
	if id.Manifest != nil {
		files, install = id.Manifest.Files, id.Manifest.Install
		for f, d := range id.Manifest.SHA256 {
			digests[f] = strings.ToLower(d)
		}
	}
	if err := r.SetVar(VarInstall, install); err != nil {
		return err
	}
	b, _ := json.Marshal(digests)
	if err := r.SetVar(VarSHA256, string(b)); err != nil {
		return err
	}
	// Which files exist is decided once, before any is tagged: a rerun
	// must not take a file the install created for one that was there.
	if r.State.Var(VarFiles) == "" {
		var present, absent []string
		for _, f := range files {
			p, err := a.onHost(f)
			if err != nil {
				return err
			}
			if _, err := os.Lstat(p); err == nil {
				present = append(present, f)
			} else if errors.Is(err, os.ErrNotExist) {
				absent = append(absent, f)
			} else {
				return fmt.Errorf("cannot look at %s: %w", f, err)
			}
		}
		if err := r.SetVar(VarAbsent, toJSON(absent)); err != nil {
			return err
		}
		// The directories the install will have to make for them: undo
		// install removes them again, when empty.
		var newDirs []string
		seen := map[string]bool{}
		for _, f := range absent {
			for d := path.Dir(f); d != "/" && !seen[d]; d = path.Dir(d) {
				p, err := a.onHost(d)
				if err != nil {
					return err
				}
				if _, err := os.Lstat(p); err == nil {
					break
				}
				seen[d] = true
				newDirs = append(newDirs, d)
			}
		}
		if err := r.SetVar(VarNewDirs, toJSON(newDirs)); err != nil {
			return err
		}
		if err := r.SetVar(VarFiles, toJSON(present)); err != nil {
			return err
		}
	}
	present := jsonList(r.State.Var(VarFiles))
	if len(present) == 0 {
		return r.Step("tag create", func() (string, error) { return "no existing file to tag", nil })
	}
	return a.tag(r, present)
}

// compatible checks that the image fits this host: its type, and that it
// can upgrade the running version.
func (a *actions) compatible(id iso.Identity, old string) (string, error) {
	want := a.h.Config.Product.Type
	if want == "" {
		return "", host.WithHint(host.Refused("cannot check the image type %s: this host's product.type is not configured", id.Type),
			"set [product] type (and version) in "+host.DefaultConfigPath)
	}
	if !iso.SameType(id.Type, want) {
		return "", host.Refused("image is for type %s, this host is type %s", id.Type, want)
	}
	if old != "" && id.Version == old {
		return "", host.Refused("image version %s is the version this host runs", id.Version)
	}
	ok, declared := id.Manifest.UpgradesFromVersion(old)
	switch {
	case declared && !ok:
		return "", host.Refused("image version %s cannot upgrade version %s (it upgrades %s)", id.Version, orUnknown(old),
			strings.Join(id.Manifest.UpgradesFrom, ", "))
	case !declared:
		return fmt.Sprintf("type %s; the image does not say which versions it upgrades", id.Type), nil
	}
	return fmt.Sprintf("type %s, %s upgrades %s", id.Type, id.Version, old), nil
}

func (a *actions) tag(r *Run, files []string) error {
	return r.Step("tag create", func() (string, error) {
		t := a.tags()
		defer t.Close()
		rep, err := t.Create(r.State.OldVersion, files, tagfs.CreateOptions{})
		if err != nil {
			return "", err
		}
		msg := fmt.Sprintf("%d tagged for version %s (%d already), %d cloned, %d copied, %d hard-linked", len(rep.Done), r.State.OldVersion,
			len(rep.Already), rep.Cloned, rep.Copied, rep.Linked)
		for _, w := range rep.Warnings {
			r.Printf("warning: %s", w)
			msg += "; warning: " + w
		}
		return msg, nil
	})
}

func (a *actions) undoSetup(r *Run) error {
	t := a.tags()
	defer t.Close()
	st, err := t.State()
	if err != nil {
		return err
	}
	if st.Lookup {
		return host.WithHint(host.Refused("cannot undo setup: this member runs on tagged files (version lookup is on)"),
			"turn it off first with 'upgradectl tag disable'")
	}
	if err := a.cleanTags(r, t); err != nil {
		return err
	}
	if err := a.removeTagTemps(r, t); err != nil {
		return err
	}
	if err := a.removeImage(r); err != nil {
		return err
	}
	for _, k := range []string{VarFiles, VarAbsent, VarType, VarInstall} {
		if err := r.SetVar(k, ""); err != nil {
			return err
		}
	}
	return r.SetNewVersion("")
}

// cleanTags deletes every tagged copy (the step "tag clean").
func (a *actions) cleanTags(r *Run, t *tagfs.Tags) error {
	return r.Step("tag clean", func() (string, error) {
		rep, err := t.Clean(tagfs.CleanOptions{})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d tagged files removed", len(rep.Done)), nil
	})
}

// removeTagTemps removes the temporary files of an interrupted tag create
// in the directories of the tagged files. tag clean removes those of the
// files its record names, but a create killed while it probed the
// filesystem (before it recorded its plan) leaves one that no record names.
func (a *actions) removeTagTemps(r *Run, t *tagfs.Tags) error {
	dirs := map[string]bool{}
	for _, f := range jsonList(r.State.Var(VarFiles)) {
		dirs[path.Dir(f)] = true
	}
	var gone []string
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		found, err := t.Scan(dir)
		if err != nil && len(found) == 0 {
			continue // the directory is gone, or unreadable: tag clean said so
		}
		for _, f := range found {
			if !f.Temp || path.Dir(f.Path) != dir {
				continue
			}
			p, err := a.onHost(f.Path)
			if err != nil {
				return err
			}
			if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := host.RemoveDurable(p); err != nil {
				return fmt.Errorf("cannot remove temporary file %s: %w", f.Path, err)
			}
			gone = append(gone, f.Path)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return r.Step("tag temporaries", func() (string, error) {
		return "removed " + strings.Join(gone, ", "), nil
	})
}

func (a *actions) verifySetup(r *Run) []string {
	var bad []string
	if img := r.State.Var(VarImage); img != "" {
		if _, err := os.Stat(img); err != nil {
			bad = append(bad, fmt.Sprintf("the staged image %s is gone", img))
		}
	}
	if len(jsonList(r.State.Var(VarFiles))) > 0 {
		t := a.tags()
		defer t.Close()
		rep, err := t.Check(false)
		if rep == nil && err != nil {
			return append(bad, err.Error())
		}
		for _, p := range rep.Problems {
			bad = append(bad, fmt.Sprintf("tagged file %s: %s", p.Path, p.Problem))
		}
		// The record itself may have lost them (tag restore, remove or
		// clean by hand): the backout would then restore nothing.
		rec, err := t.Load()
		if err != nil {
			return append(bad, err.Error())
		}
		tagged := map[string]bool{}
		for _, e := range rec.Files {
			tagged[e.Path] = e.Type != ""
		}
		for _, f := range jsonList(r.State.Var(VarFiles)) {
			// The record names a file by where it is (a link on the
			// way resolved).
			at := f
			if p, err := a.onHost(f); err == nil {
				if rel, err := a.h.Root.Rel(p); err == nil {
					at = rel
				}
			}
			if !tagged[f] && !tagged[at] {
				bad = append(bad, fmt.Sprintf("%s is no longer tagged (its copy was restored or removed by hand)", f))
			}
		}
	}
	return bad
}

// ---- preinstall ----------------------------------------------------------

func (a *actions) preinstall(r *Run) error {
	if len(jsonList(r.State.Var(VarFiles))) > 0 {
		if err := r.Step("tag check", func() (string, error) {
			t := a.tags()
			defer t.Close()
			rep, err := t.Check(true)
			if err != nil {
				if rep != nil && len(rep.Problems) > 0 {
					return "", fmt.Errorf("%w: %s: %s", err, rep.Problems[0].Path, rep.Problems[0].Problem)
				}
				return "", err
			}
			return fmt.Sprintf("%d tagged files complete, contents as tagged", rep.Checked), nil
		}); err != nil {
			return err
		}
	}
	if err := a.verifyImage(r); err != nil {
		return err
	}
	if !a.h.Config.Stages.Maintenance {
		return r.Step("maintenance enter", func() (string, error) { return "not configured (stages.maintenance = false)", nil })
	}
	sys := a.system()
	defer sys.Close()
	if r.Get("maintenance") == "" {
		st, err := boot.Status(r.Ctx, sys)
		if err != nil {
			return err
		}
		was := "out"
		if st.In {
			was = "in"
		}
		// Recorded before entering: undo and clean leave maintenance only
		// if this upgrade entered it.
		if err := r.Set("maintenance", was); err != nil {
			return err
		}
	}
	if r.Get("maintenance") == "in" {
		return r.Step("maintenance enter", func() (string, error) { return "already in maintenance mode", nil })
	}
	return enterMaintenance(r, sys)
}

func enterMaintenance(r *Run, sys *boot.System) error {
	return r.Step("maintenance enter", func() (string, error) {
		o, err := boot.Enter(r.Ctx, sys, boot.EnterOptions{Locked: true})
		if err != nil {
			return "", err
		}
		return outcome(o), nil
	})
}

func outcome(o *boot.Outcome) string {
	if o == nil {
		return ""
	}
	s := "target " + o.Target
	if !o.Live {
		s += " at the next boot"
	}
	if len(o.Notes) > 0 {
		s += "; " + strings.Join(o.Notes, "; ")
	}
	return s
}

// enteredMaintenance reports whether this upgrade's preinstall put the host
// into maintenance mode.
func enteredMaintenance(st *State) bool {
	return st.Stage(Preinstall).Data["maintenance"] == "out"
}

func (a *actions) leaveMaintenance(r *Run) error {
	if !enteredMaintenance(r.State) {
		return nil
	}
	sys := a.system()
	defer sys.Close()
	return r.Step("maintenance exit", func() (string, error) {
		o, err := boot.Exit(r.Ctx, sys, boot.ExitOptions{Locked: true})
		if err != nil {
			return "", err
		}
		if o.Already {
			return "not in maintenance mode", nil
		}
		return outcome(o), nil
	})
}

func (a *actions) undoPreinstall(r *Run) error {
	return a.leaveMaintenance(r)
}

func (a *actions) verifyPreinstall(r *Run) []string {
	if !enteredMaintenance(r.State) || r.State.Stage(Roll).Data[maintenanceLeftKey] != "" {
		return nil
	}
	sys := a.system()
	defer sys.Close()
	st, err := boot.Status(r.Ctx, sys)
	if err != nil {
		return []string{err.Error()}
	}
	if !st.In {
		return []string{"the host is not in maintenance mode"}
	}
	return nil
}

// ---- install -------------------------------------------------------------

func (a *actions) install(r *Run) error {
	dir, err := a.mount(r)
	if err != nil {
		return err
	}
	argv := jsonList(r.State.Var(VarInstallCommand))
	if len(argv) == 0 {
		rel := r.State.Var(VarInstall)
		if rel == "" {
			return host.WithHint(host.Usage("cannot install: the image has no install command in its manifest"),
				"give one: upgradectl install -- CMD ARGS...")
		}
		argv = []string{filepath.Join(dir, filepath.FromSlash(rel))}
	}
	cmd := exec.CommandContext(r.Ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(r.Env(), "UPGRADECTL_IMAGE_ROOT="+dir)
	cmd.WaitDelay = 10 * time.Second
	r.Printf("running %s", strings.Join(argv, " "))
	return r.Command("install command", cmd)
}

// mount mounts the staged image on the state directory's mount point, or
// finds it mounted by an earlier attempt. A mount there that a crash left
// unrecorded, or whose server is gone, is taken down first.
func (a *actions) mount(r *Run) (string, error) {
	dir := a.mountDir()
	img := r.State.Var(VarImage)
	var out string
	err := r.Step("iso mount", func() (string, error) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", host.CannotRun("cannot create mount point %s: %v", dir, errors.Unwrap(err))
		}
		ms, err := iso.Mounts(a.state)
		if err != nil {
			return "", err
		}
		for _, m := range ms {
			if m.Dir != dir {
				continue
			}
			if m.State == iso.StateMounted && m.Image == img {
				out = dir
				return fmt.Sprintf("%s already mounted on %s (%s)", img, dir, m.Method), nil
			}
			if err := iso.Unmount(dir, true, a.mountOpts()); err != nil {
				return "", err
			}
		}
		detachUnrecorded(dir)
		rec, err := iso.Mount(img, dir, a.mountOpts())
		if err != nil {
			return "", err
		}
		out = dir
		if rec.Method == iso.MethodExtract {
			r.Printf("the image cannot be mounted here (%s): extracted into %s instead", rec.Why, dir)
			return fmt.Sprintf("%s extracted into %s: %s", img, dir, rec.Why), nil
		}
		return fmt.Sprintf("%s on %s (%s)", img, dir, rec.Method), nil
	})
	return out, err
}

// detachUnrecorded takes down a mount on dir that no record names: one a
// crash left between mounting and recording. dir is this upgrade's own
// mount point in the state directory, so whatever is mounted there is ours.
func detachUnrecorded(dir string) {
	for i := 0; i < 8; i++ {
		if unix.Unmount(dir, unix.MNT_DETACH) != nil {
			return
		}
	}
}

func (a *actions) unmount(r *Run) error {
	dir := a.mountDir()
	return r.Step("iso umount", func() (string, error) {
		ms, err := iso.Mounts(a.state)
		if err != nil {
			return "", err
		}
		msg := "not mounted"
		for _, m := range ms {
			if m.Dir == dir {
				if err := iso.Unmount(dir, true, a.mountOpts()); err != nil {
					return "", err
				}
				msg = fmt.Sprintf("%s unmounted from %s", m.Image, dir)
			}
		}
		detachUnrecorded(dir)
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("cannot remove mount point %s: %w", dir, err)
		}
		return msg, nil
	})
}

func (a *actions) undoInstall(r *Run) error {
	files := jsonList(r.State.Var(VarFiles))
	if len(files) > 0 {
		if err := r.Step("tag restore", func() (string, error) {
			t := a.tags()
			defer t.Close()
			rep, err := t.Restore(nil)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%d files restored to version %s (%d already)", len(rep.Done), rep.Version, len(rep.Already)), nil
		}); err != nil {
			return err
		}
	}
	if err := r.Step("remove new files", func() (string, error) {
		var gone []string
		for _, f := range jsonList(r.State.Var(VarAbsent)) {
			p, err := a.onHost(f)
			if err != nil {
				return "", err
			}
			if err := os.Remove(p); err == nil {
				gone = append(gone, f)
			} else if !errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("cannot remove %s, which the install created: %w", f, err)
			}
		}
		// Then the directories it made for them, deepest first, if
		// nothing else is in them now.
		dirs := jsonList(r.State.Var(VarNewDirs))
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		removed := 0
		for _, d := range dirs {
			p, err := a.onHost(d)
			if err != nil {
				return "", err
			}
			if err := os.Remove(p); err == nil {
				removed++
			} else if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) && !errors.Is(err, syscall.ENOTDIR) {
				return "", fmt.Errorf("cannot remove directory %s, which the install created: %w", d, err)
			}
		}
		return fmt.Sprintf("%d files and %d directories the install created removed", len(gone), removed), nil
	}); err != nil {
		return err
	}
	// Restoring used up the tagged copies; setup and preinstall are still
	// done, so the copies are made again from the restored files.
	if len(files) > 0 {
		if err := a.tag(r, files); err != nil {
			return err
		}
	}
	return a.unmount(r)
}

func (a *actions) verifyInstall(r *Run) []string {
	return a.missingFiles(r)
}

// missingFiles lists the manifest's files that are not on the host.
func (a *actions) missingFiles(r *Run) []string {
	var bad []string
	for _, f := range append(jsonList(r.State.Var(VarFiles)), jsonList(r.State.Var(VarAbsent))...) {
		p, err := a.onHost(f)
		if err == nil {
			_, err = os.Lstat(p)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s is missing", f))
		}
	}
	slices.Sort(bad)
	return bad
}

// ---- postinstall ---------------------------------------------------------

func (a *actions) postinstall(r *Run) error {
	if err := r.Step("verify files", func() (string, error) {
		bad := a.missingFiles(r)
		if len(bad) == 0 {
			bad = a.notNewFiles(r)
		}
		if len(bad) > 0 {
			return "", host.Bad("version %s is not in place: %s", r.State.NewVersion, strings.Join(bad, ", "))
		}
		n := len(jsonList(r.State.Var(VarFiles))) + len(jsonList(r.State.Var(VarAbsent)))
		return fmt.Sprintf("all %d files of version %s in place (%d compared with the image's SHA-256)", n, r.State.NewVersion,
			len(a.digests(r))), nil
	}); err != nil {
		return err
	}
	return a.runChecks(r, check.Post)
}

// digests are the image's SHA-256 of installed files, by host path.
func (a *actions) digests(r *Run) map[string]string {
	d := map[string]string{}
	json.Unmarshal([]byte(r.State.Var(VarSHA256)), &d)
	return d
}

// notNewFiles lists the files whose content is not what the image says
// the new version installs: an old file put back by hand (tag restore) or
// an install that did not replace it.
func (a *actions) notNewFiles(r *Run) []string {
	var bad []string
	for f, want := range a.digests(r) {
		p, err := a.onHost(f)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		got, err := sha256Of(p)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s cannot be read: %v", f, errors.Unwrap(err)))
		case got != want:
			bad = append(bad, fmt.Sprintf("%s is not the image's (sha256 %s, the image says %s)", f, got[:12], want[:12]))
		}
	}
	slices.Sort(bad)
	return bad
}

// sha256Of is the SHA-256 of the regular file at p (not followed if a
// symlink: that is not the file the image describes).
func sha256Of(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", &os.PathError{Op: "read", Path: p, Err: host.ErrNotRegular}
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (a *actions) undoPostinstall(r *Run) error {
	return r.Step("undo postinstall", func() (string, error) { return "nothing to undo: postinstall only verifies", nil })
}

// runChecks runs a check profile as a sub-action; a failed inhibitor fails
// the stage.
func (a *actions) runChecks(r *Run, profile string) error {
	rep, err := check.Run(r.Ctx, check.Options{Root: a.h.Root, Config: a.h.Config, Profile: profile, Extra: Checks()})
	if err != nil {
		return err
	}
	check.Log(a.log, rep, r.LogID())
	a.noteChecks(rep)
	r.Printf("check %s: %s", profile, rep.Summary())
	if rep.Inhibited {
		var ids []string
		for _, c := range rep.Checks {
			if c.Blocks() {
				ids = append(ids, c.ID+": "+c.Message)
			}
		}
		return host.WithHint(host.Bad("inhibitor failed: %s", strings.Join(ids, "; ")),
			fmt.Sprintf("see 'upgradectl check %s'; fix it, or waive a known failure with checks.accept", profile))
	}
	return nil
}

// ---- roll ----------------------------------------------------------------

func (a *actions) roll(r *Run) error {
	t := a.tags()
	defer t.Close()
	if err := r.Step("tag disable", func() (string, error) {
		st, err := t.State()
		if err != nil {
			return "", err
		}
		if r.Get("lookup") == "" {
			was := "off"
			if st.Lookup {
				was = "on"
				if st.Bind {
					was = "bind"
				}
			}
			if err := r.Set("lookup", was); err != nil {
				return "", err
			}
		}
		if !st.Lookup {
			return "version lookup is off", nil
		}
		if _, err := t.Disable(); err != nil {
			return "", err
		}
		return "version lookup turned off", nil
	}); err != nil {
		return err
	}
	if err := a.rollReboot(r); err != nil {
		return err
	}
	if !a.fleetOn() {
		return nil
	}
	// In a fleet the member is back in service after its roll: the
	// cluster's switch waits for every member to roll, and a member that
	// stayed in maintenance mode until clean would hold its slot from the
	// others. It leaves maintenance mode and runs the post checks; their
	// success gives the slot back.
	if enteredMaintenance(r.State) {
		if err := r.Set(maintenanceLeftKey, "yes"); err != nil {
			return err
		}
	}
	if err := a.leaveMaintenance(r); err != nil {
		return err
	}
	return a.runChecks(r, "post")
}

// maintenanceLeftKey marks a roll that left maintenance mode (in a fleet).
const maintenanceLeftKey = "maintenance_left"

func (a *actions) rollReboot(r *Run) error {
	if !a.h.Config.Stages.RebootOnRoll {
		return nil
	}
	sys := a.system()
	defer sys.Close()
	if !sys.Live() {
		return r.Step("reboot", func() (string, error) {
			return "not rebooting: systemd does not run this root; the roll takes effect at its next boot", nil
		})
	}
	id := bootID()
	if asked := r.Get("reboot_from"); asked != "" && asked != id {
		return r.Step("reboot", func() (string, error) { return "back after the reboot", nil })
	}
	if err := r.Set("reboot_from", id); err != nil {
		return err
	}
	if err := r.Step("reboot", func() (string, error) { return "rebooting", boot.Reboot(r.Ctx, sys) }); err != nil {
		return err
	}
	return ErrReboot
}

// bootID identifies this boot of the host.
func bootID() string {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

func (a *actions) undoRoll(r *Run) error {
	if r.Get(maintenanceLeftKey) != "" {
		// Out of service again for the backout, as before the roll.
		sys := a.system()
		err := enterMaintenance(r, sys)
		sys.Close()
		if err != nil {
			return err
		}
		if err := r.Set(maintenanceLeftKey, ""); err != nil {
			return err
		}
	}
	was := r.Get("lookup")
	if was != "on" && was != "bind" {
		return r.Step("tag enable", func() (string, error) { return "version lookup was off before roll", nil })
	}
	return r.Step("tag enable", func() (string, error) {
		t := a.tags()
		defer t.Close()
		if _, err := t.Enable(was == "bind"); err != nil {
			return "", err
		}
		return "version lookup back on", nil
	})
}

func (a *actions) verifyRoll(r *Run) []string {
	t := a.tags()
	defer t.Close()
	st, err := t.State()
	if err != nil {
		return []string{err.Error()}
	}
	if st.Lookup {
		return []string{"version lookup is on"}
	}
	return nil
}

// ---- switch --------------------------------------------------------------

func (a *actions) doSwitch(r *Run) error {
	return r.Step("version switch", func() (string, error) {
		if err := SetActiveVersion(a.state, r.State.NewVersion); err != nil {
			return "", err
		}
		return fmt.Sprintf("active version %s (was %s)", r.State.NewVersion, orUnknown(r.State.OldVersion)), nil
	})
}

func (a *actions) verifySwitch(r *Run) []string {
	if v := ActiveVersion(a.state, a.h.Config); v != r.State.NewVersion {
		return []string{fmt.Sprintf("the active version is %s, not %s", orUnknown(v), r.State.NewVersion)}
	}
	return nil
}

// ---- clean ---------------------------------------------------------------

func (a *actions) clean(r *Run) error {
	t := a.tags()
	err := a.cleanTags(r, t)
	t.Close()
	if err != nil {
		return err
	}
	if err := a.unmount(r); err != nil {
		return err
	}
	if err := a.removeImage(r); err != nil {
		return err
	}
	return a.leaveMaintenance(r)
}

// ---- status --------------------------------------------------------------

func (a *actions) facts() []Fact {
	var fs []Fact
	t := a.tags()
	if st, err := t.State(); err != nil {
		fs = append(fs, Fact{"version lookup", "unknown: " + err.Error()})
	} else {
		v := "off"
		if st.Lookup {
			v = "on"
			if st.Bind {
				v = fmt.Sprintf("on, through bind mounts (%d in this mount namespace)", st.Mounted)
			}
		}
		fs = append(fs, Fact{"version lookup", v})
		if st.Files > 0 {
			fs = append(fs, Fact{"tagged files", fmt.Sprintf("%d for version %s", st.Files, st.Version)})
		}
	}
	t.Close()
	sys := a.system()
	if st, err := boot.Status(context.Background(), sys); err != nil {
		fs = append(fs, Fact{"maintenance", "unknown: " + err.Error()})
	} else if st.In {
		fs = append(fs, Fact{"maintenance", "in since " + st.Since.Local().Format("2006-01-02 15:04:05")})
	} else {
		fs = append(fs, Fact{"maintenance", "out"})
	}
	sys.Close()
	ms, err := iso.Mounts(a.state)
	if err != nil {
		fs = append(fs, Fact{"mounts", "unknown: " + err.Error()})
	}
	for _, m := range ms {
		how := m.Method + ", " + m.State
		if m.Method == iso.MethodExtract && m.State == iso.StateMounted {
			how = "extracted: nothing here could mount it"
		}
		fs = append(fs, Fact{"mount", fmt.Sprintf("%s on %s (%s)", m.Image, m.Dir, how)})
	}
	if len(ms) == 0 && err == nil {
		fs = append(fs, Fact{"mounts", "none"})
	}
	if a.fleetOn() {
		fs = append(fs, a.fleetFact())
	}
	return fs
}
