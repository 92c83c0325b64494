package host

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRootPathLexical(t *testing.T) {
	dir := t.TempDir()
	r, err := NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"/etc/x":          dir + "/etc/x",
		"etc/x":           dir + "/etc/x",
		"/../../etc/x":    dir + "/etc/x",
		"/a/../../b":      dir + "/b",
		"/":               dir,
		"":                dir,
		"/a/./b//c/":      dir + "/a/b/c",
		"/../../../../..": dir,
	} {
		if got := r.Path(in); got != want {
			t.Errorf("Path(%q) = %q, want %q", in, got, want)
		}
	}
	live, _ := NewRoot("/")
	if got := live.Path("/a/../../etc"); got != "/etc" || !live.IsLive() {
		t.Errorf("live root Path = %q", got)
	}
	if rel, err := r.Rel(dir + "/etc/x"); err != nil || rel != "/etc/x" {
		t.Errorf("Rel = %q, %v", rel, err)
	}
	if _, err := r.Rel("/elsewhere"); err == nil {
		t.Error("Rel of a path outside the root did not fail")
	}
}

func TestRootResolveStaysInside(t *testing.T) {
	dir := t.TempDir()
	r, _ := NewRoot(dir)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc/sub"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "usr/share/zoneinfo"), 0o755))
	must(os.Symlink("/usr/share/zoneinfo", filepath.Join(dir, "etc/zone")))    // absolute: inside the root
	must(os.Symlink("../../../../../../etc", filepath.Join(dir, "etc/climb"))) // climbs: stops at the root
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "etc/abs")))             // host's /etc/passwd must not be reached
	must(os.Symlink("loop2", filepath.Join(dir, "etc/loop1")))
	must(os.Symlink("loop1", filepath.Join(dir, "etc/loop2")))
	must(os.Symlink("sub", filepath.Join(dir, "etc/rel")))

	cases := map[string]string{
		"/etc/zone/UTC":      dir + "/usr/share/zoneinfo/UTC",
		"/etc/climb/x":       dir + "/etc/x",
		"/etc/abs":           dir + "/etc/passwd",
		"/etc/rel/f":         dir + "/etc/sub/f",
		"/etc/missing/a/b":   dir + "/etc/missing/a/b",
		"/etc/../../etc/sub": dir + "/etc/sub",
	}
	for in, want := range cases {
		got, err := r.Resolve(in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := r.Resolve("/etc/loop1"); err == nil {
		t.Error("a symlink loop resolved")
	}
	// ResolveParent leaves the last component alone.
	if got, err := r.ResolveParent("/etc/zone"); err != nil || got != dir+"/etc/zone" {
		t.Errorf("ResolveParent = %q, %v", got, err)
	}
	if got, err := r.ResolveParent("/etc/rel/zone"); err != nil || got != dir+"/etc/sub/zone" {
		t.Errorf("ResolveParent through a link = %q, %v", got, err)
	}
}

func TestNewRootErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	for _, d := range []string{f, "/nonexistent-root-dir"} {
		if _, err := NewRoot(d); KindOf(err) != KindUsage {
			t.Errorf("NewRoot(%q) = %v, want a usage error", d, err)
		}
	}
}

func FuzzRootPath(f *testing.F) {
	for _, s := range []string{"/etc", "../..", "a/../../b", "//x/./y/..", "\x00"} {
		f.Add(s)
	}
	r := Root{dir: "/srv/root"}
	f.Fuzz(func(t *testing.T, p string) {
		got := r.Path(p)
		if got != "/srv/root" && (len(got) < len("/srv/root/") || got[:len("/srv/root/")] != "/srv/root/") {
			t.Fatalf("Path(%q) = %q escapes the root", p, got)
		}
	})
}

