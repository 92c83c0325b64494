package tagfs

import (
	"fmt"
	"os"
	"strings"

	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// fsNeed is what a filesystem must hold for the copies planned on it.
type fsNeed struct {
	dir    string // a directory of the set on this filesystem
	sample *item  // a non-empty regular file to probe cloning with
	first  *item
	files  int64
	copied int64 // bytes if every file is copied
	links  int64 // symlinks that need a block of their own
	syms   int64 // symlinks
}

var fsNames = map[int64]string{
	0xEF53: "ext4", 0x9123683E: "btrfs", 0x58465342: "xfs", 0x01021994: "tmpfs",
	0x6969: "nfs", 0x858458f6: "ramfs", 0x794c7630: "overlayfs", 0x2FC12FC1: "zfs", 0xF2F52010: "f2fs",
}

func fsName(s *unix.Statfs_t) string {
	if n, ok := fsNames[int64(s.Type)]; ok {
		return n
	}
	return fmt.Sprintf("type 0x%x", s.Type)
}

// checkSpace refuses, with the numbers, a set that does not fit: per
// filesystem, a copy needs the file's size in blocks and an inode; a clone
// (probed with one real file) needs an inode and almost no space; a name
// linked to the copy of another name of its inode needs neither. The probe
// also sets the version attribute once, so that a filesystem that refuses
// it is found before anything is written.
func (t *Tags) checkSpace(items []item) error {
	_, linkTo := hardLinks(items)
	needs := map[uint64]*fsNeed{}
	var order []uint64
	for i := range items {
		it := &items[i]
		if it.done || linkTo[i] >= 0 {
			continue
		}
		n := needs[it.st.Dev]
		if n == nil {
			n = &fsNeed{dir: it.dir, first: it}
			needs[it.st.Dev] = n
			order = append(order, it.st.Dev)
		}
		n.files++
		switch it.st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if it.st.Size > 0 && n.sample == nil {
				n.sample = it
			}
		case unix.S_IFLNK:
			n.syms++
			if it.st.Size > 60 {
				n.links++
			}
		}
	}
	var probs problems
	for _, dev := range order {
		n := needs[dev]
		d, err := t.openDir(n.dir)
		if err != nil {
			probs.add("%s: %v", n.dir, err)
			continue
		}
		var s unix.Statfs_t
		if err := unix.Fstatfs(d.fd, &s); err != nil {
			d.close()
			probs.add("%s: %v", n.dir, err)
			continue
		}
		bs := s.Bsize
		for i := range items {
			it := &items[i]
			if !it.done && linkTo[i] < 0 && it.st.Dev == dev && it.st.Mode&unix.S_IFMT == unix.S_IFREG {
				size := it.st.Size
				if sparse(&it.st) {
					size = it.st.Blocks * 512 // a copy keeps the holes
				}
				n.copied += (size + bs - 1) / bs * bs
			}
		}
		d.close()
		clones, err := t.probe(n)
		if err != nil {
			probs.add("on the filesystem of %s (%s): %v", n.dir, fsName(&s), err)
			continue
		}
		need := n.links * bs
		if !clones {
			need += n.copied
		}
		free := int64(s.Bavail) * bs
		inodesShort := s.Files > 0 && int64(s.Ffree) < n.files
		if need > free || inodesShort {
			probs.add("%d files on the filesystem of %s (%s): they need %s and %d inodes, %s and %d inodes are free",
				n.files, n.dir, fsName(&s), host.FormatSize(need), n.files, host.FormatSize(free), s.Ffree)
		}
	}
	if len(probs) == 1 {
		return host.WithHint(host.CannotRun("cannot tag %s", probs[0]), "free some space there, or tag fewer files")
	}
	if len(probs) > 1 {
		return host.WithHint(probs.err("tag"), "free some space there, or tag fewer files")
	}
	return nil
}

// probe writes a temporary copy of one file of the set on a filesystem:
// it says whether the filesystem clones, and whether it takes the version
// attribute. The temporary is removed (or, after a crash, by the next run).
func (t *Tags) probe(n *fsNeed) (clones bool, err error) {
	it := n.first
	if n.sample != nil {
		it = n.sample
	}
	d, err := t.openDir(it.dir)
	if err != nil {
		return false, err
	}
	defer d.close()
	tmp := tmpName(it.name)
	if err := removeTemp(d, tmp); err != nil {
		return false, err
	}
	fd, err := unix.Openat(d.fd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, fmt.Errorf("cannot create %s: %v", d.hostPath(tmp), err)
	}
	dst := os.NewFile(uintptr(fd), d.hostPath(tmp))
	defer func() {
		dst.Close()
		unix.Unlinkat(d.fd, tmp, 0)
	}()
	if err := xattr.FSet(dst, t.attr, []byte("probe")); err != nil {
		return false, t.attrError(err)
	}
	if n.syms > 0 && strings.HasPrefix(t.attr, "user.") {
		return false, fmt.Errorf("%d symlinks cannot carry the attribute %s (user.* attributes are refused on symlinks; use a trusted.* attribute)", n.syms, t.attr)
	}
	if n.sample == nil {
		return false, nil
	}
	src, err := openAt(d, it.name)
	if err != nil {
		return false, err
	}
	defer src.Close()
	return unix.IoctlFileClone(fd, int(src.Fd())) == nil, nil
}
