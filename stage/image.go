package stage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"upgradectl/checksum"
	"upgradectl/host"
	"upgradectl/iso"
	"upgradectl/trust"
)

// The image's way into the staging directory (iso.staging_dir) and out of
// it, through the iso package: staged with its digest checked against the
// checksum file beside it (or --sums / --md5 / --sha256), verified again in
// preinstall against the digest it was staged with, removed by clean or by
// undo of setup.

// More shared values.
const (
	VarSums         = "sums"          // setup --sums: the checksum file
	VarMD5          = "md5"           // setup --md5: the expected digest
	VarSHA256Digest = "sha256_digest" // setup --sha256: the expected digest
	// varImageDigest is the digest the image was staged with, in hex (its
	// length gives its algorithm); its name is from when it was an MD5.
	varImageDigest = "image_md5"
)

// stagingDir is the staging directory on the running system, resolved
// inside the root.
func (a *actions) stagingDir() (string, error) {
	dir, err := a.h.Root.Resolve(a.h.Config.ISO.StagingDir)
	if err != nil {
		return "", host.CannotRun("cannot use staging directory %s: %v", a.h.Config.ISO.StagingDir, err)
	}
	return dir, nil
}

func (a *actions) stageImage(r *Run) (string, error) {
	src := r.State.Var(VarISO)
	if src == "" {
		return "", host.Usage("cannot stage the image: none given (upgradectl setup --iso IMAGE)")
	}
	dir, err := a.stagingDir()
	if err != nil {
		return "", err
	}
	// Where the copy goes is recorded before it is made, so that an undo
	// after a crash in the middle removes it.
	dst := filepath.Join(dir, filepath.Base(src))
	if err := r.SetVar(VarImage, dst); err != nil {
		return "", err
	}
	var rec iso.StagedImage
	err = r.Step("iso stage", func() (string, error) {
		tr, err := LoadTrust(a.h.Root, a.h.Config, false)
		if err != nil {
			return "", err
		}
		rec, err = iso.Stage(r.Ctx, src, iso.StageOptions{StagingDir: dir, HostType: a.h.Config.Product.Type,
			HostVersion: r.State.OldVersion, MD5: r.State.Var(VarMD5), SHA256: r.State.Var(VarSHA256Digest),
			Sums: r.State.Var(VarSums), Trust: tr})
		if err != nil {
			return "", err
		}
		signed := "not signed"
		if rec.Signer != nil {
			signed = "signed by " + rec.Signer.String()
		}
		if err := r.SetVar(VarSigner, signed); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s staged as %s (%s, %s, %s)", src, filepath.Join(dir, rec.Name), host.FormatSize(rec.Size), iso.DigestText(rec.Digest), signed), nil
	})
	if err != nil {
		return "", err
	}
	if err := r.SetVar(varImageDigest, rec.Digest.String()); err != nil {
		return "", err
	}
	return filepath.Join(dir, rec.Name), nil
}

// VarSigner says who signed the checksum file of the staged image.
const VarSigner = "signer"

// LoadTrust is the signature policy of the configuration: the keys of
// iso.keys_dir under the root, and iso.require_signature (or require).
func LoadTrust(root host.Root, cfg *host.Config, require bool) (iso.Trust, error) {
	tr := iso.Trust{Require: require || cfg.ISO.RequireSignature}
	if cfg.ISO.KeysDir == "" {
		return tr, nil
	}
	dir, err := root.Resolve(cfg.ISO.KeysDir)
	if err != nil {
		return tr, host.CannotRun("cannot use keys directory %s: %v", cfg.ISO.KeysDir, err)
	}
	tr.Keys, err = trust.LoadKeys(dir)
	return tr, err
}

// verifyImage checks the staged image against the digest it was staged
// with.
func (a *actions) verifyImage(r *Run) error {
	img := r.State.Var(VarImage)
	return r.Step("iso verify", func() (string, error) {
		want, err := checksum.ParseDigest(r.State.Var(varImageDigest))
		if err != nil {
			return "", host.CannotRun("cannot verify the staged image %s: the digest it was staged with: %v", img, err)
		}
		rep, err := iso.Verify(r.Ctx, iso.VerifyOptions{Files: []string{img}, Digest: want})
		if err != nil {
			return "", err
		}
		res := rep.Results[0]
		if !res.OK {
			why := res.Status
			if len(res.Problems) > 0 {
				why = res.Problems[0]
			}
			return "", host.Bad("staged image %s does not verify: %s", img, why)
		}
		return fmt.Sprintf("%s %s as staged", img, iso.DigestText(want)), nil
	})
}

// removeImage deletes the staged image, and a copy a crash left unfinished.
func (a *actions) removeImage(r *Run) error {
	img := r.State.Var(VarImage)
	if img == "" {
		return nil
	}
	if err := r.Step("iso remove", func() (string, error) {
		imgs, err := iso.StagedImages(filepath.Dir(img))
		if err != nil {
			return "", err
		}
		var removed []string
		for _, im := range imgs {
			if im.Name != filepath.Base(img) && !strings.HasPrefix(im.Name, "."+filepath.Base(img)+".partial-") {
				continue
			}
			gone, err := iso.RemoveStaged(filepath.Dir(img), im.Name, false, nil)
			if err != nil {
				return "", err
			}
			removed = append(removed, gone...)
		}
		if _, err := os.Stat(img); err == nil {
			return "", host.CannotRun("cannot remove the staged image %s: it is still there", img)
		}
		if len(removed) == 0 {
			return "not staged", nil
		}
		return fmt.Sprintf("%v removed from %s", removed, filepath.Dir(img)), nil
	}); err != nil {
		return err
	}
	if err := r.SetVar(varImageDigest, ""); err != nil {
		return err
	}
	return r.SetVar(VarImage, "")
}
