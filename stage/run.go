package stage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"upgradectl/host"
)

// Run is what a stage's do or undo gets: where the host is, the shared
// state, durable checkpoints, and the log.
type Run struct {
	Ctx       context.Context
	Stage     Name
	Undoing   bool
	Root      host.Root
	StateDir  string // on the running system
	Config    *host.Config
	State     *State
	Automatic bool
	Out       io.Writer

	e   *Engine
	rec *Record
}

// Get returns the stage's checkpoint k ("" when unset).
func (r *Run) Get(k string) string { return r.rec.Data[k] }

// Set records the stage's checkpoint k durably before it returns: a rerun
// after a crash sees it.
func (r *Run) Set(k, v string) error {
	if r.rec.Data == nil {
		r.rec.Data = map[string]string{}
	}
	if v == "" {
		delete(r.rec.Data, k)
	} else {
		r.rec.Data[k] = v
	}
	return saveState(r.StateDir, r.State)
}

// SetVar records the shared value k durably.
func (r *Run) SetVar(k, v string) error {
	if v == "" {
		delete(r.State.Vars, k)
	} else {
		r.State.Vars[k] = v
	}
	return saveState(r.StateDir, r.State)
}

// SetNewVersion records the version the upgrade brings.
func (r *Run) SetNewVersion(v string) error {
	r.State.NewVersion = v
	return saveState(r.StateDir, r.State)
}

// LogID is the log entry of this attempt: the parent of its sub-actions.
func (r *Run) LogID() int64 { return r.rec.LogID }

// Printf prints one progress line.
func (r *Run) Printf(format string, args ...any) {
	r.e.printf("%s: %s", r.Stage, fmt.Sprintf(format, args...))
}

// Step runs one sub-action of the stage and logs it under the stage's
// entry with its time, result and message (what f returns, or its error).
func (r *Run) Step(action string, f func() (string, error)) error {
	start := r.e.now()
	msg, err := f()
	res := host.ResultSuccess
	if err != nil {
		res = host.ResultFailed
		if msg != "" {
			msg += ": "
		}
		msg += err.Error()
	}
	r.e.Log.Append(host.LogEntry{Action: action, Parent: r.rec.LogID, Start: start, End: r.e.now(), Scope: "server",
		Result: res, Message: msg})
	return err
}

// maxLogOutput bounds the command output kept in one log entry; the start
// and the end are kept, which is where the reasons are.
const maxLogOutput = 32 << 10

// Command runs cmd as a sub-action of the stage, its output (stdout and
// stderr together) captured in the log entry. The error names the command
// and ends with the last line of its output.
func (r *Run) Command(action string, cmd *exec.Cmd) error {
	out := newHeadTail(maxLogOutput / 2)
	cmd.Stdout, cmd.Stderr = out, out
	// If upgradectl dies (kill -9, a crash), the command dies with it
	// rather than going on unwatched beside the rerun that completes the
	// stage.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// Its descendants carry a mark in their environment: what the command
	// leaves running is killed when it ends, and what a killed upgradectl
	// left is killed by the next run (killMarked), before it acts.
	mark := newMark()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, markVar+"="+mark)
	if cmd.Cancel != nil {
		cmd.Cancel = func() error { killMarked(mark); return nil }
	}
	return r.Step(action, func() (string, error) {
		if err := r.Set(markKey, mark); err != nil {
			return "", err
		}
		err := cmd.Run()
		killMarked(mark)
		if serr := r.Set(markKey, ""); serr != nil && err == nil {
			err = serr
		}
		text := strings.TrimRight(out.String(), "\n")
		if err != nil {
			last := lastLine(text)
			if last != "" {
				err = fmt.Errorf("%s: %v: %s", filepath.Base(cmd.Path), err, last)
			} else {
				err = fmt.Errorf("%s: %v", filepath.Base(cmd.Path), err)
			}
		}
		return text, err
	})
}

// headTail keeps the first and the last n bytes written to it and counts
// the rest, so that a command's output is read as it comes, in memory that
// does not grow with it (400 MB of output were held whole before, and then
// cut).
type headTail struct {
	mu         sync.Mutex
	n          int
	head, tail []byte // tail is a ring of n bytes once full
	next       int    // where the ring writes next
	total      int64
}

func newHeadTail(n int) *headTail { return &headTail{n: n} }

