package prereq

import (
	"errors"
	"fmt"
	"testing"
)

func TestError(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"what and fix", &Error{What: "the lab needs root", Fix: "run it as root"}, "the lab needs root: run it as root"},
		{"what only", &Error{What: "no /proc"}, "no /proc"},
		{"with output", &Error{What: "venv fails", Fix: "apt-get install python3-venv", Output: "  boom\n"}, "venv fails: apt-get install python3-venv\nboom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIs(t *testing.T) {
	p := &Error{What: "x"}
	if !Is(p) || !Is(fmt.Errorf("wrapped: %w", p)) {
		t.Error("Is misses an *Error, plain or wrapped")
	}
	if Is(errors.New("x")) || Is(nil) {
		t.Error("Is matches an error that is not an *Error")
	}
}
