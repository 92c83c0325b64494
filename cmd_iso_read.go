package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
	"upgradectl/iso"
)

func init() {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for programs"}
	registerISO(
		&cli.Command{
			Name:      "info",
			Usage:     "show an image's volume, size, date, Rock Ridge, Joliet, embedded MD5 and product identity",
			ArgsUsage: "ISO",
			Flags:     []cli.Flag{jsonFlag},
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() != 1 {
					return host.Usage("iso info needs one ISO")
				}
				im, err := openISO(e, c.Args().First())
				if err != nil {
					return err
				}
				defer closeISO(e, im)
				e.JSON = isoJSON(c)
				return printISOInfo(e, im, c.Args().First())
			}),
		},
		&cli.Command{
			Name:      "ls",
			Usage:     "list the files of an image without mounting it",
			ArgsUsage: "ISO [PATH...]",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "l", Usage: "long listing: mode, links, owner, size, date, symlink target"},
				&cli.BoolFlag{Name: "R", Usage: "list directories recursively"},
				jsonFlag,
			},
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() < 1 {
					return host.Usage("iso ls needs an ISO")
				}
				im, err := openISO(e, c.Args().First())
				if err != nil {
					return err
				}
				defer closeISO(e, im)
				paths := c.Args().Tail()
				if len(paths) == 0 {
					paths = []string{"."}
				}
				var rows []isoRow
				for _, p := range paths {
					r, err := isoList(im, p, c.Bool("R"))
					if err != nil {
						return isoPathErr(c.Args().First(), p, err)
					}
					rows = append(rows, r...)
				}
				e.JSON = isoJSON(c)
				return printISOList(e, rows, c.Bool("l"))
			}),
		},
		&cli.Command{
			Name:      "cat",
			Usage:     "write files of an image to standard output",
			ArgsUsage: "ISO PATH...",
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() < 2 {
					return host.Usage("iso cat needs an ISO and at least one PATH")
				}
				im, err := openISO(e, c.Args().First())
				if err != nil {
					return err
				}
				defer closeISO(e, im)
				for _, p := range c.Args().Tail() {
					if err := isoCat(e.Out, im, p); err != nil {
						return isoPathErr(c.Args().First(), p, err)
					}
				}
				return nil
			}),
		},
		&cli.Command{
			Name:  "extract",
			Usage: "copy files out of an image into DEST (all of it without PATH), never writing outside DEST",
			Description: "Files keep their image paths under DEST, their modes, times, symlinks and, as root,\n" +
				"their owners. DEST is created if needed; existing files are never overwritten.",
			ArgsUsage: "ISO DEST [PATH...]",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "no-owners", Usage: "do not give files the image's owners (the default as root)"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() < 2 {
					return host.Usage("iso extract needs an ISO and DEST")
				}
				im, err := openISO(e, c.Args().First())
				if err != nil {
					return err
				}
				defer closeISO(e, im)
				dest, err := hostArgPath(e, c.Args().Get(1))
				if err != nil {
					return err
				}
				// The data of a file with several names is written once;
				// the other names are hard links to it.
				var files, bytes, links int64
				seen := map[uint64]bool{}
				opts := []iso.ExtractOption{iso.Progress(func(_ string, en *iso.Entry) {
					files++
					switch {
					case !en.Mode.IsRegular():
					case en.Nlink > 1 && seen[en.Ino]:
						links++
					default:
						seen[en.Ino] = en.Nlink > 1
						bytes += en.Size
					}
				})}
				if c.Bool("no-owners") {
					opts = append(opts, iso.KeepOwners(false))
				}
				if err := iso.Extract(im, dest, c.Args().Slice()[2:], opts...); err != nil {
					return err
				}
				if e.JSON {
					return writeJSON(e, struct {
						Dest      string `json:"dest"`
						Entries   int64  `json:"entries"`
						Bytes     int64  `json:"bytes"`
						HardLinks int64  `json:"hard_links"`
					}{dest, files, bytes, links})
				}
				data := host.FormatSize(bytes) + " of file data"
				if links > 0 {
					data += fmt.Sprintf(", %d hard link(s)", links)
				}
				fmt.Fprintf(e.Out, "extracted %d entries (%s) to %s\n", files, data, dest)
				return nil
			}),
		},
	)
}

// isoJSON: --json given globally or after the command.
func isoJSON(c *cli.Context) bool {
	for _, x := range c.Lineage() {
		if x.Bool("json") {
			return true
		}
	}
	return false
}

