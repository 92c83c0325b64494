package tagfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// TestBindDiversion checks tag enable --bind, its re-apply, lookup, exec
// and disable with the built binary in a private mount namespace
// (unshare -m --propagation private), so no mount reaches this machine's
// namespace; that it did not is checked at the end.
func TestBindDiversion(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "unshare")
	bin := hosttest.Bin(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/bin/hello"), []byte("#!/bin/sh\necho hello v1\n"), 0o755)
	writeFile(t, filepath.Join(root, "usr/lib/data"), []byte("data v1\n"), 0o644)
	writeFile(t, filepath.Join(root, "usr/lib/other"), []byte("other v1\n"), 0o644)
	os.Symlink("data", filepath.Join(root, "usr/lib/link"))
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/usr"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The install of version 2.
	writeFile(t, filepath.Join(root, "usr/bin/hello.new"), []byte("#!/bin/sh\necho hello v2\n"), 0o755)
	os.Rename(filepath.Join(root, "usr/bin/hello.new"), filepath.Join(root, "usr/bin/hello"))
	writeFile(t, filepath.Join(root, "usr/lib/data"), []byte("data v2\n"), 0o644)
	writeFile(t, filepath.Join(root, "usr/lib/other"), []byte("other v2\n"), 0o644)

	script := `
set -u
U="$BIN --root $ROOT"
step() { echo "== $*"; }
step exec-off; PATH=/usr/bin $U tag exec -- hello
step enable; $U tag enable --bind
step cat; cat $ROOT/usr/lib/data; cat $ROOT/usr/lib/other
step run; $ROOT/usr/bin/hello
step write; (echo x >> $ROOT/usr/lib/data) 2>/dev/null && echo writable || echo read-only
step again; $U tag enable --bind
step undo; umount $ROOT/usr/lib/other; cat $ROOT/usr/lib/other
step reapply; $U tag enable --bind; cat $ROOT/usr/lib/other
step list; $U tag list | head -1
step lookup; $U tag lookup /usr/lib/link /usr/lib/data /usr/lib/absent
step exec-on; PATH=/usr/sbin:/usr/bin $U tag exec -- hello
step restore; $U tag restore; echo "exit $?"
step disable; $U tag disable
step after; cat $ROOT/usr/lib/data; cat $ROOT/usr/lib/other; $ROOT/usr/bin/hello; $U tag lookup /usr/lib/data
step mounts; grep -c " $ROOT/" /proc/self/mountinfo || true
`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "BIN="+bin, "ROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]string{}
	var cur string
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if strings.HasPrefix(line, "== ") {
			cur = line[3:]
			continue
		}
		got[cur] += line + "\n"
	}
	want := map[string]string{
		"exec-off": "hello v2\n",
		"enable":   "version lookup on; bind mounts: 3 made, 0 in place, 1 skipped (symlinks or missing originals: lookup only)\n",
		"cat":      "data v1\nother v1\n",
		"run":      "hello v1\n",
		"write":    "read-only\n",
		"again":    "version lookup on; bind mounts: 0 made, 3 in place, 1 skipped (symlinks or missing originals: lookup only)\n",
		"undo":     "other v2\n",
		"reapply":  "version lookup on; bind mounts: 1 made, 2 in place, 1 skipped (symlinks or missing originals: lookup only)\nother v1\n",
		"list":     "version 1: 4 tagged files, complete; version lookup on (bind mounts: 3 in this mount namespace)\n",
		"lookup":   "/usr/lib/.Old..link\n/usr/lib/.Old..data\n/usr/lib/absent\n",
		"exec-on":  "hello v1\n",
		"restore":  "upgradectl: cannot restore tagged files: they are bind-mounted over the originals (version lookup with --bind is on)\nhint: run 'upgradectl tag disable' first\nexit 5\n",
		"disable":  "version lookup off; removed 3 bind mounts\n",
		"after":    "data v2\nother v2\nhello v2\n/usr/lib/data\n",
		"mounts":   "0\n",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got\n%s\nwant\n%s", k, got[k], w)
		}
	}
	if t.Failed() {
		t.Logf("whole output:\n%s", out)
	}
	// Nothing leaked into this namespace.
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), root) {
		t.Errorf("a mount under %s is in this machine's namespace", root)
	}
}

// TestBindMountsAlwaysUndone: tag disable takes off every bind mount of a
// tagged copy, also one whose directory was renamed or whose copy was
// removed under it (found in the mount table); a failed enable --bind
// leaves nothing mounted and lookup as it was; a missing original is
// skipped.
func TestBindMountsAlwaysUndone(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "unshare")
	bin := hosttest.Bin(t)
	root := t.TempDir()
	for _, p := range []string{"opt/app/etc/app.conf", "opt/app/bin/app", "opt/app/bin/tool", "opt/app/lib/gone"} {
		writeFile(t, filepath.Join(root, p), []byte(p+" v1\n"), 0o644)
	}
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/opt/app"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, "opt/app/lib/gone")) // the install removed it
	script := `
set -u
U="$BIN --root $ROOT"
mounts() { grep -c " $ROOT/" /proc/self/mountinfo || true; }
step() { echo "== $*"; }
step enable; $U tag enable --bind
step moved; mv $ROOT/opt/app/etc $ROOT/opt/app/etc.old; mkdir $ROOT/opt/app/etc; rm $ROOT/opt/app/bin/.Old..tool; mounts
step disable; $U tag disable >/dev/null; echo "exit $?"; mounts; $U tag list | head -1
step failed-enable; $U tag enable --bind >/dev/null 2>&1; echo "exit $?"; mounts; $U tag list | head -1
`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "BIN="+bin, "ROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "== enable\n" +
		"version lookup on; bind mounts: 3 made, 0 in place, 1 skipped (symlinks or missing originals: lookup only)\n" +
		"== moved\n3\n" +
		"== disable\nexit 0\n0\nversion 1: 4 tagged files, complete; version lookup off\n" +
		"== failed-enable\nexit 1\n0\nversion 1: 4 tagged files, complete; version lookup off\n"
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}
