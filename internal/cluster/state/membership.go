package state

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// MembershipDomain names the membership domain: the members and the join
// tokens.
const MembershipDomain = "membership"

// Roles of a member.
const (
	RoleApp     = "app"
	RoleWitness = "witness"
)

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
	// Level is the newest state level the member's tandem can apply (see
	// Machine.Admissible); 0 for members that joined before levels, which
	// run BaseLevel until they report theirs.
	Level int `json:"level,omitempty"`
	// Key pins the member's identity: "sha256:<hex>" of the
	// SubjectPublicKeyInfo of its certificate's key, recorded by the node
	// that signed its join (or, for members that joined before pins, once
	// by the member itself: SetMemberKey). Peers accept a certificate
	// named for the member only with this key, so the CA key alone cannot
	// impersonate it, and a removed member (no record) is refused at once.
	// "" means not pinned yet: its name is checked only.
	Key string `json:"key,omitempty"`
}

func (m Member) level() int { return max(m.Level, BaseLevel) }

// Token is a join token's replicated record. Only a hash of the secret is kept.
type Token struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	Expires    time.Time `json:"expires"`
	UsesLeft   int       `json:"uses_left"` // -1: unlimited
	Created    time.Time `json:"created"`
	// Role is the only role the token admits; "" (tokens made before
	// roles, and tests) admits either. The node that signs the join checks
	// it before the token's use is proposed.
	Role string `json:"role,omitempty"`
}

// Membership is the membership domain's state. Read-only once published.
type Membership struct {
	Members map[string]Member `json:"members"`
	Tokens  map[string]Token  `json:"tokens"`
}

type membershipDomain struct{}

func (membershipDomain) Name() string { return MembershipDomain }

func (membershipDomain) Commands() []CommandType {
	return []CommandType{
		{Name: AddMember{}.Type(), Level: 1, New: func() Command { return &AddMember{} }},
		{Name: RemoveMember{}.Type(), Level: 1, New: func() Command { return &RemoveMember{} }},
		{Name: PromoteMember{}.Type(), Level: 1, New: func() Command { return &PromoteMember{} }},
		{Name: AddToken{}.Type(), Level: 1, New: func() Command { return &AddToken{} }},
		{Name: UseToken{}.Type(), Level: 1, New: func() Command { return &UseToken{} }},
		{Name: RevokeToken{}.Type(), Level: 1, New: func() Command { return &RevokeToken{} }},
		{Name: SetMemberLevel{}.Type(), Level: 2, Ungated: true, Witness: true, New: func() Command { return &SetMemberLevel{} }},
		{Name: SetMemberPriority{}.Type(), Level: 2, Witness: true, New: func() Command { return &SetMemberPriority{} }},
		{Name: SetMemberKey{}.Type(), Level: 3, Witness: true, New: func() Command { return &SetMemberKey{} }},
	}
}

func (membershipDomain) Empty() any {
	return &Membership{Members: map[string]Member{}, Tokens: map[string]Token{}}
}

func (membershipDomain) Clone(v any) any {
	m := v.(*Membership)
	return &Membership{Members: maps.Clone(m.Members), Tokens: maps.Clone(m.Tokens)}
}

func (membershipDomain) Save(v any) (json.RawMessage, error) { return json.Marshal(v) }

func (d membershipDomain) Restore(data json.RawMessage) (any, error) {
	m := d.Empty().(*Membership)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, err
	}
	if m.Members == nil {
		m.Members = map[string]Member{}
	}
	if m.Tokens == nil {
		m.Tokens = map[string]Token{}
	}
	return m, nil
}

func readMembers(tx *Tx) *Membership { return tx.Read(MembershipDomain).(*Membership) }
func editMembers(tx *Tx) *Membership { return tx.Edit(MembershipDomain).(*Membership) }

// Names returns every member's name, pending ones included, sorted.
func (s Membership) Names() []string {
	return slices.Sorted(maps.Keys(s.Members))
}

// Voters returns the names of the members that are not pending, sorted.
func (s Membership) Voters() []string {
	var out []string
	for _, n := range s.Names() {
		if !s.Members[n].Pending {
			out = append(out, n)
		}
	}
	return out
}

// Apps returns the names of app members, sorted.
func (s Membership) Apps() []string {
	var out []string
	for _, n := range s.Voters() {
		if s.Members[n].Role == RoleApp {
			out = append(out, n)
		}
	}
	return out
}

// AddMember adds or updates a member.
type AddMember struct {
	Member Member `json:"member"`
}

func (AddMember) Type() string { return "add_member" }

// Apply implements Command.
func (c AddMember) Apply(tx *Tx) error {
	if c.Member.Name == "" || (c.Member.Role != RoleApp && c.Member.Role != RoleWitness) {
		return fmt.Errorf("%w: member needs a name and a role app|witness", ErrInvalid)
	}
	if c.Member.Key != "" && !validKey(c.Member.Key) {
		return fmt.Errorf("%w: member key %q: want sha256:<64 hex digits>", ErrInvalid, c.Member.Key)
	}
	editMembers(tx).Members[c.Member.Name] = c.Member
	return nil
}

// PromoteMember marks a pending member as a voter, once raft has made it
// one.
type PromoteMember struct {
	Name string `json:"name"`
}

func (PromoteMember) Type() string { return "promote_member" }

