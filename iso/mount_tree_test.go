package iso

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host/hosttest"
)

// makeTree writes a source tree for images: several MB of files of odd
// sizes, empty files, deep directories, modes, fixed mtimes, relative,
// absolute and dangling symlinks, a name with blanks. It returns its
// directory.
func mtMakeTree(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	rng := rand.New(rand.NewSource(42))
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	files := []struct {
		name string
		size int
		mode os.FileMode
	}{
		{"big.bin", 3<<20 + 517, 0o644},
		{"upgrade/install.sh", 300, 0o755},
		{"upgrade/policyScripts/qp.pl", 12345, 0o750},
		{"upgrade/policyScripts/empty", 0, 0o600},
		{"rpms/a-1.0-1.x86_64.rpm", 1<<20 + 1, 0o644},
		{"rpms/b-2.0-1.x86_64.rpm", 2048, 0o444},
		{"deep/a/b/c/d/e/f/g/h/leaf.txt", 4095, 0o640},
		{"name with blanks.txt", 10, 0o644},
		{"UPPER.case", 2049, 0o644},
		{".treeinfo", 77, 0o644},
	}
	for i := 0; i < 40; i++ {
		files = append(files, struct {
			name string
			size int
			mode os.FileMode
		}{fmt.Sprintf("many/file%03d.dat", i), rng.Intn(9000), 0o644})
	}
	for i, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, f.size)
		rng.Read(data)
		if err := os.WriteFile(p, data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(i) * time.Hour)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []struct{ name, target string }{
		{"upgrade/run", "install.sh"},
		{"latest", "rpms/b-2.0-1.x86_64.rpm"},
		{"etc-link", "/etc/passwd"},
		{"dangling", "does/not/exist"},
		{"deep/a/up", "../../many"},
	} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "deep/a/b"), 0o750); err != nil {
		t.Fatal(err)
	}
	// Directory mtimes last: writing into a directory changes its mtime.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chtimes(p, base, base)
		}
		return nil
	})
	return dir
}

// makeISO builds a Rock Ridge and Joliet image of dir with xorriso.
func mtMakeISO(t testing.TB, dir, name string) string {
	t.Helper()
	hosttest.RequireCommand(t, "xorriso")
	img := filepath.Join(t.TempDir(), name)
	hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "UPGRADE", "-o", img, dir)
	return img
}

// treeListing describes every entry under dir, one line each: type, mode,
// mtime, size, link target, device number; files are compared by content separately.
func mtTreeListing(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v uid=%d gid=%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case fi.Mode().IsRegular():
			line += fmt.Sprintf(" size=%d mtime=%d", fi.Size(), fi.ModTime().Unix())
		case fi.Mode()&fs.ModeDevice != 0:
			line += fmt.Sprintf(" rdev=%d:%d mtime=%d", unix.Major(st.Rdev), unix.Minor(st.Rdev), fi.ModTime().Unix())
		case rel != ".":
			line += fmt.Sprintf(" mtime=%d", fi.ModTime().Unix())
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// compareTrees fails unless got holds exactly what want holds: the same
// names, types, modes, owners, mtimes, link targets and file contents,
// byte for byte.
func mtCompareTrees(t testing.TB, want, got string) {
	t.Helper()
	w, g := mtTreeListing(t, want), mtTreeListing(t, got)
	if strings.Join(w, "\n") != strings.Join(g, "\n") {
		t.Errorf("trees differ:\n%s", mtDiffLines(w, g))
	}
	n := 0
	filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("read %s: %v", rel, err)
			return nil
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(b), len(a))
		}
		n++
		return nil
	})
	if n == 0 {
		t.Fatal("no files compared")
	}
}

func mtDiffLines(want, got []string) string {
	ws, gs := map[string]bool{}, map[string]bool{}
	for _, l := range want {
		ws[l] = true
	}
	for _, l := range got {
		gs[l] = true
	}
	var b strings.Builder
	for _, l := range want {
		if !gs[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range got {
		if !ws[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
