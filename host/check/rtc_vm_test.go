package check

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"upgradectl/host/hosttest"
)

// rtcInit is the body of the VM's /init: the kernel set the system clock from
// the RTC at boot (UTC); each case moves the system clock (the VM's own)
// or /etc/adjtime and prints the clock.rtc result between markers.
const rtcInit = `mkdir -p /etc /var/lib
run() { echo "CASE $1 BEGIN"; upgradectl --json check --only clock.rtc; echo "CASE $1 END"; }
printf '0.0 0 0.0\n0\nUTC\n' > /etc/adjtime
run utc
rm /etc/adjtime
run none
date -s @$(( $(date +%s) + 10 )) > /dev/null
run ahead10
date -s @$(( $(date +%s) + 110 )) > /dev/null
run ahead120
# LOCAL in Tokyo (UTC+9, no summer time): with the system clock put back
# to the true time the RTC, read as Tokyo time, is 9 hours behind.
printf '0.0 0 0.0\n0\nLOCAL\n' > /etc/adjtime
cp /tokyo /etc/localtime
date -s @$(( $(date +%s) - 120 )) > /dev/null
run local-wrong
# ...and once the system clock is put where a LOCAL RTC would have put it.
date -s @$(( $(date +%s) - 32400 )) > /dev/null
run local-right
echo VMTEST-OK
poweroff -f
`

// TestRTCInVM reads a real RTC (the CMOS clock of a qemu machine) through
// RTC_RD_TIME, with Debian's kernel, the static binary and busybox in an
// initramfs.
func TestRTCInVM(t *testing.T) {
	const tz = "/usr/share/zoneinfo/Asia/Tokyo"
	vm := hosttest.NewVM(t, rtcInit)
	if _, err := os.Stat(tz); err != nil {
		t.Skipf("needs %s (Debian package tzdata)", tz)
	}
	vm.Copy(tz, "tokyo", 0o644)
	console, err := vm.Boot(256, "-rtc", "base=utc")
	if !strings.Contains(console, "VMTEST-OK") {
		t.Fatalf("VM did not finish (%v); console:\n%s", err, console)
	}
	for _, c := range []struct {
		name   string
		status Status
		mode   string
		drift  float64 // seconds, RTC minus system clock
	}{
		{"utc", Pass, "UTC", 0},
		{"none", Pass, "UTC", 0},
		{"ahead10", Warn, "UTC", -10},
		{"ahead120", Fail, "UTC", -120},
		{"local-wrong", Fail, "LOCAL", -9 * 3600},
		{"local-right", Pass, "LOCAL", 0},
	} {
		_, rest, _ := strings.Cut(console, "CASE "+c.name+" BEGIN\n")
		js, _, _ := strings.Cut(rest, "CASE "+c.name+" END")
		var rep Report
		if err := json.Unmarshal([]byte(js[strings.Index(js, "{"):]), &rep); err != nil || len(rep.Checks) != 1 {
			t.Errorf("%s: no report (%v):\n%s", c.name, err, js)
			continue
		}
		r := rep.Checks[0]
		t.Logf("%s: %s %s", c.name, r.Status, r.Message)
		d, _ := r.Data.(map[string]any)
		drift, _ := d["drift_seconds"].(float64)
		// The RTC counts whole seconds and date -s lands anywhere in one.
		if r.Status != c.status || d["mode"] != c.mode || drift < c.drift-2 || drift > c.drift+2 {
			t.Errorf("%s: %s %q, data %v; want %s, mode %s, drift %.0fs", c.name, r.Status, r.Message, d, c.status, c.mode, c.drift)
		}
	}
}
