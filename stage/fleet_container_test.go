package stage_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// TestFleetInContainers: two members with a real systemd, maintenance mode
// and the reboot in roll, one slot. The second cannot leave service while
// the first holds the slot; the first's boot hook finishes its roll after
// the reboot, leaves maintenance mode and gives the slot back; then the
// second goes, and both switch and clean.
func TestFleetInContainers(t *testing.T) {
	hosttest.RequireCommand(t, "xorriso")
	e := hosttest.NewEtcd(t, 1)
	bin := hosttest.Bin(t)
	o := fleetOpts{endpoints: e.Endpoints(), group: "default", slots: 1}
	var cs []*hosttest.Container
	for _, id := range []string{"ca", "cb"} {
		c := hosttest.NewContainer(t, hosttest.ContainerOptions{Bin: bin, NspawnArgs: []string{"--bind=/dev/fuse"}})
		setUpHost(t, c.Dir, true, true)
		f, err := os.OpenFile(filepath.Join(c.Dir, "etc/upgradectl/upgradectl.toml"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(fleetConfig(o, id))
		f.Close()
		img := acmeISO(t, filepath.Join(c.Dir, "root"), "2", "1")
		c.Boot(t)
		u, _ := containerCommands(t, c)
		u("boot", "install")
		u("setup", "--iso", "/root/"+filepath.Base(img))
		cs = append(cs, c)
	}
	a, b := cs[0], cs[1]
	ua, sa := containerCommands(t, a)
	ub, sb := containerCommands(t, b)
	ua("continue") // preinstall: a takes the slot and enters maintenance mode
	if out, code, _ := b.Exec("upgradectl", "continue"); code != 4 || !strings.Contains(out, "held by ca") {
		t.Fatalf("b's preinstall while a holds the only slot: exit %d\n%s", code, out)
	}
	var fs struct {
		Members []struct {
			ID, Maintenance string
			Slot            bool
		}
	}
	if err := json.Unmarshal([]byte(ua("fleet", "status", "--json")), &fs); err != nil || len(fs.Members) != 2 ||
		fs.Members[0].ID != "ca" || fs.Members[0].Maintenance != "in" || !fs.Members[0].Slot {
		t.Errorf("fleet status does not show a in maintenance mode holding the slot: %+v %v", fs, err)
	}
	ua("continue") // install
	ua("continue") // postinstall
	rollThroughReboot(t, a, ua, sa)
	waitFleet(t, ua, "1 free")
	if out := ua("fleet", "status"); !strings.Contains(out, "roll") {
		t.Errorf("fleet status after a's roll:\n%s", out)
	}
	if out := ua("maintenance", "status", "--json"); !strings.Contains(out, `"in":false`) || !strings.Contains(out, `"maintenance_active":false`) {
		t.Errorf("a is still in maintenance mode after its roll:\n%s", out)
	}
	for i := 0; i < 3; i++ { // preinstall, install, postinstall
		ub("continue")
	}
	rollThroughReboot(t, b, ub, sb)
	waitFleet(t, ub, "1 free")
	for _, u := range []func(...string) string{ua, ub, ua, ub} { // switch, then clean
		u("continue")
	}
	for _, st := range []func() *stage.Report{sa, sb} {
		if rep := st(); rep.InProgress || rep.ActiveVersion != "2" {
			t.Errorf("after the upgrade: in progress %v, active version %s", rep.InProgress, rep.ActiveVersion)
		}
	}
	if out := ub("fleet", "status"); !strings.Contains(out, "cluster acme: version 2 (switched from 1") {
		t.Errorf("fleet status at the end:\n%s", out)
	}
}

// waitFleet waits until fleet status says want: the boot hook publishes
// right after the stage it completed.
func waitFleet(t *testing.T, u func(...string) string, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out := u("fleet", "status")
		if strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet status never said %q:\n%s", want, out)
		}
		time.Sleep(time.Second)
	}
}