// openISO opens the image named on the command line.
func openISO(e *env, arg string) (*iso.Image, error) {
	p, err := hostArgPath(e, arg)
	if err != nil {
		return nil, err
	}
	im, err := iso.Open(p)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// No image where the command line names one (missing, a
		// directory, a FIFO) is a usage error, as for setup --iso.
		if errors.Is(err, fs.ErrNotExist) {
			return nil, host.Usage("cannot open image %s: no such file", p)
		}
		if errors.Is(err, host.ErrNotRegular) || errors.Is(err, syscall.EISDIR) {
			return nil, host.Usage("cannot open image %s: %v", p, pe.Err)
		}
		return nil, fmt.Errorf("cannot open image %s: %w", p, pe.Err)
	}
	return im, err
}

// closeISO closes an image opened by openISO and says which damaged entries
// the command skipped (warnings: the exit code stays as it is).
func closeISO(e *env, im *iso.Image) {
	for _, w := range im.Warnings() {
		fmt.Fprintf(e.Err, "upgradectl: warning: %s\n", host.OneLine(w))
	}
	im.Close()
}

// isoPathErr makes an error about a path inside an image one line that
// names both.
func isoPathErr(img, p string, err error) error {
	if host.KindOf(err) != 0 {
		return err // the image is corrupt: its own message
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrNotExist) {
		return host.Bad("cannot read %s in %s: not in the image", p, img)
	}
	if errors.Is(err, fs.ErrInvalid) {
		return host.Usage("cannot read %s in %s: not a valid path in an image (slash-separated, no ..)", p, img)
	}
	return host.Bad("cannot read %s in %s: %v", p, img, err)
}

// isoImagePath turns a command-line path in an image ("/a/b", "a/b/") into
// an io/fs path ("a/b").
func isoImagePath(p string) string {
	if clean, err := iso.ImagePath(p); err == nil {
		return clean
	}
	return p // refused by the reader, which names it
}

func printISOInfo(e *env, im *iso.Image, name string) error {
	info := im.Info()
	id, idErr := iso.IdentityOf(im, filepath.Base(name))
	if host.KindOf(idErr) != 0 {
		return idErr // a corrupt image, not a missing identity
	}
	if e.JSON {
		out := struct {
			iso.Info
			Identity      *iso.Identity `json:"identity,omitempty"`
			IdentityError string        `json:"identity_error,omitempty"`
		}{Info: info}
		if idErr == nil {
			out.Identity = &id
		} else {
			out.IdentityError = idErr.Error()
		}
		return json.NewEncoder(e.Out).Encode(out)
	}
	yes := map[bool]string{true: "yes", false: "no"}
	date := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "image:\t%s\n", info.Path)
	fmt.Fprintf(tw, "volume id:\t%s\n", info.VolumeID)
	fmt.Fprintf(tw, "volume size:\t%s (%d blocks of %d bytes)\n", host.FormatSize(info.VolumeSize), info.VolumeBlocks, info.BlockSize)
	fmt.Fprintf(tw, "file size:\t%s (%d bytes)\n", host.FormatSize(info.FileSize), info.FileSize)
	fmt.Fprintf(tw, "created:\t%s\n", date(info.Created))
	fmt.Fprintf(tw, "modified:\t%s\n", date(info.Modified))
	if info.Preparer != "" {
		fmt.Fprintf(tw, "prepared by:\t%s\n", info.Preparer)
	}
	fmt.Fprintf(tw, "rock ridge:\t%s\n", yes[info.RockRidge])
	fmt.Fprintf(tw, "joliet:\t%s\n", yes[info.Joliet])
	fmt.Fprintf(tw, "bootable:\t%s\n", yes[info.Bootable])
	fmt.Fprintf(tw, "embedded md5:\t%s\n", yes[info.EmbeddedMD5])
	if idErr == nil {
		fmt.Fprintf(tw, "product:\ttype %s, version %s, arch %s (from the %s)\n", id.Type, id.Version, host.OrDash(id.Arch), id.Source)
	} else {
		fmt.Fprintf(tw, "product:\tunknown: %v\n", idErr)
	}
	return tw.Flush()
}

