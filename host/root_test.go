package host

import (
	"os"
	"path/filepath"
	"testing"
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
