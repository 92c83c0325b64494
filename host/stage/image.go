package stage

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"upgradectl/host"
)

// The image's way into the staging directory (iso.staging_dir) and out of
// it. The copy is read once, its MD5 computed in the same pass, written
// under a temporary name, synced and renamed into place; the MD5 is kept in
// the state so that preinstall can verify the staged image again.

const varImageMD5 = "image_md5"

func (a *actions) stageImage(r *Run) (string, error) {
	src := r.State.Var(VarISO)
	if src == "" {
		return "", host.Usage("cannot stage the image: none given (upgradectl setup --iso IMAGE)")
	}
	dir := a.h.Root.Path(a.h.Config.ISO.StagingDir)
	dst := filepath.Join(dir, filepath.Base(src))
	if img := r.State.Var(VarImage); img != "" && r.State.Var(varImageMD5) != "" {
		if _, err := os.Stat(img); err == nil {
			return img, r.Step("iso stage", func() (string, error) { return img + " staged already", nil })
		}
	}
	// Where the copy goes is recorded before it is made, so that an undo
	// after a crash in the middle finds it.
	if err := r.SetVar(VarImage, dst); err != nil {
		return "", err
	}
	err := r.Step("iso stage", func() (string, error) {
		sum, n, err := copyImage(src, dst)
		if err != nil {
			return "", err
		}
		if err := r.SetVar(varImageMD5, sum); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s staged as %s (%s, md5 %s)", src, dst, host.FormatSize(n), sum), nil
	})
	return dst, err
}

// copyImage copies src to dst durably and returns the MD5 of what it copied.
func copyImage(src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, host.Bad("cannot stage %s: %v", src, errors.Unwrap(err))
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return "", 0, err
	}
	if !fi.Mode().IsRegular() {
		return "", 0, host.Usage("cannot stage %s: not a regular file", src)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, host.CannotRun("cannot create staging directory %s: %v", dir, errors.Unwrap(err))
	}
	tmp := stagingTemp(dst)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", 0, host.CannotRun("cannot stage %s: %v", src, err)
	}
	defer os.Remove(tmp)
	h := md5.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("cannot stage %s in %s: %w", src, dir, err)
	}
	if n != fi.Size() {
		return "", 0, host.Bad("cannot stage %s: read %d bytes of %d", src, n, fi.Size())
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", 0, err
	}
	if err := host.SyncDir(dir); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// stagingTemp is the name a staged image is written under.
func stagingTemp(dst string) string {
	return filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".upgradectl-tmp")
}

// verifyImage checks the staged image against the MD5 taken when staged.
func (a *actions) verifyImage(r *Run) error {
	img, want := r.State.Var(VarImage), r.State.Var(varImageMD5)
	return r.Step("iso verify", func() (string, error) {
		f, err := os.Open(img)
		if err != nil {
			return "", host.Bad("cannot verify the staged image %s: %v", img, errors.Unwrap(err))
		}
		defer f.Close()
		h := md5.New()
		if _, err := io.Copy(h, f); err != nil {
			return "", host.CannotRun("cannot verify the staged image %s: %v", img, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return "", host.Bad("staged image %s has md5 %s, it had %s when staged", img, got, want)
		}
		return fmt.Sprintf("%s md5 %s as staged", img, want), nil
	})
}

// removeImage deletes the staged image.
func (a *actions) removeImage(r *Run) error {
	img := r.State.Var(VarImage)
	if img == "" {
		return nil
	}
	if err := r.Step("iso remove", func() (string, error) {
		for _, p := range []string{stagingTemp(img), img} {
			if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err := host.RemoveDurable(p); err != nil {
				return "", fmt.Errorf("cannot remove the staged image %s: %w", p, err)
			}
		}
		return img + " removed", nil
	}); err != nil {
		return err
	}
	if err := r.SetVar(varImageMD5, ""); err != nil {
		return err
	}
	return r.SetVar(VarImage, "")
}
