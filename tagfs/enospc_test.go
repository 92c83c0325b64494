package tagfs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// TestENOSPC runs out of space for real in the middle of a run on a tiny
// ext4: the run stops with a clear error, the originals are untouched, no
// temporary file is left, the copies made are complete; the space check
// refuses the rest with the numbers, and clean drops the set.
func TestENOSPC(t *testing.T) {
	root := hosttest.LoopFS(t, "ext4", 32<<20, "-m", "0", "-N", "256")
	var paths []string
	for i := 0; i < 6; i++ {
		h := fmt.Sprintf("/opt/app/a-small-%d", i)
		writeFile(t, filepath.Join(root, h), randBytes(int64(i), 20<<10), 0o644)
		paths = append(paths, h)
	}
	var s unix.Statfs_t
	if err := unix.Statfs(root, &s); err != nil {
		t.Fatal(err)
	}
	// Two large files that fit once but not twice.
	big := int(int64(s.Bavail)*s.Bsize/2) - (1 << 20)
	for i := 0; i < 2; i++ {
		h := fmt.Sprintf("/opt/app/b-big-%d", i)
		writeFile(t, filepath.Join(root, h), randBytes(int64(10+i), big), 0o644)
		paths = append(paths, h)
	}
	before := snapAll(t, root, paths)
	tg := newTestTags(t, root)

	// The check refuses first, with the numbers.
	_, err := tg.Create("1", []string{"/opt/app"}, CreateOptions{})
	mustKind(t, err, host.KindCannotRun, "8 files on the filesystem of /opt/app (ext4): they need")
	t.Log(err)
	if !hasErrText(err, "inodes are free") {
		t.Errorf("no numbers: %v", err)
	}
	if temps, tagged := leftovers(t, root); len(temps)+len(tagged) > 0 {
		t.Fatalf("written before the check refused: %v %v", temps, tagged)
	}
	if rec, err := tg.Load(); err != nil || len(rec.Files) != 0 || !rec.Complete {
		t.Fatalf("the refused plan stayed in the record: %+v %v", rec, err)
	}

	// Past the check: a real ENOSPC.
	rep, err := tg.Create("1", []string{"/opt/app"}, CreateOptions{NoSpaceCheck: true})
	mustKind(t, err, host.KindCannotRun, "no space left on device")
	t.Logf("%v (hint: %s)", err, host.HintOf(err))
	if !hasErrText(err, "7 of 8 files tagged") && !hasErrText(err, "6 of 8 files tagged") {
		t.Errorf("error does not say how far it got: %v", err)
	}
	if host.HintOf(err) == "" {
		t.Error("no hint")
	}
	if temps, _ := leftovers(t, root); len(temps) > 0 {
		t.Errorf("temporary files left: %v", temps)
	}
	for _, h := range paths {
		if now := snap(t, filepath.Join(root, h)); !sameMeta(now, before[h]) {
			t.Errorf("%s: the original changed", h)
		}
	}
	for _, h := range rep.Done {
		a, _ := os.ReadFile(filepath.Join(root, h))
		b, _ := os.ReadFile(filepath.Join(root, TaggedPath(h)))
		if !bytes.Equal(a, b) {
			t.Errorf("%s: the copy is not complete", h)
		}
	}
	rec, err := tg.Load()
	if err != nil || rec.Complete || len(rec.Files) != len(paths) {
		t.Errorf("record after ENOSPC: complete=%v files=%d %v", rec.Complete, len(rec.Files), err)
	}
	if _, err := tg.Enable(false); host.KindOf(err) != host.KindRefused {
		t.Errorf("lookup enabled on an incomplete set: %v", err)
	}
	// The rerun is refused by the check, naming what is left.
	_, err = tg.Create("1", []string{"/opt/app"}, CreateOptions{})
	mustKind(t, err, host.KindCannotRun, "files on the filesystem of /opt/app")
	if _, err := tg.Clean(CleanOptions{}); err != nil {
		t.Fatal(err)
	}
	if temps, tagged := leftovers(t, root); len(temps)+len(tagged) > 0 {
		t.Errorf("left after clean: %v %v", temps, tagged)
	}
}

// TestHardLinkSpace: two names of one large file need one copy's space, so
// a set that fits once is not refused.
func TestHardLinkSpace(t *testing.T) {
	root := hosttest.LoopFS(t, "ext4", 32<<20, "-m", "0")
	var s unix.Statfs_t
	if err := unix.Statfs(root, &s); err != nil {
		t.Fatal(err)
	}
	big := int(int64(s.Bavail)*s.Bsize/2) - (1 << 20)
	writeFile(t, filepath.Join(root, "opt/app/big"), randBytes(1, big), 0o644)
	if err := os.Link(filepath.Join(root, "opt/app/big"), filepath.Join(root, "opt/app/big-too")); err != nil {
		t.Fatal(err)
	}
	tg := newTestTags(t, root)
	rep, err := tg.Create("1", []string{"/opt/app"}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Copied != 1 || rep.Linked != 1 {
		t.Fatalf("report %+v", rep)
	}
}

// TestSparseFiles: on a filesystem that cannot clone (ext4), a sparse
// file's copy keeps its holes, so a file far larger than the filesystem
// (a lastlog) is tagged, and a backout gives back the same sparse file.
func TestSparseFiles(t *testing.T) {
	root := hosttest.LoopFS(t, "ext4", 32<<20, "-m", "0")
	p := filepath.Join(root, "var/log/lastlog")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// 256 MiB: data at the start, in the middle and at the very end.
	for _, off := range []int64{0, 100 << 20, 256<<20 - 5} {
		if _, err := f.WriteAt(randBytes(off, 5), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	before := snap(t, p)
	var st unix.Stat_t
	unix.Stat(p, &st)
	tg := newTestTags(t, root)
	if _, err := tg.Create("1", []string{"/var/log/lastlog"}, CreateOptions{}); err != nil {
		t.Fatalf("a sparse file of 256 MiB on a 32 MiB filesystem: %v", err)
	}
	var cst unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "var/log/.Old..lastlog"), &cst); err != nil {
		t.Fatal(err)
	}
	if cst.Size != st.Size || cst.Blocks > st.Blocks+16 {
		t.Errorf("copy: %d bytes in %d blocks; the original %d bytes in %d blocks", cst.Size, cst.Blocks, st.Size, st.Blocks)
	}
	if c := snap(t, filepath.Join(root, "var/log/.Old..lastlog")); c.Content != before.Content {
		t.Errorf("the copy's content differs from the original's")
	}
	install(t, root, []string{"/var/log/lastlog"})
	if _, err := tg.Restore(nil); err != nil {
		t.Fatal(err)
	}
	var rst unix.Stat_t
	unix.Stat(p, &rst)
	if after := snap(t, p); after.Content != before.Content || rst.Blocks > st.Blocks+16 {
		t.Errorf("restored: %d blocks (was %d), same content %v", rst.Blocks, st.Blocks, after.Content == before.Content)
	}
}
