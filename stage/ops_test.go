package stage_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"upgradectl/host/hosttest"
	"upgradectl/stage"
)

// upgradeTo runs a whole upgrade to version v (from the version before it)
// with setup and continue, and returns its id.
func upgradeTo(t *testing.T, r runner, v, from string) string {
	t.Helper()
	r.must(t, "setup", "--iso", acmeISO(t, t.TempDir(), v, from))
	id := status(t, r).Upgrade
	for status(t, r).InProgress {
		r.must(t, "continue")
	}
	return id
}

func TestHistory(t *testing.T) {
	r := rootHost(t)
	if out := r.must(t, "log", "--history"); !strings.Contains(out, "no upgrade yet") {
		t.Fatalf("log --history before any upgrade:\n%s", out)
	}
	id2 := upgradeTo(t, r, "2", "1")
	time.Sleep(time.Second) // upgrade ids are start times, to the second
	id4 := upgradeTo(t, r, "4", "2")
	time.Sleep(time.Second)
	// Version 3 fails its postinstall; while it is failed, and once it is
	// backed out, it is the upgrade in progress (not archived).
	r.must(t, "setup", "--iso", acmeISO(t, t.TempDir(), "3", "4"))
	id3 := status(t, r).Upgrade
	r.must(t, "continue")
	r.must(t, "continue")
	wantExit(t, r, 1, "postinstall failed", "continue")
	if out := r.must(t, "log", "--history"); !strings.Contains(out, id3) || !strings.Contains(out, "failed") {
		t.Errorf("log --history with version 3 failed:\n%s", out)
	}
	for _, n := range []string{"postinstall", "install", "preinstall", "setup"} {
		r.must(t, "undo", n)
	}

	var past []stage.Past
	if err := json.Unmarshal([]byte(r.must(t, "log", "--history", "--json")), &past); err != nil {
		t.Fatal(err)
	}
	want := []struct{ id, from, to, result string }{
		{id2, "1", "2", stage.OutcomeComplete}, {id4, "2", "4", stage.OutcomeComplete}, {id3, "4", "", stage.OutcomeUndone}, // undo setup forgets the version
	}
	if len(past) != len(want) {
		t.Fatalf("log --history --json: %+v, want %d upgrades", past, len(want))
	}
	for i, w := range want {
		p := past[i]
		if p.Upgrade != w.id || p.OldVersion != w.from || p.Version != w.to || p.Result != w.result || p.Start.IsZero() || p.End.Before(p.Start) {
			t.Errorf("upgrade %d: %+v, want %s %s -> %s %s with start and end", i, p, w.id, w.from, w.to, w.result)
		}
	}
	text := r.must(t, "log", "--history")
	for _, w := range []string{"UPGRADE", id2, id3, id4, "complete", "undone"} {
		if !strings.Contains(text, w) {
			t.Errorf("log --history does not show %s:\n%s", w, text)
		}
	}

	// One upgrade's log, from the archive.
	out := r.must(t, "log", "--upgrade", id2)
	if !strings.Contains(out, "upgrade "+id2+": version 1 to 2, complete") || !strings.Contains(out, "install command") || strings.Contains(out, "version 2 to 4") {
		t.Errorf("log --upgrade %s:\n%s", id2, out)
	}
	var n int
	for _, line := range strings.Split(strings.TrimSpace(r.must(t, "--json", "log", "--upgrade", id4)), "\n") {
		var e struct{ Message string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log --upgrade --json: %v: %s", err, line)
		}
		if strings.Contains(e.Message, "complete: version 2 to 4") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("log --upgrade %s --json has %d completion entries, want 1", id4, n)
	}
	// The one in progress (undone) reads the current log.
	if out := r.must(t, "log", "--upgrade", id3); !strings.Contains(out, "undo setup") {
		t.Errorf("log --upgrade %s (the current one):\n%s", id3, out)
	}
	wantExit(t, r, 2, `no such upgrade`, "log", "--upgrade", "20000101T000000Z")
	wantExit(t, r, 2, "neither --upgrade nor --last", "log", "--history", "--last", "2")
}

