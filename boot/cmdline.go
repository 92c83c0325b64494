package boot

import (
	"bytes"
	"os"
	"strings"
)

// bootUnitOverride returns the unit the kernel command line (or, in a
// container, the init's arguments) told systemd to boot into instead of
// default.target, as systemd reads them: the last systemd.unit= wins, as
// do the SysV runlevel words systemd understands (single, s, S, 1,
// emergency, -b, 2..5). "" when nothing overrides the default.
//
// procCmdline is /proc/cmdline, pid1Cmdline is /proc/1/cmdline (NUL
// separated), container tells whether systemd runs in a container, where it
// reads only its own arguments.
func bootUnitOverride(procCmdline, pid1Cmdline []byte, container bool) string {
	unit := ""
	if !container {
		unit = unitFromWords(strings.Fields(string(procCmdline)), false)
	}
	args := bytes.Split(bytes.TrimRight(pid1Cmdline, "\x00"), []byte{0})
	if len(args) > 1 {
		var words []string
		for _, a := range args[1:] {
			words = append(words, string(a))
		}
		if u := unitFromWords(words, true); u != "" {
			unit = u
		}
	}
	return unit
}

var runlevelUnits = map[string]string{
	"single": "rescue.target", "s": "rescue.target", "S": "rescue.target", "1": "rescue.target",
	"-s": "rescue.target", "emergency": "emergency.target", "-b": "emergency.target",
	"2": "runlevel2.target", "3": "runlevel3.target", "4": "runlevel4.target", "5": "runlevel5.target",
}

func unitFromWords(words []string, pid1 bool) string {
	unit := ""
	for _, w := range words {
		if w == "--" && !pid1 {
			// The rest goes to init as its arguments; systemd as PID 1
			// sees them in its own argv.
			break
		}
		if v, ok := strings.CutPrefix(w, "systemd.unit="); ok {
			if v != "" {
				unit = v
			}
			continue
		}
		if u, ok := runlevelUnits[w]; ok {
			unit = u
		}
	}
	return unit
}

// liveBootOverride reads the running system's command line.
func liveBootOverride() string {
	proc, _ := os.ReadFile("/proc/cmdline")
	pid1, _ := os.ReadFile("/proc/1/cmdline")
	return bootUnitOverride(proc, pid1, inContainer())
}

// inContainer reports whether systemd runs in a container: it writes
// /run/systemd/container then.
func inContainer() bool {
	_, err := os.Stat("/run/systemd/container")
	return err == nil
}
