package check

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"upgradectl/host"
)

// diskData is one configured path of disk.space.
type diskData struct {
	Path string `json:"path"`
	// Checked is the path whose filesystem was measured: Path or its
	// nearest existing parent.
	Checked    string  `json:"checked"`
	Filesystem string  `json:"filesystem"` // its mount point, as a host path
	Type       string  `json:"type"`
	Status     Status  `json:"status"`
	Message    string  `json:"message"`
	Size       int64   `json:"size_bytes"`
	Free       int64   `json:"free_bytes"`
	FreePct    float64 `json:"free_percent"`
	Required   int64   `json:"required_bytes"`
	Inodes     uint64  `json:"inodes"`
	FreeInodes uint64  `json:"free_inodes"`
	ReqInodes  int64   `json:"required_inodes"`
}

// fsTypes names the filesystem magic numbers from statfs.
var fsTypes = map[int64]string{
	unix.EXT4_SUPER_MAGIC: "ext4", unix.BTRFS_SUPER_MAGIC: "btrfs", unix.XFS_SUPER_MAGIC: "xfs",
	unix.TMPFS_MAGIC: "tmpfs", unix.OVERLAYFS_SUPER_MAGIC: "overlay", unix.NFS_SUPER_MAGIC: "nfs",
	unix.SQUASHFS_MAGIC: "squashfs", unix.F2FS_SUPER_MAGIC: "f2fs", unix.FUSE_SUPER_MAGIC: "fuse",
	unix.ISOFS_SUPER_MAGIC: "iso9660", unix.MSDOS_SUPER_MAGIC: "vfat", unix.RAMFS_MAGIC: "ramfs",
	0x2fc12fc1: "zfs", unix.NILFS_SUPER_MAGIC: "nilfs2",
}

// checkDisk measures free bytes (available to ordinary users, so without
// the blocks reserved for root) and free inodes on the filesystem of each
// configured path. A path that does not exist yet (the staging directory
// before the first stage) is measured on its nearest existing parent,
// without creating it.
func checkDisk(ctx context.Context, e *env) Result {
	var entries []host.DiskConfig
	for _, d := range e.cfg.Checks.Disk {
		if len(d.Profiles) == 0 || slices.Contains(d.Profiles, e.profile) {
			entries = append(entries, d)
		}
	}
	if len(entries) == 0 {
		return Result{Status: Skip, Message: fmt.Sprintf("no paths configured for the %s checks in [[checks.disk]]", e.profile)}
	}
	var out []diskData
	worst := Pass
	var notes []string
	for _, c := range entries {
		d := measure(e, c)
		out = append(out, d)
		if rank(d.Status) > rank(worst) {
			worst = d.Status
		}
		if d.Status != Pass {
			notes = append(notes, d.Message)
		}
	}
	switch worst {
	case Pass:
		var s []string
		for _, d := range out {
			s = append(s, fmt.Sprintf("%s %s free", d.Path, host.FormatSize(d.Free)))
		}
		return Result{Status: Pass, Data: out, Message: strings.Join(s, ", ")}
	case Skip:
		if len(notes) == len(out) {
			return Result{Status: Skip, Data: out, Message: strings.Join(notes, "; ")}
		}
		return Result{Status: Pass, Data: out, Message: strings.Join(notes, "; ")}
	}
	return Result{Status: worst, Data: out, Message: strings.Join(notes, "; ")}
}

// rank orders statuses by badness for the overall result.
func rank(s Status) int {
	return map[Status]int{Pass: 0, Skip: 1, Warn: 2, Fail: 3}[s]
}

// measure checks one configured path.
func measure(e *env, c host.DiskConfig) diskData {
	d := diskData{Path: c.Path, Status: Fail, ReqInodes: c.MinFreeInodes}
	// Where the path leads inside the root (a symlink on the way, to
	// another filesystem perhaps), so that a missing part is measured on
	// the nearest directory there, not on the link's parent.
	start := path.Clean(c.Path)
	if real, err := e.root.Resolve(start); err == nil {
		if rel, err := e.root.Rel(real); err == nil {
			start = rel
		}
	}
	checked := start
	var real string
	var st unix.Statfs_t
	for {
		var err error
		real, err = e.root.Resolve(checked)
		if err == nil {
			err = unix.Statfs(real, &st)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) || checked == "/" {
			r := unreadable(checked, err)
			d.Status, d.Message = r.Status, c.Path+": "+r.Message
			return d
		}
		checked = path.Dir(checked)
	}
	d.Checked = checked
	d.Filesystem = mountPoint(e, checked)
	d.Type = fsTypes[int64(st.Type)]
	if d.Type == "" {
		d.Type = fmt.Sprintf("0x%x", st.Type)
	}
	bs := int64(st.Bsize)
	if st.Frsize > 0 {
		bs = int64(st.Frsize)
	}
	d.Size = int64(st.Blocks) * bs
	d.Free = int64(st.Bavail) * bs
	if st.Blocks > 0 {
		d.FreePct = float64(st.Bavail) * 100 / float64(st.Blocks)
	}
	d.Inodes, d.FreeInodes = st.Files, st.Ffree
	d.Required = int64(c.MinFree)
	if p := int64(c.MinFreePercent / 100 * float64(d.Size)); p > d.Required {
		d.Required = p
	}
	where := c.Path
	switch {
	case checked != start:
		where = fmt.Sprintf("%s (not there yet, measured on %s)", c.Path, checked)
	case start != path.Clean(c.Path):
		where = fmt.Sprintf("%s (%s)", c.Path, start)
	}
	fsName := fmt.Sprintf("%s filesystem %s", d.Type, d.Filesystem)
	var short []string
	if d.Free < d.Required {
		short = append(short, fmt.Sprintf("%s free of %s needed", host.FormatSize(d.Free), host.FormatSize(d.Required)))
	}
	// Filesystems without a fixed inode table (btrfs) report 0 inodes.
	if d.Inodes > 0 && c.MinFreeInodes > 0 && d.FreeInodes < uint64(c.MinFreeInodes) {
		short = append(short, fmt.Sprintf("%d inodes free of %d needed", d.FreeInodes, c.MinFreeInodes))
	}
	if len(short) > 0 {
		d.Message = fmt.Sprintf("%s on %s: %s", where, fsName, strings.Join(short, ", "))
		return d
	}
	d.Status = Pass
	d.Message = fmt.Sprintf("%s on %s: %s free (%.0f%%), %s needed", where, fsName, host.FormatSize(d.Free), d.FreePct, host.FormatSize(d.Required))
	return d
}

// mountPoint finds the mount point of the filesystem holding host path p
// by walking up while the device stays the same, stopping at the root.
func mountPoint(e *env, p string) string {
	dev := func(p string) (uint64, bool) {
		real, err := e.root.Resolve(p)
		if err != nil {
			return 0, false
		}
		var st unix.Stat_t
		if unix.Stat(real, &st) != nil {
			return 0, false
		}
		return st.Dev, true
	}
	cur := p
	d, ok := dev(cur)
	if !ok {
		return p
	}
	for cur != "/" {
		parent := path.Dir(cur)
		pd, ok := dev(parent)
		if !ok || pd != d {
			break
		}
		cur = parent
	}
	return cur
}
