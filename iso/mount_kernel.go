package iso

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// noKernelSupport is a kernel mount that cannot be done on this kernel (no
// iso9660, no loop devices): Mount falls back to FUSE on it.
type noKernelSupport struct{ Err error }

func (e *noKernelSupport) Error() string { return e.Err.Error() }
func (e *noKernelSupport) Unwrap() error { return e.Err }

// mountKernel attaches image to a free loop device read-only with
// autoclear, and mounts it with the kernel's iso9660 read-only, nodev,
// nosuid on dir. It returns the loop device. The loop device goes away by
// itself when the filesystem is unmounted.
func mountKernel(image, dir string, root host.Root) (string, error) {
	if err := ensureFilesystem("iso9660", "isofs", root); err != nil {
		return "", err
	}
	img, err := host.OpenImage(image)
	if err != nil {
		return "", host.Bad("cannot mount %s: %v", image, unwrapPath(err))
	}
	defer img.Close()
	loop, dev, err := attachLoop(img, root)
	if err != nil {
		return "", err
	}
	defer loop.Close()
	flags := uintptr(unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID)
	if err := unix.Mount(dev, dir, "iso9660", flags, ""); err != nil {
		unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
		switch {
		case errors.Is(err, unix.ENODEV):
			return "", &noKernelSupport{host.CannotRun("cannot mount %s: the kernel has no iso9660 filesystem", image)}
		case errors.Is(err, unix.EPERM):
			return "", host.CannotRun("cannot mount %s on %s: %v", image, dir, err)
		}
		return "", host.Bad("cannot mount %s on %s: the kernel refuses it as iso9660: %v", image, dir, err)
	}
	return dev, nil
}

// attachLoop binds img to a free loop device, read-only and autoclear.
func attachLoop(img *os.File, root host.Root) (*os.File, string, error) {
	ctl, err := openLoopControl(root)
	if err != nil {
		return nil, "", err
	}
	defer ctl.Close()
	var info unix.LoopInfo64
	info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
	copy(info.File_name[:len(info.File_name)-1], img.Name())
	// Another process may take the device between GET_FREE and our
	// configure (EBUSY): try again with the next free one.
	var lastErr error
	for try := 0; try < 16; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, "", host.CannotRun("cannot get a free loop device: %v", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		loop, err := openLoopDevice(dev, n)
		if err != nil {
			return nil, "", err
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: info}
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			// Before Linux 5.8: no LOOP_CONFIGURE.
			err = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(img.Fd()))
			if err == nil {
				if err = unix.IoctlLoopSetStatus64(int(loop.Fd()), &info); err != nil {
					unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
				}
			}
		}
		if err == nil {
			return loop, dev, nil
		}
		loop.Close()
		lastErr = err
		if !errors.Is(err, unix.EBUSY) {
			break
		}
	}
	return nil, "", host.CannotRun("cannot attach %s to a loop device: %v", img.Name(), lastErr)
}

func openLoopControl(root host.Root) (*os.File, error) {
	const ctlPath = "/dev/loop-control"
	ctl, err := os.OpenFile(ctlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if lerr := loadModule("loop", root); lerr != nil {
			return nil, &noKernelSupport{host.CannotRun("cannot use loop devices: no %s and %v", ctlPath, lerr)}
		}
		ctl, err = os.OpenFile(ctlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			// No devtmpfs on /dev: make the node (misc 10:237).
			if merr := unix.Mknod(ctlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 237))); merr == nil {
				ctl, err = os.OpenFile(ctlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
			}
		}
	}
	if err != nil {
		return nil, &noKernelSupport{host.CannotRun("cannot use loop devices: %v", unwrapPath(err))}
	}
	return ctl, nil
}

func openLoopDevice(dev string, n int) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if merr := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); merr == nil {
			f, err = os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
		}
	}
	if err != nil {
		return nil, host.CannotRun("cannot open loop device %s: %v", dev, unwrapPath(err))
	}
	return f, nil
}

// ensureFilesystem makes sure the kernel knows filesystem fs, loading
// module when /proc/filesystems does not list it.
func ensureFilesystem(fs, module string, root host.Root) error {
	if ok, err := fsRegistered(fs); err != nil || ok {
		return err
	}
	if err := loadModule(module, root); err != nil {
		return &noKernelSupport{host.CannotRun("cannot mount iso9660: the kernel does not have it and %v", err)}
	}
	if ok, err := fsRegistered(fs); err != nil || ok {
		return err
	}
	return &noKernelSupport{host.CannotRun("cannot mount iso9660: module %s loaded but the kernel still has no %s", module, fs)}
}

func fsRegistered(name string) (bool, error) {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return false, host.CannotRun("cannot read /proc/filesystems: %v", unwrapPath(err))
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[len(fields)-1] == name {
			return true, nil
		}
	}
	return false, sc.Err()
}

// loadModule loads a kernel module and the modules it needs with
// finit_module(2), from /lib/modules/RELEASE under the root first, then
// under the running system's / (a rescue system may hold the modules of
// the kernel it runs while the root holds another kernel's). The order
// comes from modules.dep, as modprobe does; no modprobe is needed, which
// is what minimal rescue environments lack. Compressed modules are handed
// to the kernel to decompress (MODULE_INIT_COMPRESSED_FILE).
func loadModule(name string, root host.Root) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("cannot load module %s: %v", name, err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	dirs := []string{root.Path("/lib/modules/" + release)}
	if !root.IsLive() {
		dirs = append(dirs, "/lib/modules/"+release)
	}
	var tried []string
	for _, dir := range dirs {
		mods, err := moduleDeps(dir, name)
		if err != nil {
			tried = append(tried, err.Error())
			continue
		}
		// modules.dep lists what a module needs with the deepest last.
		for i := len(mods) - 1; i >= 0; i-- {
			if err := finitModule(filepath.Join(dir, mods[i])); err != nil {
				return fmt.Errorf("cannot load module %s: %v", mods[i], err)
			}
		}
		return nil
	}
	return fmt.Errorf("cannot load module %s: %s", name, strings.Join(tried, "; "))
}

// moduleDeps returns the module file of name (relative to dir) followed by
// the files of the modules it needs, from dir/modules.dep.
func moduleDeps(dir, name string) ([]string, error) {
	p := filepath.Join(dir, "modules.dep")
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("no %s", p)
	}
	defer f.Close()
	want := strings.ReplaceAll(name, "-", "_")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if !ok || moduleName(mod) != want {
			continue
		}
		return append([]string{mod}, strings.Fields(deps)...), nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", p, err)
	}
	return nil, fmt.Errorf("%s does not list %s", p, name)
}

// moduleName is the kernel's name of a module file: "kernel/fs/isofs/isofs.ko.xz" is "isofs".
func moduleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func finitModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return unwrapPath(err)
	}
	defer f.Close()
	flags := 0
	if !strings.HasSuffix(path, ".ko") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	return fmt.Errorf("%s: %v", path, err)
}
