package checksum

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"io"
	"math/rand"
	"strings"
	"testing"
)

func TestStreamDigests(t *testing.T) {
	for _, size := range []int{0, 1, BlockSize - 1, BlockSize, BlockSize + 1, 5*BlockSize + 12345} {
		data := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(data)
		for _, alg := range Algorithms {
			h := alg.New()
			h.Write(data)
			want := DigestOf(alg, h.Sum(nil))

			var progressed int64
			d, n, err := SumReader(t.Context(), alg, bytes.NewReader(data), func(k int) { progressed += int64(k) })
			if err != nil || d != want || n != int64(size) || progressed != int64(size) {
				t.Errorf("%s of size %d: SumReader = %s, %d, %v (progress %d); want %s", alg, size, d, n, err, progressed, want)
			}

			hs := NewHasher(alg)
			// Odd writes, as a copy loop makes them.
			for off := 0; off < size; off += 7777 {
				hs.Write(data[off:min(off+7777, size)])
			}
			if hs.Sum() != want || hs.Written() != int64(size) {
				t.Errorf("%s of size %d: Hasher = %s after %d bytes; want %s", alg, size, hs.Sum(), hs.Written(), want)
			}
		}
		want := DigestOf(MD5, md5Sum(data))

		// Two consumers see the same bytes in the same order.
		h1, h2 := md5.New(), md5.New()
		if _, err := Stream(t.Context(), bytes.NewReader(data), nil,
			func(b []byte) error { h1.Write(b); return nil },
			func(b []byte) error { h2.Write(b); return nil }); err != nil {
			t.Fatal(err)
		}
		if DigestOf(MD5, h1.Sum(nil)) != want || DigestOf(MD5, h2.Sum(nil)) != want {
			t.Errorf("size %d: two consumers disagree", size)
		}
	}
}

func md5Sum(b []byte) []byte {
	s := md5.Sum(b)
	return s[:]
}

type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// TestStreamStops checks that a read error, a consumer error and a cancelled
// context each stop Stream with that error. A reader failing in the middle
// of a file cannot be had from a real disk here, hence the failing reader.
func TestStreamStops(t *testing.T) {
	data := make([]byte, 8*BlockSize)
	errRead := errors.New("read failed")
	_, err := Stream(t.Context(), &failingReader{bytes.NewReader(data), 3 * BlockSize, errRead}, nil,
		func([]byte) error { return nil })
	if !errors.Is(err, errRead) {
		t.Errorf("read error: got %v", err)
	}

	errStop := errors.New("bad fragment")
	calls := 0
	n, err := Stream(t.Context(), bytes.NewReader(data), nil,
		func([]byte) error { calls++; return nil },
		func([]byte) error { return errStop })
	if !errors.Is(err, errStop) {
		t.Errorf("consumer error: got %v", err)
	}
	if n == int64(len(data)) && calls == 8 {
		t.Errorf("consumer error did not stop the stream early (read %d, %d calls)", n, calls)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Stream(ctx, bytes.NewReader(data), nil, func([]byte) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
}

func TestParseDigest(t *testing.T) {
	sha256Empty := "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sha512Empty := "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce" +
		"47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
	for _, s := range []string{"", "xyz", emptyMD5[:31], emptyMD5 + "0", "g" + emptyMD5[1:], sha256Empty[:40], sha512Empty + "00"} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("ParseDigest(%q) accepted", s)
		}
	}
	for _, tt := range []struct {
		in   string
		alg  Algorithm
		want string
	}{
		{"D41D8CD98F00B204E9800998ECF8427E", MD5, emptyMD5},
		{strings.ToUpper(sha256Empty), SHA256, sha256Empty},
		{sha512Empty, SHA512, sha512Empty},
	} {
		d, err := ParseDigest(tt.in)
		if err != nil || d.String() != tt.want || d.Algorithm() != tt.alg {
			t.Errorf("ParseDigest(%s) = %s %s %v", tt.in, d.Algorithm(), d, err)
		}
		if _, err := ParseDigestOf(tt.alg%3+1, tt.in); err == nil {
			t.Errorf("ParseDigestOf(%s, %s) accepted a digest of another length", tt.alg%3+1, tt.in)
		}
		// JSON round trip, as staged.json stores digests.
		b, _ := d.MarshalText()
		var back Digest
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("text round trip of %s: %s %v", d, back, err)
		}
	}
	if _, err := ParseDigestOf(SHA256, emptyMD5); err == nil || !strings.Contains(err.Error(), "is not a SHA-256 digest (64 hex digits)") {
		t.Errorf("ParseDigestOf(SHA256, MD5 digest): %v", err)
	}
}

// TestHashingAllocatesNothing: hashing a block goes straight to the
// standard library's hash, with no copy or allocation on the way.
func TestHashingAllocatesNothing(t *testing.T) {
	block := make([]byte, BlockSize)
	for _, alg := range Algorithms {
		h := NewHasher(alg)
		if n := testing.AllocsPerRun(10, func() { h.Write(block) }); n != 0 {
			t.Errorf("%s: %v allocations a block", alg, n)
		}
	}
}
