package tagfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// TestCreateReportsEarlierWritebackError: when a copy's writeback fails
// while later files are still being tagged, tag create fails with the
// sync's error and does not record the set as complete, also when another
// process's sync of the filesystem saw the error first. syncfs tells a
// descriptor of an error that happened after it was opened, or of one
// nobody has seen yet; so the filesystem must be opened for its sync
// before the copies are made. The copies made on that filesystem are
// removed and go back to planned: a rerun once there is space again makes
// them anew, and what is on the disk is then the originals' data (kept,
// the rerun took them for complete and the disk had none of their data).
//
// The I/O error is real. The image sits on a tmpfs that is full, and
// the image's free blocks are punched out of the image file. The loop
// device can still write the blocks that are in the file (metadata,
// journal) but not a copy's data.
func TestCreateReportsEarlierWritebackError(t *testing.T) {
	hosttest.RequireRoot(t)
	for _, fs := range []struct {
		name string
		size int64
		mkfs []string
		free func(t *testing.T, img string) [][2]int64 // free byte ranges
	}{
		{"ext4", 64 << 20, []string{"mkfs.ext4", "-q", "-F", "-b", "4096"}, ext4Free},
		// xfs without reflink copies data, as ext4 does; it reports a
		// writeback error only through the descriptor's sample.
		{"xfs", 320 << 20, []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=0"}, xfsFree},
	} {
		t.Run(fs.name, func(t *testing.T) {
			writebackError(t, fs.size, fs.mkfs, fs.free)
		})
	}
}

func writebackError(t *testing.T, size int64, mkfs []string, free func(*testing.T, string) [][2]int64) {
	hosttest.RequireCommand(t, mkfs[0], "mount", "umount")

	// The filesystem and its files, made on disk.
	work := t.TempDir()
	img := filepath.Join(work, "fs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	hosttest.Run(t, mkfs[0], append(mkfs[1:], img)...)
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	hosttest.Run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() }) // if the test stops before its own umount
	// Large copies, whose writeback create starts at once, in one
	// directory; symlinks, which need no data blocks, in another, to keep
	// the run going after the large copies' writeback has failed.
	for i := 0; i < 8; i++ {
		writeFile(t, filepath.Join(mnt, fmt.Sprintf("opt/big/f%d", i)), randBytes(int64(i), 1<<20), 0o644)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "opt/links"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		if err := os.Symlink("../big/f0", filepath.Join(mnt, fmt.Sprintf("opt/links/l%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	hosttest.Run(t, "umount", mnt)

	// The image on a tmpfs, every block written, then the free blocks
	// punched out and the tmpfs filled.
	tmp := hosttest.LoopFS(t, "tmpfs", size+(32<<20))
	full := filepath.Join(tmp, "fs.img")
	copyWhole(t, img, full)
	f, err := os.OpenFile(full, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	punched := int64(0)
	for _, r := range free(t, img) {
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
		punched += r[1]
	}
	f.Close()
	if punched < 32<<20 {
		t.Fatalf("only %d bytes of free blocks punched", punched)
	}
	var s unix.Statfs_t
	if err := unix.Statfs(tmp, &s); err != nil {
		t.Fatal(err)
	}
	filler, err := os.Create(filepath.Join(tmp, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(filler.Fd()), 0, 0, int64(s.Bavail)*s.Bsize); err != nil {
		t.Fatal(err)
	}
	filler.Close()
	if err := os.Mkdir(mnt, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	hosttest.Run(t, "mount", "-o", "loop", full, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })

	hr, err := host.NewRoot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir() // the record elsewhere: it can be written
	tg := New(hr, host.DefaultConfig(), state)
	defer tg.Close()
	// Another process syncing the same filesystem meanwhile (a backup
	// agent, an operator's sync -f) sees the error first: a descriptor
	// opened after that is not told of it.
	other, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				unix.Syncfs(other)
			}
		}
	}()
	rep, err := tg.Create("1", []string{"/opt"}, CreateOptions{NoSpaceCheck: true})
	close(stop)
	<-stopped
	unix.Close(other)
	// xfs reports the failed writeback at the sync. ext4 may also stop
	// the run before it: a sync of its journal that meets the failed
	// writeback makes it read-only.
	if err == nil {
		t.Fatalf("create with the copies' writeback failing succeeded (%d files tagged)", len(rep.Done))
	}
	t.Logf("create: %v", err)
	if host.KindOf(err) != host.KindCannotRun {
		t.Errorf("error %v: kind %v, want cannot-run", err, host.KindOf(err))
	}
	rec, lerr := tg.Load()
	if lerr != nil {
		t.Fatal(lerr)
	}
	if rec.Complete {
		t.Errorf("the set is recorded as complete after a failed sync")
	}
	if !strings.Contains(err.Error(), "cannot sync") {
		return // ext4 went read-only: nothing more can be written
	}
	// The copies made on the filesystem are gone and their entries are
	// back to planned: none of them can be taken for complete.
	for _, e := range rec.Files {
		if e.Type != "" {
			t.Errorf("%s recorded as tagged after the failed sync", e.Path)
		}
	}
	for i := 0; i < 8; i++ {
		if _, err := os.Lstat(filepath.Join(mnt, fmt.Sprintf("opt/big/.Old..f%d", i))); err == nil {
			t.Errorf(".Old..f%d is left after the failed sync", i)
		}
	}
	// With space again, a rerun makes the set; the copies read from the
	// disk (the filesystem mounted again) are the originals' data.
	if err := os.Remove(filepath.Join(tmp, "filler")); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	remount(t, full, mnt)
	hr, err = host.NewRoot(mnt)
	if err != nil {
		t.Fatal(err)
	}
	tg2 := New(hr, host.DefaultConfig(), state)
	defer tg2.Close()
	if _, err := tg2.Create("1", []string{"/opt"}, CreateOptions{NoSpaceCheck: true}); err != nil {
		t.Fatalf("create again with space: %v", err)
	}
	tg2.Close()
	remount(t, full, mnt)
	for i := 0; i < 8; i++ {
		a, err1 := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("opt/big/f%d", i)))
		b, err2 := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("opt/big/.Old..f%d", i)))
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf(".Old..f%d on disk is not f%d's data (%v, %v)", i, i, err1, err2)
		}
	}
}