func (h *headTail) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total += int64(len(p))
	written := len(p)
	if room := h.n - len(h.head); room > 0 {
		k := min(room, len(p))
		h.head = append(h.head, p[:k]...)
		p = p[k:]
	}
	if len(p) >= h.n {
		p = p[len(p)-h.n:]
	}
	for len(p) > 0 {
		if len(h.tail) < h.n {
			k := min(h.n-len(h.tail), len(p))
			h.tail = append(h.tail, p[:k]...)
			p = p[k:]
			continue
		}
		k := copy(h.tail[h.next:], p)
		h.next = (h.next + k) % h.n
		p = p[k:]
	}
	return written, nil
}

// String is all that was written when it fit, else the start, how much was
// left out and the end.
func (h *headTail) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	tail := append(append([]byte{}, h.tail[h.next:]...), h.tail[:h.next]...)
	left := h.total - int64(len(h.head)) - int64(len(tail))
	if left == 0 {
		return string(h.head) + string(tail)
	}
	return string(h.head) + fmt.Sprintf("\n[... %d bytes left out ...]\n", left) + string(tail)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// Env is the environment a hook or an install command gets on top of
// upgradectl's own: the stage, the root and both versions.
func (r *Run) Env() []string {
	env := append(os.Environ(),
		"UPGRADECTL_STAGE="+string(r.Stage),
		"UPGRADECTL_ROOT="+r.Root.Dir(),
		"UPGRADECTL_STATE_DIR="+r.StateDir,
		"UPGRADECTL_OLD_VERSION="+r.State.OldVersion,
		"UPGRADECTL_NEW_VERSION="+r.State.NewVersion,
		"UPGRADECTL_UPGRADE="+r.State.Upgrade,
	)
	if r.Automatic {
		env = append(env, "UPGRADECTL_MODE=automatic")
	} else {
		env = append(env, "UPGRADECTL_MODE=manual")
	}
	return env
}

// runHooks runs the executables in HOOKS_DIR/STAGE.KIND.d in name order,
// each logged with its output. A failing pre or post hook fails the stage
// (the first failure stops the rest); fail hooks all run and their
// failures are only logged.
func (e *Engine) runHooks(r *Run, kind string, stageErr error) error {
	if e.Config == nil || e.Config.Stages.HooksDir == "" {
		return nil
	}
	rel := filepath.Join(e.Config.Stages.HooksDir, fmt.Sprintf("%s.%s.d", r.Stage, kind))
	dir, err := e.Root.Resolve(rel)
	if err != nil {
		return fmt.Errorf("cannot read hooks %s: %w", rel, err)
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read hooks %s: %w", rel, errors.Unwrap(err))
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
			continue
		}
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			e.Log.Append(host.LogEntry{Action: "hook " + filepath.Join(rel, name), Parent: r.rec.LogID, Scope: "server",
				Result: host.ResultWarning, Message: "skipped: not an executable file"})
			continue
		}
		cmd := exec.CommandContext(r.Ctx, path)
		cmd.Dir = e.Root.Dir()
		cmd.Env = append(r.Env(), "UPGRADECTL_HOOK="+kind)
		if stageErr != nil {
			cmd.Env = append(cmd.Env, "UPGRADECTL_ERROR="+oneLine(stageErr.Error()))
		}
		cmd.WaitDelay = 10 * time.Second
		e.printf("%s: %s hook %s", r.Stage, kind, name)
		if err := r.Command("hook "+filepath.Join(rel, name), cmd); err != nil && kind != "fail" {
			return fmt.Errorf("%s hook %s failed: %w", kind, name, err)
		}
	}
	return nil
}

// markVar is the environment variable that marks the processes of one
// command run by a stage; markKey is where the stage records its mark.
const (
	markVar = "UPGRADECTL_RUN"
	markKey = "running_command"
)

func newMark() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// killMarked kills (SIGKILL) every process whose environment carries
// mark: a command run by a stage and everything it started that kept its
// environment.
func killMarked(mark string) {
	entry := []byte(markVar + "=" + mark + "\x00") // one NUL-ended entry of environ
	inner := append([]byte{0}, entry...)           // the same, not the first
	self := os.Getpid()
	for round := 0; round < 3; round++ { // a process may fork while we look
		found := false
		procs, _ := filepath.Glob("/proc/[0-9]*/environ")
		for _, p := range procs {
			pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if err != nil || pid == self {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil || !bytes.HasPrefix(b, entry) && !bytes.Contains(b, inner) {
				continue
			}
			syscall.Kill(pid, syscall.SIGKILL)
			found = true
		}
		if !found {
			return
		}
	}
}
