package iso

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/checksum"
	"upgradectl/host"
	"upgradectl/trust"
)

// StagedIndex is the record of the staged images, in the staging directory.
const StagedIndex = "staged.json"

const stagedFormat = 1

// partialMark is in the names of copies not yet verified:
// ".NAME.partial-RANDOM" in the staging directory.
const partialMark = ".partial-"

// Staged image states, as StagedImage.State reports them.
const (
	StagedOK         = "staged"
	StagedMissing    = "missing"    // recorded, but the file is gone
	StagedChanged    = "changed"    // recorded, but the file's size differs
	StagedUnrecorded = "unrecorded" // an image file upgradectl did not stage
	StagedPartial    = "partial"    // a copy that was never finished
)

// StagedImage is one image in the staging directory.
type StagedImage struct {
	Name string `json:"name"` // file name in the staging directory
	Identity
	Size int64 `json:"size"`
	// Digest is the image's digest as verified when staged: of the
	// algorithm its checksum file gave (the strongest), or of --md5 or
	// --sha256. Records written before SHA-256 was read hold an MD5 under
	// "md5".
	Digest     checksum.Digest `json:"digest"`
	VerifiedAt time.Time       `json:"verified_at"`
	From       string          `json:"from,omitempty"` // where it was staged from
	// Signer signed the checksum file its digest came from; nil: not
	// signed (or --md5).
	Signer *trust.Signer `json:"signer,omitempty"`
	// State is worked out when the index is read, never stored.
	State string `json:"state,omitempty"`
}

type stagedFile struct {
	Format int           `json:"format"`
	Images []StagedImage `json:"images"`
}

// StageOptions are what Stage needs besides the source image.
type StageOptions struct {
	// StagingDir is the staging directory on the running system; the
	// caller holds the state lock.
	StagingDir string
	// HostType and HostVersion are this host's product identity; empty
	// when not configured (nothing is then checked against it).
	HostType, HostVersion string
	// MD5 or SHA256 is the image's expected digest in hex (--md5,
	// --sha256); when both are empty it comes from the checksum file Sums,
	// or from one found beside the image (IMAGE.md5, SHA512SUMS,
	// SHA256SUMS, md5sum.out, MD5SUMS).
	MD5, SHA256 string
	Sums        string
	Log         *host.UpgradeLog
	// Progress, when set, follows the copy.
	Progress ProgressSink
	// Trust is the signature policy for the checksum file.
	Trust Trust
}

