package iso

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

func mtRequireFUSE(t *testing.T) {
	t.Helper()
	hosttest.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (modprobe fuse)")
	}
}

// TestMountFSServesTree serves a directory tree through the FUSE server
// (the same code that serves images) and reads it all back.
func TestMountFSServesTree(t *testing.T) {
	mtRequireFUSE(t)
	src := mtMakeTree(t)
	mnt := t.TempDir()
	srv, err := MountFS(os.DirFS(src), "test-tree", mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	mtCompareTrees(t, src, mnt)

	table, err := mountTable()
	if err != nil {
		t.Fatal(err)
	}
	e, ok := table[mnt]
	if !ok || e.FSType != fuseType || e.Source != "test-tree" {
		t.Errorf("mount table entry for %s: %+v", mnt, e)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&(syscall.MS_RDONLY|syscall.MS_NODEV|syscall.MS_NOSUID) != syscall.MS_RDONLY|syscall.MS_NODEV|syscall.MS_NOSUID {
		t.Errorf("mount flags %#x, want ro,nodev,nosuid", st.Flags)
	}
	for _, f := range []func() error{
		func() error { return os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644) },
		func() error {
			f, err := os.OpenFile(filepath.Join(mnt, "big.bin"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		func() error { return os.Remove(filepath.Join(mnt, "big.bin")) },
		func() error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) },
	} {
		if err := f(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write to the mount: %v, want EROFS", err)
		}
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted", mnt)
	}
}

func TestParseMountInfo(t *testing.T) {
	in := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:32 / /mnt/with\040blank rw - iso9660 /dev/loop0 ro
37 22 0:33 / /mnt/x rw,nosuid,nodev master:1 - fuse.upgradectl-iso /var/x\040y.iso ro
38 22 0:33 / /mnt/x rw - tmpfs tmpfs rw
bad line
`
	ms, err := host.ParseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	tab := mountsByDir(ms)
	if e := tab["/mnt/with blank"]; e.FSType != "iso9660" || e.Source != "/dev/loop0" {
		t.Errorf("escaped mount point: %+v", e)
	}
	if e := tab["/mnt/x"]; e.FSType != "tmpfs" {
		t.Errorf("stacked mount: %+v, want the last one (tmpfs)", e)
	}
	if len(tab) != 3 {
		t.Errorf("%d entries, want 3: %v", len(tab), tab)
	}
}

func TestModuleDeps(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/fs/isofs/isofs.ko.xz: kernel/drivers/cdrom/cdrom.ko.xz kernel/lib/x.ko\nkernel/drivers/block/loop.ko:\nkernel/fs/fat/vfat-x.ko: kernel/fs/fat/fat.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want string
	}{
		{"isofs", "kernel/fs/isofs/isofs.ko.xz kernel/drivers/cdrom/cdrom.ko.xz kernel/lib/x.ko"},
		{"loop", "kernel/drivers/block/loop.ko"},
		{"vfat_x", "kernel/fs/fat/vfat-x.ko kernel/fs/fat/fat.ko"},
		{"vfat-x", "kernel/fs/fat/vfat-x.ko kernel/fs/fat/fat.ko"},
	} {
		got, err := moduleDeps(dir, tc.name)
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("moduleDeps(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := moduleDeps(dir, "udf"); err == nil || !strings.Contains(err.Error(), "does not list udf") {
		t.Errorf("missing module: %v", err)
	}
	if _, err := moduleDeps(t.TempDir(), "udf"); err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Errorf("missing modules.dep: %v", err)
	}
}

// upgradectl runs the built binary with a root of its own.
func mtRun(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	bin := hosttest.Bin(t)
	out, err := exec.Command(bin, append([]string{"--root", root, "--state-dir", "/state"}, args...)...).CombinedOutput()
	return string(out), err
}

func mtMounts(t *testing.T, root string) []MountRecord {
	t.Helper()
	out, err := mtRun(t, root, "--json", "iso", "mounts")
	if err != nil {
		t.Fatalf("iso mounts: %v\n%s", err, out)
	}
	var ms []MountRecord
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &ms); err != nil {
		t.Fatalf("iso mounts --json: %v\n%s", err, out)
	}
	return ms
}

// mtServers lists the processes serving FUSE mounts on dir.
func mtServers(dir string) []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if slices.Contains(args, "serve-fuse") && slices.Contains(args, dir) {
			if st, zombie, err := processStart(atoiPath(p)); err == nil && !zombie && st > 0 {
				pids = append(pids, filepath.Base(filepath.Dir(p)))
			}
		}
	}
	return pids
}

func atoiPath(p string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
	return n
}

// mtRootWith makes a root directory holding the image at its top and a
// mount point /mnt; it returns the root and the mount point's real path.
func mtRootWith(t *testing.T, img string) (root, mnt string) {
	t.Helper()
	root = t.TempDir()
	mnt = filepath.Join(root, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(img, filepath.Join(root, filepath.Base(img))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return root, mnt
}

// TestFUSEMountImage mounts a real xorriso image (Rock Ridge, Joliet,
// symlinks, several MB) with the built binary, reads every file back byte
// for byte against the source tree, unmounts it and checks that the
// server is gone.
func TestFUSEMountImage(t *testing.T) {
	mtRequireFUSE(t)
	src := mtMakeTree(t)
	root, mnt := mtRootWith(t, mtMakeISO(t, src, "cmp-1.0-x86_64.iso"))
	img := "/cmp-1.0-x86_64.iso" // paths on the command line are inside --root

	args := []string{"iso", "mount", "--method", "fuse", img, "/mnt"}
	if ok, _ := fsRegistered("iso9660"); !ok {
		// Where the kernel has no iso9660, the default falls back to FUSE.
		args = []string{"iso", "mount", img, "/mnt"}
	}
	out, err := mtRun(t, root, args...)
	if err != nil {
		t.Fatalf("iso mount: %v\n%s", err, out)
	}
	if !strings.Contains(out, "(fuse, read-only)") {
		t.Errorf("iso mount said %q", out)
	}
	mtCompareTrees(t, src, mnt)

	ms := mtMounts(t, root)
	if len(ms) != 1 || ms[0].Dir != mnt || ms[0].Method != MethodFUSE || ms[0].State != StateMounted || ms[0].PID == 0 {
		t.Fatalf("mount records: %+v", ms)
	}
	pid := ms[0].PID
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("FUSE server %d is not in a session of its own (sid %d)", pid, sid)
	}
	if servers := mtServers(mnt); len(servers) != 1 {
		t.Errorf("servers for %s: %v, want one", mnt, servers)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("mount is not read-only: flags %#x, %v", st.Flags, err)
	}
	// A second mount on the same directory is refused.
	if out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", img, "/mnt"); err == nil || !strings.Contains(out, "already mounted") {
		t.Errorf("second mount on %s: %v %s", mnt, err, out)
	}

	out, err = mtRun(t, root, "iso", "umount", "/mnt")
	if err != nil {
		t.Fatalf("iso umount: %v\n%s", err, out)
	}
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted", mnt)
	}
	if processAlive(pid, ms[0].PIDStart) {
		t.Errorf("FUSE server %d still running after umount", pid)
	}
	if servers := mtServers(mnt); len(servers) != 0 {
		t.Errorf("servers left for %s: %v", mnt, servers)
	}
	if ms := mtMounts(t, root); len(ms) != 0 {
		t.Errorf("records left: %+v", ms)
	}
	log, _ := os.ReadFile(filepath.Join(root, "state", "upgrade.log"))
	if !strings.Contains(string(log), `"action":"iso mount"`) || !strings.Contains(string(log), `"action":"iso umount"`) {
		t.Errorf("upgrade log lacks the mount and umount:\n%s", log)
	}
}

// TestFUSEMountGone covers mounts that went away behind upgradectl's back:
// unmounted by someone else (the record is stale, reported and dropped) and
// a server that was killed (umount still clears the dead mount).
func TestFUSEMountGone(t *testing.T) {
	mtRequireFUSE(t)
	src := mtMakeTree(t)
	root, mnt := mtRootWith(t, mtMakeISO(t, src, "x.iso"))
	mount := func() MountRecord {
		t.Helper()
		if out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", "/x.iso", "/mnt"); err != nil {
			t.Fatalf("iso mount: %v\n%s", err, out)
		}
		ms := mtMounts(t, root)
		if len(ms) != 1 {
			t.Fatalf("records: %+v", ms)
		}
		return ms[0]
	}

	rec := mount()
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	out, err := mtRun(t, root, "iso", "mounts")
	if err != nil || !strings.Contains(out, "no longer mounted: record dropped") {
		t.Errorf("iso mounts after an outside umount: %v\n%s", err, out)
	}
	if ms := mtMounts(t, root); len(ms) != 0 {
		t.Errorf("stale record kept: %+v", ms)
	}
	if log, _ := os.ReadFile(filepath.Join(root, "state", "upgrade.log")); !strings.Contains(string(log), `"action":"iso mounts","start"`) || !strings.Contains(string(log), "record dropped") {
		t.Errorf("dropping a stale record is not logged:\n%s", log)
	}
	// The server noticed the unmount and exited by itself.
	stopServer(rec, false)

	// SIGTERM: the server unmounts itself and exits.
	rec = mount()
	if err := syscall.Kill(rec.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for processAlive(rec.PID, rec.PIDStart) {
		time.Sleep(10 * time.Millisecond)
	}
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted after SIGTERM to its server", mnt)
	}
	if ms := mtMounts(t, root); len(ms) != 1 || ms[0].State != StateStale {
		t.Errorf("after SIGTERM: %+v", ms)
	}

	rec = mount()
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for processAlive(rec.PID, rec.PIDStart) {
		time.Sleep(10 * time.Millisecond)
	}
	if ms := mtMounts(t, root); len(ms) != 1 || ms[0].State != StateServerGone {
		t.Errorf("after killing the server: %+v", ms)
	}
	if out, err := mtRun(t, root, "iso", "umount", "/mnt"); err != nil {
		t.Fatalf("iso umount of a dead FUSE mount: %v\n%s", err, out)
	}
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted", mnt)
	}
	if out, err := mtRun(t, root, "iso", "umount", "/mnt"); err == nil || !strings.Contains(out, "did not mount") {
		t.Errorf("umount of an unrecorded dir: %v %s", err, out)
	}
}

// TestMountRecordedBeforeMounting covers a crash inside Mount: the record
// is written before mounting, so a mount whose details were never recorded
// is found and undone, and a record whose mount never happened is stale.
func TestMountRecordedBeforeMounting(t *testing.T) {
	mtRequireFUSE(t)
	state, mnt, other := t.TempDir(), t.TempDir(), t.TempDir()
	srv, err := MountFS(os.DirFS(mtMakeTree(t)), "crashed", mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := writeMounts(state, []MountRecord{{Dir: mnt, Image: "/x.iso"}, {Dir: other, Image: "/y.iso"}}); err != nil {
		t.Fatal(err)
	}
	ms, err := Mounts(state)
	if err != nil || len(ms) != 2 || ms[0].State != StateServerGone || ms[1].State != StateStale {
		t.Fatalf("records after a crash: %+v, %v", ms, err)
	}
	if err := Unmount(mnt, false, MountOptions{StateDir: state}); err != nil {
		t.Fatal(err)
	}
	srv.Wait() // the server sees its mount go and stops
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted", mnt)
	}
	if gone, err := CleanStaleMounts(state, nil); err != nil || len(gone) != 1 || gone[0].Dir != other {
		t.Errorf("clean: %+v, %v", gone, err)
	}
	if ms, _ := readMounts(state); len(ms) != 0 {
		t.Errorf("records left: %+v", ms)
	}
}

// TestFUSEMountBadImage mounts an image the reader refuses: exit 1 with the
// reader's error, nothing mounted, no record, no server left.
func TestFUSEMountBadImage(t *testing.T) {
	mtRequireFUSE(t)
	bad := filepath.Join(t.TempDir(), "bad.iso")
	if err := os.WriteFile(bad, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	root, mnt := mtRootWith(t, bad)
	out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", "/bad.iso", "/mnt")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "cannot mount") {
		t.Errorf("mount of a bad image: %v\n%s", err, out)
	}
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s mounted", mnt)
	}
	if ms := mtMounts(t, root); len(ms) != 0 {
		t.Errorf("records: %+v", ms)
	}
	if s := mtServers(mnt); len(s) != 0 {
		t.Errorf("servers left: %v", s)
	}
}

// TestFUSEUmountBusy unmounts a mount that is in use: refused (exit 4)
// without --lazy; with --lazy it is detached at once, the open file still
// reads, and the server exits when the file is closed.
func TestFUSEUmountBusy(t *testing.T) {
	mtRequireFUSE(t)
	src := mtMakeTree(t)
	root, mnt := mtRootWith(t, mtMakeISO(t, src, "x.iso"))
	if out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", "/x.iso", "/mnt"); err != nil {
		t.Fatalf("iso mount: %v\n%s", err, out)
	}
	rec := mtMounts(t, root)[0]
	f, err := os.Open(filepath.Join(mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := mtRun(t, root, "iso", "umount", "/mnt")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(out, "in use") || !strings.Contains(out, "--lazy") {
		t.Errorf("umount of a busy mount: %v\n%s", err, out)
	}
	// The same through --all: busy (exit 4) with the hint.
	out, err = mtRun(t, root, "iso", "umount", "--all")
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(out, "in use") || !strings.Contains(out, "--lazy") {
		t.Errorf("umount --all with a busy mount: %v\n%s", err, out)
	}
	if out, err := mtRun(t, root, "iso", "umount", "--lazy", "/mnt"); err != nil {
		t.Fatalf("umount --lazy: %v\n%s", err, out)
	}
	if table, _ := mountTable(); table[mnt].Dir != "" {
		t.Errorf("%s still mounted after --lazy", mnt)
	}
	if ms := mtMounts(t, root); len(ms) != 0 {
		t.Errorf("records: %+v", ms)
	}
	want, _ := os.ReadFile(filepath.Join(src, "big.bin"))
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("reading the open file after --lazy: %d bytes, %v", len(got), err)
	}
	if !processAlive(rec.PID, rec.PIDStart) {
		t.Error("server gone while a file was still open")
	}
	f.Close()
	if err := stopServer(MountRecord{PID: rec.PID, PIDStart: rec.PIDStart, Dir: mnt}, false); err != nil {
		t.Error(err)
	}
}

// TestFUSEUmountAll undoes every recorded mount at once, as a rescue
// session does.
func TestFUSEUmountAll(t *testing.T) {
	mtRequireFUSE(t)
	src := mtMakeTree(t)
	root, mnt := mtRootWith(t, mtMakeISO(t, src, "x.iso"))
	mnt2 := filepath.Join(root, "mnt2")
	os.Mkdir(mnt2, 0o755)
	t.Cleanup(func() { unix.Unmount(mnt2, unix.MNT_DETACH) })
	for _, d := range []string{"/mnt", "/mnt2"} {
		if out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", "/x.iso", d); err != nil {
			t.Fatalf("iso mount on %s: %v\n%s", d, err, out)
		}
	}
	ms := mtMounts(t, root)
	if len(ms) != 2 {
		t.Fatalf("records: %+v", ms)
	}
	if out, err := mtRun(t, root, "iso", "umount", "--all"); err != nil {
		t.Fatalf("umount --all: %v\n%s", err, out)
	}
	table, _ := mountTable()
	for _, m := range ms {
		if table[m.Dir].Dir != "" || processAlive(m.PID, m.PIDStart) {
			t.Errorf("%s still mounted or served after umount --all", m.Dir)
		}
	}
	if ms := mtMounts(t, root); len(ms) != 0 {
		t.Errorf("records left: %+v", ms)
	}
	if s := append(mtServers(mnt), mtServers(mnt2)...); len(s) != 0 {
		t.Errorf("servers left: %v", s)
	}
}

// TestFUSEMountKilledWhileStarting kills `iso mount` (SIGKILL) at moments
// while its FUSE server starts on an image of many files. Whatever the
// moment, a mount that appears is recorded (starting, then mounted), and
// `iso umount --all` leaves no mount and no server. Before the server's
// pid was recorded early, the record was dropped as stale while the
// server still mounted: a mount upgradectl no longer knew.
func TestFUSEMountKilledWhileStarting(t *testing.T) {
	mtRequireFUSE(t)
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "many")
	for d := 0; d < 20; d++ {
		dir := filepath.Join(src, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < 1000; f++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", f)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	img := filepath.Join(t.TempDir(), "many.iso")
	hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", img, src)
	root, mnt := mtRootWith(t, img)
	bin := hosttest.Bin(t)
	for _, delay := range []time.Duration{2, 5, 10, 20, 40, 80} {
		delay *= time.Millisecond
		cmd := exec.Command(bin, "--root", root, "--state-dir", "/state", "iso", "mount", "--method", "fuse", "/many.iso", "/mnt")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Kill()
		cmd.Wait()
		// At once, as an operator would: the listing must not drop the
		// record of a mount still to come.
		mtMounts(t, root)
		// Give a server that survived the time to mount.
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && len(mtServers(mnt)) > 0; {
			if table, _ := mountTable(); table[mnt].Dir != "" {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		table, _ := mountTable()
		mounted := table[mnt].Dir != ""
		ms := mtMounts(t, root)
		recorded := len(ms) == 1 && ms[0].Dir == mnt && ms[0].State != StateStale
		if (mounted || len(mtServers(mnt)) > 0) && !recorded {
			t.Errorf("killed after %v: mounted %v, servers %v, but the records are %+v", delay, mounted, mtServers(mnt), ms)
		}
		if out, err := mtRun(t, root, "iso", "umount", "--all"); err != nil {
			t.Fatalf("killed after %v: umount --all: %v\n%s", delay, err, out)
		}
		time.Sleep(100 * time.Millisecond)
		if table, _ := mountTable(); table[mnt].Dir != "" || len(mtServers(mnt)) > 0 || len(mtMounts(t, root)) != 0 {
			t.Fatalf("killed after %v: left after umount --all: mounted %v, servers %v, records %+v", delay, table[mnt].Dir != "", mtServers(mnt), mtMounts(t, root))
		}
		t.Logf("killed after %v: mounted %v, recorded %v", delay, mounted, recorded)
	}
}

// TestFUSEModeZero: an entry of mode 0000 in the image is mode 0000 in the
// FUSE mount, and another user cannot read it. go-fuse gave it 0644 (0755
// for a directory) unless NullPermissions is set, and the mount is
// allow_other: what the image keeps from everyone was readable by
// everyone.
func TestFUSEModeZero(t *testing.T) {
	mtRequireFUSE(t)
	hosttest.RequireCommand(t, "setpriv")
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "closed"), 0o755)
	os.WriteFile(filepath.Join(src, "closed/inside"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(src, "secret"), []byte("s"), 0o644)
	os.WriteFile(filepath.Join(src, "open"), []byte("o"), 0o644)
	os.Chmod(filepath.Join(src, "secret"), 0)
	os.Chmod(filepath.Join(src, "closed"), 0)
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "closed"), 0o755) })
	root, mnt := mtRootWith(t, mtMakeISO(t, src, "cmp-1.0-x86_64.iso"))
	if out, err := mtRun(t, root, "iso", "mount", "--method", "fuse", "/cmp-1.0-x86_64.iso", "/mnt"); err != nil {
		t.Fatalf("iso mount: %v\n%s", err, out)
	}
	defer mtRun(t, root, "iso", "umount", "/mnt")
	// The way to the mount open to the other user.
	for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	for _, name := range []string{"secret", "closed"} {
		fi, err := os.Lstat(filepath.Join(mnt, name))
		if err != nil || fi.Mode().Perm() != 0 {
			t.Errorf("%s: %v %v, want mode 0000", name, fi.Mode(), err)
		}
	}
	as := func(args ...string) error {
		return exec.Command("setpriv", append([]string{"--reuid", "65534", "--regid", "65534", "--clear-groups"}, args...)...).Run()
	}
	if err := as("cat", filepath.Join(mnt, "open")); err != nil {
		t.Fatalf("another user cannot read an open file: %v", err)
	}
	if err := as("cat", filepath.Join(mnt, "secret")); err == nil {
		t.Error("another user read a file of mode 0000")
	}
	if err := as("ls", filepath.Join(mnt, "closed")); err == nil {
		t.Error("another user listed a directory of mode 0000")
	}
}
