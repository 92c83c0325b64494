package iso

import (
	"crypto/md5"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// vmInit is the body of the VM's /init: it mounts the test image with the
// kernel method, lists it (type, mode, mtime, size, MD5, link target) between
// markers on the serial console, unmounts it and checks that the mount and
// the loop device are gone.
const vmInit = `mkdir -p /mnt/iso
fail() { echo "VMTEST-FAIL: $*"; poweroff -f; }
grep -qw iso9660 /proc/filesystems && fail "iso9660 registered before the mount"
# An image the kernel refuses: exit 1, no loop device, no record left.
upgradectl iso mount --method kernel /bad.iso /mnt/iso; rc=$?
[ $rc = 1 ] || fail "mount of a bad image: exit $rc, want 1"
for b in /sys/block/loop*/loop/backing_file; do [ -e "$b" ] && fail "loop device left by a failed mount: $b"; done
[ "$(upgradectl --json iso mounts)" = "[]" ] || fail "record left by a failed mount: $(upgradectl --json iso mounts)"
upgradectl iso mount --method kernel /test.iso /mnt/iso || fail "iso mount exit $?"
grep ' /mnt/iso ' /proc/mounts
echo VMTEST-LIST-BEGIN
cd /mnt/iso
find . | sort | while read -r f; do
	if [ -L "$f" ]; then echo "L $f $(readlink "$f")"
	elif [ -d "$f" ]; then echo "D $f $(stat -c '%a %Y' "$f")"
	else echo "F $f $(stat -c '%a %Y %s' "$f") $(md5sum < "$f" | cut -d' ' -f1)"; fi
done
echo VMTEST-LIST-END
cd /
ls -la /mnt/iso; dmesg | tail -5
if touch /mnt/iso/new 2>/dev/null; then echo VMTEST-WRITE allowed; else echo VMTEST-WRITE refused; fi
upgradectl iso mounts
upgradectl iso umount /mnt/iso || fail "iso umount exit $?"
grep -q ' /mnt/iso ' /proc/mounts && fail "still mounted after umount"
for b in /sys/block/loop*/loop/backing_file; do [ -e "$b" ] && fail "loop device left: $b $(cat $b)"; done
upgradectl iso mounts
# The default method takes the kernel when it can; a mount undone behind
# upgradectl's back is reported and its record dropped.
upgradectl iso mount /test.iso /mnt/iso || fail "default iso mount exit $?"
upgradectl --json iso mounts | grep -q '"method":"kernel"' || fail "default method is not kernel: $(upgradectl --json iso mounts)"
umount /mnt/iso
upgradectl iso mounts 2>&1 | grep -q "no longer mounted: record dropped" || fail "stale record not reported"
[ "$(upgradectl --json iso mounts)" = "[]" ] || fail "stale record kept: $(upgradectl --json iso mounts)"
echo VMTEST-OK
poweroff -f
`

// TestKernelMountInVM proves the kernel method on a real kernel: Debian's
// kernel under qemu (TCG) boots an initramfs holding busybox, the static
// upgradectl, the isofs and loop modules (not loaded: upgradectl loads
// them) and a Rock Ridge image, mounts it with --method kernel and lists it
// on the serial console; the listing must match the source tree.
func TestKernelMountInVM(t *testing.T) {
	vm := hosttest.NewVM(t, vmInit)
	hosttest.RequireCommand(t, "xorriso")

	src := mtMakeTree(t)
	img := mtMakeISO(t, src, "test.iso")

	for _, d := range []string{"mnt", "tmp", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(vm.Root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vm.Copy(img, "test.iso", 0o644)
	// 1 MiB of zeros: no volume descriptor.
	if err := os.WriteFile(filepath.Join(vm.Root, "bad.iso"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only the modules the mount needs, and the full modules.dep that
	// upgradectl reads to find them.
	ver := filepath.Base(vm.Modules)
	dst := filepath.Join("lib/modules", ver)
	vm.Copy(filepath.Join(vm.Modules, "modules.dep"), filepath.Join(dst, "modules.dep"), 0o644)
	for _, m := range []string{"isofs", "loop"} {
		files, err := moduleDeps(vm.Modules, m)
		if err != nil {
			t.Skipf("kernel %s cannot mount iso9660 from modules: %v", ver, err)
		}
		for _, f := range files {
			vm.Copy(filepath.Join(vm.Modules, f), filepath.Join(dst, f), 0o644)
		}
	}

	console, err := vm.Boot(512)
	if err != nil {
		t.Logf("qemu: %v", err)
	}
	if i := strings.Index(console, "VMTEST-FAIL"); i >= 0 {
		t.Fatalf("in the VM: %s\nconsole:\n%s", strings.SplitN(console[i:], "\n", 2)[0], console)
	}
	if !strings.Contains(console, "VMTEST-OK") {
		t.Fatalf("VM did not report VMTEST-OK; console:\n%s", console)
	}
	if !strings.Contains(console, "VMTEST-WRITE refused") {
		t.Errorf("writing to the kernel mount was not refused; console:\n%s", console)
	}
	if !strings.Contains(console, "iso9660 ro,nosuid,nodev") {
		t.Errorf("mount options are not ro,nosuid,nodev; console:\n%s", console)
	}
	_, rest, _ := strings.Cut(console, "VMTEST-LIST-BEGIN\n")
	list, _, _ := strings.Cut(rest, "VMTEST-LIST-END")
	got := strings.Split(strings.TrimSpace(list), "\n")
	want := mtVmListing(t, src)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the kernel mount differs from the source tree:\n%s", mtDiffLines(want, got))
	}
}

// vmListing is the listing vmInit prints, made from the source tree.
func mtVmListing(t *testing.T, dir string) []string {
	type entry struct{ name, line string }
	var es []entry
	add := func(name, format string, args ...any) { es = append(es, entry{name, fmt.Sprintf(format, args...)}) }
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		rel = "./" + rel
		if rel == "./." {
			rel = "."
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			add(rel, "L %s %s", rel, target)
		case fi.IsDir():
			add(rel, "D %s %o %d", rel, fi.Mode().Perm(), fi.ModTime().Unix())
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			add(rel, "F %s %o %d %d %x", rel, fi.Mode().Perm(), fi.ModTime().Unix(), fi.Size(), md5.Sum(data))
		}
		return nil
	})
	// The VM sorts by name with busybox sort: byte order of the names.
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.line
	}
	return out
}
