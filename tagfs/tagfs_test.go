package tagfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// TestCreateCheckRestore tags a sample tree on each real filesystem, then
// installs a new version over it and restores the old one, comparing every
// file's metadata and content at each step.
func TestCreateCheckRestore(t *testing.T) {
	for _, fs := range []struct {
		name   string
		clones bool
	}{{"ext4", false}, {"btrfs", true}, {"xfs", true}, {"tmpfs", false}} {
		t.Run(fs.name, func(t *testing.T) {
			size := int64(64 << 20)
			if fs.name == "btrfs" {
				size = 128 << 20
			}
			if fs.name == "xfs" {
				size = 320 << 20 // mkfs.xfs refuses smaller
			}
			root := hosttest.LoopFS(t, fs.name, size)
			paths := makeTree(t, root)
			before := snapAll(t, root, paths)
			tg := newTestTags(t, root)

			rep, err := tg.Create("1.0", []string{"/usr"}, CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Done) != len(paths) {
				t.Fatalf("tagged %v, want %v", rep.Done, paths)
			}
			// hard2 is linked to the copy of hard1.
			made := len(paths) - 2
			if fs.clones && rep.Cloned != made || !fs.clones && (rep.Cloned != 0 || rep.Copied != made) || rep.Linked != 1 {
				t.Errorf("%d clones, %d copies, %d links on %s", rep.Cloned, rep.Copied, rep.Linked, fs.name)
			}
			sameInode(t, root, "/usr/lib/.Old..hard1", "/usr/lib/.Old..hard2", true)
			for _, h := range paths {
				p := filepath.Join(root, h)
				if now := snap(t, p); !sameMeta(now, before[h]) {
					t.Errorf("%s: the original changed: %+v, was %+v", h, now, before[h])
				}
				cp := snap(t, filepath.Join(root, TaggedPath(h)))
				if d := sameCopy(cp, before[h], tg.Attribute()); d != "" {
					t.Errorf("%s: copy differs: %s", h, d)
				}
				if cp.Xattrs[tg.Attribute()] != "1.0" {
					t.Errorf("%s: version attribute %q", h, cp.Xattrs[tg.Attribute()])
				}
			}
			if temps, _ := leftovers(t, root); len(temps) > 0 {
				t.Errorf("temporary files left: %v", temps)
			}

			// Again: nothing to do, nothing changes.
			rep, err = tg.Create("1.0", []string{"/usr"}, CreateOptions{})
			if err != nil || len(rep.Done) != 0 || len(rep.Already) != len(paths) {
				t.Fatalf("second create: %+v, %v", rep, err)
			}
			// Another version is refused while this set exists.
			_, err = tg.Create("1.1", []string{"/usr/lib/empty"}, CreateOptions{})
			mustKind(t, err, host.KindRefused, "tagged for version 1.0")

			if _, err := tg.Check(true); err != nil {
				t.Fatal(err)
			}
			for _, h := range paths {
				if now := snap(t, filepath.Join(root, h)); !sameMeta(now, before[h]) {
					t.Errorf("%s: check changed the original", h)
				}
			}

			install(t, root, paths)
			if _, err := tg.Check(true); err != nil {
				t.Fatalf("check after install: %v", err)
			}
			rep, err = tg.Restore(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Done) != len(paths) {
				t.Errorf("restored %v", rep.Done)
			}
			for _, h := range paths {
				now := snap(t, filepath.Join(root, h))
				if d := sameCopy(now, before[h], ""); d != "" {
					t.Errorf("%s: restored file differs from the old one: %s", h, d)
				}
			}
			sameInode(t, root, "/usr/lib/hard1", "/usr/lib/hard2", true)
			temps, tagged := leftovers(t, root)
			if len(temps)+len(tagged) > 0 {
				t.Errorf("left after restore: %v %v", temps, tagged)
			}
			if _, err := os.Stat(filepath.Join(root, "var/lib/upgradectl", RecordFile)); !os.IsNotExist(err) {
				t.Errorf("record left after a full restore: %v", err)
			}
			// Restore again: nothing to do.
			if rep, err := tg.Restore(nil); err != nil || len(rep.Done) != 0 {
				t.Errorf("second restore: %+v %v", rep, err)
			}
		})
	}
}

