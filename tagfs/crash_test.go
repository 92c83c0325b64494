package tagfs

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/xattr"

	"upgradectl/host/hosttest"
)

// crashBudget bounds TestKillAnyMoment (the package's CI budget is about
// five minutes in all); UPGRADECTL_CRASH_BUDGET (a duration) changes it.
func crashBudget() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("UPGRADECTL_CRASH_BUDGET")); err == nil {
		return d
	}
	return 60 * time.Second
}

// TestKillAnyMoment runs the built binary's tag create, restore and clean
// on a real ext4 and btrfs, kills it with SIGKILL after a random delay, checks what a
// crash may leave, reruns the same command and checks that it completed:
// no file lost or half-written, no temporary file left.
func TestKillAnyMoment(t *testing.T) {
	// ext4 copies, btrfs clones: two thirds of the budget and one third.
	t.Run("ext4", func(t *testing.T) { killAnyMoment(t, "ext4", 256<<20, crashBudget()*2/3) })
	t.Run("btrfs", func(t *testing.T) { killAnyMoment(t, "btrfs", 256<<20, crashBudget()/3) })
}

func killAnyMoment(t *testing.T, fstype string, size int64, budget time.Duration) {
	bin := hosttest.Bin(t)
	root := hosttest.LoopFS(t, fstype, size)
	var paths []string
	var links [][2]string
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	t.Logf("seed %d", seed)
	rng = rand.New(rand.NewSource(seed))
	for i := 0; i < 300; i++ {
		h := fmt.Sprintf("/opt/app/d%d/f%03d", i%7, i)
		n := rng.Intn(48 << 10)
		if i%50 == 0 {
			n = 2 << 20
		}
		writeFile(t, filepath.Join(root, h), randBytes(int64(i), n), 0o644)
		paths = append(paths, h)
		if i%40 == 0 {
			l := fmt.Sprintf("/opt/app/d%d/l%03d", i%7, i)
			os.Symlink(fmt.Sprintf("f%03d", i), filepath.Join(root, l))
			paths = append(paths, l)
		}
		if i%30 == 7 {
			// A hard link in another directory: one copy for both names.
			l := fmt.Sprintf("/opt/app/d%d/h%03d", (i+1)%7, i)
			if err := os.Link(filepath.Join(root, h), filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, l)
			links = append(links, [2]string{h, l})
		}
	}
	// Both names of each hard link are one inode (the originals, or the
	// copies when both are tagged).
	linked := func(round int, tagged bool) {
		t.Helper()
		for _, l := range links {
			a, b := l[0], l[1]
			if tagged {
				a, b = TaggedPath(a), TaggedPath(b)
			}
			if snap(t, filepath.Join(root, a)).Ino != snap(t, filepath.Join(root, b)).Ino {
				t.Fatalf("round %d: %s and %s are not one inode", round, a, b)
			}
		}
	}
	run := func(delay time.Duration, args ...string) (killed bool, out string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--root", root}, args...)...)
		var buf strings.Builder
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		if delay >= 0 {
			select {
			case err = <-done:
			case <-time.After(delay):
				cmd.Process.Signal(syscall.SIGKILL)
				err = <-done
				killed = true
			}
		} else {
			err = <-done
		}
		if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			return true, buf.String()
		}
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, buf.String())
		}
		return false, buf.String()
	}
	timed := func(args ...string) time.Duration {
		start := time.Now()
		run(-1, args...)
		return time.Since(start)
	}
	create := []string{"tag", "create", "--version", "1", "/opt/app"}
	// One unkilled round measures how long each command runs.
	tCreate := timed(create...)
	tClean := timed("tag", "clean")
	timed(create...)
	install(t, root, paths)
	tRestore := timed("tag", "restore")
	delay := func(d time.Duration) time.Duration { return time.Duration(rng.Int63n(int64(d)*5/4 + 1)) }

	deadline := time.Now().Add(budget)
	kills, rounds := 0, 0
	for ; rounds < 200 && time.Now().Before(deadline); rounds++ {
		v1 := snapAll(t, root, paths)
		// create, killed at a random moment: originals untouched, every
		// .Old.. file there is complete and tagged.
		if k, _ := run(delay(tCreate), create...); k {
			kills++
		}
		for _, h := range paths {
			if now := snap(t, filepath.Join(root, h)); !sameMeta(now, v1[h]) {
				t.Fatalf("round %d: create changed the original %s", rounds, h)
			}
			checkCopy(t, root, h, v1[h], true)
		}
		if rounds%3 == 2 {
			// restore after the interrupted create: the originals stay
			// as they are, hard links included, and the copies go. It
			// renamed the copies over the originals and split links.
			run(-1, "tag", "restore")
			for _, h := range paths {
				if d := sameCopy(snap(t, filepath.Join(root, h)), v1[h], ""); d != "" {
					t.Fatalf("round %d: %s after restore of an interrupted create: %s", rounds, h, d)
				}
			}
			if temps, tagged := leftovers(t, root); len(tagged) > 0 {
				t.Fatalf("round %d: after restore of an interrupted create: %v %v", rounds, temps, tagged)
			}
			linked(rounds, false)
			run(-1, "tag", "clean")
			continue
		}
		run(-1, create...)
		if temps, tagged := leftovers(t, root); len(temps) > 0 || len(tagged) != len(paths) {
			t.Fatalf("round %d: after the rerun of create: temps %v, %d of %d tagged", rounds, temps, len(tagged), len(paths))
		}
		run(-1, "tag", "check", "--content")
		linked(rounds, true)

		if rounds%2 == 1 {
			// clean, killed: originals untouched, copies complete or gone.
			if k, _ := run(delay(tClean), "tag", "clean"); k {
				kills++
			}
			for _, h := range paths {
				checkCopy(t, root, h, v1[h], true)
			}
			run(-1, "tag", "clean")
			if temps, tagged := leftovers(t, root); len(temps)+len(tagged) > 0 {
				t.Fatalf("round %d: after the rerun of clean: %v %v", rounds, temps, tagged)
			}
			continue
		}
		// restore after an install, killed: each original is the new or
		// the old file whole, never missing or partial.
		install(t, root, paths)
		if k, _ := run(delay(tRestore), "tag", "restore"); k {
			kills++
		}
		for _, h := range paths {
			p := filepath.Join(root, h)
			now := snap(t, p)
			isOld := sameCopy(now, v1[h], "trusted.upgradectl.version") == ""
			b, _ := os.ReadFile(p)
			isNew := now.Content == "elsewhere-v2" || strings.HasPrefix(string(b), "version 2")
			_, err := os.Lstat(filepath.Join(root, TaggedPath(h)))
			switch {
			case !isOld && !isNew:
				t.Fatalf("round %d: %s is neither the old nor the new file", rounds, h)
			case isNew != (err == nil):
				t.Fatalf("round %d: %s: new file %v, tagged copy there %v", rounds, h, isNew, err == nil)
			}
			checkCopy(t, root, h, v1[h], true)
		}
		run(-1, "tag", "restore")
		for _, h := range paths {
			now := snap(t, filepath.Join(root, h))
			if d := sameCopy(now, v1[h], ""); d != "" {
				t.Fatalf("round %d: %s after the rerun of restore: %s", rounds, h, d)
			}
		}
		if temps, tagged := leftovers(t, root); len(temps)+len(tagged) > 0 {
			t.Fatalf("round %d: after the rerun of restore: %v %v", rounds, temps, tagged)
		}
		linked(rounds, false)
	}
	t.Logf("%d rounds, %d commands killed while running (create %v, clean %v, restore %v unkilled)", rounds, kills, tCreate, tClean, tRestore)
	if kills == 0 {
		t.Error("no command was ever killed while running")
	}
}

// checkCopy: a .Old.. file, if there, is a complete copy of the old file
// with the version attribute.
func checkCopy(t *testing.T, root, h string, old meta, mustHaveAttr bool) {
	t.Helper()
	p := filepath.Join(root, TaggedPath(h))
	if _, err := os.Lstat(p); err != nil {
		return
	}
	cp := snap(t, p)
	if d := sameCopy(cp, old, "trusted.upgradectl.version"); d != "" {
		t.Fatalf("%s: a partial or wrong copy: %s", p, d)
	}
	if v, err := xattr.LGet(p, "trusted.upgradectl.version"); mustHaveAttr && (err != nil || string(v) != "1") {
		t.Fatalf("%s: in place without its version attribute: %q %v", p, v, err)
	}
}
