package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMaintenanceCommandsOnRoot drives the commands on a directory tree
// (--root): no systemd runs it, so only files change.
func TestMaintenanceCommandsOnRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc/systemd/system", "lib/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "lib/systemd/system/multi-user.target"), nil, 0o644)
	os.Symlink("/lib/systemd/system/multi-user.target", filepath.Join(root, "lib/systemd/system/default.target"))
	os.WriteFile(filepath.Join(root, "etc/issue"), []byte("Debian \\n \\l\n"), 0o644)

	cmd := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(append([]string{"upgradectl", "--root", root}, args...), &out, &errb)
		if code != want {
			t.Fatalf("upgradectl %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	cmd(2, "boot", "install", "--bin", "/usr/sbin/upgradectl") // not there
	os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/sbin/upgradectl"), []byte("#!/bin/sh\n"), 0o755)
	cmd(0, "boot", "install", "--bin", "/usr/sbin/upgradectl")
	out := cmd(0, "maintenance", "enter", "--message", "UPDATE NOW")
	if !strings.Contains(out, "takes effect at the next boot") {
		t.Errorf("enter on a root without systemd does not say when it takes effect:\n%s", out)
	}
	var st struct {
		In            bool   `json:"in"`
		Message       string `json:"message"`
		DefaultTarget string `json:"default_target"`
	}
	if err := json.Unmarshal([]byte(cmd(0, "--json", "maintenance", "status")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.In || st.Message != "UPDATE NOW" || st.DefaultTarget != "upgradectl-maintenance.target" {
		t.Errorf("status --json: %+v", st)
	}
	out = cmd(5, "boot", "remove")
	if !strings.Contains(out, "hint: leave it first") {
		t.Errorf("boot remove in maintenance:\n%s", out)
	}
	cmd(0, "maintenance", "exit")
	if b, _ := os.ReadFile(filepath.Join(root, "etc/issue")); string(b) != "Debian \\n \\l\n" {
		t.Errorf("/etc/issue after exit: %q", b)
	}
	cmd(0, "boot", "remove")
	cmd(2, "maintenance", "enter", "--bogus")
}
