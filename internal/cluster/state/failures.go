package state

import (
	"fmt"
	"maps"
	"time"
)

// Failure counting is derived from the move history (moves away from a node
// for "holder unhealthy" or "holder lost"), so every node, and every DC
// after a leader change, computes the same counts. The only extra fact kept
// is when an operator last cleared a node's count.

// ResetFailures clears a node's failure count as of At: the failures
// decided at or before At no longer count ('tandem reset NODE').
type ResetFailures struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
}

func (ResetFailures) Type() string { return "reset_failures" }
func (c ResetFailures) apply(s *Snapshot) error {
	if _, ok := s.Members[c.Node]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Node)
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: reset_failures needs a time", ErrInvalid)
	}
	resets := maps.Clone(s.FailureResets)
	if resets == nil {
		resets = map[string]time.Time{}
	}
	if c.At.After(resets[c.Node]) {
		resets[c.Node] = c.At
	}
	s.FailureResets = resets
	return nil
}