func readStaged(dir string) ([]StagedImage, error) {
	p := filepath.Join(dir, StagedIndex)
	b, err := host.ReadRegularFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, host.CannotRun("cannot read %s: %v", p, unwrapPath(err))
	}
	var f stagedFile
	// Records written before SHA-256 was read have their MD5 as "md5".
	var old struct {
		Images []struct {
			MD5 checksum.Digest `json:"md5"`
		} `json:"images"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, host.CannotRun("cannot read %s: %v", p, err)
	}
	if err := json.Unmarshal(b, &old); err != nil {
		return nil, host.CannotRun("cannot read %s: %v", p, err)
	}
	if f.Format != stagedFormat {
		return nil, host.CannotRun("cannot read %s: format %d, this upgradectl knows %d", p, f.Format, stagedFormat)
	}
	for i := range f.Images {
		if f.Images[i].Digest.IsZero() && i < len(old.Images) {
			f.Images[i].Digest = old.Images[i].MD5
		}
	}
	return f.Images, nil
}

func writeStaged(dir string, imgs []StagedImage) error {
	clean := make([]StagedImage, len(imgs))
	for i, im := range imgs {
		im.State = ""
		clean[i] = im
	}
	b, err := json.MarshalIndent(stagedFile{Format: stagedFormat, Images: clean}, "", "  ")
	if err != nil {
		return err
	}
	return host.WriteFileAtomic(filepath.Join(dir, StagedIndex), append(b, '\n'), 0o644)
}

// StagedImages lists the staging directory: the recorded images with their
// state, then image files and unfinished copies that are not recorded. A
// directory that does not exist is empty.
func StagedImages(dir string) ([]StagedImage, error) {
	imgs, err := readStaged(dir)
	if err != nil {
		return nil, err
	}
	recorded := map[string]bool{}
	for i := range imgs {
		recorded[imgs[i].Name] = true
		fi, err := os.Lstat(filepath.Join(dir, imgs[i].Name))
		switch {
		case err != nil || !fi.Mode().IsRegular():
			imgs[i].State = StagedMissing
		case fi.Size() != imgs[i].Size:
			imgs[i].State = StagedChanged
		default:
			imgs[i].State = StagedOK
		}
	}
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, host.CannotRun("cannot list %s: %v", dir, unwrapPath(err))
	}
	for _, de := range des {
		n := de.Name()
		if recorded[n] || !de.Type().IsRegular() {
			continue
		}
		st := ""
		switch {
		case strings.HasPrefix(n, ".") && strings.Contains(n, partialMark):
			st = StagedPartial
		case strings.EqualFold(filepath.Ext(n), ".iso"):
			st = StagedUnrecorded
		default:
			continue
		}
		im := StagedImage{Name: n, State: st}
		if fi, err := de.Info(); err == nil {
			im.Size = fi.Size()
		}
		if st == StagedUnrecorded {
			im.Identity, _ = ParseImageName(n)
		}
		imgs = append(imgs, im)
	}
	return imgs, nil
}

// Stage copies the image src into the staging directory, computing its
// digest in the same pass (of the algorithm of the expected digest: --md5,
// --sha256, or the strongest the checksum file gives), and puts it in
// place under its own name only when the digest matches. It refuses an
// image of another product type than this host's, one that does not
// upgrade this host's version (when its manifest says what it upgrades),
// and a second image of a type already staged. Checks that need no copying come first; free space is
// checked before the copy.
func Stage(ctx context.Context, src string, o StageOptions) (rec StagedImage, err error) {
	start := time.Now()
	defer func() {
		logAction(o.Log, "iso stage", filepath.Base(src), start, err,
			fmt.Sprintf("%s %s %s, %s", rec.Name, rec.Type, rec.Version, DigestText(rec.Digest)))
	}()
	abs, err := filepath.Abs(src)
	if err != nil {
		return rec, host.Usage("cannot stage %s: %v", src, err)
	}
	name := filepath.Base(abs)
	fi, err := os.Stat(abs)
	if err != nil {
		return rec, host.Bad("cannot stage %s: %v", src, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return rec, host.Usage("cannot stage %s: not a regular file", src)
	}
	if strings.HasPrefix(name, ".") || name == StagedIndex {
		return rec, host.Usage("cannot stage %s: a hidden name or the index name is not an image name", src)
	}
	want, signer, err := expectedDigest(abs, o)
	if err != nil {
		return rec, err
	}
	id, err := identityOfFile(abs, name)
	if err != nil {
		return rec, host.Bad("cannot stage %s: %v", src, err)
	}
	rec = StagedImage{Name: name, Identity: id, Size: fi.Size(), From: abs, Signer: signer}
	if err := checkHost(src, id, o); err != nil {
		return rec, err
	}
	staged, err := readStaged(o.StagingDir)
	if err != nil {
		return rec, err
	}
	for _, s := range staged {
		dst := filepath.Join(o.StagingDir, s.Name)
		if s.Name == name {
			if fi, err := os.Stat(dst); err == nil && fi.Size() == rec.Size && s.Digest == want {
				// Already staged, by the record; the copy itself is read
				// again, as it may have been damaged since.
				if d, _, err := sumFile(ctx, want.Algorithm(), dst, nil); err == nil && d == want {
					return s, nil
				}
			}
			continue // replaced below
		}
		if SameType(s.Type, id.Type) {
			if _, err := os.Stat(dst); err != nil {
				continue // recorded but gone: it does not count
			}
			return rec, host.WithHint(host.Refused("cannot stage %s: %s of type %s is already staged", src, s.Name, s.Type),
				"remove it first: upgradectl iso remove "+s.Name)
		}
	}

	if err := os.MkdirAll(o.StagingDir, 0o755); err != nil {
		return rec, host.CannotRun("cannot create staging directory %s: %v", o.StagingDir, unwrapPath(err))
	}
	if err := removePartials(o.StagingDir, name); err != nil {
		return rec, err
	}
	if inStagingDir(abs, o.StagingDir) {
		// Copied there by hand (as the vendor procedure does): verify it
		// where it is and record it, no second copy.
		if rec.Digest, err = hashInPlace(ctx, want.Algorithm(), abs, o.Progress); err != nil {
			return rec, err
		}
		if err := mismatch(src, rec.Digest, want); err != nil {
			return rec, err
		}
		return rec, recordStaged(o.StagingDir, staged, &rec)
	}
	if err := checkFree(o.StagingDir, src, rec.Size); err != nil {
		return rec, err
	}
	checkFreeHook()
	var progress func(int)
	if o.Progress != nil {
		o.Progress.Start(rec.Size)
		progress = o.Progress.Add
	}
	tmp, got, err := copyHashing(ctx, want.Algorithm(), abs, o.StagingDir, name, progress)
	if o.Progress != nil {
		o.Progress.Done()
	}
	if err != nil {
		return rec, err
	}
	keep := false
	defer func() {
		if !keep {
			os.Remove(tmp)
		}
	}()
	rec.Digest = got
	if err := mismatch(src, got, want); err != nil {
		return rec, err
	}
	// What is put in place is what was verified: read its identity again
	// from the copy.
	if id2, err := identityOfFile(tmp, name); err != nil || id2.Type != id.Type || id2.Version != id.Version {
		return rec, host.Bad("cannot stage %s: the image changed while it was copied", src)
	}
	dst := filepath.Join(o.StagingDir, name)
	if err := os.Rename(tmp, dst); err != nil {
		return rec, host.CannotRun("cannot stage %s: %v", src, unwrapPath(err))
	}
	keep = true
	if err := host.SyncDir(o.StagingDir); err != nil {
		return rec, err
	}
	return rec, recordStaged(o.StagingDir, staged, &rec)
}

// recordStaged adds rec, just verified, to the index in place of any
// record of the same name.
func recordStaged(dir string, staged []StagedImage, rec *StagedImage) error {
	rec.VerifiedAt = time.Now().UTC().Truncate(time.Second)
	var out []StagedImage
	for _, s := range staged {
		if s.Name != rec.Name {
			out = append(out, s)
		}
	}
	out = append(out, *rec)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if err := writeStaged(dir, out); err != nil {
		return err
	}
	rec.State = StagedOK
	return nil
}

// inStagingDir reports whether the file at abs is directly in dir.
func inStagingDir(abs, dir string) bool {
	a, err1 := filepath.EvalSymlinks(filepath.Dir(abs))
	d, err2 := filepath.EvalSymlinks(dir)
	return err1 == nil && err2 == nil && a == d
}

// DigestText shows a digest with its algorithm: "sha256 HEX".
func DigestText(d checksum.Digest) string {
	if d.IsZero() {
		return "no digest"
	}
	return d.Algorithm().Flag() + " " + d.String()
}

// mismatch is the error for an image whose digest got is not want.
func mismatch(src string, got, want checksum.Digest) error {
	if got == want {
		return nil
	}
	return host.Bad("cannot stage %s: its %s is %s, the checksum says %s", src, got.Algorithm(), got, want)
}

func hashInPlace(ctx context.Context, alg checksum.Algorithm, path string, p ProgressSink) (checksum.Digest, error) {
	var progress func(int)
	if p != nil {
		if fi, err := os.Stat(path); err == nil {
			p.Start(fi.Size())
		}
		progress = p.Add
		defer p.Done()
	}
	d, _, err := sumFile(ctx, alg, path, progress)
	if err != nil {
		return d, host.CannotRun("cannot stage %s: %v", path, unwrapPath(err))
	}
	return d, nil
}

// expectedDigest is the image's digest from --md5 or --sha256, the named
// checksum file, or a checksum file beside the image (the strongest it
// gives).
func expectedDigest(image string, o StageOptions) (checksum.Digest, *trust.Signer, error) {
	d, flag, err := givenDigest(o.MD5, o.SHA256, checksum.Digest{})
	switch {
	case err != nil:
		return d, nil, host.Usage("cannot stage %s: %v", image, err)
	case flag != "" && o.Trust.Require:
		return d, nil, host.WithHint(host.Bad("cannot stage %s: a signature is required, and a digest given with %s is not signed", image, flag),
			"stage it with its signed checksum file (--sums FILE, or one beside it)")
	case flag != "":
		return d, nil, nil
	}
	e, _, signer, err := ExpectedDigest(image, o.Sums, o.Trust)
	if err != nil {
		if host.KindOf(err) == 0 {
			err = host.Bad("%w", err)
		}
		if host.HintOf(err) == "" {
			err = host.WithHint(err, "give the checksum file with --sums FILE or the digest with --sha256 HEX or --md5 HEX")
		}
		return checksum.Digest{}, nil, err
	}
	return e.Digest, signer, nil
}

func identityOfFile(path, name string) (Identity, error) {
	im, err := Open(path)
	if err != nil {
		return Identity{}, err
	}
	defer im.Close()
	return IdentityOf(im, name)
}

// checkHost refuses an image made for another type of server, or one that
// says it does not upgrade the version this host runs.
func checkHost(src string, id Identity, o StageOptions) error {
	if o.HostType != "" && !SameType(o.HostType, id.Type) {
		return host.WithHint(host.Bad("cannot stage %s: it is a %s image and this host is %s", src, id.Type, o.HostType),
			"stage the image of this server's type (product.type in the configuration)")
	}
	if o.HostVersion != "" && id.Manifest != nil {
		if ok, declared := id.Manifest.UpgradesFromVersion(o.HostVersion); declared && !ok {
			return host.Bad("cannot stage %s: version %s upgrades from %s, not from this host's %s",
				src, id.Version, strings.Join(id.Manifest.UpgradesFrom, ", "), o.HostVersion)
		}
	}
	return nil
}

// checkFreeHook runs between the free-space check and the copy: a test
// fills the filesystem there to get a real ENOSPC during the copy.
var checkFreeHook = func() {}

// checkFree fails unless the staging directory's filesystem has room for
// size bytes more.
func checkFree(dir, src string, size int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return host.CannotRun("cannot stage %s: cannot read free space of %s: %v", src, dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < size {
		return host.WithHint(host.CannotRun("cannot stage %s: it needs %s and %s has %s free", src,
			host.FormatSize(size), dir, host.FormatSize(free)),
			"free some space there (old images: upgradectl iso list, iso remove) and stage again")
	}
	return nil
}

// copyHashing copies src into a new hidden file in dir, computing its
// digest as it goes (the image is read once), syncs it and returns its
// path.
func copyHashing(ctx context.Context, alg checksum.Algorithm, src, dir, name string, progress func(int)) (string, checksum.Digest, error) {
	in, err := host.OpenImage(src)
	if err != nil {
		return "", checksum.Digest{}, host.Bad("cannot stage %s: %v", src, unwrapPath(err))
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, "."+name+partialMark+"*")
	if err != nil {
		return "", checksum.Digest{}, host.CannotRun("cannot stage %s: %v", src, unwrapPath(err))
	}
	tmp := out.Name()
	fail := func(err error) (string, checksum.Digest, error) {
		out.Close()
		os.Remove(tmp)
		if errors.Is(err, unix.ENOSPC) {
			return "", checksum.Digest{}, host.CannotRun("cannot stage %s: %s is full", src, dir)
		}
		return "", checksum.Digest{}, host.CannotRun("cannot stage %s: %v", src, unwrapPath(err))
	}
	h := checksum.NewHasher(alg)
	w := newCopyWriter(int(out.Fd()))
	if _, err := checksum.Stream(ctx, in, progress,
		w.write,
		func(b []byte) error { h.Write(b); return nil },
	); err != nil {
		return fail(err)
	}
	if err := out.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		return fail(err)
	}
	return tmp, h.Sum(), nil
}

// copyWriter writes a staged copy. It writes past the page cache
// (O_DIRECT) where the filesystem allows: the image goes from the read
// buffer to the disk, without a copy into new page-cache pages (which on a
// VM whose host takes freed memory back can cost several times the copy;
// BenchmarkStage: 1.7-2.0x cp+sync+md5sum this way against 0.75-1.2x
// buffered, alternating runs) and without filling the page cache with a
// file nobody reads soon. Where the filesystem refuses direct I/O, or a
// block is not aligned as it needs (the image's last block), it writes
// through the page cache from then on and starts the writeback of every
// writebackChunk written. Either way the sync after the copy makes it
// durable and reports any write error.
type copyWriter struct {
	fd          int
	direct      bool
	done, total int64 // written up to total; written direct or its writeback started up to done
}

func newCopyWriter(fd int) *copyWriter {
	w := &copyWriter{fd: fd}
	w.direct = w.setDirect(true) == nil
	return w
}

// setDirect turns direct I/O on the copy on or off.
func (w *copyWriter) setDirect(on bool) error {
	fl, err := unix.FcntlInt(uintptr(w.fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(w.fd), unix.F_SETFL, fl)
	return err
}

// buffered leaves direct I/O for good.
func (w *copyWriter) buffered() error {
	w.direct, w.done = false, w.total
	return w.setDirect(false)
}

func (w *copyWriter) write(b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(w.fd, b)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EINVAL && w.direct {
			// Not aligned for direct I/O (nothing was written).
			if err := w.buffered(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
		w.wrote(int64(n))
	}
	return nil
}

// writebackChunk is how much of a copy written through the page cache is
// written before its writeback is started.
const writebackChunk = 8 << 20

// wrote starts writing the copy's pages out while it is still being
// written, a chunk at a time, so that the disk works while the image is
// read and hashed and the sync at the end has little left to do (512 MiB
// to ext4 on this machine's disk: the sync was most of a stage). It is
// only a start (SYNC_FILE_RANGE_WRITE does not wait).
func (w *copyWriter) wrote(n int64) {
	w.total += n
	if !w.direct && w.total-w.done >= writebackChunk {
		_ = unix.SyncFileRange(w.fd, w.done, w.total-w.done, unix.SYNC_FILE_RANGE_WRITE)
		w.done = w.total
	}
}

// removePartials deletes unfinished copies of name left by an earlier
// stage that did not finish.
func removePartials(dir, name string) error {
	ps, _ := filepath.Glob(filepath.Join(dir, "."+globQuote(name)+partialMark+"*"))
	for _, p := range ps {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return host.CannotRun("cannot remove unfinished copy %s: %v", p, unwrapPath(err))
		}
	}
	return nil
}

func globQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

// RemoveStaged deletes a staged image (recorded or not) or an unfinished
// copy by name; all removes every one of them. It returns the names
// removed.
func RemoveStaged(dir, name string, all bool, l *host.UpgradeLog) (removed []string, err error) {
	start := time.Now()
	defer func() {
		scope := name
		if all {
			scope = "all"
		}
		logAction(l, "iso remove", scope, start, err, strings.Join(removed, ", "))
	}()
	if !all && (name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." || name == StagedIndex) {
		return nil, host.Usage("cannot remove %q: not an image name in the staging directory", name)
	}
	imgs, err := StagedImages(dir)
	if err != nil {
		return nil, err
	}
	var keep []StagedImage
	var del []string
	for _, im := range imgs {
		if all || im.Name == name {
			del = append(del, im.Name)
		} else if im.State != StagedUnrecorded && im.State != StagedPartial {
			keep = append(keep, im)
		}
	}
	if len(del) == 0 {
		if all {
			return nil, nil
		}
		return nil, host.WithHint(host.Bad("cannot remove %s: no such image in %s", name, dir), "see the staged images with 'upgradectl iso list'")
	}
	// The record goes first: a crash in between leaves an unrecorded
	// file, which 'iso list' shows and 'iso remove' deletes.
	if _, err := os.Stat(filepath.Join(dir, StagedIndex)); err == nil {
		if err := writeStaged(dir, keep); err != nil {
			return nil, err
		}
	}
	for _, n := range del {
		if err := host.RemoveDurable(filepath.Join(dir, n)); err != nil {
			return removed, host.CannotRun("cannot remove %s: %v", filepath.Join(dir, n), unwrapPath(err))
		}
		removed = append(removed, n)
	}
	return removed, nil
}
