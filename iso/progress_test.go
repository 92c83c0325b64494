package iso

import (
	"bytes"
	"strings"
	"testing"
)

// TestProgressBar drives the renderer by hand (no ticks): a plain writer
// gets one line per tenth and no more, a terminal gets a bar redrawn in
// place and cleared at the end.
func TestProgressBar(t *testing.T) {
	var plain bytes.Buffer
	p := NewProgressBar(&plain, false, "verifying")
	p.Start(1000)
	for i := 0; i < 100; i++ {
		p.Add(10)
		p.render(false)
	}
	p.Done()
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if len(lines) != 10 || !strings.HasPrefix(lines[0], "verifying:  10%") || !strings.HasPrefix(lines[9], "verifying: 100%") {
		t.Errorf("plain progress, %d lines:\n%s", len(lines), plain.String())
	}
	if strings.ContainsAny(plain.String(), "\r\033") {
		t.Errorf("plain progress has terminal controls: %q", plain.String())
	}

	var term bytes.Buffer
	p = NewProgressBar(&term, true, "verifying")
	p.Start(1 << 30)
	p.Add(1 << 29)
	p.render(false)
	p.Done()
	out := term.String()
	if !strings.Contains(out, "\r\033[Kverifying [==============>") || !strings.Contains(out, " 50% 512.0MiB/1.0GiB") ||
		!strings.HasSuffix(out, "\r\033[K") || strings.Contains(out, "\n") {
		t.Errorf("terminal progress: %q", out)
	}
}
