package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"upgradectl/host/hosttest"
)

// TestInputFIFOs: a FIFO where a command reads an input file (an image, a
// path list, a state record) made the command wait forever for a writer.
// Each is refused at once, naming the file. The built binary runs with a
// deadline, so that a regression fails instead of hanging the suite.
func TestInputFIFOs(t *testing.T) {
	bin := hosttest.Bin(t)
	root := t.TempDir()
	fifo := filepath.Join(root, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// Image paths and the state directory are host paths, inside the
	// root; the path lists are files on this system.
	state := func(name string) string {
		dir := "/state-" + name
		os.MkdirAll(filepath.Join(root, dir), 0o755)
		if err := syscall.Mkfifo(filepath.Join(root, dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, args := range [][]string{
		{"iso", "info", "/fifo"},
		{"iso", "ls", "/fifo"},
		{"iso", "cat", "/fifo", "/README"},
		{"iso", "extract", "/fifo", "/out"},
		{"iso", "verify", "--md5", strings.Repeat("0", 32), "/fifo"},
		{"iso", "verify", "--embedded", "/fifo"},
		{"iso", "stage", "--md5", strings.Repeat("0", 32), "/fifo"},
		{"tag", "create", "--version", "1", "--list", fifo},
		{"tag", "create", "--version", "1", "--iso", fifo},
		{"--state-dir", state("stages.json"), "status"},
		{"--state-dir", state("tags.json"), "tag", "list"},
		{"--state-dir", state("maintenance.json"), "maintenance", "status"},
		{"--state-dir", state("upgrade.log"), "log"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, bin, append([]string{"--root", root}, args...)...)
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Errorf("%v: still waiting after 20s", args)
			continue
		}
		code := cmd.ProcessState.ExitCode()
		if err == nil || code == 0 || !strings.Contains(string(out), "not a regular file") || args[1] != "verify" && strings.Count(strings.TrimSpace(string(out)), "\n") > 1 {
			t.Errorf("%v: exit %d, %q; want a failure naming the FIFO not a regular file", args, code, out)
		}
	}
}
