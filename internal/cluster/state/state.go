// Package state is tandem's replicated state machine: the members, the
// floating-IP holder and its epoch, the mode, the move history and the join
// tokens. It is pure and deterministic (standard library only, no clocks, no
// I/O): every node applies the same committed commands in the same order and
// reaches the same state. Timestamps come inside the commands, stamped by the
// proposer.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Roles of a member.
const (
	RoleApp     = "app"
	RoleWitness = "witness"
)

// Modes of the cluster.
const (
	ModeAuto        = "auto"
	ModeMaintenance = "maintenance"
)

// maxMoves bounds the move history kept in the state.
const maxMoves = 200

// Member is one node of the cluster.
type Member struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Address  string    `json:"address"` // IP:port of its mTLS listener
	Priority int       `json:"priority"`
	Joined   time.Time `json:"joined"`
	// Pending is true from the join until the node runs and raft has made
	// it a voter. A pending member is probed but is not counted in leases
	// or quorums and never holds the IP: a node that has joined but whose
	// agent is not up yet must not cost the holder its lease.
	Pending bool `json:"pending,omitempty"`
}

// Holder says who holds the floating IP.
//
// A move commits a new epoch with Active=false while the previous holder may
// still have the IP configured; the new holder acts only once Active is
// committed, which happens when the previous holder confirms its release or
// its lease has provably expired.
type Holder struct {
	Node     string    `json:"node"` // "" when nobody holds it
	Epoch    uint64    `json:"epoch"`
	Active   bool      `json:"active"`
	Previous string    `json:"previous"`
	Since    time.Time `json:"since"`
	// Drain marks a planned move (switchover, preemption): the previous
	// holder lets the connections in flight finish before it releases.
	Drain bool `json:"drain,omitempty"`
}

