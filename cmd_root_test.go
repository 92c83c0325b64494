package main

import (
	"crypto/md5"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// TestRootConfinement: each writer of a host path (the state directory
// with its log, lock and mount records, iso extract's destination, the
// staging directory, iso mount's mount point) is given a path through a
// link to "missing/../evil", with evil linking out of the root. Resolving
// stopped at the missing part and joined the rest, so the writes went to
// the outside directory. Now they stay inside the root.
func TestRootConfinement(t *testing.T) {
	img := isoReadImage(t)
	root, outside := t.TempDir(), t.TempDir()
	for _, l := range [][2]string{
		{"missing/../evil", "state"}, {"m/../evil/stage", "staging"}, {"x/../evil/out", "dest"},
		{"y/../evil/mnt", "mnt"}, {outside, "evil"},
	} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "etc/upgradectl"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/upgradectl/upgradectl.toml"),
		[]byte("[product]\ntype = \"cmp\"\nversion = \"12.1.1\"\n[iso]\nstaging_dir = \"/staging/iso\"\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "var/upgrade"), 0o755)
	data, _ := os.ReadFile(img)
	os.WriteFile(filepath.Join(root, "var/upgrade", filepath.Base(img)), data, 0o644)

	cli := func(args ...string) {
		t.Helper()
		code, out, errs := runCLI(t, append([]string{"--root", root, "--state-dir", "/state/upgradectl"}, args...)...)
		t.Logf("%v: exit %d %s%s", args, code, out, errs)
	}
	inside := filepath.Join(root, outside)
	os.MkdirAll(filepath.Join(inside, "out"), 0o755)
	os.MkdirAll(filepath.Join(inside, "mnt"), 0o755)
	cli("iso", "stage", "--md5", fmt.Sprintf("%x", md5.Sum(data)), "/var/upgrade/"+filepath.Base(img))
	cli("iso", "extract", "/var/upgrade/"+filepath.Base(img), "/dest/x")
	cli("log")
	// The FUSE server is the built binary, started by iso mount.
	bin := hosttest.Bin(t)
	hosttest.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse for iso mount's mount point")
	}
	mount := func(args ...string) {
		out, err := exec.Command(bin, append([]string{"--root", root, "--state-dir", "/state/upgradectl", "iso"}, args...)...).CombinedOutput()
		t.Logf("iso %v: %v %s", args, err, out)
	}
	mount("mount", "--method", "fuse", "/var/upgrade/"+filepath.Base(img), "/mnt")
	defer mount("umount", "--all")
	if b, _ := os.ReadFile("/proc/self/mountinfo"); !strings.Contains(string(b), filepath.Join(inside, "mnt")) {
		t.Error("the image is not mounted on the mount point inside the root")
	}
	var found []string
	filepath.Walk(outside, func(p string, fi os.FileInfo, err error) error {
		if p != outside {
			found = append(found, strings.TrimPrefix(p, outside))
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("written outside the root: %v", found)
	}
	// What was written is in the root, where evil leads inside it.
	for _, p := range []string{"upgradectl/upgrade.log", "stage/iso/" + filepath.Base(img), "out/x/README"} {
		if _, err := os.Stat(filepath.Join(inside, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
