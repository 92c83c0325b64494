// Package checksum computes MD5, SHA-256 and SHA-512 digests of large files
// quickly and reads checksum files in the dialects operators meet: GNU
// md5sum/sha256sum/sha512sum output (with its backslash escapes), BSD and
// OpenSSL tagged lines, bare digests and the build machine's "digest
// directly followed by an absolute path" form.
//
// It uses the standard library only.
package checksum

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"sync/atomic"
)

// Algorithm is a digest algorithm. Their order is their strength: a larger
// value is a stronger algorithm.
type Algorithm uint8

// The algorithms read and computed.
const (
	MD5 Algorithm = 1 + iota
	SHA256
	SHA512
)

// Algorithms are the algorithms known, weakest first.
var Algorithms = []Algorithm{MD5, SHA256, SHA512}

var algorithms = [...]struct {
	tag, name string
	size      int
	new       func() hash.Hash
}{
	MD5:    {"MD5", "MD5", md5.Size, md5.New},
	SHA256: {"SHA256", "SHA-256", sha256.Size, sha256.New},
	SHA512: {"SHA512", "SHA-512", sha512.Size, sha512.New},
}

func (a Algorithm) known() bool { return a >= MD5 && a <= SHA512 }

// String is the algorithm's name in prose: "MD5", "SHA-256", "SHA-512".
func (a Algorithm) String() string {
	if !a.known() {
		return fmt.Sprintf("Algorithm(%d)", a)
	}
	return algorithms[a].name
}

// Tag is the name in tagged checksum lines: "MD5", "SHA256", "SHA512".
func (a Algorithm) Tag() string {
	if !a.known() {
		return a.String()
	}
	return algorithms[a].tag
}

// Flag is the lower-case name, as in "--sha256" and "sha256sum".
func (a Algorithm) Flag() string { return strings.ToLower(a.Tag()) }

func (a Algorithm) article() string {
	if a == MD5 {
		return "an"
	}
	return "a"
}

// Size is the length of the algorithm's digest in bytes.
func (a Algorithm) Size() int {
	if !a.known() {
		return 0
	}
	return algorithms[a].size
}

// New returns the standard library's hash for the algorithm, which must be
// one of Algorithms.
func (a Algorithm) New() hash.Hash { return algorithms[a].new() }

// algorithmOfHex is the algorithm whose digests have n hex digits; 0 when
// none has.
func algorithmOfHex(n int) Algorithm {
	for _, a := range Algorithms {
		if 2*a.Size() == n {
			return a
		}
	}
	return 0
}

// MaxSize is the length of the longest digest in bytes.
const MaxSize = sha512.Size

// Digest is a digest with its algorithm. Digests compare with ==; digests of
// two algorithms are never equal.
type Digest struct {
	alg Algorithm
	sum [MaxSize]byte
}

// DigestOf makes a digest of the algorithm from its bytes, which must be
// a.Size() long.
func DigestOf(a Algorithm, b []byte) Digest {
	if len(b) != a.Size() {
		panic(fmt.Sprintf("checksum: %d bytes is not a %s digest", len(b), a))
	}
	d := Digest{alg: a}
	copy(d.sum[:], b)
	return d
}

// Algorithm is the digest's algorithm; 0 for the zero value.
func (d Digest) Algorithm() Algorithm { return d.alg }

// Bytes is the digest itself.
func (d Digest) Bytes() []byte { return d.sum[:d.alg.Size()] }

// String is the digest in lower-case hex, as md5sum and sha256sum print it.
func (d Digest) String() string { return hex.EncodeToString(d.Bytes()) }

// IsZero reports whether d is the zero value (no digest).
func (d Digest) IsZero() bool { return d == Digest{} }

// MarshalText writes the digest in lower-case hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a digest written in hex of either case, its algorithm
// known from its length; empty text is the zero value.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*d = Digest{}
		return nil
	}
	v, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDigest reads a digest in hex of either case: 32 digits are MD5, 64
// SHA-256 and 128 SHA-512.
func ParseDigest(s string) (Digest, error) { return ParseDigestOf(0, s) }

