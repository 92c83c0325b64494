package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host"
	"upgradectl/host/hosttest"
	"upgradectl/tagfs"
)

// TestTagCommands drives the tag commands in-process on a temporary root:
// --iso with a real image's manifest, --list, list, check, enable, lookup,
// the refusals and their exit codes, restore.
func TestTagCommands(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "xorriso")
	root := t.TempDir()
	for _, f := range []string{"opt/acme/bin/acme", "opt/acme/lib/libacme.so", "opt/acme/etc/acme.conf"} {
		p := filepath.Join(root, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("v1 "+f), 0o644)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "upgradectl.toml"), []byte(`type = "cmp"
version = "2"
files = ["/opt/acme/bin/acme", "/opt/acme/lib/libacme.so"]
`), 0o644)
	img := filepath.Join(t.TempDir(), "cmp-2-x86_64.iso")
	hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", img, src)
	list := filepath.Join(t.TempDir(), "list")
	os.WriteFile(list, []byte("# config\n\n  /opt/acme/etc/acme.conf  \n"), 0o644)
	r := func(args ...string) (int, string, string) {
		return runCLI(t, append([]string{"--root", root}, args...)...)
	}

	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"tag", "create", "/opt"}, 2, "cannot tag: no version given"},
		{[]string{"tag", "create", "--version", "1", "/opt/none"}, 1, "cannot tag /opt/none: no such file or directory"},
		{[]string{"tag", "create", "--version", "1", "--iso", list}, 1, ""},
		{[]string{"tag", "create", "--version", "1", "--iso", img, "--list", list}, 0, "tagged 3 files for version 1 (0 clones, 3 copies"},
		{[]string{"tag", "create", "--version", "1", "--iso", img}, 0, "tagged 0 files for version 1 (0 clones, 0 copies, 0B copied); 2 were tagged already"},
		{[]string{"tag", "create", "--version", "2", "/opt"}, 5, "3 files are tagged for version 1"},
		{[]string{"tag", "check", "--content"}, 0, "3 tagged files for version 1: all good"},
		{[]string{"tag", "list"}, 0, "/opt/acme/lib/.Old..libacme.so  file  26    copy"},
		{[]string{"tag", "enable"}, 0, "version lookup on"},
		{[]string{"tag", "lookup", "/opt/acme/bin/acme"}, 0, "/opt/acme/bin/.Old..acme\n"},
		{[]string{"tag", "clean"}, 5, "version lookup is on"},
		{[]string{"tag", "disable"}, 0, "version lookup off"},
		{[]string{"tag", "restore", "/opt/acme/bin/acme"}, 0, "restored 1 files of version 1"},
		{[]string{"tag", "list", "--scan", "/opt"}, 0, "/opt/acme/lib/.Old..libacme.so  1"},
		{[]string{"tag", "clean"}, 0, "removed 2 tagged files"},
	} {
		code, out, errs := r(c.args...)
		if code != c.code || !strings.Contains(out+errs, c.out) {
			t.Errorf("%v: exit %d\n%s%s\nwant exit %d with %q", c.args, code, out, errs, c.code, c.out)
		}
	}
	code, out, _ := r("--json", "tag", "list")
	var rec tagfs.Record
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || len(rec.Files) != 0 {
		t.Errorf("list --json: %d %s", code, out)
	}
	_, logOut, _ := r("log")
	if !strings.Contains(logOut, "tag create") || !strings.Contains(logOut, "tag clean") {
		t.Errorf("log: %s", logOut)
	}
}

// FuzzReadPathList: a path list is operator input.
func FuzzReadPathList(f *testing.F) {
	f.Add("/a\n# c\n\n  /b  \n")
	f.Add("\r\n/x\r\n")
	f.Add(strings.Repeat("x", 70000))
	f.Fuzz(func(t *testing.T, data string) {
		p := filepath.Join(t.TempDir(), "list")
		os.WriteFile(p, []byte(data), 0o644)
		paths, err := readPathList(p)
		if err != nil {
			return
		}
		for _, l := range paths {
			if l == "" || strings.HasPrefix(l, "#") || strings.TrimSpace(l) != l || strings.Contains(l, "\n") {
				t.Fatalf("bad line %q", l)
			}
		}
	})
}

// TestTagNamesOnOneLine: a file name with a newline, a tab or bytes that
// are not UTF-8 stays on one line in errors and tables.
func TestTagNamesOnOneLine(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	for _, n := range []string{"a\nb", "c\td", "e\xff"} {
		p := filepath.Join(root, "srv/x", n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, _, errs := runCLI(t, "--root", root, "tag", "create", "--version", "1", "/srv/x/no\nsuch")
	if code != 1 || errs != "upgradectl: cannot tag /srv/x/no\\nsuch: no such file or directory\n" {
		t.Errorf("error for a missing name with a newline: %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, "--root", root, "tag", "create", "--version", "1", "/srv/x"); code != 0 {
		t.Fatalf("tag create: %d %q", code, errs)
	}
	code, out, _ := runCLI(t, "--root", root, "tag", "list")
	want := []string{`/srv/x/.Old..a\nb `, `/srv/x/.Old..c\td `, `/srv/x/.Old..e\xff `}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 5 {
		t.Fatalf("tag list: %d, want a header, a title and 3 rows:\n%s", code, out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[2+i], w) {
			t.Errorf("row %q, want it to start with %q", lines[2+i], w)
		}
	}
}

// TestTagListWhileCreating: an incomplete tagged set whose state lock is
// held (a tag create at work) is "in progress", not "interrupted".
func TestTagListWhileCreating(t *testing.T) {
	root := t.TempDir()
	state := filepath.Join(root, "var/lib/upgradectl")
	os.MkdirAll(state, 0o755)
	os.WriteFile(filepath.Join(state, "tags.json"), []byte(`{"format":1,"version":"1","complete":false,"files":[{"path":"/opt/a","uid":0,"gid":0}]}`), 0o644)
	_, out, _ := runCLI(t, "--root", root, "tag", "list")
	if !strings.Contains(out, "INCOMPLETE (a tag create was interrupted") {
		t.Fatalf("without the lock held:\n%s", out)
	}
	lock, err := host.LockStateDir(state)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	_, out, _ = runCLI(t, "--root", root, "tag", "list")
	if !strings.Contains(out, fmt.Sprintf("in progress (process %d is at work on it)", os.Getpid())) {
		t.Fatalf("with the lock held:\n%s", out)
	}
}
