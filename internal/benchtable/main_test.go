package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `goos: linux
pkg: upgradectl/iso
BenchmarkExtract/tmpfs-2   	       1	2000000000 ns/op	         0.50 ours-s/op	         1.00 xorriso-s/op	         2.00 speedup
BenchmarkExtract/tmpfs-2   	       1	2000000000 ns/op	         0.40 ours-s/op	         1.00 xorriso-s/op	         2.50 speedup
BenchmarkExtract/tmpfs-2   	       1	2000000000 ns/op	         1.00 ours-s/op	         1.00 xorriso-s/op	         1.00 speedup
PASS
`
	rows, order := parse(strings.NewReader(in))
	if len(order) != 4 || order[3] != (key{"iso.BenchmarkExtract/tmpfs", "speedup"}) {
		t.Fatalf("order %v", order)
	}
	v := rows[order[3]]
	if len(v) != 3 || median([]float64{1, 2, 2.5}) != 2 || median([]float64{1, 2, 3, 4}) != 2.5 {
		t.Fatalf("rows %v", v)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("pkg: x\nBenchmarkA-2 1 5 ns/op 1.5 speedup\n")
	f.Fuzz(func(t *testing.T, s string) {
		rows, order := parse(strings.NewReader(s))
		if len(rows) != len(order) {
			t.Fatalf("%d rows, %d in order", len(rows), len(order))
		}
	})
}