// isoRow is one line of "iso ls".
type isoRow struct {
	Path   string    `json:"path"`
	Type   string    `json:"type"`
	Mode   string    `json:"mode"` // octal permission bits with set-id and sticky bits
	Size   int64     `json:"size"`
	MTime  time.Time `json:"mtime"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Nlink  uint32    `json:"nlink"`
	Ino    uint64    `json:"ino"`
	Target string    `json:"target,omitempty"`
	entry  *iso.Entry
}

// isoList lists p: a directory's entries (recursively with rec), or p
// itself.
func isoList(im *iso.Image, p string, rec bool) ([]isoRow, error) {
	p = isoImagePath(p)
	e, err := im.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !e.IsDir() {
		return []isoRow{isoRowOf(p, e)}, nil
	}
	var rows []isoRow
	err = fs.WalkDir(im, p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if q == p {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rows = append(rows, isoRowOf(q, fi.Sys().(*iso.Entry)))
		if d.IsDir() && !rec {
			return fs.SkipDir
		}
		return nil
	})
	return rows, err
}

func isoRowOf(p string, e *iso.Entry) isoRow {
	typ, _ := fileType(e.Mode)
	mode := uint32(e.Mode.Perm())
	for bit, m := range map[fs.FileMode]uint32{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if e.Mode&bit != 0 {
			mode |= m
		}
	}
	return isoRow{Path: path.Clean(p), Type: typ, Mode: fmt.Sprintf("%04o", mode), Size: e.Size,
		MTime: e.ModTime, UID: e.UID, GID: e.GID, Nlink: e.Nlink, Ino: e.Ino, Target: e.Target, entry: e}
}

func printISOList(e *env, rows []isoRow, long bool) error {
	if e.JSON {
		return encodeList(e.Out, rows)
	}
	if !long {
		for _, r := range rows {
			fmt.Fprintln(e.Out, host.OneLine(r.Path))
		}
		return nil
	}
	// As ls -l prints it: type and permissions, links, owner, group, size
	// (major, minor for a device), date, name -> target; the numbers
	// right-aligned in columns as wide as their widest.
	cells := make([][5]string, len(rows))
	var width [5]int
	for i, r := range rows {
		size := strconv.FormatInt(r.Size, 10)
		if r.entry.Mode&fs.ModeDevice != 0 {
			major, minor := r.entry.Device()
			size = fmt.Sprintf("%d, %d", major, minor)
		}
		cells[i] = [5]string{lsMode(r.entry.Mode), strconv.Itoa(int(r.Nlink)), strconv.Itoa(int(r.UID)), strconv.Itoa(int(r.GID)), size}
		for j, c := range cells[i] {
			width[j] = max(width[j], len(c))
		}
	}
	for i, r := range rows {
		c := cells[i]
		name := host.OneLine(r.Path)
		if r.Type == "symlink" {
			name += " -> " + host.OneLine(r.Target)
		}
		fmt.Fprintf(e.Out, "%-*s %*s %*s %*s %*s %s %s\n", width[0], c[0], width[1], c[1], width[2], c[2], width[3], c[3], width[4], c[4],
			r.MTime.UTC().Format("2006-01-02 15:04"), name)
	}
	return nil
}

// fileType names the type of a mode as iso ls --json does and as ls -l
// writes its letter.
func fileType(m fs.FileMode) (string, byte) {
	switch t := m.Type(); {
	case t == fs.ModeDir:
		return "dir", 'd'
	case t == fs.ModeSymlink:
		return "symlink", 'l'
	case t&fs.ModeCharDevice != 0:
		return "char-device", 'c'
	case t&fs.ModeDevice != 0:
		return "block-device", 'b'
	case t == fs.ModeNamedPipe:
		return "fifo", 'p'
	case t == fs.ModeSocket:
		return "socket", 's'
	}
	return "file", '-'
}

// lsMode is a mode as ls -l writes it: the type letter, then rwx for user,
// group and others with s, S, t and T for the set-id and sticky bits.
func lsMode(m fs.FileMode) string {
	_, typ := fileType(m)
	b := []byte{typ}
	for i, special := range []fs.FileMode{fs.ModeSetuid, fs.ModeSetgid, fs.ModeSticky} {
		shift := uint(6 - 3*i)
		r, w, x := m&(4<<shift) != 0, m&(2<<shift) != 0, m&(1<<shift) != 0
		b = append(b, "-r"[boolInt(r)], "-w"[boolInt(w)])
		set := m&special != 0
		switch {
		case set && i == 2 && x:
			b = append(b, 't')
		case set && i == 2:
			b = append(b, 'T')
		case set && x:
			b = append(b, 's')
		case set:
			b = append(b, 'S')
		default:
			b = append(b, "-x"[boolInt(x)])
		}
	}
	return string(b)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// isoCat copies the file at p (following symlinks) to w.
func isoCat(w io.Writer, im *iso.Image, p string) error {
	fi, err := im.Stat(isoImagePath(p))
	if err != nil {
		return err
	}
	en := fi.Sys().(*iso.Entry)
	if !en.Mode.IsRegular() {
		return fmt.Errorf("not a regular file (%s)", isoRowOf(p, en).Type)
	}
	_, err = io.Copy(w, im.OpenEntry(en))
	return err
}