// ParseDigestOf reads a digest of the algorithm a in hex of either case; a
// of 0 goes by the length, as ParseDigest.
func ParseDigestOf(a Algorithm, s string) (Digest, error) {
	n := hexRun(s)
	if a == 0 {
		a = algorithmOfHex(len(s))
	}
	switch {
	case a == 0 && n == len(s):
		return Digest{}, fmt.Errorf("%q is not a digest: %d hex digits, an MD5 has 32, a SHA-256 64, a SHA-512 128", s, len(s))
	case a == 0:
		return Digest{}, fmt.Errorf("%q is not a digest (32, 64 or 128 hex digits)", s)
	case n != len(s) || len(s) != 2*a.Size():
		return Digest{}, fmt.Errorf("%q is not %s %s digest (%d hex digits)", s, a.article(), a, 2*a.Size())
	}
	d := Digest{alg: a}
	hex.Decode(d.sum[:], []byte(s)) // cannot fail: checked above
	return d, nil
}

// Hasher is an io.Writer that computes the digest of everything written to
// it, so that a copy computes the digest in the same pass:
//
//	h := checksum.NewHasher(checksum.SHA256)
//	io.Copy(io.MultiWriter(dst, h), src)
//	h.Sum()
type Hasher struct {
	alg Algorithm
	h   hash.Hash
	n   int64
}

// NewHasher returns an empty Hasher of the algorithm.
func NewHasher(a Algorithm) *Hasher { return &Hasher{alg: a, h: a.New()} }

// Write adds p to the digest; it never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	h.h.Write(p)
	h.n += int64(len(p))
	return len(p), nil
}

// Sum is the digest of everything written so far. Writing may go on after.
func (h *Hasher) Sum() Digest {
	d := Digest{alg: h.alg}
	h.h.Sum(d.sum[:0])
	return d
}

// Written is the number of bytes written so far.
func (h *Hasher) Written() int64 { return h.n }

// BlockSize is the size of the blocks Stream reads.
const BlockSize = 1 << 20

// streamBuffers is how many blocks Stream keeps in flight: enough for the
// reader to stay ahead of the slowest consumer.
const streamBuffers = 4

// Stream reads r to its end in a goroutine of its own, ahead of the
// consumers, and hands every block in order to each consumer, each of which
// runs in a goroutine of its own: reading overlaps hashing, and two digests
// of one file use two cores. A consumer must not keep the slice after it
// returns. The first error (from reading, a consumer or ctx) stops
// everything and is returned; progress, when not nil, is called from the
// reading goroutine with the size of every block read. Stream returns the
// number of bytes read.
func Stream(ctx context.Context, r io.Reader, progress func(n int), consumers ...func(b []byte) error) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	type block struct {
		buf  []byte
		n    int
		refs atomic.Int32
	}
	free := make(chan *block, streamBuffers)
	for i := 0; i < streamBuffers; i++ {
		free <- &block{buf: make([]byte, BlockSize)}
	}
	chans := make([]chan *block, len(consumers))
	for i := range chans {
		chans[i] = make(chan *block, streamBuffers)
	}

	var wg sync.WaitGroup
	for i, fn := range consumers {
		wg.Add(1)
		go func(in <-chan *block, fn func([]byte) error) {
			defer wg.Done()
			failed := false
			for b := range in {
				if !failed && ctx.Err() == nil {
					if err := fn(b.buf[:b.n]); err != nil {
						cancel(err)
						failed = true
					}
				}
				if b.refs.Add(-1) == 0 {
					free <- b
				}
			}
		}(chans[i], fn)
	}

	var total int64
	var readErr error
read:
	for {
		var b *block
		select {
		case <-ctx.Done():
			break read
		case b = <-free:
		}
		n, err := io.ReadFull(r, b.buf)
		if n > 0 {
			total += int64(n)
			if progress != nil {
				progress(n)
			}
			b.n = n
			b.refs.Store(int32(len(chans)))
			for _, c := range chans {
				c <- b // never blocks: a channel holds every buffer
			}
		} else {
			free <- b
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	if readErr != nil {
		return total, readErr
	}
	if err := context.Cause(ctx); err != nil {
		return total, err
	}
	return total, nil
}

// SumReader computes the digest of r to its end with Stream.
func SumReader(ctx context.Context, a Algorithm, r io.Reader, progress func(n int)) (Digest, int64, error) {
	h := NewHasher(a)
	n, err := Stream(ctx, r, progress, func(b []byte) error {
		h.Write(b)
		return nil
	})
	if err != nil {
		return Digest{}, n, err
	}
	return h.Sum(), n, nil
}
