// Package checksum computes MD5 digests of large files quickly and reads
// checksum files in the dialects operators meet: GNU md5sum output (with its
// backslash escapes), BSD tagged lines, bare digests and the build machine's
// "digest directly followed by an absolute path" form.
//
// It uses the standard library only.
package checksum

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// Size is the length of an MD5 digest in bytes.
const Size = md5.Size

// Digest is an MD5 digest.
type Digest [Size]byte

// String is the digest in lower-case hex, as md5sum prints it.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is the zero value (no digest).
func (d Digest) IsZero() bool { return d == Digest{} }

// MarshalText writes the digest in lower-case hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a digest written in hex of either case.
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := ParseDigest(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParseDigest reads 32 hex digits of either case.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*Size {
		return d, fmt.Errorf("%q is not an MD5 digest (32 hex digits)", s)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("%q is not an MD5 digest (32 hex digits)", s)
	}
	return d, nil
}

// Hasher is an io.Writer that computes the MD5 of everything written to it,
// so that a copy computes the digest in the same pass:
//
//	h := checksum.NewHasher()
//	io.Copy(io.MultiWriter(dst, h), src)
//	h.Sum()
type Hasher struct {
	h hash.Hash
	n int64
}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{h: md5.New()} }

// Write adds p to the digest; it never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	h.h.Write(p)
	h.n += int64(len(p))
	return len(p), nil
}

// Sum is the digest of everything written so far. Writing may go on after.
func (h *Hasher) Sum() Digest {
	var d Digest
	h.h.Sum(d[:0])
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

// SumReader computes the MD5 of r to its end with Stream.
func SumReader(ctx context.Context, r io.Reader, progress func(n int)) (Digest, int64, error) {
	h := md5.New()
	n, err := Stream(ctx, r, progress, func(b []byte) error {
		h.Write(b)
		return nil
	})
	var d Digest
	if err != nil {
		return d, n, err
	}
	h.Sum(d[:0])
	return d, n, nil
}
