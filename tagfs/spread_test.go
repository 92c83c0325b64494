package tagfs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestSpread: the directory runs are cut by inode number into parts of
// about the same number of files, each worker starts on a part of its own,
// and every run is handed out once, also when the workers steal from one
// another.
func TestSpread(t *testing.T) {
	// Ten directories of 1-10 files; the first file's inode number falls
	// as the directories go on, so the sorted order is the reverse.
	var items []item
	var runs [][2]int
	for d := 0; d < 10; d++ {
		start := len(items)
		for f := 0; f <= d; f++ {
			items = append(items, item{dir: string(rune('a' + d)), st: unix.Stat_t{Ino: uint64(1000 - 10*d + f)}})
		}
		runs = append(runs, [2]int{start, len(items)})
	}
	for n := 1; n <= 4; n++ {
		p := spread(runs, items, n)
		// Each part is a stretch of the runs sorted by inode, with about
		// len(items)/n files.
		for w := 0; w < n; w++ {
			files := 0
			for _, r := range p.runs[p.lo[w]:p.hi[w]] {
				files += runs[r][1] - runs[r][0]
			}
			if n > 1 && (files == 0 || files > len(items)/n+10) {
				t.Errorf("%d workers: part %d has %d of %d files", n, w, files, len(items))
			}
		}
		for i := 1; i < len(p.runs); i++ {
			if items[runs[p.runs[i-1]][0]].st.Ino > items[runs[p.runs[i]][0]].st.Ino {
				t.Fatalf("%d workers: runs not in inode order: %v", n, p.runs)
			}
		}
		// The first run each worker gets is the first of its part.
		seen := map[int]int{}
		for w := 0; w < n; w++ {
			want := p.runs[p.lo[w]]
			if r := p.take(w); r != want {
				t.Errorf("%d workers: worker %d started with run %d, want %d", n, w, r, want)
			}
			seen[want]++
		}
		// Worker 0 alone takes the rest: its own part, then the others'.
		for k := 0; ; k++ {
			r := p.take(0)
			if r < 0 {
				break
			}
			if k > len(runs) {
				t.Fatalf("%d workers: more runs handed out than there are", n)
			}
			seen[r]++
		}
		if len(seen) != len(runs) {
			t.Errorf("%d workers: %d runs handed out, want %d", n, len(seen), len(runs))
		}
		for r, k := range seen {
			if k != 1 {
				t.Errorf("%d workers: run %d handed out %d times", n, r, k)
			}
		}
	}
}
