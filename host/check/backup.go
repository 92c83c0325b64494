package check

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// backupData is the structured result of backup.recent.
type backupData struct {
	Patterns []string `json:"patterns"`
	Newest   string   `json:"newest,omitempty"` // host path
	ModTime  string   `json:"mtime,omitempty"`
	Age      float64  `json:"age_seconds,omitempty"`
	MaxAge   float64  `json:"max_age_seconds"`
	Files    int      `json:"files"`
	// Future counts the files dated more than a minute ahead, left out of
	// the age; FutureNewest is the latest of them.
	Future       int    `json:"future,omitempty"`
	FutureNewest string `json:"future_newest,omitempty"`
}

// maxBackupFiles bounds the walk through backup directories.
const maxBackupFiles = 100000

// checkBackup finds the newest regular file among the configured backup
// locations (glob patterns; a matching directory counts by the files in
// it) and requires it to be younger than checks.backup.max_age.
func checkBackup(ctx context.Context, e *env) Result {
	cfg := e.cfg.Checks.Backup
	d := backupData{Patterns: cfg.Paths, MaxAge: cfg.MaxAge.Seconds()}
	if len(cfg.Paths) == 0 {
		return Result{Status: Skip, Data: d, Message: "no backup locations configured: set checks.backup.paths in the configuration"}
	}
	var newest string
	var newestTime time.Time
	var problems []string
	denied := 0
	problem := func(verb, what string, err error) {
		if errors.Is(err, fs.ErrPermission) {
			denied++
		}
		problems = append(problems, fmt.Sprintf("cannot %s %s: %v", verb, what, unwrapPath(err)))
	}
	// A file dated ahead of the clock says nothing about how old the
	// backups are: left out, so that it cannot hide a stale one.
	var futureTime time.Time
	seen := func(p string, fi fs.FileInfo) {
		d.Files++
		switch t := fi.ModTime(); {
		case t.After(e.now.Add(time.Minute)):
			d.Future++
			if t.After(futureTime) {
				d.FutureNewest, futureTime = p, t
			}
		case t.After(newestTime):
			newest, newestTime = p, t
		}
	}
	for _, pat := range cfg.Paths {
		matches, err := rootGlob(e.root, pat)
		if err != nil {
			problem("search", pat, err)
		}
		for _, m := range matches {
			if ctx.Err() != nil || d.Files >= maxBackupFiles {
				break
			}
			real, err := e.root.Resolve(m)
			if err != nil {
				problem("read", m, err)
				continue
			}
			fi, err := os.Stat(real)
			if err != nil {
				problem("read", m, err)
				continue
			}
			if fi.Mode().IsRegular() {
				seen(m, fi)
				continue
			}
			if !fi.IsDir() {
				continue
			}
			// Walk the directory on the running system; WalkDir does not
			// follow symlinks, so it stays inside.
			err = walkFiles(ctx, real, func(p string, fi fs.FileInfo) bool {
				seen(path.Join(m, strings.TrimPrefix(p, real)), fi)
				return d.Files < maxBackupFiles
			})
			if err != nil {
				problem("read", m, err)
			}
		}
	}
	if d.Future > 0 {
		problems = append(problems, fmt.Sprintf("%d file(s) dated in the future left out, the latest %s by %s: check the clock",
			d.Future, d.FutureNewest, fmtAge(futureTime.Sub(e.now))))
	}
	if newest == "" && d.Future > 0 {
		return Result{Status: Warn, Data: d, Message: "no backup dated in the past: " + strings.Join(problems, "; ")}
	}
	if newest == "" {
		if denied > 0 && denied == len(problems) {
			return Result{Status: Skip, Data: d, Message: "needs root to read the backup locations: " + strings.Join(problems, "; ")}
		}
		msg := "no backup found in " + strings.Join(cfg.Paths, ", ")
		if len(problems) > 0 {
			msg += " (" + strings.Join(problems, "; ") + ")"
		}
		return Result{Status: Fail, Data: d, Message: msg}
	}
	age := max(e.now.Sub(newestTime), 0) // up to a minute ahead: just written
	d.Newest = newest
	d.ModTime = newestTime.UTC().Format(time.RFC3339)
	d.Age = age.Seconds()
	note := ""
	if len(problems) > 0 {
		note = " (" + strings.Join(problems, "; ") + ")"
	}
	switch {
	case age > cfg.MaxAge.Duration:
		return Result{Status: Fail, Data: d, Message: fmt.Sprintf("newest backup %s is %s old (limit %s)%s", newest, fmtAge(age), fmtAge(cfg.MaxAge.Duration), note)}
	case len(problems) > 0:
		return Result{Status: Warn, Data: d, Message: fmt.Sprintf("newest backup %s is %s old%s", newest, fmtAge(age), note)}
	}
	return Result{Status: Pass, Data: d, Message: fmt.Sprintf("newest backup %s is %s old (limit %s)", newest, fmtAge(age), fmtAge(cfg.MaxAge.Duration))}
}

// walkFiles calls f for every regular file under dir until f returns
// false; unreadable subdirectories make the first error returned.
func walkFiles(ctx context.Context, dir string, f func(p string, fi fs.FileInfo) bool) error {
	var firstErr error
	stop := errors.New("stop")
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return nil
		}
		if ctx.Err() != nil {
			return stop
		}
		if !de.Type().IsRegular() {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		if !f(p, fi) {
			return stop
		}
		return nil
	})
	if err != nil && err != stop {
		return err
	}
	return firstErr
}

// fmtAge prints a duration in the largest sensible unit.
func fmtAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%.1f days", d.Hours()/24)
	case d >= time.Hour:
		return fmt.Sprintf("%.1fh", d.Hours())
	case d >= time.Minute:
		return fmt.Sprintf("%.0fmin", d.Minutes())
	}
	return d.Round(time.Second).String()
}