// TestMetricsWithNodeExporter reads upgradectl.prom through a real
// prometheus-node-exporter on a loopback port, during an upgrade and after.
func TestMetricsWithNodeExporter(t *testing.T) {
	hosttest.RequireCommand(t, "prometheus-node-exporter")
	r := rootHost(t)
	dir := filepath.Join(r.root, "var/lib/prometheus/node-exporter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	scrape := nodeExporter(t, dir)

	r.must(t, "check", "pre")
	r.must(t, "setup", "--iso", acmeISO(t, t.TempDir(), "2", "1"))
	r.must(t, "preinstall")
	r.must(t, "install")
	m := scrape()
	wantMetrics(t, "during the upgrade", m,
		`upgradectl_active_version_info{version="1"} 1`,
		`upgradectl_running_version_info{version="2"} 1`,
		`upgradectl_new_version_info{version="2"} 1`,
		`upgradectl_stage_info{stage="install",status="done"} 1`,
		`upgradectl_upgrade_in_progress 1`,
		`upgradectl_check_status_info{id="disk.space",profile="pre",status="pass"} 1`,
		`upgradectl_check_blocking{id="disk.space"} 0`,
		`outcome="in progress"`,
		`upgradectl_last_upgrade_start_timestamp_seconds `,
		`upgradectl_maintenance_mode 0`,
		`node_textfile_scrape_error 0`,
	)
	if strings.Contains(m, "upgradectl_last_upgrade_end_timestamp_seconds ") {
		t.Error("an end time while the upgrade is in progress")
	}
	if t.Failed() {
		t.Fatalf("/metrics:\n%s", m)
	}

	for status(t, r).InProgress {
		r.must(t, "continue")
	}
	m = scrape()
	wantMetrics(t, "after the upgrade", m,
		`upgradectl_active_version_info{version="2"} 1`,
		`upgradectl_running_version_info{version="2"} 1`,
		`upgradectl_upgrade_in_progress 0`,
		`old_version="1",outcome="complete"`,
		`upgradectl_last_upgrade_end_timestamp_seconds `,
		`upgradectl_check_status_info{id="disk.space",profile="post",status="pass"} 1`,
	)
	if strings.Contains(m, "upgradectl_stage_info") {
		t.Error("a current stage with no upgrade in progress")
	}
	if t.Failed() {
		t.Fatalf("/metrics:\n%s", m)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left in the textfile directory: %v", left)
	}
}

func wantMetrics(t *testing.T, when, metrics string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(metrics, w) {
			t.Errorf("%s /metrics has no %s", when, w)
		}
	}
}