// remount mounts the image again on mnt, so that files are read from the
// disk, not the page cache. The unmount is tried again for a while: right
// after failed writeback the filesystem can be busy for a moment.
func remount(t *testing.T, img, mnt string) {
	t.Helper()
	for i := 0; ; i++ {
		out, err := exec.Command("umount", mnt).CombinedOutput()
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("umount %s: %v %s", mnt, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	hosttest.Run(t, "mount", "-o", "loop", img, mnt)
}

// copyWhole copies src to dst writing every byte, holes included, so that
// every block of dst is allocated.
func copyWhole(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				t.Fatal(werr)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// ext4Free lists the free byte ranges of an ext4 image of 4 KiB blocks,
// from dumpe2fs.
func ext4Free(t *testing.T, img string) [][2]int64 {
	t.Helper()
	hosttest.RequireCommand(t, "dumpe2fs")
	var out [][2]int64
	for _, line := range strings.Split(hosttest.Run(t, "dumpe2fs", img), "\n") {
		list, ok := strings.CutPrefix(strings.TrimSpace(line), "Free blocks: ")
		if !ok {
			continue
		}
		for _, r := range strings.Split(list, ",") {
			a, b, found := strings.Cut(strings.TrimSpace(r), "-")
			if a == "" {
				continue
			}
			if !found {
				b = a
			}
			x, err1 := strconv.ParseInt(a, 10, 64)
			y, err2 := strconv.ParseInt(b, 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("dumpe2fs: %q", line)
			}
			out = append(out, [2]int64{x * 4096, (y - x + 1) * 4096})
		}
	}
	return out
}

// xfsFree lists the free byte ranges of an xfs image, from xfs_db.
func xfsFree(t *testing.T, img string) [][2]int64 {
	t.Helper()
	hosttest.RequireCommand(t, "xfs_db")
	var agblocks, bsize int64
	for _, line := range strings.Split(hosttest.Run(t, "xfs_db", "-r", "-c", "sb 0", "-c", "p agblocks blocksize", img), "\n") {
		k, v, _ := strings.Cut(line, " = ")
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch strings.TrimSpace(k) {
		case "agblocks":
			agblocks = n
		case "blocksize":
			bsize = n
		}
	}
	if agblocks == 0 || bsize == 0 {
		t.Fatal("xfs_db: no agblocks or blocksize")
	}
	var out [][2]int64
	for _, line := range strings.Split(hosttest.Run(t, "xfs_db", "-r", "-c", "freesp -d", img), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		var v [3]int64
		ok := true
		for i := range f {
			n, err := strconv.ParseInt(f[i], 10, 64)
			v[i], ok = n, ok && err == nil
		}
		if !ok {
			if f[0] == "from" {
				break // the histogram follows the extents
			}
			continue
		}
		out = append(out, [2]int64{(v[0]*agblocks + v[1]) * bsize, v[2] * bsize})
	}
	return out
}
