// Package hosttest gives tests real parts of a host: root checks, commands,
// filesystems on loop images. A test that cannot have the part it needs
// skips and names exactly what is missing.
package hosttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (run the tests as root: sudo ./build.sh test)")
	}
}

// RequireCommand skips the test unless every named command is on PATH,
// naming the Debian package that has it where known.
func RequireCommand(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			pkg := packageOf[n]
			if pkg == "" {
				pkg = n
			}
			t.Skipf("needs %s (Debian package %s; ./build.sh test installs it as root)", n, pkg)
		}
	}
}

var packageOf = map[string]string{
	"xorriso": "xorriso", "implantisomd5": "isomd5sum", "checkisomd5": "isomd5sum",
	"chronyd": "chrony", "systemd-nspawn": "systemd-container", "debootstrap": "debootstrap",
	"qemu-system-x86_64": "qemu-system-x86", "mkfs.btrfs": "btrfs-progs", "mkfs.xfs": "xfsprogs",
	"mkfs.ext4": "e2fsprogs", "dumpe2fs": "e2fsprogs", "xfs_db": "xfsprogs", "fusermount3": "fuse3", "setfacl": "acl", "getfacl": "acl",
	"setcap": "libcap2-bin", "getcap": "libcap2-bin", "setfattr": "attr", "cpio": "cpio",
	"busybox": "busybox-static", "md5sum": "coreutils", "unshare": "util-linux",
	"sha256sum": "coreutils", "sha512sum": "coreutils", "openssl": "openssl",
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// LoopFS makes a filesystem of type fstype ("ext4", "btrfs", "xfs", "tmpfs")
// of size bytes on a loop image, mounts it on a new directory and returns
// that directory. It is unmounted and removed when the test ends. Extra
// mkfs arguments can be given.
func LoopFS(t testing.TB, fstype string, size int64, mkfsArgs ...string) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if fstype == "tmpfs" {
		Run(t, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", mnt)
	} else {
		mkfs := "mkfs." + fstype
		RequireCommand(t, mkfs)
		img := filepath.Join(dir, "fs.img")
		f, err := os.Create(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
		args := append([]string{}, mkfsArgs...)
		switch fstype {
		case "ext4":
			args = append(args, "-q", "-F")
		case "btrfs", "xfs":
			args = append(args, "-q", "-f")
		}
		Run(t, mkfs, append(args, img)...)
		Run(t, "mount", "-o", "loop", img, mnt)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			// Busy: detach lazily so the loop device is freed.
			exec.Command("umount", "-l", mnt).Run()
			t.Logf("umount %s: %v %s", mnt, err, out)
		}
	})
	return mnt
}

// Bin returns the path of the built static binary for tests that run it in
// a container or VM: $UPGRADECTL_BIN (set by build.sh test) or bin/upgradectl
// found upwards from the working directory. It skips if there is none.
func Bin(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("UPGRADECTL_BIN"); b != "" {
		return b
	}
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "bin", "upgradectl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("needs the built binary: run ./build.sh first (or set UPGRADECTL_BIN)")
		}
		dir = parent
	}
}
