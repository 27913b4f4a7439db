package state

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// FailoverDomain names the failover domain: the floating-IP holder and its
// epoch, the mode, the move history and the placement policy.
const FailoverDomain = "failover"

// Modes of the cluster.
const (
	ModeAuto        = "auto"
	ModeMaintenance = "maintenance"
)

// maxMoves bounds the move history kept in the state.
const maxMoves = 200

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

// Failover is the failover domain's state. Read-only once published: the
// Moves slice and the Policy it points to are shared by every reader.
type Failover struct {
	Holder Holder  `json:"holder"`
	Mode   string  `json:"mode"`
	Policy *Policy `json:"policy,omitempty"` // nil until an app node publishes one
	Moves  []Move  `json:"moves"`
	// FailureResets holds, per node, when an operator last cleared its
	// failure count (see ResetFailures): failures before it are not counted.
	FailureResets map[string]time.Time `json:"failure_resets,omitempty"`
}

type failoverDomain struct{}

func (failoverDomain) Name() string { return FailoverDomain }

func (failoverDomain) Commands() []CommandType {
	return []CommandType{
		{Name: SetHolder{}.Type(), Level: 1, New: func() Command { return &SetHolder{} }},
		{Name: Activate{}.Type(), Level: 1, New: func() Command { return &Activate{} }},
		{Name: Released{}.Type(), Level: 1, New: func() Command { return &Released{} }},
		{Name: SetMode{}.Type(), Level: 1, New: func() Command { return &SetMode{} }},
		{Name: SetPolicy{}.Type(), Level: 1, New: func() Command { return &SetPolicy{} }},
		{Name: ResetFailures{}.Type(), Level: 3, New: func() Command { return &ResetFailures{} }},
	}
}

func (failoverDomain) Empty() any { return &Failover{Mode: ModeAuto} }

// Clone copies the moves (appended to in place) and the failure resets but
// shares the policy, which commands replace rather than change.
func (failoverDomain) Clone(v any) any {
	f := *v.(*Failover)
	f.Moves = slices.Clone(f.Moves)
	f.FailureResets = maps.Clone(f.FailureResets)
	return &f
}

func (failoverDomain) Save(v any) (json.RawMessage, error) { return json.Marshal(v) }

func (d failoverDomain) Restore(data json.RawMessage) (any, error) {
	f := d.Empty().(*Failover)
	if err := json.Unmarshal(data, f); err != nil {
		return nil, err
	}
	if f.Mode == "" {
		f.Mode = ModeAuto
	}
	return f, nil
}

func readFailover(tx *Tx) *Failover { return tx.Read(FailoverDomain).(*Failover) }
func editFailover(tx *Tx) *Failover { return tx.Edit(FailoverDomain).(*Failover) }

// LastMove returns the latest move, if any.
func (s Failover) LastMove() (Move, bool) {
	if len(s.Moves) == 0 {
		return Move{}, false
	}
	return s.Moves[len(s.Moves)-1], true
}

// MovesSince counts moves decided at or after t.
func (s Failover) MovesSince(t time.Time) int {
	n := 0
	for _, mv := range s.Moves {
		if !mv.DecidedAt.Before(t) {
			n++
		}
	}
	return n
}

// SetHolder moves the floating IP. It is a compare-and-set on the epoch:
// PrevEpoch must be the current epoch, so two decisions made from the same
// view cannot both win. Active may be true only when the decider has shown
// that the previous holder cannot still hold the IP.
type SetHolder struct {
	Node      string    `json:"node"`
	PrevEpoch uint64    `json:"prev_epoch"`
	Active    bool      `json:"active"`
	Reason    string    `json:"reason"`
	FaultAt   time.Time `json:"fault_at"`
	At        time.Time `json:"at"`
	Drain     bool      `json:"drain,omitempty"` // a planned move; see Holder.Drain
}

func (SetHolder) Type() string { return "set_holder" }

