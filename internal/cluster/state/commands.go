package state

import (
	"encoding/json"
	"fmt"
	"time"
)

// Command is one change to the state. Commands are encoded as a JSON
// envelope {"type": ..., "data": ...}, so the log stays readable and new
// command types can be added without breaking old entries.
type Command interface {
	Type() string
	apply(s *Snapshot) error
}

type envelope struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// Encode serialises a command for the raft log.
func Encode(c Command) ([]byte, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	return json.Marshal(envelope{Type: c.Type(), Data: data})
}

// Decode parses a command from the raft log.
func Decode(b []byte) (Command, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	var c Command
	switch env.Type {
	case "add_member":
		c = &AddMember{}
	case "remove_member":
		c = &RemoveMember{}
	case "promote_member":
		c = &PromoteMember{}
	case "set_holder":
		c = &SetHolder{}
	case "activate":
		c = &Activate{}
	case "released":
		c = &Released{}
	case "set_mode":
		c = &SetMode{}
	case "add_token":
		c = &AddToken{}
	case "use_token":
		c = &UseToken{}
	case "revoke_token":
		c = &RevokeToken{}
	case "set_policy":
		c = &SetPolicy{}
	case "reset_failures":
		c = &ResetFailures{}
	default:
		return nil, fmt.Errorf("decode command: unknown type %q", env.Type)
	}
	if err := json.Unmarshal(env.Data, c); err != nil {
		return nil, fmt.Errorf("decode %s: %w", env.Type, err)
	}
	return c, nil
}

// AddMember adds or updates a member.
type AddMember struct {
	Member Member `json:"member"`
}

func (AddMember) Type() string { return "add_member" }
func (c AddMember) apply(s *Snapshot) error {
	if c.Member.Name == "" || (c.Member.Role != RoleApp && c.Member.Role != RoleWitness) {
		return fmt.Errorf("%w: member needs a name and a role app|witness", ErrInvalid)
	}
	s.Members[c.Member.Name] = c.Member
	return nil
}

// PromoteMember marks a pending member as a voter, once raft has made it
// one.
type PromoteMember struct {
	Name string `json:"name"`
}

func (PromoteMember) Type() string { return "promote_member" }
func (c PromoteMember) apply(s *Snapshot) error {
	m, ok := s.Members[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	m.Pending = false
	s.Members[c.Name] = m
	return nil
}

// RemoveMember removes a member. Removing the holder clears the holder in a
// new epoch, so the next placement starts from a clean slate.
type RemoveMember struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

func (RemoveMember) Type() string { return "remove_member" }
func (c RemoveMember) apply(s *Snapshot) error {
	if _, ok := s.Members[c.Name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	delete(s.Members, c.Name)
	if s.Holder.Node == c.Name {
		s.Holder = Holder{Epoch: s.Holder.Epoch + 1, Previous: c.Name, Since: c.At}
	}
	return nil
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
func (c SetHolder) apply(s *Snapshot) error {
	if c.PrevEpoch != s.Holder.Epoch {
		return fmt.Errorf("%w (at %d, decided on %d)", ErrStaleEpoch, s.Holder.Epoch, c.PrevEpoch)
	}
	if c.Node != "" {
		m, ok := s.Members[c.Node]
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
	prev := s.Holder.Node
	if prev == "" {
		prev = s.Holder.Previous
	}
	epoch := s.Holder.Epoch + 1
	s.Holder = Holder{Node: c.Node, Epoch: epoch, Active: c.Active, Previous: prev, Since: c.At, Drain: c.Drain && !c.Active}
	mv := Move{Epoch: epoch, From: prev, To: c.Node, Reason: c.Reason, FaultAt: c.FaultAt, DecidedAt: c.At}
	if c.Active {
		mv.ActivatedAt = c.At
	}
	s.Moves = append(s.Moves, mv)
	if len(s.Moves) > maxMoves {
		s.Moves = s.Moves[len(s.Moves)-maxMoves:]
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
func (c Activate) apply(s *Snapshot) error {
	if c.Epoch != s.Holder.Epoch {
		return fmt.Errorf("%w (at %d, activating %d)", ErrStaleEpoch, s.Holder.Epoch, c.Epoch)
	}
	if s.Holder.Active {
		return nil
	}
	s.Holder.Active = true
	s.Holder.Drain = false
	s.Holder.Since = c.At
	if n := len(s.Moves); n > 0 && s.Moves[n-1].Epoch == c.Epoch {
		s.Moves[n-1].ActivatedAt = c.At
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
func (c Released) apply(s *Snapshot) error {
	h := s.Holder
	if c.Epoch != h.Epoch || h.Active || h.Previous != c.Node {
		return nil // nothing pending on this node's release: harmless
	}
	return Activate{Epoch: c.Epoch, At: c.At}.apply(s)
}

// SetMode switches between automatic placement and maintenance.
type SetMode struct {
	Mode string `json:"mode"`
}

func (SetMode) Type() string { return "set_mode" }
func (c SetMode) apply(s *Snapshot) error {
	if c.Mode != ModeAuto && c.Mode != ModeMaintenance {
		return fmt.Errorf("%w: mode %q (want auto or maintenance)", ErrInvalid, c.Mode)
	}
	s.Mode = c.Mode
	return nil
}

// AddToken records a join token.
type AddToken struct {
	Token Token `json:"token"`
}

func (AddToken) Type() string { return "add_token" }
func (c AddToken) apply(s *Snapshot) error {
	if c.Token.ID == "" || c.Token.SecretHash == "" {
		return fmt.Errorf("%w: token needs an id and a secret hash", ErrInvalid)
	}
	if c.Token.UsesLeft == 0 {
		return fmt.Errorf("%w: token needs at least one use (or -1 for unlimited)", ErrInvalid)
	}
	s.Tokens[c.Token.ID] = c.Token
	return nil
}

// UseToken consumes one use of a token, checking its secret and expiry at
// the proposer's time At.
type UseToken struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	At         time.Time `json:"at"`
}

func (UseToken) Type() string { return "use_token" }
func (c UseToken) apply(s *Snapshot) error {
	t, ok := s.Tokens[c.ID]
	if !ok || t.SecretHash != c.SecretHash {
		return ErrBadToken
	}
	if !c.At.Before(t.Expires) {
		return ErrTokenExpired
	}
	if t.UsesLeft == 0 {
		return ErrTokenUsedUp
	}
	if t.UsesLeft > 0 {
		t.UsesLeft--
	}
	s.Tokens[c.ID] = t
	return nil
}

// RevokeToken deletes a token.
type RevokeToken struct {
	ID string `json:"id"`
}

func (RevokeToken) Type() string { return "revoke_token" }
func (c RevokeToken) apply(s *Snapshot) error {
	delete(s.Tokens, c.ID)
	return nil
}

// SetPolicy publishes the placement policy.
type SetPolicy struct {
	Policy Policy `json:"policy"`
}

func (SetPolicy) Type() string { return "set_policy" }
func (c SetPolicy) apply(s *Snapshot) error {
	// Zero failure fields are accepted: older versions publish none.
	if c.Policy.Cooloff < 0 || c.Policy.FailureThreshold < 0 || c.Policy.FailureWindow < 0 {
		return fmt.Errorf("%w: policy needs a cool-off, failure threshold and failure window >= 0", ErrInvalid)
	}
	p := c.Policy
	s.Policy = &p
	return nil
}
