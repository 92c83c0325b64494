package tagfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pkg/xattr"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// TestPlantedSymlinks: a symlink planted at .Old..NAME or at the temporary
// name must never make root write or delete through it.
func TestPlantedSymlinks(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	paths := makeTree(t, root)
	outside := filepath.Join(t.TempDir(), "victim")
	writeFile(t, outside, []byte("precious"), 0o600)
	inside := filepath.Join(root, "etc/shadow")
	writeFile(t, inside, []byte("secret"), 0o600)
	victims := map[string]meta{outside: snap(t, outside), inside: snap(t, inside)}
	lib := filepath.Join(root, "usr/lib")
	if err := os.Symlink(outside, filepath.Join(lib, ".Old..libx.so")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(lib, ".Old..empty")); err != nil {
		t.Fatal(err)
	}
	// At the temporary name: removed (the link, not its target), then
	// the copy is created with O_EXCL.
	if err := os.Symlink(inside, filepath.Join(lib, tmpName("hard1"))); err != nil {
		t.Fatal(err)
	}
	tg := newTestTags(t, root)

	_, err := tg.Create("1.0", []string{"/usr"}, CreateOptions{})
	mustKind(t, err, host.KindBad, "2 paths")
	for _, w := range []string{"/usr/lib/.Old..libx.so exists and is not a tagged file", "/usr/lib/.Old..empty exists"} {
		if !hasErrText(err, w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if _, tagged := leftovers(t, root); len(tagged) != 2 {
		t.Errorf("something was written: %v", tagged)
	}
	// Without those two, the rest is tagged.
	var rest []string
	for _, p := range paths {
		if p != "/usr/lib/libx.so" && p != "/usr/lib/empty" {
			rest = append(rest, p)
		}
	}
	if _, err := tg.Create("1.0", rest, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(lib, ".Old..hard1")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf(".Old..hard1: %v %v", fi, err)
	}
	// Remove and clean report the planted links and leave them.
	rep, err := tg.Remove([]string{"/usr/lib/libx.so", "/usr/lib/empty"})
	if err != nil || len(rep.Foreign) != 2 || len(rep.Done) != 0 {
		t.Errorf("remove: %+v %v", rep, err)
	}
	if _, err := tg.Clean(CleanOptions{Scan: []string{"/"}}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{".Old..libx.so", ".Old..empty"} {
		if fi, err := os.Lstat(filepath.Join(lib, l)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("planted %s: %v %v", l, fi, err)
		}
	}
	// Restore through a planted .Old.. link is refused too.
	_, err = tg.Restore([]string{"/usr/lib/libx.so"})
	mustKind(t, err, host.KindBad, "not a tagged file")
	for p, m := range victims {
		if now := snap(t, p); !sameMeta(now, m) {
			t.Errorf("%s changed", p)
		}
	}
}

// TestSymlinkOnTheWay: a directory of the tagged set replaced by a symlink
// after tagging; restore, check and clean must not follow it, even to a
// directory holding a decoy with our attribute.
func TestSymlinkOnTheWay(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	makeTree(t, root)
	tg := newTestTags(t, root)
	if _, err := tg.Create("1.0", []string{"/usr/lib"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	decoy := t.TempDir()
	writeFile(t, filepath.Join(decoy, "libx.so"), []byte("other system's file"), 0o644)
	writeFile(t, filepath.Join(decoy, ".Old..libx.so"), []byte("decoy"), 0o644)
	if err := xattr.LSet(filepath.Join(decoy, ".Old..libx.so"), tg.Attribute(), []byte("1.0")); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(root, "usr/lib")
	if err := os.Rename(lib, lib+".real"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(decoy, lib); err != nil {
		t.Fatal(err)
	}
	before := snapAll(t, decoy, []string{"/libx.so", "/.Old..libx.so"})

	_, err := tg.Restore(nil)
	mustKind(t, err, host.KindBad, "a symlink is on the way")
	_, err = tg.Clean(CleanOptions{})
	mustKind(t, err, host.KindBad, "a symlink is on the way")
	rep, err := tg.Check(false)
	mustKind(t, err, host.KindBad, "have problems")
	if len(rep.Problems) == 0 || !hasErrText(errString(rep.Problems[0].Problem), "symlink") {
		t.Errorf("check: %+v", rep.Problems)
	}
	_, err = tg.Create("1.0", []string{"/usr/lib.real/hard1"}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for h, m := range before {
		if now := snap(t, filepath.Join(decoy, h)); !sameMeta(now, m) {
			t.Errorf("decoy %s changed", h)
		}
	}
	// The record still has the set; put the directory back and clean.
	os.Remove(lib)
	os.Rename(lib+".real", lib)
	if _, err := tg.Clean(CleanOptions{}); err != nil {
		t.Fatal(err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestWritableDirectory: refused unless forced.
func TestWritableDirectory(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "opt/pub/a"), []byte("a"), 0o644)
	writeFile(t, filepath.Join(root, "opt/grp/b"), []byte("b"), 0o644)
	writeFile(t, filepath.Join(root, "opt/usr/c"), []byte("c"), 0o644)
	os.Chmod(filepath.Join(root, "opt/pub"), 0o1777)
	os.Chown(filepath.Join(root, "opt/grp"), 0, 100)
	os.Chmod(filepath.Join(root, "opt/grp"), 0o775)
	os.Chown(filepath.Join(root, "opt/usr"), 1000, 0)
	tg := newTestTags(t, root)
	_, err := tg.Create("1", []string{"/opt"}, CreateOptions{})
	mustKind(t, err, host.KindBad, "3 paths")
	for _, w := range []string{"/opt/pub: the directory is writable by everyone", "writable by group 100", "writable by user 1000", "--force"} {
		if !hasErrText(err, w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if _, tagged := leftovers(t, root); len(tagged) != 0 {
		t.Errorf("written: %v", tagged)
	}
	rep, err := tg.Create("1", []string{"/opt"}, CreateOptions{Force: true})
	if err != nil || len(rep.Done) != 3 {
		t.Fatalf("forced: %+v %v", rep, err)
	}
}

// TestAttributeRefused: a filesystem without extended attributes (ramfs),
// and user.* on symlinks, are errors before anything is written.
func TestAttributeRefused(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "ramfs", "ramfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("needs a ramfs mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	writeFile(t, filepath.Join(mnt, "f"), []byte("f"), 0o644)
	tg := newTestTags(t, root)
	_, err := tg.Create("1", []string{"/mnt/f"}, CreateOptions{})
	mustKind(t, err, host.KindCannotRun, "(ramfs")
	if !hasErrText(err, "does not support the attribute trusted.upgradectl.version") {
		t.Errorf("error %q", err)
	}
	temps, tagged := leftovers(t, root)
	if len(temps)+len(tagged) > 0 {
		t.Errorf("written: %v %v", temps, tagged)
	}

	writeFile(t, filepath.Join(root, "usr/f"), []byte("f"), 0o644)
	os.Symlink("f", filepath.Join(root, "usr/l"))
	cfg := host.DefaultConfig()
	cfg.Tag.Attribute = "user.upgradectl.version"
	hr, _ := host.NewRoot(root)
	ut := New(hr, cfg, filepath.Join(root, "var/lib/upgradectl"))
	defer ut.Close()
	_, err = ut.Create("1", []string{"/usr"}, CreateOptions{})
	mustKind(t, err, host.KindCannotRun, "symlinks cannot carry the attribute user.upgradectl.version")
	temps, tagged = leftovers(t, root)
	if len(temps)+len(tagged) > 0 {
		t.Errorf("written: %v %v", temps, tagged)
	}
}

// TestLockedFiles: an immutable or append-only file, or a file in an
// immutable directory, could not be replaced by the upgrade nor put back
// by a backout: refused before anything is written, --force or not.
func TestLockedFiles(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "chattr")
	root := t.TempDir()
	for _, p := range []string{"opt/app/imm", "opt/app/app", "opt/app/ok", "opt/frozen/f"} {
		writeFile(t, filepath.Join(root, p), []byte(p), 0o644)
	}
	t.Cleanup(func() { exec.Command("chattr", "-R", "-i", "-a", filepath.Join(root, "opt")).Run() })
	for flag, p := range map[string]string{"+i": "opt/app/imm", "+a": "opt/app/app"} {
		if out, err := exec.Command("chattr", flag, filepath.Join(root, p)).CombinedOutput(); err != nil {
			t.Skipf("chattr %s: %v %s (the filesystem has no such flag)", flag, err, out)
		}
	}
	if out, err := exec.Command("chattr", "+i", filepath.Join(root, "opt/frozen")).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i on a directory: %v %s", err, out)
	}
	tg := newTestTags(t, root)
	for _, force := range []bool{false, true} {
		_, err := tg.Create("1", []string{"/opt"}, CreateOptions{Force: force})
		mustKind(t, err, host.KindBad, "3 paths")
		for _, w := range []string{"/opt/app/imm: the file is immutable (chattr +i)", "/opt/app/app: the file is append-only (chattr +a)",
			"in /opt/frozen: the directory is immutable (chattr +i)"} {
			if !hasErrText(err, w) {
				t.Errorf("force %v: error %q does not say %q", force, err, w)
			}
		}
		if _, tagged := leftovers(t, root); len(tagged) != 0 {
			t.Errorf("written: %v", tagged)
		}
	}
	exec.Command("chattr", "-R", "-i", "-a", filepath.Join(root, "opt")).Run()
	if rep, err := tg.Create("1", []string{"/opt"}, CreateOptions{}); err != nil || len(rep.Done) != 4 {
		t.Fatalf("without the flags: %+v %v", rep, err)
	}
}
