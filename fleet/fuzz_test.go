package fleet

import (
	"slices"
	"testing"
)

// FuzzSemaphore feeds the semaphore value another writer may leave in
// etcd to the slot rules: a take never grants beyond the slots nor twice,
// a release frees exactly the holder's slot.
func FuzzSemaphore(f *testing.F) {
	for _, s := range []string{`{"total_slots":2,"holders":["a","b"]}`, `{"total_slots":1,"holders":[]}`,
		`{"total_slots":3,"holders":["c","a","c"]}`, `{"holders":null}`, `{"total_slots":-1}`, `[]`} {
		f.Add([]byte(s), "a", uint8(2))
	}
	f.Fuzz(func(t *testing.T, b []byte, id string, slots uint8) {
		s, err := decodeSemaphore(b)
		if err != nil {
			return
		}
		before := slices.Clone(s.Holders)
		_, held := slices.BinarySearch(before, id)
		got, _ := takeIn(&s, id, uint64(slots))
		if !slices.IsSorted(s.Holders) || len(slices.Compact(slices.Clone(s.Holders))) != len(s.Holders) {
			t.Fatalf("holders %q after a take", s.Holders)
		}
		if got && !held && len(s.Holders) > int(slots) {
			t.Fatalf("granted beyond %d slots: %q", slots, s.Holders)
		}
		if got != (held || len(before) < int(slots)) {
			t.Fatalf("take by %q of %q in %d slots: %v", id, before, slots, got)
		}
		if !releaseIn(&s, id) && got {
			t.Fatalf("release after a grant found no slot")
		}
		if _, still := slices.BinarySearch(s.Holders, id); still || len(s.Holders) != len(before)-btoi(held) {
			t.Fatalf("release of %q left %q (before %q)", id, s.Holders, before)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