// nodeExporter runs prometheus-node-exporter with only the textfile
// collector on dir, on a free loopback port, and returns a scrape of its
// /metrics.
func nodeExporter(t *testing.T, dir string) func() string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command("prometheus-node-exporter", "--web.listen-address="+addr, "--collector.disable-defaults",
		"--collector.textfile", "--collector.textfile.directory="+dir)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	client := &http.Client{Transport: &http.Transport{Proxy: nil}} // loopback only, never a proxy
	return func() string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := client.Get(fmt.Sprintf("http://%s/metrics", addr))
			if err == nil {
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 {
					return string(b)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("node exporter on %s does not answer: %v\n%s", addr, err, log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestInstallWithoutFUSE runs the binary in a mount namespace of its own
// whose /dev has no fuse node (a tmpfs over /dev with null, zero and
// urandom only), on this kernel without iso9660: nothing can mount the
// image, so install extracts it into the state directory; undo install
// and iso umount empty it, and install extracts it again.
func TestInstallWithoutFUSE(t *testing.T) {
	r := withoutFUSE(t, rootHost(t))
	r.must(t, "setup", "--iso", acmeISO(t, t.TempDir(), "2", "1"))
	r.must(t, "preinstall")
	mnt := filepath.Join(r.root, "var/lib/upgradectl/mnt")
	out := r.must(t, "install")
	if !strings.Contains(out, "no /dev/fuse") || !strings.Contains(out, "extracted into") {
		t.Fatalf("install does not say it extracted the image:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(mnt, "upgradectl.toml")); err != nil {
		t.Fatalf("the image is not extracted: %v", err)
	}
	if s := r.must(t, "status"); !strings.Contains(s, "(extracted") {
		t.Errorf("status does not show the image extracted:\n%s", s)
	}
	if s := r.must(t, "iso", "mounts"); !strings.Contains(s, "extracted") {
		t.Errorf("iso mounts does not show the image extracted:\n%s", s)
	}
	if log := r.must(t, "--json", "log"); !strings.Contains(log, "extracted into") {
		t.Errorf("the log does not say the image was extracted:\n%s", log)
	}
	r.must(t, "undo", "install")
	if _, err := os.Lstat(mnt); !os.IsNotExist(err) {
		t.Fatalf("undo install left the extracted image: %v", err)
	}
	r.must(t, "install")
	r.must(t, "iso", "umount", "/var/lib/upgradectl/mnt") // inside the root
	if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
		t.Fatalf("iso umount left %d entries in %s (%v)", len(ents), mnt, err)
	}
	if s := r.must(t, "iso", "mounts"); strings.Contains(s, "extracted") {
		t.Errorf("iso umount left the record:\n%s", s)
	}
	// Install again finds nothing there and extracts it again.
	r.must(t, "install", "--force")
	if _, err := os.Stat(filepath.Join(mnt, "upgradectl.toml")); err != nil {
		t.Fatalf("install --force did not extract the image again: %v", err)
	}
}

// withoutFUSE runs r's binary in a mount namespace of its own whose /dev is
// a tmpfs with null, zero and urandom only: no /dev/fuse. Every exec keeps
// the pid, so the pid of the command is upgradectl's.
func withoutFUSE(t *testing.T, r runner) runner {
	t.Helper()
	hosttest.RequireCommand(t, "unshare", "mknod")
	if b, _ := os.ReadFile("/proc/filesystems"); strings.Contains(string(b), "iso9660") {
		t.Skip("the kernel has iso9660: the image would be mounted, not extracted")
	}
	wrapper := filepath.Join(t.TempDir(), "upgradectl-nofuse")
	script := `#!/bin/sh
exec unshare --mount --propagation private sh -c 'mount -t tmpfs -o mode=755 nofuse /dev &&
mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9 &&
exec "$0" "$@"' ` + r.bin + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r.bin = wrapper
	return r
}

// TestKilledExtraction: install is killed (SIGKILL) while it extracts the
// image; the record says the extraction is partial, continue empties it and
// extracts the whole image, and undo install removes it.
func TestKilledExtraction(t *testing.T) {
	r := withoutFUSE(t, rootHost(t))
	// Version 2 with 64 files of 4 MiB of random data besides.
	dir := t.TempDir()
	small := acmeISO(t, t.TempDir(), "2", "1")
	bulk := filepath.Join(t.TempDir(), "bulk")
	os.MkdirAll(bulk, 0o755)
	const nBulk, bulkSize = 64, 4 << 20
	for i := 0; i < nBulk; i++ {
		hosttest.RandomFile(t, filepath.Join(bulk, fmt.Sprintf("f%02d", i)), bulkSize)
	}
	img := filepath.Join(dir, filepath.Base(small))
	hosttest.Run(t, "xorriso", "-indev", small, "-outdev", img, "-map", bulk, "/bulk", "-commit")
	hosttest.Run(t, "sh", "-c", "cd "+dir+" && md5sum "+filepath.Base(img)+" > md5sum.out")
	r.must(t, "setup", "--iso", img)
	r.must(t, "preinstall")

	mnt := filepath.Join(r.root, "var/lib/upgradectl/mnt")
	records := filepath.Join(r.root, "var/lib/upgradectl/iso-mounts.json")
	cmd := r.cmd("install")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		b, _ := os.ReadFile(records)
		if ents, _ := os.ReadDir(filepath.Join(mnt, "bulk")); strings.Contains(string(b), `"partial": true`) && len(ents) > 0 {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			killed = true
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	err := cmd.Wait()
	if !killed {
		t.Fatalf("install ended before it could be killed in its extraction: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(mnt, "bulk"))
	t.Logf("killed with %d of %d bulk files extracted", len(ents), nBulk)
	if s := stageOf(status(t, r), stage.Install); s.Status != stage.Running || !s.Interrupted {
		t.Fatalf("install after kill -9: %+v, want running and interrupted", s)
	}
	if out := r.must(t, "iso", "mounts"); !strings.Contains(out, "partial") {
		t.Errorf("iso mounts does not show the extraction partial:\n%s", out)
	}
	r.must(t, "continue")
	ents, err = os.ReadDir(filepath.Join(mnt, "bulk"))
	if err != nil || len(ents) != nBulk {
		t.Fatalf("after continue %d bulk files (%v), want %d", len(ents), err, nBulk)
	}
	for _, e := range ents {
		if fi, err := e.Info(); err != nil || fi.Size() != bulkSize {
			t.Errorf("%s: %v %v, want %d bytes", e.Name(), fi, err, bulkSize)
		}
	}
	if out := r.must(t, "iso", "mounts"); strings.Contains(out, "partial") {
		t.Errorf("iso mounts still shows the extraction partial:\n%s", out)
	}
	r.must(t, "undo", "install")
	if _, err := os.Lstat(mnt); !os.IsNotExist(err) {
		t.Fatalf("undo install left the extracted image: %v", err)
	}
}
