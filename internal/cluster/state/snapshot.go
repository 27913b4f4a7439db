package state

import (
	"encoding/json"
)

// Snapshot is the state as readers see it (Machine.View): each built-in
// domain's value, embedded so that its fields read as s.Members or
// s.Holder, and every domain's section by name. It shares its maps, slices
// and pointers with the machine: read them, never change them.
type Snapshot struct {
	Membership
	Failover
	Trust
	// Index is the raft index of the last applied command.
	Index uint64

	sections map[string]any
}

// fill refreshes the embedded domain values from the sections.
func (s *Snapshot) fill() {
	if v, ok := s.sections[MembershipDomain].(*Membership); ok {
		s.Membership = *v
	}
	if v, ok := s.sections[FailoverDomain].(*Failover); ok {
		s.Failover = *v
	}
	if v, ok := s.sections[TrustDomain].(*Trust); ok {
		s.Trust = *v
	}
}

// Section returns a domain's current value (read-only), or nil when the
// machine has no such domain.
func (s Snapshot) Section(domain string) any { return s.sections[domain] }

// flatState is the snapshot format of the binaries before domains: one
// flat object. Restore still reads it, so a node whose latest snapshot was
// written by an older tandem comes up.
type flatState struct {
	Members map[string]Member `json:"members"`
	Tokens  map[string]Token  `json:"tokens"`
	Holder  Holder            `json:"holder"`
	Mode    string            `json:"mode"`
	Policy  *Policy           `json:"policy,omitempty"`
	Moves   []Move            `json:"moves"`
	Index   uint64            `json:"index"`
}

// restoreFlat converts a flat snapshot to the sectioned format.
func restoreFlat(data []byte) (savedState, error) {
	var f flatState
	if err := json.Unmarshal(data, &f); err != nil {
		return savedState{}, err
	}
	mem, err := json.Marshal(Membership{Members: f.Members, Tokens: f.Tokens})
	if err != nil {
		return savedState{}, err
	}
	fo, err := json.Marshal(Failover{Holder: f.Holder, Mode: f.Mode, Policy: f.Policy, Moves: f.Moves})
	if err != nil {
		return savedState{}, err
	}
	return savedState{Format: snapshotFormat, Index: f.Index, Domains: map[string]json.RawMessage{
		MembershipDomain: mem, FailoverDomain: fo,
	}}, nil
}
