package hooks

import (
	"errors"
	"slices"
	"testing"

	"github.com/tandem-ha/tandem/internal/shellwords"
)

// SplitCommand is shellwords.Split (tested there); this checks the wrapper
// the agent calls passes words and errors through.
func TestSplitCommand(t *testing.T) {
	if got, err := SplitCommand(`/bin/notify 'two words' "x y"`); err != nil || !slices.Equal(got, []string{"/bin/notify", "two words", "x y"}) {
		t.Errorf("SplitCommand = %q, %v", got, err)
	}
	if got, err := SplitCommand("  \t"); err != nil || got != nil {
		t.Errorf("SplitCommand(blank) = %q, %v; want no words", got, err)
	}
	if _, err := SplitCommand(`a 'open`); !errors.Is(err, shellwords.ErrUnterminatedQuote) {
		t.Errorf("SplitCommand(unterminated) = %v", err)
	}
}
