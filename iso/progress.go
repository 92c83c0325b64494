package iso

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"upgradectl/host"
)

// ProgressBar shows how far a long read has got: a bar redrawn in place on a
// terminal, otherwise a plain line at every tenth of the way (a boot hook's
// journal or a pipe gets at most ten lines). It is a ProgressSink.
type ProgressBar struct {
	w        io.Writer
	terminal bool
	label    string
	interval time.Duration

	total atomic.Int64
	done  atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	step  int64 // last tenth printed, plain mode
}

// NewProgressBar returns a ProgressBar writing to w; terminal says whether w is
// a terminal.
func NewProgressBar(w io.Writer, terminal bool, label string) *ProgressBar {
	iv := time.Second // plain lines: checked once a second, printed every tenth
	if terminal {
		iv = 200 * time.Millisecond
	}
	return &ProgressBar{w: w, terminal: terminal, label: label, interval: iv}
}

// Start begins showing progress towards total bytes.
func (p *ProgressBar) Start(total int64) {
	p.total.Store(total)
	p.start = time.Now()
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(p.interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.render(false)
			}
		}
	}()
}

// Add counts n more bytes done; it is safe from several goroutines.
func (p *ProgressBar) Add(n int) { p.done.Add(int64(n)) }

// Done stops showing progress, leaving the terminal line clear.
func (p *ProgressBar) Done() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	p.render(true)
}

func (p *ProgressBar) render(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	total, done := p.total.Load(), p.done.Load()
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	elapsed := time.Since(p.start)
	rate := float64(done) / max(elapsed.Seconds(), 0.001)
	eta := ""
	if rate > 0 && done < total {
		eta = " ETA " + time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second).String()
	}
	if p.terminal {
		if final {
			fmt.Fprint(p.w, "\r\033[K")
			return
		}
		const width = 30
		fill := int(frac * width)
		bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
		if fill < width && fill > 0 {
			bar = bar[:fill-1] + ">" + bar[fill:]
		}
		fmt.Fprintf(p.w, "\r\033[K%s [%s] %3.0f%% %s/%s %s/s%s", p.label, bar, frac*100,
			host.FormatSize(done), host.FormatSize(total), host.FormatSize(int64(rate)), eta)
		return
	}
	if final {
		return // the results follow
	}
	step := int64(frac * 10)
	if step <= p.step {
		return
	}
	p.step = step
	fmt.Fprintf(p.w, "%s: %3.0f%% %s of %s, %s/s%s\n", p.label, frac*100,
		host.FormatSize(done), host.FormatSize(total), host.FormatSize(int64(rate)), eta)
}
