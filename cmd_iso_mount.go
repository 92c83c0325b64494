package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
	"upgradectl/iso"
)

func init() {
	registerISO(
		&cli.Command{
			Name:      "mount",
			Usage:     "mount an image read-only (kernel loop mount, or FUSE where the kernel has no iso9660)",
			ArgsUsage: "ISO DIR",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "method", Usage: "`METHOD`: kernel or fuse (default: kernel, falling back to fuse)"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() != 2 {
					return host.Usage("iso mount needs ISO and DIR")
				}
				img, err := hostArgPath(e, c.Args().Get(0))
				if err != nil {
					return err
				}
				dir, err := hostArgPath(e, c.Args().Get(1))
				if err != nil {
					return err
				}
				return isoWithLock(e, func() error {
					rec, err := iso.Mount(img, dir, e.mountOptions(c.String("method")))
					if err != nil {
						return err
					}
					if e.JSON {
						return json.NewEncoder(e.Out).Encode(rec)
					}
					how := rec.Method
					if rec.Device != "" {
						how += " " + rec.Device
					}
					fmt.Fprintf(e.Out, "mounted %s on %s (%s, read-only)\n", rec.Image, rec.Dir, how)
					return nil
				})
			}),
		},
		&cli.Command{
			Name:      "umount",
			Usage:     "unmount an image mounted with 'iso mount' and stop its FUSE server",
			ArgsUsage: "DIR | --all",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Usage: "unmount every recorded mount"},
				&cli.BoolFlag{Name: "lazy", Usage: "detach a busy mount now, free it when no longer used"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				if c.Bool("all") == (c.NArg() == 1) || c.NArg() > 1 {
					return host.Usage("iso umount needs DIR or --all")
				}
				return isoWithLock(e, func() error {
					o := e.mountOptions("")
					if c.Bool("all") {
						err := iso.UnmountAll(c.Bool("lazy"), o)
						if err == nil && e.JSON {
							return writeJSON(e, map[string]bool{"unmounted_all": true})
						}
						return err
					}
					dir, err := hostArgPath(e, c.Args().Get(0))
					if err != nil {
						return err
					}
					if err := iso.Unmount(dir, c.Bool("lazy"), o); err != nil {
						return err
					}
					if e.JSON {
						return writeJSON(e, map[string]string{"unmounted": dir})
					}
					fmt.Fprintf(e.Out, "unmounted %s\n", c.Args().Get(0))
					return nil
				})
			}),
		},
		&cli.Command{
			Name:  "mounts",
			Usage: "list the images mounted with 'iso mount'; records of mounts that are gone are reported and dropped",
			Action: action(func(c *cli.Context, e *env) error {
				ms, err := iso.Mounts(e.State())
				if err != nil {
					return err
				}
				// Drop stale records when there are any and the lock is
				// free: listing never waits, and takes the lock (which
				// makes a concurrent command busy) only when it must.
				stale := slices.ContainsFunc(ms, func(m iso.MountRecord) bool { return m.State == iso.StateStale })
				if stale {
					if lock, lerr := host.LockStateDir(e.State()); lerr == nil {
						gone, cerr := iso.CleanStaleMounts(e.State(), e.Log())
						lock.Unlock()
						if cerr != nil {
							return cerr
						}
						for _, m := range gone {
							fmt.Fprintf(e.Err, "upgradectl: %s on %s is no longer mounted: record dropped\n", m.Image, m.Dir)
						}
					}
				}
				if e.JSON {
					return encodeList(e.Out, ms)
				}
				tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DIR\tIMAGE\tMETHOD\tDEVICE/PID\tMOUNTED\tSTATE")
				for _, m := range ms {
					dev := m.Device
					if m.PID != 0 {
						dev = fmt.Sprint(m.PID)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Dir, m.Image, m.Method, dev,
						m.MountedAt.Local().Format("2006-01-02 15:04:05"), m.State)
				}
				return tw.Flush()
			}),
		},
		&cli.Command{
			Name:      "serve-fuse",
			Hidden:    true,
			Usage:     "serve one FUSE mount of an image (started by 'iso mount')",
			ArgsUsage: "ISO DIR",
			Flags:     []cli.Flag{&cli.IntFlag{Name: "ready-fd", Value: -1}},
			Action: func(c *cli.Context) error {
				if c.NArg() != 2 {
					return host.Usage("iso serve-fuse needs ISO and DIR")
				}
				ready := os.NewFile(uintptr(c.Int("ready-fd")), "ready")
				if c.Int("ready-fd") < 0 || ready == nil {
					ready = os.Stdout
				}
				return iso.ServeFUSE(c.Args().Get(0), c.Args().Get(1), ready)
			},
		},
	)
}

func (e *env) mountOptions(method string) iso.MountOptions {
	return iso.MountOptions{Method: method, StateDir: e.State(), Root: e.Root, Log: e.Log()}
}

// isoWithLock runs f holding the state-directory lock.
func isoWithLock(e *env, f func() error) error {
	lock, err := host.LockStateDir(e.State())
	if err != nil {
		return err
	}
	defer lock.Unlock()
	return f()
}