// Apply implements Command.
func (c PromoteMember) Apply(tx *Tx) error {
	m, ok := readMembers(tx).Members[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	if !m.Pending {
		return nil
	}
	m.Pending = false
	editMembers(tx).Members[c.Name] = m
	return nil
}

// RemoveMember removes a member. Removing the holder clears the holder in a
// new epoch, so the next placement starts from a clean slate.
type RemoveMember struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

func (RemoveMember) Type() string { return "remove_member" }

// Apply implements Command.
func (c RemoveMember) Apply(tx *Tx) error {
	if _, ok := readMembers(tx).Members[c.Name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	delete(editMembers(tx).Members, c.Name)
	forgetReport(tx, c.Name, c.At)
	if h := readFailover(tx).Holder; h.Node == c.Name {
		editFailover(tx).Holder = Holder{Epoch: h.Epoch + 1, Previous: c.Name, Since: c.At}
	}
	return nil
}

// SetMemberLevel records the newest state level a member's tandem can
// apply. Each node proposes its own when it starts.
type SetMemberLevel struct {
	Name  string `json:"name"`
	Level int    `json:"level"`
}

func (SetMemberLevel) Type() string { return "set_member_level" }

// Authorize lets only the node itself report its level.
func (c SetMemberLevel) Authorize(caller Member) error {
	if caller.Name != c.Name {
		return fmt.Errorf("%w: %s may not report the level of %s", ErrForbidden, caller.Name, c.Name)
	}
	return nil
}

// Apply implements Command.
func (c SetMemberLevel) Apply(tx *Tx) error {
	m, ok := readMembers(tx).Members[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	if c.Level < BaseLevel {
		return fmt.Errorf("%w: level %d (want %d or more)", ErrInvalid, c.Level, BaseLevel)
	}
	if m.Level == c.Level {
		return nil
	}
	m.Level = c.Level
	editMembers(tx).Members[c.Name] = m
	return nil
}

// SetMemberPriority changes a member's placement priority (the
// [failover] priority of its configuration) without a new join.
type SetMemberPriority struct {
	Name     string `json:"name"`
	Priority int    `json:"priority"`
}

func (SetMemberPriority) Type() string { return "set_member_priority" }

// Authorize lets a node set its own priority, and app nodes any node's.
func (c SetMemberPriority) Authorize(caller Member) error {
	if caller.Name != c.Name && caller.Role != RoleApp {
		return fmt.Errorf("%w: %s is a %s and may set only its own priority", ErrForbidden, caller.Name, caller.Role)
	}
	return nil
}

// Apply implements Command.
func (c SetMemberPriority) Apply(tx *Tx) error {
	m, ok := readMembers(tx).Members[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	if m.Priority == c.Priority {
		return nil
	}
	m.Priority = c.Priority
	editMembers(tx).Members[c.Name] = m
	return nil
}

// SetMemberKey pins the key of a member that joined before keys were
// pinned (an upgrade): the member reports its own, once. A pinned key is
// never replaced this way; a node with a new key joins again.
type SetMemberKey struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func (SetMemberKey) Type() string { return "set_member_key" }

// Authorize lets only the node itself report its key.
func (c SetMemberKey) Authorize(caller Member) error {
	if caller.Name != c.Name {
		return fmt.Errorf("%w: %s may not report the key of %s", ErrForbidden, caller.Name, c.Name)
	}
	return nil
}

// Apply implements Command.
func (c SetMemberKey) Apply(tx *Tx) error {
	m, ok := readMembers(tx).Members[c.Name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	if !validKey(c.Key) {
		return fmt.Errorf("%w: key %q: want sha256:<64 hex digits>", ErrInvalid, c.Key)
	}
	switch m.Key {
	case c.Key:
		return nil
	case "":
		m.Key = c.Key
		editMembers(tx).Members[c.Name] = m
		return nil
	}
	return fmt.Errorf("%w: %s already has a pinned key; a node with a new key must be removed and join again", ErrForbidden, c.Name)
}

// validKey reports whether k is "sha256:" and 64 lower-case hex digits.
func validKey(k string) bool {
	h, ok := strings.CutPrefix(k, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for _, r := range h {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// AddToken records a join token.
type AddToken struct {
	Token Token `json:"token"`
}

func (AddToken) Type() string { return "add_token" }

// Apply implements Command.
func (c AddToken) Apply(tx *Tx) error {
	if c.Token.ID == "" || c.Token.SecretHash == "" {
		return fmt.Errorf("%w: token needs an id and a secret hash", ErrInvalid)
	}
	if c.Token.UsesLeft == 0 {
		return fmt.Errorf("%w: token needs at least one use (or -1 for unlimited)", ErrInvalid)
	}
	editMembers(tx).Tokens[c.Token.ID] = c.Token
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

// Apply implements Command.
func (c UseToken) Apply(tx *Tx) error {
	t, ok := readMembers(tx).Tokens[c.ID]
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
		editMembers(tx).Tokens[c.ID] = t
	}
	return nil
}

// RevokeToken deletes a token.
type RevokeToken struct {
	ID string `json:"id"`
}

func (RevokeToken) Type() string { return "revoke_token" }

// Apply implements Command.
func (c RevokeToken) Apply(tx *Tx) error {
	if _, ok := readMembers(tx).Tokens[c.ID]; ok {
		delete(editMembers(tx).Tokens, c.ID)
	}
	return nil
}