// hostileRoot makes a root whose links try to lead out of it through a
// component that does not exist yet: a -> missing/../evil, evil -> the
// outside directory, and deeper variants.
func hostileRoot(t testing.TB) (dir, outside string) {
	t.Helper()
	dir, outside = t.TempDir(), t.TempDir()
	for _, l := range [][2]string{
		{"missing/../evil", "a"},
		{outside, "evil"},
		{"x/y/../../evil/z", "b"},
		{"../../" + filepath.Base(outside), "rel"},
		{"/missing/../../evil", "c"},
	} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	return dir, outside
}

// TestRootResolveThroughMissing: a part that does not exist does not end
// the resolution; what follows it is still resolved inside the root.
func TestRootResolveThroughMissing(t *testing.T) {
	dir, outside := hostileRoot(t)
	r, _ := NewRoot(dir)
	for in, want := range map[string]string{
		"/a":                dir + outside,
		"/a/state/log":      dir + outside + "/state/log",
		"/b":                dir + outside + "/z",
		"/c/f":              dir + outside + "/f",
		"/rel/x":            dir + "/" + filepath.Base(outside) + "/x",
		"/new/../a/x":       dir + outside + "/x",
		"/new/dir/../../a":  dir + outside,
		"/missing/one/more": dir + "/missing/one/more",
	} {
		got, err := r.Resolve(in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
		if err == nil && !strings.HasPrefix(got, dir+"/") {
			t.Errorf("Resolve(%q) = %q leaves the root", in, got)
		}
	}
}

// inRoot resolves p below dir with the kernel's RESOLVE_IN_ROOT, for the
// parts that exist.
func inRoot(t testing.TB, dir, p string) (string, error) {
	rfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	fd, err := unix.Openat2(rfd, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// TestRootResolveLikeKernel compares Resolve with openat2(RESOLVE_IN_ROOT)
// on a tree of links, for every path that exists as a whole.
func TestRootResolveLikeKernel(t *testing.T) {
	dir, _ := hostileRoot(t)
	os.MkdirAll(filepath.Join(dir, "d/e/f"), 0o755)
	os.Symlink("../../d", filepath.Join(dir, "d/e/up"))
	os.Symlink("/d/e", filepath.Join(dir, "abs"))
	os.Symlink("f/../../..", filepath.Join(dir, "d/e/dots"))
	r, _ := NewRoot(dir)
	for _, p := range []string{"/d/e/up/e/f", "/abs/f", "/abs/up/e/up", "/d/e/dots/abs", "/d/e/f/../up/e/dots/d", "/abs/../../.."} {
		want, err := inRoot(t, dir, p)
		if err != nil {
			t.Fatalf("openat2 %s: %v", p, err)
		}
		got, err := r.Resolve(p)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; the kernel says %q", p, got, err, want)
		}
	}
}

// FuzzRootResolve resolves any path in the hostile root: the result never
// leaves the root, and where the whole path exists it is where the kernel
// resolves it under RESOLVE_IN_ROOT.
func FuzzRootResolve(f *testing.F) {
	for _, s := range []string{"/a/x", "/b", "/c/../a", "/rel/../../a", "/new/../a", "x/y/../../evil/z"} {
		f.Add(s)
	}
	dir, _ := hostileRoot(f)
	os.MkdirAll(filepath.Join(dir, "d/e"), 0o755)
	os.Symlink("../../a", filepath.Join(dir, "d/e/up"))
	os.Symlink("/d", filepath.Join(dir, "d/e/abs"))
	r, _ := NewRoot(dir)
	f.Fuzz(func(t *testing.T, p string) {
		if strings.ContainsRune(p, 0) {
			return
		}
		got, err := r.Resolve(p)
		if err != nil {
			return
		}
		if got != dir && !strings.HasPrefix(got, dir+"/") {
			t.Fatalf("Resolve(%q) = %q leaves the root", p, got)
		}
		if _, err := os.Lstat(got); err == nil {
			if want, err := inRoot(t, dir, p); err == nil && want != got {
				t.Fatalf("Resolve(%q) = %q; the kernel says %q", p, got, want)
			}
		}
	})
}
