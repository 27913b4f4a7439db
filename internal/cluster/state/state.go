// Package state is tandem's replicated state machine. It is pure and
// deterministic (standard library only, no clocks, no I/O): every node
// applies the same committed commands in the same order and reaches the
// same state. Timestamps come inside the commands, stamped by the proposer.
//
// The state is made of domains, one per capability: membership (members
// and join tokens) and failover (the floating-IP holder, its epoch, the
// mode, the move history and the placement policy) today. Each domain owns
// its data, its commands and its section of the snapshot (see Domain), and
// has its own change notification, so a burst of one domain's commands
// does not wake the loops that watch another.
//
// Reads are cheap: Apply builds the next state by copying only the domains
// a command changes and publishes it atomically, so View returns the
// current state without copying it. What View returns is shared and
// read-only.
//
// Every command type has a level, the state level that introduced it; a
// binary's level is the highest it knows, and each member records its own
// (Member.Level). The leader refuses a command some member cannot apply
// (Machine.Admissible), so that, during a rolling upgrade, a node never
// meets an entry it cannot decode.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// BaseLevel is the level of the command set of the binaries that predate
// levels; a member that has recorded none runs at this level.
const BaseLevel = 1

// Errors returned by Apply for commands that the state rejects. A rejected
// command leaves the state unchanged on every node.
var (
	ErrStaleEpoch    = errors.New("stale epoch: the holder changed since this decision was made")
	ErrUnknownMember = errors.New("unknown member")
	ErrBadToken      = errors.New("join token is not valid")
	ErrTokenExpired  = errors.New("join token has expired")
	ErrTokenUsedUp   = errors.New("join token has no uses left")
	ErrInvalid       = errors.New("invalid command")
	// ErrUnknownCommand is an entry whose type this binary does not know:
	// it was written by a newer one. Apply counts it (Machine.Undecodable).
	ErrUnknownCommand = errors.New("unknown command type")
	// ErrUpgradeNeeded is Admissible's refusal of a command some member
	// runs too old a tandem to apply.
	ErrUpgradeNeeded = errors.New("a member must be upgraded first")
	// ErrForbidden is a command the caller may not propose.
	ErrForbidden = errors.New("command not allowed for this caller")
)

// Command is one change to the state. Commands are encoded as a JSON
// envelope {"type": ..., "data": ...}, so the log stays readable and new
// command types can be added without breaking old entries.
type Command interface {
	Type() string
	// Apply changes the state through tx, or returns why it cannot; it
	// must be deterministic.
	Apply(tx *Tx) error
}

// Authorizer is implemented by commands that only some members may
// propose: Authorize returns an error wrapping ErrForbidden when the
// caller may not.
type Authorizer interface {
	Authorize(caller Member) error
}

// CommandType registers one command type of a domain.
type CommandType struct {
	Name string
	// Level is the state level that introduced the command.
	Level int
	// Ungated commands need not wait for every member to reach Level:
	// an older node skips them and nothing depends on it (reporting a
	// member's own level is the one such command).
	Ungated bool
	// Witness marks the commands a witness may propose: it reports and
	// votes, nothing more, so every other command from a witness is
	// refused (see Authorize).
	Witness bool
	// New returns a pointer to an empty command to decode into.
	New func() Command
}

// Domain is one capability's part of the state. Values of a domain are
// immutable once published: Apply works on Clone's result.
type Domain interface {
	// Name keys the domain's section of the snapshot and its change
	// notification.
	Name() string
	Commands() []CommandType
	// Empty returns the domain's initial value.
	Empty() any
	// Clone returns a copy of v that may be changed without touching v:
	// every map or slice a command changes in place must be copied.
	Clone(v any) any
	// Save encodes v as the domain's section of a snapshot.
	Save(v any) (json.RawMessage, error)
	// Restore decodes a section written by Save (of this or an older
	// version of the domain).
	Restore(data json.RawMessage) (any, error)
}

// Domains returns the domains of this binary, in a fixed order.
func Domains() []Domain {
	return []Domain{membershipDomain{}, failoverDomain{}, trustDomain{}, deployDomain{}, guardDomain{}}
}

// Limit returns the domains with only their commands up to level: a test
// builds an older node's state machine with it.
func Limit(level int, domains ...Domain) []Domain {
	out := make([]Domain, len(domains))
	for i, d := range domains {
		out[i] = limited{d, level}
	}
	return out
}

type limited struct {
	Domain
	level int
}

func (l limited) Commands() []CommandType {
	return slices.DeleteFunc(slices.Clone(l.Domain.Commands()), func(c CommandType) bool { return c.Level > l.level })
}

type registered struct {
	CommandType
	domain string
}

// Machine is the state machine. Its methods are safe for concurrent use.
type Machine struct {
	domains  []Domain
	commands map[string]registered
	level    int

	mu  sync.Mutex // serialises writers
	cur atomic.Pointer[version]

	undecodable atomic.Uint64
	lastUnknown atomic.Pointer[string]
}

