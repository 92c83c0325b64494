package host

import (
	"runtime"
	"testing"
)

// TestSyscallWorkers: GOMAXPROCS is raised to twice the workers while any
// caller runs, never lowered by one, and put back when the last one ends.
func TestSyscallWorkers(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	was := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(was)

	a := SyscallWorkers(2)
	if got := runtime.GOMAXPROCS(0); got != 4 {
		t.Fatalf("two workers: GOMAXPROCS %d, want 4", got)
	}
	b := SyscallWorkers(1) // asks for less: not lowered
	if got := runtime.GOMAXPROCS(0); got != 4 {
		t.Fatalf("a second caller lowered GOMAXPROCS to %d", got)
	}
	c := SyscallWorkers(3)
	if got := runtime.GOMAXPROCS(0); got != 6 {
		t.Fatalf("three workers: GOMAXPROCS %d, want 6", got)
	}
	a()
	a() // a second call of one done does nothing
	b()
	if got := runtime.GOMAXPROCS(0); got != 6 {
		t.Fatalf("put back while a caller still runs: GOMAXPROCS %d", got)
	}
	c()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("after the last caller: GOMAXPROCS %d, want 1 as it was", got)
	}
}

// TestSyscallWorkersLeavesTheEnvironment: GOMAXPROCS given in the
// environment is not changed.
func TestSyscallWorkersLeavesTheEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "1")
	was := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(was)
	done := SyscallWorkers(4)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS=1 in the environment: raised to %d", got)
	}
	done()
}
