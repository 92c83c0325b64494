package iso

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"upgradectl/checksum"
	"upgradectl/host"
	"upgradectl/trust"
)

// SumsFileNames are the checksum files looked for beside an image, after
// IMAGE.md5 and IMAGE-without-.iso.md5.
var SumsFileNames = []string{"SHA512SUMS", "SHA256SUMS", "md5sum.out", "MD5SUMS"}

// VerifyOptions says what Verify checks.
type VerifyOptions struct {
	// Files are the images, as paths on the running system.
	Files []string
	// Sums is a checksum file for every image; when empty, one is looked
	// for beside each image (IMAGE.md5, SHA512SUMS, SHA256SUMS,
	// md5sum.out, MD5SUMS).
	Sums string
	// MD5 and SHA256 are the expected digest of the one image, in hex, as
	// --md5 or --sha256 give it (one of them at most).
	MD5, SHA256 string
	// Digest is the expected digest of the one image as code has it (the
	// digest it was staged with), of any algorithm; used when MD5 and
	// SHA256 are empty.
	Digest checksum.Digest
	// Embedded checks the MD5 that implantisomd5 stored in each image.
	Embedded bool
	// Jobs is how many images are verified at once; 0 means one per CPU.
	Jobs int
	// Progress, when not nil, is told the total and every block read.
	Progress ProgressSink
	// Log, when not nil, gets one entry for the run.
	Log *host.UpgradeLog
	// Trust says which keys sign checksum files and whether a signature
	// is required.
	Trust Trust
}

// Trust is the signature policy for checksum files.
type Trust struct {
	// Keys are the vendor's public keys; nil: none.
	Keys *trust.Keyring
	// Require refuses an image whose expected digest is not covered by a
	// good signature.
	Require bool
}

// ProgressSink follows a long run. Add is called from several goroutines.
type ProgressSink interface {
	Start(total int64)
	Add(n int)
	Done()
}

// Verify statuses.
const (
	StatusOK          = "ok"
	StatusMismatch    = "mismatch"      // the digest differs from the expected one
	StatusEmbedded    = "embedded-bad"  // the embedded MD5 check failed or found none
	StatusMissing     = "missing"       // the image is not there
	StatusNoReference = "no-reference"  // no expected digest found for it
	StatusError       = "error"         // it could not be read
	StatusSignature   = "bad-signature" // its checksum file is not covered by a good signature
)

// VerifyResult is the outcome for one image.
type VerifyResult struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	Status string `json:"status"`
	OK     bool   `json:"ok"`
	// Algorithm is the algorithm of Expected and Digest: "md5",
	// "sha256" or "sha512".
	Algorithm string          `json:"algorithm,omitempty"`
	Digest    string          `json:"digest,omitempty"`   // computed over the whole file
	Expected  string          `json:"expected,omitempty"` // from --md5, --sha256 or a checksum file
	Source    string          `json:"source,omitempty"`   // where Expected came from
	Dialect   string          `json:"dialect,omitempty"`  // of the checksum file
	Embedded  *EmbeddedResult `json:"embedded,omitempty"`
	Signer    *trust.Signer   `json:"signer,omitempty"`   // who signed the checksum file
	Problems  []string        `json:"problems,omitempty"` // why it is not OK
	Notes     []string        `json:"notes,omitempty"`
	Hint      string          `json:"hint,omitempty"` // how to fix the first problem
	Seconds   float64         `json:"seconds"`
}

// VerifyReport is the outcome of a run.
type VerifyReport struct {
	Results []VerifyResult `json:"results"`
	OK      bool           `json:"ok"`
	Failed  int            `json:"failed"`
	// LogProblem says why the upgrade log entry could not be written.
	LogProblem string `json:"log_problem,omitempty"`
}

