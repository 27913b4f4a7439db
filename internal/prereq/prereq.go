// Package prereq holds the one error type for "this machine lacks something
// the operation needs": root, a tool, a Debian package, a kernel feature. The
// CLI maps it to exit code 3 (not ready), whichever package returned it.
package prereq

import (
	"errors"
	"strings"
)

// Error reports what is missing and how to fix it.
type Error struct {
	What string // who needs what, e.g. "the lab needs root"
	Fix  string // the command or step that fixes it
	// Output is the tail of a failed attempt's output, shown after the fix.
	Output string
}

func (e *Error) Error() string {
	s := e.What
	if e.Fix != "" {
		s += ": " + e.Fix
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		s += "\n" + out
	}
	return s
}

// Is reports whether err is (or wraps) an *Error.
func Is(err error) bool {
	var p *Error
	return errors.As(err, &p)
}
