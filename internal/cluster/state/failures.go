package state

import (
	"encoding/json"
	"fmt"
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

// Apply implements Command.
func (c ResetFailures) Apply(tx *Tx) error {
	if _, ok := readMembers(tx).Members[c.Node]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Node)
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: reset_failures needs a time", ErrInvalid)
	}
	if !c.At.After(readFailover(tx).FailureResets[c.Node]) {
		return nil
	}
	f := editFailover(tx)
	if f.FailureResets == nil {
		f.FailureResets = map[string]time.Time{}
	}
	f.FailureResets[c.Node] = c.At
	return nil
}

// legacyPolicy is a Policy as versions before the failure penalties
// require it: they reject a set_policy without an hourly cap of at least 1.
type legacyPolicy struct {
	Policy
	MaxMovesPerHour int `json:"max_moves_per_hour"`
}

// noCap is an hourly cap that never binds.
const noCap = 1 << 20

// MarshalJSON adds to the published policy an hourly cap that never binds,
// so that older nodes accept it during a rolling upgrade and every node's
// state stays the same. This version ignores the field.
func (c SetPolicy) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Policy legacyPolicy `json:"policy"`
	}{legacyPolicy{Policy: c.Policy, MaxMovesPerHour: noCap}})
}