// Verify checks each image against --md5 or --sha256, a checksum file
// (the strongest digest it gives for the image) and/or its embedded MD5,
// several at once, reading each image once. It returns a host.Usage error
// for a wrong request (nothing else is done then); every problem with an
// image is in its result, and the report is OK only when every image is.
func Verify(ctx context.Context, opts VerifyOptions) (*VerifyReport, error) {
	start := time.Now()
	want, flag, err := givenDigest(opts.MD5, opts.SHA256, opts.Digest)
	switch {
	case len(opts.Files) == 0:
		return nil, host.Usage("cannot verify: no image given")
	case err != nil:
		return nil, host.Usage("cannot verify with %v", err)
	case flag != "" && opts.Sums != "":
		return nil, host.Usage("cannot verify: give either %s or --sums, not both", flag)
	case flag != "" && len(opts.Files) > 1:
		return nil, host.WithHint(host.Usage("cannot verify %d images against one %s digest", len(opts.Files), flag),
			"verify one image with "+flag+", or several with --sums FILE")
	}
	sums := &sumsCache{files: map[string]sumsEntry{}, trust: opts.Trust}
	if opts.Sums != "" {
		// A missing file, a directory or a FIFO: a usage error before any
		// image is read (a FIFO would block the read).
		fi, err := os.Stat(opts.Sums)
		if err != nil {
			return nil, host.Usage("cannot read checksum file %s: %v", opts.Sums, errors.Unwrap(err))
		}
		if !fi.Mode().IsRegular() {
			return nil, host.Usage("cannot read checksum file %s: %v", opts.Sums, host.ErrNotRegular)
		}
	}

	// Sizes first: the progress total, and missing images found at once.
	results := make([]VerifyResult, len(opts.Files))
	var total int64
	for i, f := range opts.Files {
		results[i] = VerifyResult{File: f}
		fi, err := os.Stat(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			results[i].Status = StatusMissing
			results[i].Problems = append(results[i].Problems, fmt.Sprintf("cannot open %s: no such file", f))
		case err != nil:
			results[i].Status = StatusError
			results[i].Problems = append(results[i].Problems, fmt.Sprintf("cannot open %s: %v", f, errors.Unwrap(err)))
		case !fi.Mode().IsRegular():
			results[i].Status = StatusError
			results[i].Problems = append(results[i].Problems, fmt.Sprintf("cannot verify %s: not a regular file", f))
		default:
			results[i].Size = fi.Size()
			total += fi.Size()
		}
	}
	if opts.Progress != nil {
		opts.Progress.Start(total)
	}
	add := func(int) {}
	if opts.Progress != nil {
		add = opts.Progress.Add
	}

	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(jobs, len(opts.Files)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				t := time.Now()
				verifyOne(ctx, &results[i], opts, want, sums, add)
				results[i].Seconds = time.Since(t).Round(time.Millisecond).Seconds()
			}
		}()
	}
	for i := range results {
		if results[i].Status == "" {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	if opts.Progress != nil {
		opts.Progress.Done()
	}

	rep := &VerifyReport{Results: results, OK: true}
	for i := range results {
		if !results[i].OK {
			rep.OK = false
			rep.Failed++
		}
	}
	if opts.Log != nil {
		if _, err := opts.Log.Append(logEntry(rep, start)); err != nil {
			rep.LogProblem = err.Error()
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, nil
}

func logEntry(rep *VerifyReport, start time.Time) host.LogEntry {
	var scope, msg []string
	for _, r := range rep.Results {
		scope = append(scope, filepath.Base(r.File))
		m := filepath.Base(r.File) + " " + r.Status
		if !r.OK && len(r.Problems) > 0 {
			m += " (" + r.Problems[0] + ")"
		}
		msg = append(msg, m)
	}
	res := host.ResultSuccess
	if !rep.OK {
		res = host.ResultFailed
	}
	return host.LogEntry{Action: "iso verify", Start: start, End: time.Now(), Scope: strings.Join(scope, " "),
		Result: res, Message: strings.Join(msg, "; ")}
}

// verifyOne fills in r for one image that exists.
func verifyOne(ctx context.Context, r *VerifyResult, opts VerifyOptions, want checksum.Digest, sums *sumsCache, progress func(int)) {
	fail := func(status, format string, args ...any) {
		if r.Status == "" {
			r.Status = status
		}
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
	noReference := func(err error) {
		fail(StatusNoReference, "%v", err)
		if r.Hint == "" {
			r.Hint = host.HintOf(err)
		}
	}

	// The expected digest.
	expected := want
	if !want.IsZero() {
		r.Source = "--" + want.Algorithm().Flag()
	} else {
		var e checksum.Entry
		var s *checksum.Sums
		var err error
		if opts.Sums != "" {
			e, s, err = sums.lookup(opts.Sums, r.File)
		} else {
			e, s, err = sums.beside(r.File)
		}
		// With --embedded, a checksum file beside the image is optional.
		optional := opts.Embedded && opts.Sums == ""
		switch {
		case err == nil:
			expected, r.Source, r.Dialect = e.Digest, fmt.Sprintf("%s line %d", s.Path, e.Line), string(e.Dialect)
			r.Signer = sums.signer(s.Path)
			switch note, err := opts.Trust.judge(r.Signer, sums.sigErr(s.Path)); {
			case err != nil:
				fail(StatusSignature, "%v", err)
				r.Hint = signatureHint
			case note != "":
				r.Notes = append(r.Notes, note)
			}
		case optional && errors.Is(err, errNoSumsFile):
		case optional && errors.Is(err, checksum.ErrNotListed):
			r.Notes = append(r.Notes, err.Error()+": checked the embedded MD5 only")
		default:
			noReference(err)
		}
	}
	if !expected.IsZero() {
		r.Algorithm, r.Expected = expected.Algorithm().Flag(), expected.String()
	}
	if opts.Trust.Require && r.Signer == nil && r.Status == "" {
		fail(StatusSignature, "%s: a signature is required and %s is not signed", filepath.Base(r.File), orWhat(r.Source))
	}
	if r.Status != "" {
		return // nothing to compare with: do not read 1 GB for nothing
	}

	f, err := host.OpenImage(r.File)
	if err != nil {
		fail(StatusError, "cannot open %s: %v", r.File, errors.Unwrap(err))
		return
	}
	defer f.Close()

	var consumers []func([]byte) error
	var src io.Reader = f
	var emb *embeddedChecker
	if opts.Embedded {
		res, c, err := startEmbedded(f)
		switch {
		case err != nil:
			fail(StatusError, "cannot read %s: %v", r.File, err)
			return
		case c == nil:
			r.Embedded = &res
			fail(StatusEmbedded, "embedded MD5: %s", res.Reason)
			if res.Status == EmbeddedFail {
				return // truncated or unusable: fail early
			}
		default:
			emb = c
			consumers = append(consumers, c.write)
			if r.Expected == "" {
				src = io.LimitReader(f, c.total)
			}
		}
	}
	var h *checksum.Hasher
	if !expected.IsZero() {
		h = checksum.NewHasher(expected.Algorithm())
		consumers = append(consumers, func(b []byte) error { h.Write(b); return nil })
	}
	if len(consumers) == 0 {
		return
	}
	_, err = checksum.Stream(ctx, src, progress, consumers...)
	var ef errFragment
	if err != nil && !errors.As(err, &ef) {
		fail(StatusError, "cannot read %s: %v", r.File, err)
		return
	}
	if emb != nil {
		res, _ := emb.result(err)
		r.Embedded = &res
		if res.Status != EmbeddedPass {
			fail(StatusEmbedded, "embedded MD5: %s", res.Reason)
		}
	}
	if h != nil && err == nil {
		got := h.Sum()
		r.Digest = got.String()
		if got != expected {
			fail(StatusMismatch, "%s %s, expected %s (%s)", got.Algorithm(), got, expected, r.Source)
		}
	}
	if r.Status == "" {
		r.Status, r.OK = StatusOK, true
	}
}

var errNoSumsFile = errors.New("no checksum file")

// ExpectedDigest finds the expected digest of image (a path on the running
// system) in the checksum file sums or, when sums is empty, in one beside
// the image (IMAGE.md5, IMAGE-without-.iso.md5, then SumsFileNames), as
// "iso verify" does: the strongest the file gives for the image. The error wraps checksum.ErrNotListed when a checksum
// file exists but does not list the image, and carries a fix-it hint when
// there is no checksum file at all.
func ExpectedDigest(image, sums string, tr Trust) (checksum.Entry, *checksum.Sums, *trust.Signer, error) {
	c := &sumsCache{files: map[string]sumsEntry{}, trust: tr}
	var e checksum.Entry
	var s *checksum.Sums
	var err error
	if sums != "" {
		e, s, err = c.lookup(sums, image)
	} else {
		e, s, err = c.beside(image)
	}
	if err != nil {
		return e, s, nil, err
	}
	signer := c.signer(s.Path)
	if _, err := tr.judge(signer, c.sigErr(s.Path)); err != nil {
		return e, s, nil, host.WithHint(host.Bad("%v", err), signatureHint)
	}
	return e, s, signer, nil
}

// judge applies the policy to a checksum file's signature: nothing when a
// good one covers it; an error when the file must not be trusted (a bad
// signature always, and no good one when one is required); else a note on
// why it is not signed.
func (tr Trust) judge(signer *trust.Signer, sigErr error) (note string, err error) {
	switch {
	case signer != nil:
		return "", nil
	case sigErr == nil:
		sigErr = trust.ErrUnsigned
	}
	switch {
	case tr.Require:
		return "", fmt.Errorf("a signature is required: %w", sigErr)
	case !errors.Is(sigErr, trust.ErrUnsigned) && !errors.Is(sigErr, trust.ErrUnknownKey):
		return "", sigErr
	}
	return sigErr.Error(), nil
}

type sumsEntry struct {
	s      *checksum.Sums
	err    error
	signer *trust.Signer
	sigErr error
}

// sumsCache parses each checksum file once, however many images it lists,
// and checks its signature on the bytes it parses.
type sumsCache struct {
	mu    sync.Mutex
	files map[string]sumsEntry
	trust Trust
}

func (c *sumsCache) get(p string) (*checksum.Sums, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.files[p]; ok {
		return e.s, e.err
	}
	e := c.parse(p)
	if e.err != nil {
		var pe *os.PathError
		if errors.As(e.err, &pe) {
			e.err = fmt.Errorf("cannot read checksum file %s: %v", p, pe.Err)
		}
	}
	c.files[p] = e
	return e.s, e.err
}

// signer is who signed the checksum file at p; nil when nobody did.
func (c *sumsCache) signer(p string) *trust.Signer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[p].signer
}

// sigErr is why the checksum file at p is not signed, when it is not.
func (c *sumsCache) sigErr(p string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.files[p].sigErr
}

// parse reads the checksum file at p once: a regular file of at most
// 16 MiB (a FIFO or a device is refused; opening it does not wait). A
// clearsigned file is verified and its signed text parsed; a detached
// signature beside it is checked over the same bytes that are parsed.
func (c *sumsCache) parse(p string) sumsEntry {
	b, err := host.ReadSmallFile(p)
	if err != nil {
		return sumsEntry{err: err}
	}
	var e sumsEntry
	keys := c.trust.Keys
	if keys == nil {
		keys = &trust.Keyring{}
	}
	signed, signer, sigErr := keys.Verify(p, b)
	switch {
	case sigErr == nil:
		b, e.signer = signed, signer
	case trust.IsClearsigned(b):
		// Its digests are not trusted unless the signature is good.
		return sumsEntry{err: fmt.Errorf("checksum file %w", sigErr), sigErr: sigErr}
	default:
		e.sigErr = sigErr
	}
	e.s, e.err = checksum.Parse(bytes.NewReader(b), p)
	return e
}

func (c *sumsCache) lookup(sumsPath, image string) (checksum.Entry, *checksum.Sums, error) {
	s, err := c.get(sumsPath)
	if err != nil {
		return checksum.Entry{}, nil, err
	}
	e, err := s.Lookup(image)
	return e, s, err
}

// beside finds the image's entry in a checksum file next to it.
func (c *sumsCache) beside(image string) (checksum.Entry, *checksum.Sums, error) {
	dir, base := filepath.Split(image)
	names := []string{base + ".md5"}
	if trimmed := strings.TrimSuffix(base, filepath.Ext(base)); trimmed != base && trimmed != "" {
		names = append(names, trimmed+".md5")
	}
	names = append(names, SumsFileNames...)
	var notListed error
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		e, s, err := c.lookup(p, image)
		if err == nil {
			return e, s, nil
		}
		if !errors.Is(err, checksum.ErrNotListed) {
			return e, nil, err
		}
		if notListed == nil {
			notListed = err
		}
	}
	if notListed != nil {
		return checksum.Entry{}, nil, notListed
	}
	return checksum.Entry{}, nil, host.WithHint(fmt.Errorf("%w for %s: none of %s beside it", errNoSumsFile, base, strings.Join(names, ", ")),
		"give the checksum file with --sums FILE, the digest with --sha256 HEX or --md5 HEX, or check the embedded MD5 with --embedded")
}

const signatureHint = "use the checksum file and signature the vendor delivered, with the vendor's public key in iso.keys_dir"

// orWhat names where a digest came from, for messages.
func orWhat(source string) string {
	if source == "" {
		return "no checksum file"
	}
	if i := strings.Index(source, " line "); i > 0 {
		return source[:i]
	}
	return source
}

// sumFile computes the digest of the image at path (a regular file or a
// block device).
func sumFile(ctx context.Context, alg checksum.Algorithm, path string, progress func(n int)) (checksum.Digest, int64, error) {
	f, err := host.OpenImage(path)
	if err != nil {
		return checksum.Digest{}, 0, err
	}
	defer f.Close()
	return checksum.SumReader(ctx, alg, f, progress)
}

// givenDigest is the digest given with --md5 or --sha256 (one of them at
// most), else d, and the flag that gave it ("--sha256"); none is the zero
// digest and no flag.
func givenDigest(md5, sha256 string, d checksum.Digest) (checksum.Digest, string, error) {
	switch {
	case md5 != "" && sha256 != "":
		return d, "", errors.New("--md5 and --sha256: give one of them")
	case md5 == "" && sha256 == "":
		if d.IsZero() {
			return d, "", nil
		}
		return d, "--" + d.Algorithm().Flag(), nil
	}
	alg, hex := checksum.MD5, md5
	if sha256 != "" {
		alg, hex = checksum.SHA256, sha256
	}
	flag := "--" + alg.Flag()
	d, err := checksum.ParseDigestOf(alg, strings.TrimSpace(hex))
	if err != nil {
		return d, flag, fmt.Errorf("%s: %w", flag, err)
	}
	return d, flag, nil
}
