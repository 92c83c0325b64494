package stage

import (
	"fmt"
	"math/rand"
	"testing"
)

// TestHeadTail: what a command writes is kept whole while it fits, else as
// its start, the count left out and its end, whatever the sizes of the
// writes.
func TestHeadTail(t *testing.T) {
	const n = 16
	rng := rand.New(rand.NewSource(1))
	for _, size := range []int{0, 1, n, 2 * n, 2*n + 1, 3 * n, 1000} {
		for try := 0; try < 20; try++ {
			all := make([]byte, size)
			for i := range all {
				all[i] = byte('a' + rng.Intn(26))
			}
			h := newHeadTail(n)
			for rest := all; len(rest) > 0; {
				k := 1 + rng.Intn(3*n)
				if k > len(rest) {
					k = len(rest)
				}
				if w, err := h.Write(rest[:k]); w != k || err != nil {
					t.Fatalf("Write = %d, %v", w, err)
				}
				rest = rest[k:]
			}
			want := string(all)
			if size > 2*n {
				want = string(all[:n]) + fmt.Sprintf("\n[... %d bytes left out ...]\n", size-2*n) + string(all[size-n:])
			}
			if got := h.String(); got != want {
				t.Fatalf("size %d: got %q, want %q", size, got, want)
			}
		}
	}
}
