package hosttest

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// VM is a qemu machine (TCG) that boots Debian's kernel with an initramfs
// holding busybox, the static upgradectl and an /init script that prints
// its results on the serial console. A test adds its own files to Root,
// then calls Boot.
type VM struct {
	t       testing.TB
	Root    string // the initramfs tree: /bin/busybox, /bin/upgradectl, /init, /proc, /sys, /dev
	Kernel  string // /boot/vmlinuz-VERSION
	Modules string // /lib/modules/VERSION of that kernel
}

// vmInitStart begins every /init: busybox's commands and /proc, /sys, /dev.
const vmInitStart = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
`

// NewVM makes the initramfs tree. Its /init is the shell script init,
// run by busybox sh after busybox has installed its commands in /bin and
// /proc, /sys and /dev are mounted. It skips the test in
// -short mode and when qemu, cpio, a static busybox, the built binary or a
// kernel with its modules is missing.
func NewVM(t testing.TB, init string) *VM {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM; not in -short")
	}
	RequireCommand(t, "qemu-system-x86_64", "cpio", "busybox")
	bin := Bin(t)
	vm := &VM{t: t, Root: filepath.Join(t.TempDir(), "initramfs")}
	vm.Kernel, vm.Modules = vmKernel(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	requireStatic(t, busybox)
	for _, d := range []string{"bin", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(vm.Root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vm.Copy(busybox, "bin/busybox", 0o755)
	vm.Copy(bin, "bin/upgradectl", 0o755)
	if err := os.WriteFile(filepath.Join(vm.Root, "init"), []byte(vmInitStart+init), 0o755); err != nil {
		t.Fatal(err)
	}
	return vm
}

// Copy copies the host file src to dst, a path inside the initramfs,
// making dst's directories.
func (vm *VM) Copy(src, dst string, mode os.FileMode) {
	vm.t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		vm.t.Fatal(err)
	}
	to := filepath.Join(vm.Root, dst)
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		vm.t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		vm.t.Fatal(err)
	}
}

// Boot packs the initramfs, boots the VM with memMB of memory and the extra
// qemu arguments, waits for it to power off and returns the serial console
// (without carriage returns) and qemu's error. The test fails if the VM
// has not finished in 8 minutes: TCG on a shared 2-core machine is slow,
// so the limit is generous and never a timing assertion.
func (vm *VM) Boot(memMB int, extra ...string) (string, error) {
	vm.t.Helper()
	initrd := filepath.Join(vm.t.TempDir(), "initrd.cpio")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	cmd.Dir = vm.Root
	if out, err := cmd.CombinedOutput(); err != nil {
		vm.t.Fatalf("cpio: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	args := []string{"-accel", "tcg", "-m", strconv.Itoa(memMB), "-smp", "1", "-nographic", "-no-reboot"}
	args = append(args, extra...)
	args = append(args, "-kernel", vm.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init")
	out, err := exec.CommandContext(ctx, "qemu-system-x86_64", args...).CombinedOutput()
	console := strings.ReplaceAll(string(out), "\r", "")
	if ctx.Err() != nil {
		vm.t.Fatalf("VM did not finish in 8 minutes; console:\n%s", console)
	}
	return console, err
}

// vmKernel finds a kernel in /boot whose modules are installed (Debian's
// linux-image-amd64), not necessarily the running one; the last in name
// order where there are several.
func vmKernel(t testing.TB) (vmlinuz, modules string) {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	for i := len(ks) - 1; i >= 0; i-- {
		ver := strings.TrimPrefix(filepath.Base(ks[i]), "vmlinuz-")
		m := "/lib/modules/" + ver
		if _, err := os.Stat(filepath.Join(m, "modules.dep")); err == nil {
			if f, err := os.Open(ks[i]); err == nil {
				f.Close()
				return ks[i], m
			}
		}
	}
	t.Skip("needs a kernel in /boot with its modules in /lib/modules (Debian package linux-image-amd64)")
	return "", ""
}

// requireStatic skips the test unless the executable p runs without a
// dynamic loader (no PT_INTERP program header).
func requireStatic(t testing.TB, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Skipf("needs a static busybox (Debian package busybox-static): %v", err)
	}
	defer f.Close()
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			t.Skipf("needs a static busybox (Debian package busybox-static): %s is dynamically linked", p)
		}
	}
}
