package boot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"upgradectl/host"
)

// The files maintenance mode changes, by host path.
const (
	issuePath   = "/etc/issue"
	motdPath    = "/etc/motd"
	nologinPath = "/run/nologin"
)

// bannerFiles are the files whose originals Enter keeps and Exit restores,
// in the order Exit restores them.
var bannerFiles = []string{issuePath, motdPath}

// manualText is what the banner adds once the boot-loop guard has stopped
// the resume hook.
const manualText = "MANUAL INTERVENTION IS NEEDED: the upgrade did not continue after %d failed attempts.\nRun 'upgradectl maintenance status' as root."

func bannerLines(st *State) []string {
	lines := []string{st.Message}
	if st.Halted != "" {
		lines = append(lines, fmt.Sprintf(manualText, st.ResumeFailures))
	}
	return lines
}

// nologinText is /run/nologin: pam_nologin shows it to every non-root user
// it refuses.
func nologinText(st *State) []byte {
	return []byte(strings.Join(bannerLines(st), "\n") + "\nPlease try again later.\n")
}

// issueText is the console banner above the login prompt. agetty reads
// backslash escapes in /etc/issue, so backslashes are doubled.
func issueText(st *State) []byte {
	t := strings.Join(bannerLines(st), "\n")
	t = strings.ReplaceAll(t, `\`, `\\`)
	return []byte("\n" + t + "\nPlease try again later.\n\n")
}

// motdText is shown after a login (to root, the only one let in).
func motdText(st *State) []byte {
	return []byte(strings.Join(bannerLines(st), "\n") + "\nMaintenance mode since " +
		st.Since.Local().Format("2006-01-02 15:04:05 MST") + ": see 'upgradectl maintenance status'.\n")
}

// putBanner writes the banner and, on a live system, the login block. The
// digest of each banner is recorded in the state before the file is
// written, so that Exit can tell its own banner from a file the upgrade
// replaced meanwhile.
func putBanner(s *System, st *State) error {
	files := []struct {
		path string
		data []byte
	}{{issuePath, issueText(st)}, {motdPath, motdText(st)}}
	changed := false
	for _, f := range files {
		d := digest(f.data)
		if !slices.Contains(st.Written[f.path], d) {
			if st.Written == nil {
				st.Written = map[string][]string{}
			}
			st.Written[f.path] = append(st.Written[f.path], d)
			changed = true
		}
	}
	if changed {
		if err := saveState(s, st); err != nil {
			return err
		}
	}
	for _, f := range files {
		if bannerReplaced(s, st, f.path) {
			s.printf("kept %s: the upgrade replaced it", f.path)
			continue
		}
		real, err := hostPath(s.Root, f.path)
		if err != nil {
			return host.CannotRun("cannot write %s: %v", f.path, err)
		}
		if err := writeFile(real, f.data, 0o644, 0, 0); err != nil {
			return host.CannotRun("%v", err)
		}
	}
	if s.Live() {
		return putNologin(s, st)
	}
	return nil
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// bannerReplaced reports whether the banner file at host path p is no
// longer one maintenance mode wrote, nor the file as it was before: the
// upgrade put a new one there, which is kept (by a later enter or resume as
// by Exit). An absent file, or one never recorded, is not replaced.
func bannerReplaced(s *System, st *State, p string) bool {
	if len(st.Written[p]) == 0 {
		return false
	}
	real, err := hostPath(s.Root, p)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return false
	}
	saved, ok := st.Saved[p]
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(real)
		return err == nil && !(ok && saved.Kind == kindSymlink && saved.Link == target)
	}
	if !fi.Mode().IsRegular() {
		return true
	}
	b, err := os.ReadFile(real)
	if err != nil {
		return false
	}
	if ok && saved.Kind == kindFile && bytes.Equal(saved.Data, b) {
		return false // still the file from before: the banner was never written
	}
	return !slices.Contains(st.Written[p], digest(b))
}

// putNologin writes /run/nologin.
func putNologin(s *System, st *State) error {
	real, err := hostPath(s.Root, nologinPath)
	if err != nil {
		return host.CannotRun("cannot write %s: %v", nologinPath, err)
	}
	if err := writeFile(real, nologinText(st), 0o644, 0, 0); err != nil {
		return host.CannotRun("cannot block logins with %s: %v", nologinPath, err)
	}
	return nil
}