// sameMeta is equality for an original that must not have been touched.
// The access time of a symlink is left out: reading a symlink's target
// updates it (relatime) and no flag avoids that; regular files are read
// with O_NOATIME.
func sameMeta(a, b meta) bool {
	atimeOK := a.Atime == b.Atime || a.Mode&unix.S_IFMT == unix.S_IFLNK
	return a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID && a.Size == b.Size && a.Mtime == b.Mtime &&
		atimeOK && a.Ctime == b.Ctime && a.Ino == b.Ino && a.Content == b.Content &&
		sameCopy(a, b, "") == ""
}

// TestRemoveClean deletes tagged files; a .Old.. file without our attribute
// is only reported, and the originals are untouched.
func TestRemoveClean(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	paths := makeTree(t, root)
	tg := newTestTags(t, root)
	if _, err := tg.Create("1.0", paths, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := snapAll(t, root, paths)
	foreign := filepath.Join(root, "usr/lib/.Old..mine")
	writeFile(t, foreign, []byte("an admin's file"), 0o644)

	rep, err := tg.Remove([]string{"/usr/bin/prog", "/usr/lib/.Old..libx.so", "/usr/lib/mine"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Done, " ") != "/usr/bin/prog /usr/lib/libx.so" || len(rep.Foreign) != 1 {
		t.Errorf("remove: %+v", rep)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/bin/.Old..prog")); !os.IsNotExist(err) {
		t.Error("removed copy still there")
	}
	// Version lookup on: clean refused.
	if _, err := tg.Enable(false); err != nil {
		t.Fatal(err)
	}
	_, err = tg.Clean(CleanOptions{})
	mustKind(t, err, host.KindRefused, "version lookup is on")
	if _, err := tg.Disable(); err != nil {
		t.Fatal(err)
	}
	rep, err = tg.Clean(CleanOptions{Scan: []string{"/usr"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Done) != len(paths)-2 || len(rep.Foreign) != 1 {
		t.Errorf("clean: %+v", rep)
	}
	temps, tagged := leftovers(t, root)
	if len(temps) > 0 || len(tagged) != 1 || tagged[0] != foreign {
		t.Errorf("left after clean: %v %v", temps, tagged)
	}
	for _, h := range paths {
		if now := snap(t, filepath.Join(root, h)); !sameMeta(now, before[h]) {
			t.Errorf("%s: clean changed the original", h)
		}
	}
}

// TestCheckFindsProblems changes tagged copies behind the record's back,
// with digests recorded and without (then the change time tells).
func TestCheckFindsProblems(t *testing.T) {
	for _, digest := range []bool{true, false} {
		t.Run(fmt.Sprint("digest=", digest), func(t *testing.T) { testCheckFindsProblems(t, digest) })
	}
}

func testCheckFindsProblems(t *testing.T, digest bool) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	paths := makeTree(t, root)
	tg := newTestTags(t, root)
	if _, err := tg.Create("1.0", paths, CreateOptions{Digest: digest}); err != nil {
		t.Fatal(err)
	}
	if rep, err := tg.Check(true); err != nil || digest != (rep.ByCtime == 0) {
		t.Fatalf("check before any change: %+v %v", rep, err)
	}
	r := func(h string) string { return filepath.Join(root, TaggedPath(h)) }
	// Same size, other content: only --content sees it.
	b, _ := os.ReadFile(r("/usr/lib/hard1"))
	b[0] ^= 1
	f, _ := os.OpenFile(r("/usr/lib/hard1"), os.O_WRONLY, 0)
	f.WriteAt(b, 0)
	f.Close()
	if err := xattr.LRemove(r("/usr/lib/libx.so"), tg.Attribute()); err != nil {
		t.Fatal(err)
	}
	os.Remove(r("/usr/share/big"))
	os.Chmod(r("/usr/lib/empty"), 0o600)

	rep, err := tg.Check(false)
	mustKind(t, err, host.KindBad, "3 of 9")
	want := map[string]string{r("/usr/lib/libx.so"): "no trusted.upgradectl.version", r("/usr/share/big"): "missing",
		r("/usr/lib/empty"): "mode"}
	for _, p := range rep.Problems {
		if !strings.Contains(p.Problem, want[filepath.Join(root, p.Path)]) || want[filepath.Join(root, p.Path)] == "" {
			t.Errorf("unexpected problem %+v", p)
		}
	}
	// hard1 and hard2 share their copy: both have changed.
	rep, err = tg.Check(true)
	mustKind(t, err, host.KindBad, "5 of 9")
	found := 0
	wantMsg := "changed since it was tagged (its inode change time moved)"
	if digest {
		wantMsg = "content changed since it was tagged"
	}
	for _, p := range rep.Problems {
		if (p.Path == "/usr/lib/.Old..hard1" || p.Path == "/usr/lib/.Old..hard2") && p.Problem == wantMsg {
			found++
		}
	}
	if found != 2 {
		t.Errorf("content change found %d times, want 2: %+v", found, rep.Problems)
	}
}

// TestLookup follows the version lookup switch.
func TestLookup(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	paths := makeTree(t, root)
	if err := os.Symlink("usr/bin", filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	tg := newTestTags(t, root)
	if _, err := tg.Create("1.0", paths[:3], CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(on bool, want map[string]string) {
		t.Helper()
		l, err := tg.Lookuper()
		if err != nil {
			t.Fatal(err)
		}
		if l.on != on {
			t.Fatalf("lookup on = %v", l.on)
		}
		for in, w := range want {
			got, err := l.Lookup(in)
			if err != nil || got != w {
				t.Errorf("lookup %s = %q, %v; want %q", in, got, err, w)
			}
		}
	}
	check(false, map[string]string{"/usr/bin/prog": "/usr/bin/prog"})
	if _, err := tg.Enable(false); err != nil {
		t.Fatal(err)
	}
	check(true, map[string]string{
		"/usr/bin/prog":   "/usr/bin/.Old..prog",
		"/bin/prog":       "/usr/bin/.Old..prog", // a symlinked directory on the way
		"/usr/bin/link":   "/usr/bin/.Old..link",
		"/usr/lib/empty":  "/usr/lib/empty", // not tagged
		"/usr/bin/absent": "/usr/bin/absent",
	})
	// A .Old.. file without the attribute is no diversion.
	writeFile(t, filepath.Join(root, "usr/lib/.Old..hard1"), []byte("x"), 0o644)
	check(true, map[string]string{"/usr/lib/hard1": "/usr/lib/hard1"})
	st, err := tg.State()
	if err != nil || !st.Lookup || st.Files != 3 || st.Mounted != 0 {
		t.Errorf("state %+v %v", st, err)
	}
	if _, err := tg.Disable(); err != nil {
		t.Fatal(err)
	}
	check(false, map[string]string{"/usr/bin/prog": "/usr/bin/prog"})
}

// TestProbeInAnotherDirectory: the first directory of a filesystem's set
// holds only a symlink, so the clone probe uses a file elsewhere.
func TestProbeInAnotherDirectory(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "opt/a"), 0o755)
	os.Symlink("../b/f", filepath.Join(root, "opt/a/l"))
	writeFile(t, filepath.Join(root, "opt/b/f"), []byte("data"), 0o644)
	rep, err := newTestTags(t, root).Create("1", []string{"/opt"}, CreateOptions{})
	if err != nil || len(rep.Done) != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestStateDirLeftOut: tagging a directory that holds the state directory
// leaves the record and the log out of the set.
func TestStateDirLeftOut(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "var/lib/app/db"), []byte("db"), 0o644)
	writeFile(t, filepath.Join(root, "var/lib/upgradectl/upgrade.log"), []byte("{}\n"), 0o644)
	rep, err := newTestTags(t, root).Create("1", []string{"/var"}, CreateOptions{})
	if err != nil || strings.Join(rep.Done, " ") != "/var/lib/app/db" {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestLookupLive: with the root "/", the kernel resolves the directories.
func TestLookupLive(t *testing.T) {
	hosttest.RequireRoot(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "usr/bin/tool"), []byte("v1"), 0o755)
	os.Symlink("usr/bin", filepath.Join(dir, "bin"))
	live, err := host.NewRoot("/")
	if err != nil {
		t.Fatal(err)
	}
	tg := New(live, nil, filepath.Join(dir, "state"))
	defer tg.Close()
	if _, err := tg.Create("1", []string{filepath.Join(dir, "bin/tool")}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Enable(false); err != nil {
		t.Fatal(err)
	}
	l, err := tg.Lookuper()
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		filepath.Join(dir, "bin/tool"):     filepath.Join(dir, "bin/.Old..tool"),
		filepath.Join(dir, "usr/bin/tool"): filepath.Join(dir, "usr/bin/.Old..tool"),
		filepath.Join(dir, "usr/bin/none"): filepath.Join(dir, "usr/bin/none"),
	} {
		if got, err := l.Lookup(in); err != nil || got != want {
			t.Errorf("lookup %s = %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := tg.Disable(); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.Clean(CleanOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestResumeAfterPowerCut: a copy renamed into place but whose data never
// reached the disk (empty, with the attribute) is made again when the
// record says its run was interrupted; the same file unknown to the record
// is left alone and reported.
func TestResumeAfterPowerCut(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "opt/a"), []byte("the old a"), 0o644)
	writeFile(t, filepath.Join(root, "opt/b"), []byte("the old b"), 0o644)
	tg := newTestTags(t, root)
	for _, n := range []string{"a", "b"} {
		writeFile(t, filepath.Join(root, "opt/.Old.."+n), nil, 0o644)
		if err := xattr.LSet(filepath.Join(root, "opt/.Old.."+n), tg.Attribute(), []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.save(&Record{Version: "1", Files: []Entry{{Path: "/opt/a"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := tg.Create("1", []string{"/opt/a", "/opt/b"}, CreateOptions{})
	mustKind(t, err, host.KindBad, "/opt/.Old..b is tagged for 1 but differs from the original and is not in the record")
	rep, err := tg.Create("1", []string{"/opt/a"}, CreateOptions{})
	if err != nil || len(rep.Done) != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "opt/.Old..a")); string(b) != "the old a" {
		t.Errorf("copy not made again: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "opt/.Old..b")); len(b) != 0 {
		t.Errorf("unrecorded copy touched: %q", b)
	}
}

// TestCreateAddsToRecord: a second tag create for more files keeps every
// entry of the first, whatever order the paths sort in ("b-x" sorts before
// "b/" as a path, after "b" as a directory: an index into the record made
// before it was sorted once lost an entry here).
func TestCreateAddsToRecord(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	for _, p := range []string{"opt/a/b/c", "opt/a/b-x/d", "opt/a/b-x/e", "opt/a/b.y/f"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tg := newTestTags(t, root)
	for _, set := range [][]string{{"/opt/a/b/c"}, {"/opt/a/b-x/d"}, {"/opt/a/b.y/f", "/opt/a/b-x/e"}, {"/opt/a"}} {
		if _, err := tg.Create("1", set, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rec, got := recordPaths(t, tg)
	for _, e := range rec.Files {
		if e.Type != typeFile {
			t.Errorf("%s: type %q", e.Path, e.Type)
		}
	}
	want := []string{"/opt/a/b-x/d", "/opt/a/b-x/e", "/opt/a/b.y/f", "/opt/a/b/c"}
	if strings.Join(got, " ") != strings.Join(want, " ") || !rec.Complete {
		t.Fatalf("record %v (complete %v), want %v complete", got, rec.Complete, want)
	}
	if rep, err := tg.Check(true); err != nil || rep.Checked != len(want) {
		t.Fatalf("check: %+v %v", rep, err)
	}
}

// sameInode says whether two host paths under root are one inode.
func sameInode(t *testing.T, root, a, b string, want bool) {
	t.Helper()
	if got := snap(t, filepath.Join(root, a)).Ino == snap(t, filepath.Join(root, b)).Ino; got != want {
		t.Errorf("%s and %s one inode: %v, want %v", a, b, got, want)
	}
}

// TestHardLinks: names of one inode tagged together share one copy, also
// when the first was tagged by an earlier run; restoring them one at a
// time keeps the version attribute until the last, and check --content
// stays good throughout; the restored names are one inode again.
func TestHardLinks(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	p := func(h string) string { return filepath.Join(root, h) }
	writeFile(t, p("/opt/a/one"), []byte("one inode\n"), 0o644)
	for _, n := range []string{"/opt/a/two", "/opt/b/three"} {
		if err := os.MkdirAll(filepath.Dir(p(n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(p("/opt/a/one"), p(n)); err != nil {
			t.Fatal(err)
		}
	}
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/opt/a/one"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := tg.Create("1", []string{"/opt"}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Linked != 2 || len(rep.Already) != 1 {
		t.Fatalf("report %+v", rep)
	}
	sameInode(t, root, "/opt/a/.Old..one", "/opt/a/.Old..two", true)
	sameInode(t, root, "/opt/a/.Old..one", "/opt/b/.Old..three", true)
	sameInode(t, root, "/opt/a/.Old..one", "/opt/a/one", false)
	check := func() {
		t.Helper()
		if rep, err := tg.Check(true); err != nil {
			t.Fatalf("check: %v %+v", err, rep)
		}
	}
	check()
	// The install replaces each name with a new file.
	for _, n := range []string{"/opt/a/one", "/opt/a/two", "/opt/b/three"} {
		os.Remove(p(n))
		writeFile(t, p(n), []byte("version 2\n"), 0o644)
	}
	for _, n := range []string{"/opt/a/two", "/opt/b/three"} {
		if _, err := tg.Restore([]string{n}); err != nil {
			t.Fatal(err)
		}
		if v, err := xattr.LGet(p("/opt/a/.Old..one"), tg.Attribute()); err != nil || string(v) != "1" {
			t.Fatalf("after restoring %s: the remaining copy's attribute %q %v", n, v, err)
		}
		check()
	}
	if _, err := tg.Restore(nil); err != nil {
		t.Fatal(err)
	}
	sameInode(t, root, "/opt/a/one", "/opt/a/two", true)
	sameInode(t, root, "/opt/a/one", "/opt/b/three", true)
	if _, err := xattr.LGet(p("/opt/a/one"), tg.Attribute()); err == nil {
		t.Error("the version attribute is left on the restored inode")
	}
	if b, _ := os.ReadFile(p("/opt/b/three")); string(b) != "one inode\n" {
		t.Errorf("restored content %q", b)
	}
}

// TestNonUTF8Names: file names are bytes, not text; two names that differ
// only in bytes that are not UTF-8 stay two files through the record,
// check, restore and clean.
func TestNonUTF8Names(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	paths := []string{"/opt/n/x\xff", "/opt/n/x\xfe", "/opt/n/plain"}
	for _, p := range paths {
		writeFile(t, filepath.Join(root, p), []byte("old "+p), 0o644)
	}
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/opt/n"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, got := recordPaths(t, tg)
	if want := []string{"/opt/n/plain", "/opt/n/x\xfe", "/opt/n/x\xff"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("record paths %q, want %q", got, want)
	}
	if rep, err := tg.Check(true); err != nil || rep.Checked != 3 || len(rep.Problems) != 0 {
		t.Fatalf("check: %+v %v", rep, err)
	}
	install(t, root, paths)
	if _, err := tg.Restore(nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(b) != "old "+p {
			t.Errorf("%q after restore: %q %v", p, b, err)
		}
	}
	if _, err := tg.Create("1", paths, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if rep, err := tg.Clean(CleanOptions{}); err != nil || len(rep.Done) != 3 {
		t.Fatalf("clean: %+v %v", rep, err)
	}
	if temps, tagged := leftovers(t, root); len(temps)+len(tagged) != 0 {
		t.Errorf("left after clean: %q %q", temps, tagged)
	}
}

// TestRestoreAfterRebootWithBind: the record says bind mounts, but none is
// there in this mount namespace (they went with a reboot): restore goes
// on. With one mounted here it is refused (TestBindDiversion).
func TestRestoreAfterRebootWithBind(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "opt/app/f"), []byte("v1\n"), 0o644)
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/opt/app"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec, err := tg.Load()
	if err != nil {
		t.Fatal(err)
	}
	rec.Lookup, rec.Bind = true, true
	if err := tg.save(rec); err != nil {
		t.Fatal(err)
	}
	install(t, root, []string{"/opt/app/f"})
	if _, err := tg.Restore(nil); err != nil {
		t.Fatalf("restore with the record saying bind and nothing mounted: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "opt/app/f")); string(b) != "v1\n" {
		t.Errorf("restored %q", b)
	}
}

// TestCommandThroughSymlinks: with version lookup on, a command reached
// through a symlink (on $PATH, or a tagged symlink) runs the tagged copy
// of the file it leads to, not the new version.
func TestCommandThroughSymlinks(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "opt/app/bin/app"), []byte("#!/bin/sh\necho v1\n"), 0o755)
	writeFile(t, filepath.Join(root, "opt/app/bin/tool.real"), []byte("#!/bin/sh\necho tool v1\n"), 0o755)
	os.Symlink("tool.real", filepath.Join(root, "opt/app/bin/tool"))
	os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755)
	os.Symlink("../../../opt/app/bin/app", filepath.Join(root, "usr/local/bin/app"))
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/opt/app"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	install(t, root, []string{"/opt/app/bin/app", "/opt/app/bin/tool.real"})
	if _, err := tg.Enable(false); err != nil {
		t.Fatal(err)
	}
	l, err := tg.Lookuper()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"app": "opt/app/bin/.Old..app", "tool": "opt/app/bin/.Old..tool.real"} {
		got, err := l.Command(name, "/usr/local/bin:/opt/app/bin")
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("command %s: %q %v, want %s", name, got, err, filepath.Join(root, want))
		}
	}
}

// TestResolveIn: paths of one parent are resolved once, to what each
// alone resolves to, through a symlinked directory and an absolute link
// inside the root; unclean paths are resolved on their own.
func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "usr/bin/a"), []byte("a"), 0o644)
	writeFile(t, filepath.Join(root, "usr/bin/b"), []byte("b"), 0o644)
	if err := os.Symlink("usr/bin", filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr", filepath.Join(root, "abs")); err != nil {
		t.Fatal(err)
	}
	tg := newTestTags(t, root)
	parents := map[string]string{}
	for _, p := range []string{"/bin/a", "/bin/b", "/bin/missing", "/abs/bin/a", "/usr/bin/a", "/bin/../bin/b", "/bin/", "/bin", "/"} {
		wd, wn, werr := tg.resolve(p)
		for range 2 { // resolved, then from parents
			d, n, err := tg.resolveIn(p, parents)
			if d != wd || n != wn || (err == nil) != (werr == nil) {
				t.Errorf("resolveIn(%q) = %q %q %v; resolve: %q %q %v", p, d, n, err, wd, wn, werr)
			}
		}
	}
	if parents["/bin/"] != "/usr/bin" || len(parents) != 4 {
		t.Errorf("parents = %v", parents)
	}
}

// TestRestoreNotTagged: a path given to restore or remove that is neither
// in the record nor has a copy beside it is refused, nothing done; one
// whose record was lost is still put back from its copy.
func TestRestoreNotTagged(t *testing.T) {
	hosttest.RequireRoot(t)
	root := t.TempDir()
	p := func(h string) string { return filepath.Join(root, h) }
	writeFile(t, p("/etc/a"), []byte("a1\n"), 0o644)
	writeFile(t, p("/etc/b"), []byte("b1\n"), 0o644)
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/etc/a", "/etc/b"}, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("/etc/a"), []byte("a2\n"), 0o644)
	// One tagged path and one never tagged: refused together.
	_, err := tg.Restore([]string{"/etc/a", "/etc/typo"})
	mustKind(t, err, host.KindBad, "/etc/typo: not tagged")
	if b, _ := os.ReadFile(p("/etc/a")); string(b) != "a2\n" {
		t.Errorf("a refused restore changed /etc/a: %q", b)
	}
	_, err = tg.Remove([]string{"/etc/.Old..typo"})
	mustKind(t, err, host.KindBad, "not tagged")
	if _, err := tg.Restore([]string{"/etc/a"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p("/etc/a")); string(b) != "a1\n" {
		t.Errorf("restored /etc/a: %q", b)
	}
	// Restored already: no longer tagged.
	_, err = tg.Restore([]string{"/etc/a"})
	mustKind(t, err, host.KindBad, "/etc/a: not tagged")
	// The record lost: the copy beside the original is enough.
	if err := os.Remove(filepath.Join(root, "var/lib/upgradectl", RecordFile)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("/etc/b"), []byte("b2\n"), 0o644)
	rep, err := tg.Restore([]string{"/etc/b"})
	if err != nil || len(rep.Done) != 1 {
		t.Fatalf("restore without a record: %+v %v", rep, err)
	}
	if b, _ := os.ReadFile(p("/etc/b")); string(b) != "b1\n" {
		t.Errorf("restored /etc/b: %q", b)
	}
}
