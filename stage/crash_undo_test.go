package stage_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUndoInstallKilled kills undo install with SIGKILL at random moments
// (the restore of the tagged copies, the removal of new files, the tagging
// again, the unmount) with hard links among the files, reruns it, and
// checks that the product is exactly version 1 again, hard links intact,
// and that the upgrade then completes. A kill late in undo install left
// links of .Old.. names that every rerun refused, and reruns split
// hard-linked names. UPGRADECTL_UNDO_KILLS sets how many kills must land
// (40 by default; 500 in a row converged when this was written).
func TestUndoInstallKilled(t *testing.T) {
	bin, want, rng := crashSetup(t, "UPGRADECTL_UNDO_KILLS", 40)
	img := acmeISO(t, t.TempDir(), "2", "1")
	template := filepath.Join(t.TempDir(), "host")
	setUpHost(t, template, false, false)
	v1 := snapshot(t, template, false)
	// A host taken to install, for every round (the state names the
	// host's own paths: it is not copied).
	installed := func() runner {
		r := runner{bin: bin, root: freshHost(t, template)}
		r.must(t, "setup", "--iso", img)
		r.must(t, "continue")
		r.must(t, "continue")
		return r
	}
	probe := installed()
	start := time.Now()
	probe.must(t, "undo", "install")
	took := time.Since(start)
	if d := diffSnapshots(v1, snapshot(t, probe.root, false)); len(d) > 0 {
		t.Fatalf("undo install, not killed, does not give version 1 back: %v", d)
	}

	kills := 0
	for round := 0; kills < want; round++ {
		if round > 4*want {
			t.Fatalf("only %d kills landed in %d rounds", kills, round)
		}
		r := installed()
		if killAt(t, r, []string{"undo", "install"}, rng, took) {
			kills++
		}
		if out, code := r.run("undo", "install"); code != 0 {
			rep := status(t, r)
			if n := interrupted(rep); n != "" || rep.InProgress && code != 5 {
				t.Fatalf("round %d: undo install after the kill: exit %d\n%s\nstatus:\n%s", round, code, out, r.must(t, "status"))
			}
		}
		if d := diffSnapshots(v1, snapshot(t, r.root, false)); len(d) > 0 {
			t.Fatalf("round %d: after the kill and a rerun, not version 1: %v", round, d)
		}
		if round%10 == 0 {
			// And the upgrade still completes from there.
			for i := 0; status(t, r).InProgress; i++ {
				if i > 6 {
					t.Fatalf("round %d: the upgrade does not complete", round)
				}
				r.must(t, "continue")
			}
		}
		r.run("iso", "umount", "--all")
		os.RemoveAll(r.root)
	}
	t.Logf("%d kills landed in undo install (%v unkilled)", kills, took)
}
