// Package host holds what every part of upgradectl needs from the machine it
// runs on: the root prefix, durable files, the state lock, the upgrade log,
// the configuration and the error kinds that become exit codes.
package host

import (
	"errors"
	"fmt"
)

// Kind classifies an error for the exit code. The numbers are the exit codes.
type Kind int

const (
	// KindBad: what was checked or verified is bad.
	KindBad Kind = 1
	// KindUsage: the command line or the configuration is wrong.
	KindUsage Kind = 2
	// KindCannotRun: this host cannot do it (not root, missing device,
	// unsupported filesystem, I/O error).
	KindCannotRun Kind = 3
	// KindBusy: another upgradectl holds the lock.
	KindBusy Kind = 4
	// KindRefused: the upgrade state does not allow it.
	KindRefused Kind = 5
)

// Error is an error with a kind and an optional fix-it hint. Its text is the
// wrapped error's text.
type Error struct {
	Kind Kind
	Err  error
	Hint string
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func newErr(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// Bad reports that something checked or verified is bad (exit 1).
func Bad(format string, args ...any) error { return newErr(KindBad, format, args...) }

// Usage reports a usage or configuration error (exit 2).
func Usage(format string, args ...any) error { return newErr(KindUsage, format, args...) }

// CannotRun reports that the host cannot do it (exit 3).
func CannotRun(format string, args ...any) error { return newErr(KindCannotRun, format, args...) }

// Busy reports that another upgradectl holds the lock (exit 4).
func Busy(format string, args ...any) error { return newErr(KindBusy, format, args...) }

// Refused reports that the upgrade state does not allow it (exit 5).
func Refused(format string, args ...any) error { return newErr(KindRefused, format, args...) }

// WithHint attaches a fix-it hint to err, keeping its kind (or KindCannotRun
// when it had none).
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	var he *Error
	if errors.As(err, &he) {
		return &Error{Kind: he.Kind, Err: err, Hint: hint}
	}
	return &Error{Kind: KindCannotRun, Err: err, Hint: hint}
}

// KindOf returns the kind of err: the outermost *Error's kind, or 0 when err
// carries none.
func KindOf(err error) Kind {
	var he *Error
	if errors.As(err, &he) {
		return he.Kind
	}
	return 0
}

// HintOf returns the first fix-it hint found in err's chain.
func HintOf(err error) string {
	for err != nil {
		if he, ok := err.(*Error); ok && he.Hint != "" {
			return he.Hint
		}
		err = errors.Unwrap(err)
	}
	return ""
}
