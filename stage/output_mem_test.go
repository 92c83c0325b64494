package stage_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"upgradectl/host"
)

// TestHookOutputMemory: a hook that writes 300 MB. Its output was held
// whole and then cut (the process grew to several times the output); it
// is read as it comes now, and upgradectl's peak memory stays far below
// the output's size. The log entry keeps the start and the end.
func TestHookOutputMemory(t *testing.T) {
	r := rootHost(t)
	hook := filepath.Join(r.root, "etc/upgradectl/hooks.d/setup.pre.d/10-chatty")
	os.MkdirAll(filepath.Dir(hook), 0o755)
	const size = 300 << 20
	os.WriteFile(hook, []byte(fmt.Sprintf("#!/bin/sh\necho first line\nhead -c %d /dev/zero | tr '\\0' x\necho\necho last line\n", size)), 0o755)
	img := acmeISO(t, t.TempDir(), "2", "1")
	cmd := r.cmd("setup", "--iso", img)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	t.Logf("peak memory %s for %s of hook output", host.FormatSize(peak), host.FormatSize(size))
	if peak > 128<<20 {
		t.Errorf("peak memory %s for %s of hook output", host.FormatSize(peak), host.FormatSize(size))
	}
	logText, _ := os.ReadFile(filepath.Join(r.root, "var/lib/upgradectl/upgrade.log"))
	for _, want := range []string{"first line", "last line", "bytes left out"} {
		if !bytes.Contains(logText, []byte(want)) {
			t.Errorf("the log has no %q", want)
		}
	}
	if len(logText) > 1<<20 {
		t.Errorf("the log is %d bytes", len(logText))
	}
}
