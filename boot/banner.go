package boot

import (
	"fmt"
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

// putBanner writes the banner and, on a live system, the login block.
func putBanner(s *System, st *State) error {
	for _, f := range []struct {
		path string
		data []byte
	}{{issuePath, issueText(st)}, {motdPath, motdText(st)}} {
		real, err := hostPath(s.Root, f.path)
		if err != nil {
			return host.CannotRun("cannot write %s: %v", f.path, err)
		}
		if err := writeFile(real, f.data, 0o644, 0, 0); err != nil {
			return host.CannotRun("cannot write %s: %v", f.path, err)
		}
	}
	if s.Live() {
		return putNologin(s, st)
	}
	return nil
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