// Apply implements Command.
func (c SetHolder) Apply(tx *Tx) error {
	cur := readFailover(tx).Holder
	if c.PrevEpoch != cur.Epoch {
		return fmt.Errorf("%w (at %d, decided on %d)", ErrStaleEpoch, cur.Epoch, c.PrevEpoch)
	}
	if c.Node != "" {
		m, ok := readMembers(tx).Members[c.Node]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownMember, c.Node)
		}
		if m.Role != RoleApp {
			return fmt.Errorf("%w: %q is a witness and never holds the IP", ErrInvalid, c.Node)
		}
		if m.Pending {
			return fmt.Errorf("%w: %q has joined but is not a voter yet", ErrInvalid, c.Node)
		}
	}
	prev := cur.Node
	if prev == "" {
		prev = cur.Previous
	}
	epoch := cur.Epoch + 1
	f := editFailover(tx)
	f.Holder = Holder{Node: c.Node, Epoch: epoch, Active: c.Active, Previous: prev, Since: c.At, Drain: c.Drain && !c.Active}
	mv := Move{Epoch: epoch, From: prev, To: c.Node, Reason: c.Reason, FaultAt: c.FaultAt, DecidedAt: c.At}
	if c.Active {
		mv.ActivatedAt = c.At
	}
	f.Moves = append(f.Moves, mv)
	if len(f.Moves) > maxMoves {
		f.Moves = slices.Clone(f.Moves[len(f.Moves)-maxMoves:])
	}
	return nil
}

// Activate clears a pending holder to act, once the previous holder's lease
// has expired.
type Activate struct {
	Epoch uint64    `json:"epoch"`
	At    time.Time `json:"at"`
}

func (Activate) Type() string { return "activate" }

// Apply implements Command.
func (c Activate) Apply(tx *Tx) error {
	h := readFailover(tx).Holder
	if c.Epoch != h.Epoch {
		return fmt.Errorf("%w (at %d, activating %d)", ErrStaleEpoch, h.Epoch, c.Epoch)
	}
	if h.Active {
		return nil
	}
	f := editFailover(tx)
	f.Holder.Active = true
	f.Holder.Drain = false
	f.Holder.Since = c.At
	if n := len(f.Moves); n > 0 && f.Moves[n-1].Epoch == c.Epoch {
		f.Moves[n-1].ActivatedAt = c.At
	}
	return nil
}

// Released is the previous holder's confirmation that it no longer has the
// IP configured as of Epoch; it activates a pending holder at once.
type Released struct {
	Node  string    `json:"node"`
	Epoch uint64    `json:"epoch"` // the epoch the releasing node has seen
	At    time.Time `json:"at"`
}

func (Released) Type() string { return "released" }

// Apply implements Command.
func (c Released) Apply(tx *Tx) error {
	h := readFailover(tx).Holder
	if c.Epoch != h.Epoch || h.Active || h.Previous != c.Node {
		return nil // nothing pending on this node's release: harmless
	}
	return Activate{Epoch: c.Epoch, At: c.At}.Apply(tx)
}

// SetMode switches between automatic placement and maintenance.
type SetMode struct {
	Mode string `json:"mode"`
}

func (SetMode) Type() string { return "set_mode" }

// Apply implements Command.
func (c SetMode) Apply(tx *Tx) error {
	if c.Mode != ModeAuto && c.Mode != ModeMaintenance {
		return fmt.Errorf("%w: mode %q (want auto or maintenance)", ErrInvalid, c.Mode)
	}
	editFailover(tx).Mode = c.Mode
	return nil
}

// SetPolicy publishes the placement policy.
type SetPolicy struct {
	Policy Policy `json:"policy"`
}

func (SetPolicy) Type() string { return "set_policy" }

// Apply implements Command.
func (c SetPolicy) Apply(tx *Tx) error {
	// Zero failure fields are accepted: older versions publish none.
	if c.Policy.Cooloff < 0 || c.Policy.FailureThreshold < 0 || c.Policy.FailureWindow < 0 {
		return fmt.Errorf("%w: policy needs a cool-off, failure threshold and failure window >= 0", ErrInvalid)
	}
	p := c.Policy
	editFailover(tx).Policy = &p
	return nil
}
