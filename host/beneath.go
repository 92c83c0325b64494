package host

import (
	"errors"

	"golang.org/x/sys/unix"
)

// ErrSymlinkOnWay is OpenDirBeneath's error for a symlink on the way.
var ErrSymlinkOnWay = errors.New("a symlink is on the way (not followed)")

// OpenDirBeneath opens the directory rel (relative, "." for dirfd itself)
// below the open directory dirfd without following any symlink and
// without leaving dirfd: openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS. Its errors say in words what was in the way.
func OpenDirBeneath(dirfd int, rel string) (int, error) {
	fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch err {
	case nil:
		return fd, nil
	case unix.ELOOP, unix.EXDEV:
		return -1, ErrSymlinkOnWay
	case unix.ENOTDIR:
		return -1, errors.New("not a directory (or a file on the way)")
	case unix.ENOSYS:
		return -1, errors.New("the kernel has no openat2 (Linux 5.6 or later is needed)")
	}
	return -1, err
}
