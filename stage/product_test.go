package stage_test

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"upgradectl/host/hosttest"
)

// The sample product of the end-to-end tests: "acme" under /opt/acme, a
// few programs (shell scripts and a copy of /bin/true with its own bytes),
// a library with a symlink to it, and a configuration file, with modes,
// an owner, an extended attribute and fixed times. Version 1 is put on the
// host by the test; versions 2 and 3 come on ISO images built with xorriso
// that carry a manifest, the payload and an install script. Version 3 is
// broken: its self test fails, which the product's postinstall hook sees.

// acmeFiles are the files the images replace (their manifest's files).
var acmeFiles = []string{
	"/opt/acme/bin/acme",
	"/opt/acme/bin/acmectl",
	"/opt/acme/sbin/acmectl",               // a hard link of bin/acmectl
	"/opt/acme/bin/acme-report",            // new in version 2
	"/opt/acme/lib/plugins/acme-plugin.so", // new in version 2, in a new directory
	"/opt/acme/etc/acme.conf",
	"/opt/acme/lib/libacme.so",
	"/opt/acme/lib/libacme.so.1",
}

// writeAcme writes version v of the product under dir (a root or an image
// payload).
func writeAcme(t testing.TB, dir, v string) {
	t.Helper()
	selftest := fmt.Sprintf(`echo "acme %s self test: ok"; exit 0`, v)
	if v == "3" {
		selftest = `echo "acme 3 self test: libacme.so.1 has the wrong ABI" >&2; exit 1`
	}
	w := func(p string, data []byte, mode os.FileMode) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
	w("opt/acme/bin/acme", []byte(fmt.Sprintf("#!/bin/sh\n# acme %s\ncase \"$1\" in\nselftest) %s;;\n*) echo \"acme %s\";;\nesac\n", v, selftest, v)), 0o755)
	tr, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	w("opt/acme/bin/acmectl", append(tr, []byte("\nacmectl "+v+"\n")...), 0o755)
	// The same file under a second name: tagged, restored and installed
	// together, the two names stay one inode.
	os.MkdirAll(filepath.Join(dir, "opt/acme/sbin"), 0o755)
	os.Remove(filepath.Join(dir, "opt/acme/sbin/acmectl"))
	if err := os.Link(filepath.Join(dir, "opt/acme/bin/acmectl"), filepath.Join(dir, "opt/acme/sbin/acmectl")); err != nil {
		t.Fatal(err)
	}
	if v != "1" {
		w("opt/acme/lib/plugins/acme-plugin.so", []byte("plugin "+v+"\n"), 0o644)
		w("opt/acme/bin/acme-report", []byte("#!/bin/sh\necho \"acme report "+v+"\"\n"), 0o755)
	}
	lib := make([]byte, 300<<10)
	rand.New(rand.NewSource(int64(len(v)*1000 + int(v[0])))).Read(lib)
	w("opt/acme/lib/libacme.so.1", lib, 0o644)
	os.Remove(filepath.Join(dir, "opt/acme/lib/libacme.so"))
	if err := os.Symlink("libacme.so.1", filepath.Join(dir, "opt/acme/lib/libacme.so")); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "opt/acme/etc/acme.conf")
	w("opt/acme/etc/acme.conf", []byte(fmt.Sprintf("# acme %s\nlisten = 8080\nworkers = %s\n", v, v)), 0o640)
	if err := os.Chown(conf, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	w("opt/acme/share/doc/README", []byte("acme, not replaced by upgrades\n"), 0o644)
	if v == "1" {
		if err := unix.Lsetxattr(filepath.Join(dir, "opt/acme/lib/libacme.so.1"), "user.acme.build", []byte("build-1"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Fixed times, per version.
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(v[0]) * 24 * time.Hour)
	filepath.WalkDir(filepath.Join(dir, "opt/acme"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeSymlink == 0 {
			os.Chtimes(p, when, when)
		}
		return nil
	})
}

// installScript is the images' install command: it copies the payload
// over the product, in place, a file at a time; run again it does the same.
const installScript = `#!/bin/sh
set -eu
dst="${UPGRADECTL_ROOT%/}"
echo "installing acme $UPGRADECTL_NEW_VERSION over $UPGRADECTL_OLD_VERSION into ${dst:-/}"
cd "$UPGRADECTL_IMAGE_ROOT/payload"
for f in $(find . ! -type d | sort); do
	f=${f#./}
	mkdir -p "$dst/$(dirname "$f")"
	if [ -L "$f" ]; then
		[ "$(readlink "$dst/$f" 2>/dev/null || true)" = "$(readlink "$f")" ] || ln -sfn "$(readlink "$f")" "$dst/$f"
	else
		cp -p "$f" "$dst/$f"
	fi
	echo "installed /$f"
	if [ -n "${ACME_INSTALL_DELAY:-}" ]; then sleep "$ACME_INSTALL_DELAY"; fi
done
`

// acmeISO builds the image of version v (upgrading from) into dir and
// returns its path, named TYPE-VERSION-ARCH.iso.
func acmeISO(t testing.TB, dir, v, from string) string {
	t.Helper()
	hosttest.RequireCommand(t, "xorriso")
	src := filepath.Join(t.TempDir(), "iso")
	writeAcme(t, filepath.Join(src, "payload"), v)
	os.RemoveAll(filepath.Join(src, "payload/opt/acme/share"))
	files, _ := json.Marshal(acmeFiles)
	manifest := fmt.Sprintf("product = \"acme\"\ntype = \"acme\"\nversion = %q\narch = \"x86_64\"\ninstall = \"install.sh\"\nfiles = %s\nupgrades_from = [%q]\n", v, files, from)
	// The SHA-256 of the regular files the install puts in place.
	manifest += "[sha256]\n"
	for _, f := range acmeFiles {
		b, err := os.ReadFile(filepath.Join(src, "payload", f))
		if fi, lerr := os.Lstat(filepath.Join(src, "payload", f)); err == nil && lerr == nil && fi.Mode().IsRegular() {
			manifest += fmt.Sprintf("%q = \"%x\"\n", f, sha256.Sum256(b))
		}
	}
	if err := os.WriteFile(filepath.Join(src, "upgradectl.toml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "install.sh"), []byte(installScript), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("acme-%s-x86_64.iso", v))
	hosttest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-V", "ACME_"+v, "-o", out, src)
	// The checksum file beside it, as the images are delivered.
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sums, err := os.OpenFile(filepath.Join(dir, "md5sum.out"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	fmt.Fprintf(sums, "%x  %s\n", md5.Sum(b), filepath.Base(out))
	return out
}

// acmeConfig is the host's upgradectl configuration in the tests: the
// product, checks that make sense in a container without NTP or backups,
// and the stage switches.
func acmeConfig(maintenance, reboot bool) string {
	return fmt.Sprintf(`[product]
type = "acme"
version = "1"

[checks]
timeout = "2s"

[checks.severity]
"ntp.synced" = "warning"
"ntp.servers" = "warning"
"backup.recent" = "warning"
"systemd.failed-units" = "warning"

[checks.ntp]
from_host = false

[[checks.disk]]
path = "/"
min_free = "20MB"

[stages]
maintenance = %v
reboot_on_roll = %v
`, maintenance, reboot)
}

// selftestHook is the product's postinstall check, a hook.
const selftestHook = "#!/bin/sh\nexec \"${UPGRADECTL_ROOT%/}/opt/acme/bin/acme\" selftest\n"

// setUpHost puts version 1 of the product, the configuration and the
// product's hook under root.
func setUpHost(t testing.TB, root string, maintenance, reboot bool) {
	t.Helper()
	writeAcme(t, root, "1")
	for p, c := range map[string]string{
		"etc/upgradectl/upgradectl.toml":                          acmeConfig(maintenance, reboot),
		"etc/upgradectl/hooks.d/postinstall.post.d/50-acme-check": selftestHook,
	} {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// fileRecord is everything about one file that a backout must give back.
type fileRecord struct {
	Type   string
	Mode   uint32
	UID    uint32
	GID    uint32
	Size   int64
	Mtime  int64 // not for directories (tagging adds entries to them)
	Digest string
	Xattrs string
	Links  uint64 // of a regular file: a split hard link shows here
}

// snapshot records every file under root/opt/acme; with tags, the .Old..
// copies too.
func snapshot(t testing.TB, root string, tags bool) map[string]fileRecord {
	t.Helper()
	out := map[string]fileRecord{}
	base := filepath.Join(root, "opt/acme")
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !tags && strings.HasPrefix(d.Name(), ".Old..") {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		r := fileRecord{Mode: st.Mode, UID: st.Uid, GID: st.Gid}
		h := sha256.New()
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			r.Type = "dir"
		case unix.S_IFLNK:
			r.Type = "symlink"
			l, _ := os.Readlink(p)
			h.Write([]byte(l))
			r.Mtime = st.Mtim.Nano()
		case unix.S_IFREG:
			r.Type = "file"
			r.Size = st.Size
			r.Links = uint64(st.Nlink)
			r.Mtime = st.Mtim.Nano()
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		default:
			r.Type = "other"
		}
		r.Digest = hex.EncodeToString(h.Sum(nil))[:16]
		r.Xattrs = xattrs(p)
		rel, _ := filepath.Rel(root, p)
		out["/"+rel] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func xattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		parts = append(parts, name+"="+string(v[:m]))
	}
	return strings.Join(parts, ",")
}

// diffSnapshots lists what differs between two snapshots.
func diffSnapshots(a, b map[string]fileRecord) []string {
	var d []string
	for p, ra := range a {
		rb, ok := b[p]
		switch {
		case !ok:
			d = append(d, p+" is gone")
		case ra != rb:
			d = append(d, fmt.Sprintf("%s changed: %+v -> %+v", p, ra, rb))
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			d = append(d, p+" is new")
		}
	}
	sort.Strings(d)
	return d
}

func sameSnapshot(t testing.TB, what string, want, got map[string]fileRecord) {
	t.Helper()
	if d := diffSnapshots(want, got); len(d) > 0 {
		t.Fatalf("%s: %d differences:\n%s", what, len(d), strings.Join(d, "\n"))
	}
}

// upgradectl runs the built binary on root and returns its output and exit
// code.
type runner struct {
	bin, root string
	env       []string
}

func (r runner) cmd(args ...string) *exec.Cmd {
	full := append([]string{"--root", r.root}, args...)
	c := exec.Command(r.bin, full...)
	c.Env = append(os.Environ(), r.env...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

func (r runner) run(args ...string) (string, int) {
	out, err := r.cmd(args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		return string(out) + err.Error(), -1
	}
	return string(out), 0
}

func (r runner) must(t testing.TB, args ...string) string {
	t.Helper()
	out, code := r.run(args...)
	if code != 0 {
		t.Fatalf("upgradectl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}
