package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// TestDistPackages runs ./build.sh dist and checks what it makes: the rpm
// lists its files (rpm -qlp), and the .deb installs with dpkg -i in a
// Debian container where upgradectl check then runs from it, with its
// configuration file a conffile and its manual page in place.
func TestDistPackages(t *testing.T) {
	hosttest.RequireRoot(t)
	hosttest.RequireCommand(t, "git", "gzip")
	if out, err := exec.Command("./build.sh", "dist").CombinedOutput(); err != nil {
		t.Fatalf("./build.sh dist: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob("dist/upgradectl_*_amd64.deb")
	rpms, _ := filepath.Glob("dist/upgradectl-*.x86_64.rpm")
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("dist holds %v %v", debs, rpms)
	}
	want := []string{"/usr/sbin/upgradectl", "/usr/share/man/man8/upgradectl.8.gz", "/etc/upgradectl/upgradectl.toml",
		"/usr/share/bash-completion/completions/upgradectl", "/usr/share/zsh/vendor-completions/_upgradectl",
		"/usr/share/fish/vendor_completions.d/upgradectl.fish"}
	if _, err := exec.LookPath("rpm"); err == nil {
		out, err := exec.Command("rpm", "-qlp", rpms[0]).CombinedOutput()
		if err != nil {
			t.Fatalf("rpm -qlp: %v\n%s", err, out)
		}
		for _, f := range want {
			if !strings.Contains(string(out), f+"\n") {
				t.Errorf("the rpm lacks %s:\n%s", f, out)
			}
		}
		if out, _ := exec.Command("rpm", "-qcp", rpms[0]).CombinedOutput(); strings.TrimSpace(string(out)) != "/etc/upgradectl/upgradectl.toml" {
			t.Errorf("the rpm's configuration files: %s", out)
		}
	} else {
		t.Error("no rpm (package rpm): the rpm is not checked")
	}

	c := hosttest.NewContainer(t, hosttest.ContainerOptions{})
	deb, err := os.ReadFile(debs[0])
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(c.Dir, "root/upgradectl.deb"), deb, 0o644)
	c.Boot(t)
	c.MustExec(t, "dpkg", "-i", "/root/upgradectl.deb")
	if got := c.MustExec(t, "dpkg-query", "-W", "-f=${Conffiles}", "upgradectl"); !strings.Contains(got, "/etc/upgradectl/upgradectl.toml") {
		t.Errorf("conffiles: %q", got)
	}
	for _, f := range want {
		c.MustExec(t, "test", "-e", f)
	}
	// The checks run from the package, on its configuration (a container
	// without NTP fails some: exit 1, with the table).
	out, code, err := c.Exec("upgradectl", "check")
	t.Logf("upgradectl check: exit %d\n%s", code, out)
	if err != nil || code > 1 || !strings.Contains(out, "ntp.synced") || !strings.Contains(out, "disk.space") {
		t.Fatalf("upgradectl check from the package: exit %d, %v\n%s", code, err, out)
	}
	c.MustExec(t, "dpkg", "-r", "upgradectl")
	if _, code, _ := c.Exec("test", "-e", "/usr/sbin/upgradectl"); code == 0 {
		t.Error("dpkg -r left the binary")
	}
}
