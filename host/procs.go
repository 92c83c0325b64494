package host

import (
	"runtime"
	"sync"
)

// Go's scheduler takes the processor (P) of a goroutine that has been in a
// system call for more than a few microseconds when no other P is idle, and
// the goroutine has to find one again when the call returns; the scheduler's
// monitor then polls every 20 microseconds. Work in which every worker spends
// most of its time in short system calls (tagging and extracting files) pays
// for that on every call once all Ps are busy: on 2 CPUs, 10,000 files
// tagged with two workers took half the context switches and 7-15% less time
// with four Ps instead of two (xfs, btrfs and ext4, medians of 5-7 runs).

var procs struct {
	sync.Mutex
	users int
	was   int
}

// SyscallWorkers makes sure that n goroutines can be in system calls at
// once with Ps to spare: it raises GOMAXPROCS to at least 2n until the
// function it returns is called. Calls may overlap; the last one to end puts
// the setting back.
func SyscallWorkers(n int) (done func()) {
	procs.Lock()
	defer procs.Unlock()
	if procs.users == 0 {
		procs.was = runtime.GOMAXPROCS(0)
	}
	procs.users++
	if want := 2 * n; runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			procs.Lock()
			defer procs.Unlock()
			if procs.users--; procs.users == 0 {
				runtime.GOMAXPROCS(procs.was)
			}
		})
	}
}
