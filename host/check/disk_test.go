package check

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/host/hosttest"
)

// loopRoot makes a real filesystem on a loop image and returns a root in
// which it is mounted at /mnt.
func loopRoot(t *testing.T, fstype string, size int64, mkfsArgs ...string) host.Root {
	t.Helper()
	mnt := hosttest.LoopFS(t, fstype, size, mkfsArgs...)
	r, err := host.NewRoot(filepath.Dir(mnt))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fill writes a file that leaves about leave bytes available.
func fill(t *testing.T, dir string, leave int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	n := int64(st.Bavail)*int64(st.Bsize) - leave
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n > 0 {
		w := int64(len(buf))
		if n < w {
			w = n
		}
		if _, err := f.Write(buf[:w]); err != nil {
			t.Fatal(err)
		}
		n -= w
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func diskResult(t *testing.T, root host.Root, entries string) (Result, []diskData) {
	t.Helper()
	cfg := config(t, entries)
	r := result(t, run(t, Options{Root: root, Config: cfg, Only: []string{"disk.space"}}), "disk.space")
	d, _ := r.Data.([]diskData)
	return r, d
}

func TestDiskNearlyFullExt4(t *testing.T) {
	root := loopRoot(t, "ext4", 64<<20)
	entries := `
[[checks.disk]]
path = "/mnt/staging/iso"
min_free = "40MiB"
[[checks.disk]]
path = "/mnt"
min_free_percent = 10
`
	r, d := diskResult(t, root, entries)
	if r.Status != Pass || len(d) != 2 {
		t.Fatalf("empty filesystem: %+v", r)
	}
	if d[0].Checked != "/mnt" || d[0].Filesystem != "/mnt" || d[0].Type != "ext4" || d[0].Required != 40<<20 {
		t.Errorf("staging not yet there: %+v", d[0])
	}
	if !strings.Contains(d[0].Message, "/mnt/staging/iso (not there yet, measured on /mnt) on ext4 filesystem /mnt") {
		t.Errorf("message %q", d[0].Message)
	}
	if _, err := os.Stat(root.Path("/mnt/staging")); !os.IsNotExist(err) {
		t.Errorf("the check created the staging directory: %v", err)
	}

	fill(t, root.Path("/mnt"), 2<<20)
	r, d = diskResult(t, root, entries)
	if r.Status != Fail || !r.Blocks() {
		t.Fatalf("nearly full: %+v", r)
	}
	for _, x := range d {
		if x.Status != Fail || x.Free > 3<<20 || !strings.Contains(x.Message, "free of") {
			t.Errorf("nearly full: %+v", x)
		}
	}
	if !strings.Contains(r.Message, "needed") {
		t.Errorf("message %q", r.Message)
	}
}

func TestDiskInodes(t *testing.T) {
	root := loopRoot(t, "ext4", 32<<20, "-N", "128")
	for i := 0; i < 100; i++ {
		if err := os.WriteFile(root.Path(fmt.Sprintf("/mnt/f%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, d := diskResult(t, root, "[[checks.disk]]\npath = \"/mnt\"\nmin_free_inodes = 100\n")
	if r.Status != Fail || len(d) != 1 || d[0].FreeInodes >= 100 || !strings.Contains(r.Message, "inodes free of 100 needed") {
		t.Errorf("inodes: %+v", r)
	}
}

func TestDiskFilesystems(t *testing.T) {
	// btrfs has no fixed inode table: the inode minimum does not apply.
	for _, c := range []struct {
		fstype string
		size   int64
	}{{"btrfs", 128 << 20}, {"xfs", 320 << 20}, {"tmpfs", 16 << 20}} {
		t.Run(c.fstype, func(t *testing.T) {
			root := loopRoot(t, c.fstype, c.size)
			r, d := diskResult(t, root, "[[checks.disk]]\npath = \"/mnt\"\nmin_free = \"1MiB\"\nmin_free_inodes = 10\n")
			if r.Status != Pass || d[0].Type != c.fstype || d[0].Filesystem != "/mnt" {
				t.Errorf("%+v %+v", r, d)
			}
			r, _ = diskResult(t, root, fmt.Sprintf("[[checks.disk]]\npath = \"/mnt\"\nmin_free = \"%d\"\n", c.size+1))
			if r.Status != Fail {
				t.Errorf("more than the size required: %+v", r)
			}
		})
	}
}

func TestDiskUnreadable(t *testing.T) {
	// A path under a file cannot exist: measured on the file's filesystem.
	root := fakeRoot(t, map[string]string{"/etc/file": "x"})
	r, d := diskResult(t, root, "[[checks.disk]]\npath = \"/etc/file/sub\"\n")
	if r.Status != Pass || d[0].Checked != "/etc/file" {
		t.Errorf("%+v %+v", r, d)
	}
	r, _ = diskResult(t, root, "[[checks.disk]]\npath = \"/x\"\nprofiles = [\"post\"]\n")
	if r.Status != Skip || !strings.Contains(r.Message, "no paths configured for the pre checks") {
		t.Errorf("%+v", r)
	}
}

// TestDiskThroughSymlink: a configured path that is a link (or has one on
// the way) to another filesystem in the root is measured there, also when
// its last part does not exist yet.
func TestDiskThroughSymlink(t *testing.T) {
	root := loopRoot(t, "tmpfs", 16<<20)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(root.Path("/var/lib/upgradectl"), 0o755))
	must(os.Symlink("/mnt/iso", root.Path("/var/lib/upgradectl/iso")))
	cfg := "[[checks.disk]]\npath = \"/var/lib/upgradectl/iso\"\nmin_free = \"1GiB\"\n"
	r, d := diskResult(t, root, cfg)
	if r.Status != Fail || d[0].Checked != "/mnt" || d[0].Filesystem != "/mnt" || d[0].Type != "tmpfs" ||
		!strings.Contains(r.Message, "/var/lib/upgradectl/iso (not there yet, measured on /mnt)") {
		t.Errorf("the link's target not there yet: %+v %+v", r, d)
	}
	must(os.Mkdir(root.Path("/mnt/iso"), 0o755))
	r, d = diskResult(t, root, cfg)
	if r.Status != Fail || d[0].Checked != "/mnt/iso" || d[0].Filesystem != "/mnt" || !strings.Contains(r.Message, "/var/lib/upgradectl/iso (/mnt/iso)") {
		t.Errorf("the link's target there: %+v %+v", r, d)
	}
}
