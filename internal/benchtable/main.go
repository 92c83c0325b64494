// Command benchtable reads the output of go test -bench with -count N on
// standard input (passing it through to standard error) and prints one
// table: for each benchmark and each metric it reported, the median of
// the N runs and their minimum and maximum, so that a reader sees the
// noise. Each benchmark of upgradectl runs the standard tool in the same
// run and reports the ratio (speedup, x-faster-than-..., x-find, check/df,
// ...); its name says which tool.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

func main() {
	rows, order := parse(io.TeeReader(os.Stdin, os.Stderr))
	if len(order) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results read")
		os.Exit(1)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "BENCHMARK\tMETRIC\tMEDIAN\tMIN\tMAX\tRUNS")
	for _, k := range order {
		v := rows[k]
		sort.Float64s(v)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", k.bench, k.metric, num(median(v)), num(v[0]), num(v[len(v)-1]), len(v))
	}
	w.Flush()
}

type key struct{ bench, metric string }

// parse reads benchmark lines: "BenchmarkX-2  1  123 ns/op  1.5 speedup ...".
func parse(r io.Reader) (map[key][]float64, []key) {
	rows := map[key][]float64{}
	var order []key
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "pkg:" {
			pkg = f[1]
			continue
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := strings.TrimPrefix(pkg, "upgradectl/") + "." + trimProcs(f[0])
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			k := key{name, f[i+1]}
			if _, seen := rows[k]; !seen {
				order = append(order, k)
			}
			rows[k] = append(rows[k], v)
		}
	}
	return rows, order
}

// trimProcs drops the -GOMAXPROCS suffix of a benchmark name.
func trimProcs(s string) string {
	if i := strings.LastIndexByte(s, '-'); i > 0 {
		if _, err := strconv.Atoi(s[i+1:]); err == nil {
			return s[:i]
		}
	}
	return s
}

func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func num(v float64) string {
	if v != 0 && (v < 0.01 && v > -0.01 || v >= 1e6) {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
