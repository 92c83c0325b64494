package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"upgradectl/host"
	"upgradectl/iso"
	"upgradectl/stage"
)

func init() {
	registerISO(
		&cli.Command{
			Name:      "stage",
			Usage:     "copy an image into the staging directory, verified against its checksum, refusing images of another type and a second image of one type",
			ArgsUsage: "ISO",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "sums", Usage: "checksum `FILE` (default: the first beside it that lists it of ISO.md5, ISO-without-.iso.md5, SHA512SUMS, SHA256SUMS, md5sum.out, MD5SUMS)"},
				&cli.StringFlag{Name: "md5", Usage: "the image's MD5 as `HEX`, instead of a checksum file"},
				&cli.StringFlag{Name: "sha256", Usage: "the image's SHA-256 as `HEX`, instead of a checksum file"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				if c.NArg() != 1 {
					return host.Usage("iso stage needs one ISO")
				}
				if err := oneDigestSource(c, "iso stage"); err != nil {
					return err
				}
				src, err := hostArgPath(e, c.Args().First())
				if err != nil {
					return err
				}
				o, err := e.stageOptions()
				if err != nil {
					return err
				}
				o.MD5, o.SHA256 = c.String("md5"), c.String("sha256")
				if s := c.String("sums"); s != "" {
					if o.Sums, err = hostArgPath(e, s); err != nil {
						return err
					}
				}
				if f, ok := e.Err.(*os.File); ok {
					o.Progress = iso.NewProgressBar(e.Err, isTerminal(f), "staging")
				}
				// Interrupted, the copy stops, its partial file is removed
				// and the stage is logged as failed.
				ctx, stop := signalContext()
				defer stop()
				return isoWithLock(e, func() error {
					rec, err := iso.Stage(ctx, src, o)
					if err != nil {
						return err
					}
					if e.JSON {
						return json.NewEncoder(e.Out).Encode(rec)
					}
					fmt.Fprintf(e.Out, "staged %s: %s %s (%s), %s, in %s\n", rec.Name, rec.Type, rec.Version,
						host.FormatSize(rec.Size), iso.DigestText(rec.Digest), o.StagingDir)
					return nil
				})
			}),
		},
		&cli.Command{
			Name:  "list",
			Usage: "list the images in the staging directory",
			Action: action(func(c *cli.Context, e *env) error {
				o, err := e.stageOptions()
				if err != nil {
					return err
				}
				imgs, err := iso.StagedImages(o.StagingDir)
				if err != nil {
					return err
				}
				if e.JSON {
					return encodeList(e.Out, imgs)
				}
				tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTYPE\tVERSION\tARCH\tSIZE\tVERIFIED\tSTATE")
				for _, im := range imgs {
					verified := ""
					if !im.VerifiedAt.IsZero() {
						verified = im.VerifiedAt.Local().Format("2006-01-02 15:04:05")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.Name, im.Type, im.Version, im.Arch,
						host.FormatSize(im.Size), verified, im.State)
				}
				return tw.Flush()
			}),
		},
		&cli.Command{
			Name:      "remove",
			Usage:     "delete a staged image (or every one, and unfinished copies, with --all)",
			ArgsUsage: "NAME | --all",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Usage: "remove every image in the staging directory"},
				&cli.BoolFlag{Name: "force", Usage: "remove it even while the upgrade in progress uses it"},
			},
			Action: action(func(c *cli.Context, e *env) error {
				if c.Bool("all") == (c.NArg() == 1) || c.NArg() > 1 {
					return host.Usage("iso remove needs NAME or --all")
				}
				// The upgrade in progress installs from its staged image and
				// checks it at every stage: removed, the next stage fails.
				if upgrade, img, inUse := stage.ImageInUse(e.State()); inUse && !c.Bool("force") &&
					(c.Bool("all") || img == "" || filepath.Base(img) == c.Args().First()) {
					return host.WithHint(host.Refused("cannot remove staged images: the upgrade in progress (%s) uses %s", upgrade, host.OrDash(filepath.Base(img))),
						"finish the upgrade ('upgradectl continue') or undo it; --force removes it anyway")
				}
				o, err := e.stageOptions()
				if err != nil {
					return err
				}
				return isoWithLock(e, func() error {
					removed, err := iso.RemoveStaged(o.StagingDir, c.Args().First(), c.Bool("all"), e.Log())
					if !e.JSON {
						for _, n := range removed {
							fmt.Fprintf(e.Out, "removed %s\n", n)
						}
					} else if jerr := json.NewEncoder(e.Out).Encode(map[string]any{"removed": append([]string{}, removed...)}); jerr != nil && err == nil {
						err = jerr
					}
					return err
				})
			}),
		},
	)
}

// stageOptions reads the staging directory and the host's identity from the
// configuration.
func (e *env) stageOptions() (iso.StageOptions, error) {
	dir := e.Config.ISO.StagingDir
	if dir == "" {
		dir = "/var/lib/upgradectl/iso"
	}
	real, err := e.Root.Resolve(dir)
	if err != nil {
		return iso.StageOptions{}, host.CannotRun("cannot use staging directory %s: %v", dir, err)
	}
	tr, err := stage.LoadTrust(e.Root, e.Config, false)
	if err != nil {
		return iso.StageOptions{}, err
	}
	return iso.StageOptions{StagingDir: real, HostType: e.Config.Product.Type,
		HostVersion: e.Config.Product.Version, Log: e.Log(), Trust: tr}, nil
}
