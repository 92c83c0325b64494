package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"upgradectl/host"
	"upgradectl/iso"
	"upgradectl/stage"
)

// registerISO adds subcommands to the iso command.
func registerISO(subs ...*cli.Command) {
	registerSub("iso", "images", "verify, read, mount and stage ISO images", subs...)
}

func init() {
	registerISO(&cli.Command{
		Name:      "verify",
		Usage:     "check images against their digest: --md5 or --sha256, a checksum file, and/or the MD5 embedded by implantisomd5",
		ArgsUsage: "FILE...",
		Description: "Each image is checked against --md5 HEX or --sha256 HEX (one image), the checksum file\n" +
			"--sums FILE, or a checksum file found beside it (IMAGE.md5, SHA512SUMS, SHA256SUMS,\n" +
			"md5sum.out, MD5SUMS), in the GNU md5sum/sha256sum/sha512sum, BSD tagged (openssl) or\n" +
			"build-machine (digest directly followed by a path) form, with MD5, SHA-256 and SHA-512\n" +
			"digests (the strongest one given for an image is checked); with --embedded also\n" +
			"against the MD5 implantisomd5 stored in it. Images are read once, several at a time.\n" +
			"Absolute paths are inside --root; relative ones are relative to the current directory.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "sums", Usage: "checksum `FILE` listing the images"},
			&cli.StringFlag{Name: "md5", Usage: "expected MD5 `HEX` of the one image"},
			&cli.StringFlag{Name: "sha256", Usage: "expected SHA-256 `HEX` of the one image"},
			&cli.BoolFlag{Name: "embedded", Usage: "check the MD5 implantisomd5 embedded in each image (fails early at a bad fragment)"},
			&cli.IntFlag{Name: "jobs", Usage: "verify `N` images at once", DefaultText: "one per CPU"},
			&cli.BoolFlag{Name: "require-signature", Usage: "fail an image whose checksum file is not signed by a key in iso.keys_dir (as iso.require_signature does)"},
		},
		Action: action(func(c *cli.Context, e *env) error {
			if c.IsSet("jobs") && c.Int("jobs") < 1 {
				return host.Usage("iso verify: --jobs %d is not 1 or more", c.Int("jobs"))
			}
			tr, err := stage.LoadTrust(e.Root, e.Config, c.Bool("require-signature"))
			if err != nil {
				return err
			}
			opts := iso.VerifyOptions{MD5: c.String("md5"), SHA256: c.String("sha256"), Embedded: c.Bool("embedded"), Jobs: c.Int("jobs"), Log: e.Log(), Trust: tr}
			shown := map[string]string{} // path on this system -> as given
			for _, a := range c.Args().Slice() {
				p, err := hostArgPath(e, a)
				if err != nil {
					return err
				}
				shown[p] = a
				opts.Files = append(opts.Files, p)
			}
			if s := c.String("sums"); s != "" {
				p, err := hostArgPath(e, s)
				if err != nil {
					return err
				}
				opts.Sums = p
			}
			if f, ok := e.Err.(*os.File); ok {
				opts.Progress = iso.NewProgressBar(e.Err, isTerminal(f), "verifying")
			}
			// Interrupted, the images done so far are still reported.
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := iso.Verify(ctx, opts)
			if err != nil && rep == nil {
				return err
			}
			if e.JSON {
				enc := json.NewEncoder(e.Out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				printVerify(e, rep, shown)
			}
			if rep.LogProblem != "" {
				fmt.Fprintf(e.Err, "upgradectl: warning: %s\n", rep.LogProblem)
			}
			if err != nil {
				return host.Bad("cannot finish verifying: %v", context.Cause(ctx))
			}
			if !rep.OK {
				err := host.Bad("%d of %d image(s) failed verification", rep.Failed, len(rep.Results))
				for _, r := range rep.Results {
					if r.Hint != "" {
						return host.WithHint(err, r.Hint)
					}
				}
				return err
			}
			return nil
		}),
	})
}

// hostArgPath turns an image path from the command line into a path on the
// running system: absolute paths are host paths inside the root, relative
// ones are relative to the working directory.
func hostArgPath(e *env, p string) (string, error) {
	if filepath.IsAbs(p) {
		return e.Root.Resolve(p)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", host.Usage("cannot use %s: %v", p, err)
	}
	return abs, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func printVerify(e *env, rep *iso.VerifyReport, shown map[string]string) {
	tw := tabwriter.NewWriter(e.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tRESULT\tDIGEST\tCHECKED AGAINST")
	for _, r := range rep.Results {
		name := shown[r.File]
		if name == "" {
			name = r.File
		}
		var against []string
		if r.Expected != "" {
			src := r.Source
			if r.Dialect != "" {
				src += ", " + r.Dialect + " form"
			}
			against = append(against, src)
		}
		if r.Embedded != nil {
			against = append(against, "embedded MD5 "+r.Embedded.Status)
		}
		digest := "-"
		if r.Digest != "" {
			digest = r.Algorithm + " " + r.Digest
		}
		result := strings.ToUpper(r.Status)
		if r.OK {
			result = "ok"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", host.OneLine(name), result, digest, host.OneLine(strings.Join(against, "; ")))
	}
	tw.Flush()
	for _, r := range rep.Results {
		name := shown[r.File]
		if name == "" {
			name = r.File
		}
		for _, p := range r.Problems {
			fmt.Fprintf(e.Out, "%s: %s\n", host.OneLine(name), host.OneLine(p))
		}
		for _, n := range r.Notes {
			fmt.Fprintf(e.Out, "%s: note: %s\n", host.OneLine(name), host.OneLine(n))
		}
	}
}
