package checksum

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"io"
	"math/rand"
	"testing"
)

func TestStreamDigests(t *testing.T) {
	for _, size := range []int{0, 1, BlockSize - 1, BlockSize, BlockSize + 1, 5*BlockSize + 12345} {
		data := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(data)
		want := Digest(md5.Sum(data))

		var progressed int64
		d, n, err := SumReader(t.Context(), bytes.NewReader(data), func(k int) { progressed += int64(k) })
		if err != nil || d != want || n != int64(size) || progressed != int64(size) {
			t.Errorf("size %d: SumReader = %s, %d, %v (progress %d); want %s", size, d, n, err, progressed, want)
		}

		h := NewHasher()
		// Odd writes, as a copy loop makes them.
		for off := 0; off < size; off += 7777 {
			h.Write(data[off:min(off+7777, size)])
		}
		if h.Sum() != want || h.Written() != int64(size) {
			t.Errorf("size %d: Hasher = %s after %d bytes; want %s", size, h.Sum(), h.Written(), want)
		}

		// Two consumers see the same bytes in the same order.
		h1, h2 := md5.New(), md5.New()
		if _, err := Stream(t.Context(), bytes.NewReader(data), nil,
			func(b []byte) error { h1.Write(b); return nil },
			func(b []byte) error { h2.Write(b); return nil }); err != nil {
			t.Fatal(err)
		}
		if Digest(h1.Sum(nil)) != want || Digest(h2.Sum(nil)) != want {
			t.Errorf("size %d: two consumers disagree", size)
		}
	}
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
	for _, s := range []string{"", "xyz", emptyMD5[:31], emptyMD5 + "0", "g" + emptyMD5[1:]} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("ParseDigest(%q) accepted", s)
		}
	}
	d, err := ParseDigest("D41D8CD98F00B204E9800998ECF8427E")
	if err != nil || d.String() != emptyMD5 {
		t.Errorf("upper case: %s %v", d, err)
	}
}