// version is one published state: immutable but for closing its channels.
type version struct {
	snap    Snapshot
	changed map[string]chan struct{} // closed at the next change of each domain
	// unknown holds snapshot sections of domains this binary lacks,
	// written back unchanged by Save.
	unknown map[string]json.RawMessage
}

// New returns an empty state with this binary's domains.
func New() *Machine { return NewWith(Domains()...) }

// NewWith returns an empty state with the given domains. A domain name or
// command type registered twice is a programming error and panics.
func NewWith(domains ...Domain) *Machine {
	m := &Machine{domains: domains, commands: map[string]registered{}, level: BaseLevel}
	v := &version{changed: map[string]chan struct{}{}, snap: Snapshot{sections: map[string]any{}}}
	for _, d := range domains {
		if _, dup := v.changed[d.Name()]; dup {
			panic(fmt.Sprintf("state: domain %q registered twice", d.Name()))
		}
		v.changed[d.Name()] = make(chan struct{})
		v.snap.sections[d.Name()] = d.Empty()
		for _, c := range d.Commands() {
			if _, dup := m.commands[c.Name]; dup {
				panic(fmt.Sprintf("state: command %q registered twice", c.Name))
			}
			m.commands[c.Name] = registered{c, d.Name()}
			m.level = max(m.level, c.Level)
		}
	}
	v.snap.fill()
	m.cur.Store(v)
	return m
}

// Level is the newest command level this machine can apply.
func (m *Machine) Level() int { return m.level }

// View returns the current state without copying it. Its maps, slices and
// pointers are shared with the machine and with every other reader: read
// them, never change them.
func (m *Machine) View() Snapshot { return m.cur.Load().snap }

// Changed returns a channel that is closed at the next change of the named
// domain. Asking for a domain the machine lacks is a programming error and
// panics.
func (m *Machine) Changed(domain string) <-chan struct{} {
	ch, ok := m.cur.Load().changed[domain]
	if !ok {
		panic(fmt.Sprintf("state: no domain %q", domain))
	}
	return ch
}

// Undecodable counts the committed entries this machine could not decode,
// and names the type of the last one. Admissible keeps them from being
// proposed, so a count above zero means this node missed changes the
// others applied: upgrade it.
func (m *Machine) Undecodable() (count uint64, lastType string) {
	if p := m.lastUnknown.Load(); p != nil {
		lastType = *p
	}
	return m.undecodable.Load(), lastType
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

// Decode parses a command from the raft log with the machine's registry.
// A type the machine does not know wraps ErrUnknownCommand.
func (m *Machine) Decode(b []byte) (Command, error) {
	c, _, err := m.decode(b)
	return c, err
}

func (m *Machine) decode(b []byte) (Command, registered, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, registered{}, fmt.Errorf("decode command: %w", err)
	}
	reg, ok := m.commands[env.Type]
	if !ok {
		return nil, registered{}, fmt.Errorf("decode command: %w %q (this node knows state level %d)", ErrUnknownCommand, env.Type, m.level)
	}
	c := reg.New()
	if err := json.Unmarshal(env.Data, c); err != nil {
		return nil, registered{}, fmt.Errorf("decode %s: %w", env.Type, err)
	}
	return c, reg, nil
}