// Move records one change of holder.
type Move struct {
	Epoch       uint64    `json:"epoch"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	Reason      string    `json:"reason"`
	FaultAt     time.Time `json:"fault_at"` // when the DC first saw the fault
	DecidedAt   time.Time `json:"decided_at"`
	ActivatedAt time.Time `json:"activated_at"` // zero until active
}

// Duration is the time from the fault to the new holder being cleared to act.
func (m Move) Duration() time.Duration {
	if m.ActivatedAt.IsZero() || m.FaultAt.IsZero() {
		return 0
	}
	return m.ActivatedAt.Sub(m.FaultAt)
}

// Token is a join token's replicated record. Only a hash of the secret is kept.
type Token struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	Expires    time.Time `json:"expires"`
	UsesLeft   int       `json:"uses_left"` // -1: unlimited
	Created    time.Time `json:"created"`
}

// Policy is the cluster-wide placement policy. App nodes publish the one in
// their configuration, so that the designated controller applies it even
// when it is a witness, whose configuration has no floating IP. It is the
// only representation of the policy: the DC's placement reads it as is.
//
// Policies from older versions carry a max_moves_per_hour field, which is
// ignored, and no failure fields; zero failure fields mean the defaults
// (see the failover package).
type Policy struct {
	Preempt bool          `json:"preempt"`
	Cooloff time.Duration `json:"cooloff"`
	// FailureThreshold is how many failures within FailureWindow penalise
	// a node: it is then not chosen as a target while a healthy node that
	// is not penalised exists.
	FailureThreshold int           `json:"failure_threshold,omitempty"`
	FailureWindow    time.Duration `json:"failure_window,omitempty"`
}

// Snapshot is the whole state, as serialised in raft snapshots.
type Snapshot struct {
	Members map[string]Member `json:"members"`
	Holder  Holder            `json:"holder"`
	Mode    string            `json:"mode"`
	Policy  *Policy           `json:"policy,omitempty"` // nil until an app node publishes one
	Moves   []Move            `json:"moves"`
	Tokens  map[string]Token  `json:"tokens"`
	// FailureResets holds, per node, when an operator last cleared its
	// failure count (see ResetFailures): failures before it are not counted.
	FailureResets map[string]time.Time `json:"failure_resets,omitempty"`
	// Index is the raft index of the last applied command.
	Index uint64 `json:"index"`
}

// Errors returned by Apply for commands that the state rejects. A rejected
// command leaves the state unchanged on every node.
var (
	ErrStaleEpoch    = errors.New("stale epoch: the holder changed since this decision was made")
	ErrUnknownMember = errors.New("unknown member")
	ErrBadToken      = errors.New("join token is not valid")
	ErrTokenExpired  = errors.New("join token has expired")
	ErrTokenUsedUp   = errors.New("join token has no uses left")
	ErrInvalid       = errors.New("invalid command")
)

// Machine is the state machine. Its methods are safe for concurrent use.
type Machine struct {
	mu      sync.RWMutex
	s       Snapshot
	changed chan struct{}
}

// New returns an empty state.
func New() *Machine {
	return &Machine{s: empty(), changed: make(chan struct{})}
}

func empty() Snapshot {
	return Snapshot{Members: map[string]Member{}, Tokens: map[string]Token{}, Mode: ModeAuto}
}

// Changed returns a channel that is closed at the next change of state.
func (m *Machine) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

// View returns a deep copy of the current state.
func (m *Machine) View() Snapshot {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return clone(m.s)
}

func clone(s Snapshot) Snapshot {
	c := s
	c.Members = maps.Clone(s.Members)
	c.Tokens = maps.Clone(s.Tokens)
	c.Moves = slices.Clone(s.Moves)
	c.FailureResets = maps.Clone(s.FailureResets)
	if s.Policy != nil {
		p := *s.Policy
		c.Policy = &p
	}
	if c.Members == nil {
		c.Members = map[string]Member{}
	}
	if c.Tokens == nil {
		c.Tokens = map[string]Token{}
	}
	return c
}

// Apply applies one encoded command committed at raft index. It returns nil
// or the reason the command was rejected; either way the outcome is the same
// on every node.
func (m *Machine) Apply(index uint64, data []byte) error {
	cmd, err := Decode(data)
	if err != nil {
		// An undecodable entry must not stop the log; it changes nothing.
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next := clone(m.s)
	if err := cmd.apply(&next); err != nil {
		if index > m.s.Index {
			m.s.Index = index
		}
		return err
	}
	if index > next.Index {
		next.Index = index
	}
	m.s = next
	close(m.changed)
	m.changed = make(chan struct{})
	return nil
}

// Save serialises the state for a raft snapshot.
func (m *Machine) Save() ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return json.Marshal(m.s)
}

// Restore replaces the state with a saved one.
func (m *Machine) Restore(data []byte) error {
	s := empty()
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	s = clone(s)
	if s.Mode == "" {
		s.Mode = ModeAuto
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = s
	close(m.changed)
	m.changed = make(chan struct{})
	return nil
}

// Names returns every member's name, pending ones included, sorted.
func (s Snapshot) Names() []string {
	return slices.Sorted(maps.Keys(s.Members))
}

// Voters returns the names of the members that are not pending, sorted.
func (s Snapshot) Voters() []string {
	var out []string
	for _, n := range s.Names() {
		if !s.Members[n].Pending {
			out = append(out, n)
		}
	}
	return out
}

// Apps returns the names of app members, sorted.
func (s Snapshot) Apps() []string {
	var out []string
	for _, n := range s.Voters() {
		if s.Members[n].Role == RoleApp {
			out = append(out, n)
		}
	}
	return out
}

// LastMove returns the latest move, if any.
func (s Snapshot) LastMove() (Move, bool) {
	if len(s.Moves) == 0 {
		return Move{}, false
	}
	return s.Moves[len(s.Moves)-1], true
}

// MovesSince counts moves decided at or after t.
func (s Snapshot) MovesSince(t time.Time) int {
	n := 0
	for _, mv := range s.Moves {
		if !mv.DecidedAt.Before(t) {
			n++
		}
	}
	return n
}