// Authorize checks, on the leader, that caller may propose the encoded
// command: a witness only what its type allows (CommandType.Witness), and
// every caller only what the command's own Authorizer allows.
func (m *Machine) Authorize(caller Member, data []byte) error {
	c, reg, err := m.decode(data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if caller.Name == "" {
		return fmt.Errorf("%w: only members may propose commands", ErrForbidden)
	}
	if caller.Role != RoleApp && !reg.Witness {
		return fmt.Errorf("%w: %s is a %s, which reports and votes only; run this on an app node", ErrForbidden, caller.Name, caller.Role)
	}
	if a, ok := c.(Authorizer); ok {
		return a.Authorize(caller)
	}
	return nil
}

// Admissible checks, on the leader before proposing, that every member can
// apply the encoded command: one that records a level below the command's
// gets an error wrapping ErrUpgradeNeeded that names it.
func (m *Machine) Admissible(data []byte) error {
	_, reg, err := m.decode(data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if reg.Ungated {
		return nil
	}
	s := m.View()
	for _, name := range s.Names() {
		if lv := s.Members[name].level(); lv < reg.Level {
			return fmt.Errorf("%w: %s runs tandem with state level %d; command %s needs level %d: upgrade %s first",
				ErrUpgradeNeeded, name, lv, reg.Name, reg.Level, name)
		}
	}
	return nil
}

// Apply applies one encoded command committed at raft index. It returns nil
// or the reason the command was rejected; either way the outcome is the same
// on every node that knows the command. An entry this machine cannot decode
// changes nothing and is counted (see Undecodable).
func (m *Machine) Apply(index uint64, data []byte) error {
	cmd, _, err := m.decode(data)
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.cur.Load()
	if err != nil {
		// An undecodable entry must not stop the log; it changes nothing.
		m.undecodable.Add(1)
		var env envelope
		_ = json.Unmarshal(data, &env)
		t := env.Type
		m.lastUnknown.Store(&t)
		m.publishIndex(cur, index)
		if errors.Is(err, ErrUnknownCommand) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	tx := &Tx{m: m, base: &cur.snap, edits: map[string]any{}}
	if err := cmd.Apply(tx); err != nil {
		m.publishIndex(cur, index)
		return err
	}
	next := &version{snap: cur.snap, changed: cur.changed, unknown: cur.unknown}
	next.snap.Index = max(index, cur.snap.Index)
	if len(tx.edits) > 0 {
		next.snap.sections = make(map[string]any, len(cur.snap.sections))
		next.changed = make(map[string]chan struct{}, len(cur.changed))
		for name, v := range cur.snap.sections {
			next.snap.sections[name] = v
		}
		for name, ch := range cur.changed {
			next.changed[name] = ch
		}
		for name, v := range tx.edits {
			next.snap.sections[name] = v
			next.changed[name] = make(chan struct{})
		}
		next.snap.fill()
	}
	m.cur.Store(next)
	for name := range tx.edits {
		close(cur.changed[name])
	}
	return nil
}

// publishIndex records a rejected or undecodable entry's index.
func (m *Machine) publishIndex(cur *version, index uint64) {
	if index <= cur.snap.Index {
		return
	}
	next := *cur
	next.snap.Index = index
	m.cur.Store(&next)
}

// Tx is one command's access to the state during Apply: it reads the
// current state and copies a domain the first time the command edits it.
type Tx struct {
	m     *Machine
	base  *Snapshot
	edits map[string]any
}

// Read returns a domain's value as the command sees it (with the command's
// own edits so far). It must not be changed: call Edit for that.
func (tx *Tx) Read(domain string) any {
	if v, ok := tx.edits[domain]; ok {
		return v
	}
	return tx.base.sections[domain]
}

// Edit returns a private copy of a domain's value that the command may
// change; it is published if the command succeeds.
func (tx *Tx) Edit(domain string) any {
	if v, ok := tx.edits[domain]; ok {
		return v
	}
	i := slices.IndexFunc(tx.m.domains, func(d Domain) bool { return d.Name() == domain })
	if i < 0 {
		panic(fmt.Sprintf("state: no domain %q", domain))
	}
	v := tx.m.domains[i].Clone(tx.base.sections[domain])
	tx.edits[domain] = v
	return v
}

// savedState is the snapshot format: one section per domain.
type savedState struct {
	Format  int                        `json:"format"`
	Index   uint64                     `json:"index"`
	Domains map[string]json.RawMessage `json:"domains"`
}

// snapshotFormat is savedState's format; snapshots without one are the
// flat format of the binaries before domains (see restoreFlat).
const snapshotFormat = 2

// Save serialises the state for a raft snapshot.
func (m *Machine) Save() ([]byte, error) {
	v := m.cur.Load()
	out := savedState{Format: snapshotFormat, Index: v.snap.Index, Domains: map[string]json.RawMessage{}}
	for name, raw := range v.unknown {
		out.Domains[name] = raw
	}
	for _, d := range m.domains {
		raw, err := d.Save(v.snap.sections[d.Name()])
		if err != nil {
			return nil, fmt.Errorf("save %s state: %w", d.Name(), err)
		}
		out.Domains[d.Name()] = raw
	}
	return json.Marshal(out)
}

// Restore replaces the state with a saved one, of this format or the
// older flat one.
func (m *Machine) Restore(data []byte) error {
	var saved savedState
	if err := json.Unmarshal(data, &saved); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	if saved.Format == 0 {
		var err error
		if saved, err = restoreFlat(data); err != nil {
			return fmt.Errorf("restore state (flat format): %w", err)
		}
	}
	if saved.Format > snapshotFormat {
		return fmt.Errorf("restore state: snapshot format %d is newer than this tandem's (%d): upgrade this node", saved.Format, snapshotFormat)
	}
	next := &version{snap: Snapshot{Index: saved.Index, sections: map[string]any{}}, changed: map[string]chan struct{}{}}
	for _, d := range m.domains {
		var v any
		if raw, ok := saved.Domains[d.Name()]; ok {
			var err error
			if v, err = d.Restore(raw); err != nil {
				return fmt.Errorf("restore %s state: %w", d.Name(), err)
			}
		} else {
			v = d.Empty()
		}
		next.snap.sections[d.Name()] = v
		next.changed[d.Name()] = make(chan struct{})
	}
	for name, raw := range saved.Domains {
		if _, known := next.snap.sections[name]; !known {
			if next.unknown == nil {
				next.unknown = map[string]json.RawMessage{}
			}
			next.unknown[name] = raw
		}
	}
	next.snap.fill()
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.cur.Load()
	m.cur.Store(next)
	for _, ch := range cur.changed {
		close(ch)
	}
	return nil
}

// UnknownSections names the snapshot sections of domains this binary
// lacks (kept and saved back unchanged), sorted.
func (m *Machine) UnknownSections() []string {
	var out []string
	for name := range m.cur.Load().unknown {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
