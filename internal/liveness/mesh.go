package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Transport opens the streams the mesh sends its messages on.
// StreamTransport is the production one.
type Transport interface {
	// Dial connects to the member at addr, giving up at deadline or when
	// ctx ends. The connection must be authenticated as that member.
	Dial(ctx context.Context, addr string, deadline time.Time) (net.Conn, error)
}

// Source contributes one fact to this node's messages.
type Source struct {
	// Name identifies the fact, e.g. "failover"; at most MaxFactName bytes.
	Name string
	// Value returns the fact's current encoding, or nil to leave it out. It
	// is called for every message this node sends, so it must be cheap and
	// must not block.
	Value func() []byte
}

// Update tells subscribers of one message from a peer.
type Update struct {
	Peer  string
	Facts Facts
	// Prev holds the facts of the peer's previous answer; nil for a first
	// answer and when Sent is zero.
	Prev Facts
	// Sent is the send time of the latest message of this node's that the
	// peer had received when it sent this one (its Ack): the facts are at
	// least that recent, and so is the answer. It is zero when the peer
	// acknowledged none of this node's recent messages, or when a later
	// answer has already arrived: such a message may be late (TCP
	// retransmits it after a partition heals), so its facts must not be
	// taken as current.
	Sent time.Time
	// Announce is set on a message whose sender's facts just changed (see
	// Mesh.Announce).
	Announce bool
}

// Peer is a peer's latest answer: its latest message that acknowledged
// one of this node's.
type Peer struct {
	Facts Facts
	At    time.Time // when it arrived
}

// Options configures a Mesh.
type Options struct {
	Self    string
	Machine *state.Machine // the members to probe and the voters
	Tr      Transport
	// Interval is the time between probe rounds.
	Interval time.Duration
	// Lease is how long a node may act on a majority's answers: see
	// LeaseValid.
	Lease time.Duration
	// Margin is added to Lease before a silent peer counts as Dead.
	Margin time.Duration
	Logger *slog.Logger
}

// StartupGrace is how long a freshly started node waits for a peer it has
// never heard from before it may call that peer silent. After a restart of
// the whole cluster, the nodes come back one by one; without the grace, the
// first to start would declare the others dead.
const StartupGrace = 10 * time.Second

// sentRing is how many of its latest messages' send times a node keeps to
// match the acknowledgements it receives: at least a lease's worth at the
// probe rate, with room for the extra messages of kicks.
const sentRing = 256

// Mesh exchanges messages with all members. It is the single source of
// liveness for the lease, the DC's decisions and every capability's view
// of its peers.
type Mesh struct {
	self     string
	machine  *state.Machine
	tr       Transport
	interval time.Duration
	lease    time.Duration
	margin   time.Duration
	log      *slog.Logger
	started  time.Time

	kick     chan struct{}
	trigger  chan struct{} // a peer's periodic round arrived
	announce atomic.Bool   // the next round's probes carry Announce
	roster   atomic.Pointer[roster]

	smu     sync.RWMutex
	sources []Source
	subs    []func(Update)

	mu      sync.Mutex
	heard   map[string]time.Time // when the last message from a peer arrived
	lastIn  map[string]uint64    // ID of the last message from a peer, to acknowledge
	leaseAt map[string]time.Time // send time of the latest message a peer acknowledged
	peers   map[string]peerReply
	nextID  uint64
	sent    [sentRing]sentMsg

	cmu    sync.Mutex
	wg     sync.WaitGroup      // goroutines of spawn, waited for when Run ends
	links  map[string]*link    // one stream per peer
	conns  map[closer]struct{} // streams open, closed when Run ends
	closed bool
	ctx    context.Context // Run's, for dials
}

type sentMsg struct {
	id uint64
	at time.Time
}

type peerReply struct {
	Peer
	sent  time.Time
	heard map[string]int64
}

// New returns a mesh; call Run to start probing. Contribute and Subscribe
// before Run.
func New(o Options) (*Mesh, error) {
	if o.Self == "" || o.Machine == nil || o.Tr == nil {
		return nil, errors.New("liveness: Options need Self, Machine and Tr")
	}
	if o.Interval <= 0 || o.Lease <= o.Interval {
		return nil, fmt.Errorf("liveness: interval %v and lease %v: want 0 < interval < lease", o.Interval, o.Lease)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Mesh{
		self: o.Self, machine: o.Machine, tr: o.Tr, interval: o.Interval, lease: o.Lease, margin: o.Margin, log: o.Logger,
		started: time.Now(), kick: make(chan struct{}, 1), trigger: make(chan struct{}, 1),
		heard: map[string]time.Time{}, lastIn: map[string]uint64{}, leaseAt: map[string]time.Time{},
		peers: map[string]peerReply{}, nextID: uint64(time.Now().UnixNano()),
		links: map[string]*link{}, conns: map[closer]struct{}{},
	}, nil
}

// Self is this node's name.
func (m *Mesh) Self() string { return m.self }

// Lease is how long a majority's answers keep this node's lease.
func (m *Mesh) Lease() time.Duration { return m.lease }

// Margin is added to Lease before a silent peer counts as Dead.
func (m *Mesh) Margin() time.Duration { return m.margin }

// Interval is the time between probe rounds.
func (m *Mesh) Interval() time.Duration { return m.interval }

// Contribute adds a fact to this node's messages. A name may be used once.
func (m *Mesh) Contribute(s Source) error {
	if s.Name == "" || len(s.Name) > MaxFactName || s.Value == nil {
		return fmt.Errorf("liveness: fact %q: want a name of 1 to %d bytes and a Value func", s.Name, MaxFactName)
	}
	m.smu.Lock()
	defer m.smu.Unlock()
	if slices.ContainsFunc(m.sources, func(x Source) bool { return x.Name == s.Name }) {
		return fmt.Errorf("liveness: fact %q is contributed twice", s.Name)
	}
	m.sources = append(m.sources, s)
	return nil
}

// Subscribe calls fn for every message from a peer. Calls come from the
// mesh's goroutines, concurrently; fn must return quickly and not call
// back into blocking work.
func (m *Mesh) Subscribe(fn func(Update)) {
	m.smu.Lock()
	defer m.smu.Unlock()
	m.subs = append(m.subs, fn)
}

func (m *Mesh) publish(u Update) {
	m.smu.RLock()
	subs := m.subs
	m.smu.RUnlock()
	for _, fn := range subs {
		fn(u)
	}
}

// facts collects this node's facts.
func (m *Mesh) facts() Facts {
	m.smu.RLock()
	defer m.smu.RUnlock()
	var out Facts
	for _, s := range m.sources {
		if v := s.Value(); v != nil {
			out = append(out, Fact{Name: s.Name, Value: v})
		}
	}
	return out
}

// roster is the membership the mesh works with, rebuilt only after the
// state changes: the loops read it many times a second.
type roster struct {
	changed <-chan struct{}
	peers   []state.Member // members other than self with an address
	voters  []string
	members map[string]bool
	rank    int // this node's place among the members' names, sorted
}

func (m *Mesh) members() *roster {
	r := m.roster.Load()
	if r != nil {
		select {
		case <-r.changed:
		default:
			return r
		}
	}
	// Take the channel before the view: a change in between closes it and
	// the next call rebuilds.
	nr := &roster{changed: m.machine.Changed(state.MembershipDomain), members: map[string]bool{}}
	s := m.machine.View()
	for i, name := range s.Names() {
		mem := s.Members[name]
		nr.members[name] = true
		if name == m.self {
			nr.rank = i
		}
		if name != m.self && mem.Address != "" {
			nr.peers = append(nr.peers, mem)
		}
	}
	nr.voters = s.Voters()
	m.roster.Store(nr)
	return nr
}

// Run sends every other member a message each interval until ctx ends,
// then closes the streams.
//
// Rounds follow multiples of the interval on the wall clock, so that on
// nodes with synchronised clocks they coincide, and an idle agent wakes
// about once per interval instead of once per message: waking up costs far
// more CPU than the messages themselves. Only the first member by name
// starts a round on its timer; the others send theirs as soon as its
// round's message arrives, in the same wakeup, and acknowledge that very
// message. Their own timers, a few milliseconds later each in name order,
// start the round only when the ones before them are silent.
func (m *Mesh) Run(ctx context.Context) error {
	m.cmu.Lock()
	m.ctx = ctx
	m.cmu.Unlock()
	t := time.NewTimer(m.untilRound(time.Now()))
	defer t.Stop()
	defer m.wg.Wait()
	defer m.closeConns()
	var last time.Time // when this node's latest round went out
	periodic, answer := true, false
	for {
		now := time.Now()
		switch {
		case !periodic:
			m.round(answer, m.announce.Swap(false), false)
		case now.Sub(last) >= m.interval/2:
			m.round(false, m.announce.Swap(false), true)
			last = now
			// Not to fire unless this round's starter falls silent; each
			// round that goes out pushes it on.
			t.Reset(m.untilRound(now.Add(m.interval / 2)))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			periodic, answer = true, false
			t.Reset(m.untilRound(time.Now().Add(m.interval / 2)))
		case <-m.trigger:
			periodic, answer = true, false
		case <-m.kick:
			periodic, answer = false, true
		}
	}
}

// roundSlack separates the members' fallback timers.
const roundSlack = 2 * time.Millisecond

// untilRound is the time from now to this node's timer for the next
// round: the next multiple of the interval on the wall clock, plus
// roundSlack for each member before it by name (at most a quarter
// interval).
func (m *Mesh) untilRound(from time.Time) time.Duration {
	offset := min(time.Duration(m.members().rank)*roundSlack, m.interval/4)
	return time.Until(from.Truncate(m.interval).Add(m.interval + offset))
}

// Kick sends every peer a message now that asks for one back, e.g. to
// carry a new fact to the peers, or learn theirs, without waiting for the
// next interval.
func (m *Mesh) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Announce is Kick for a fact of this node's that has just changed: the
// receivers' subscribers see Update.Announce.
func (m *Mesh) Announce() {
	m.announce.Store(true)
	m.Kick()
}

// round sends one message to every peer; periodic for a round of the
// interval, which starts the peers' own.
func (m *Mesh) round(answer, announce, periodic bool) {
	peers := m.members().peers
	if len(peers) == 0 {
		return
	}
	now := time.Now()
	msg := Message{From: m.self, Answer: answer || announce, Announce: announce, Round: periodic,
		HeardMs: m.heardAges(now), Facts: m.facts()}
	msg.ID = m.stamp(now)
	for _, p := range peers {
		m.send(p.Name, p.Address, msg)
	}
}

// sendNow sends peer a message now, asking for one back when ask is set:
// in answer to a message that asked for it (ask unset), or on a new stream.
func (m *Mesh) sendNow(peer string, ask bool) {
	for _, p := range m.members().peers {
		if p.Name == peer {
			now := time.Now()
			msg := Message{From: m.self, Answer: ask, HeardMs: m.heardAges(now), Facts: m.facts()}
			msg.ID = m.stamp(now)
			m.send(p.Name, p.Address, msg)
			return
		}
	}
}

// stamp numbers a message sent at now and records its send time.
func (m *Mesh) stamp(now time.Time) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	m.sent[m.nextID%sentRing] = sentMsg{id: m.nextID, at: now}
	return m.nextID
}

// sentAtLocked is the send time of this node's message id, if it is
// recent; m.mu is held.
func (m *Mesh) sentAtLocked(id uint64) (time.Time, bool) {
	s := m.sent[id%sentRing]
	return s.at, s.id == id && id != 0
}

// Receive takes in a message from peer, whose identity the transport has
// authenticated: the peer is alive, its acknowledgement may extend this
// node's lease, and its facts go to the subscribers. It answers at once
// when the message asks for it.
func (m *Mesh) Receive(peer string, msg *Message) {
	now := time.Now()
	m.mu.Lock()
	m.heard[peer] = now
	m.lastIn[peer] = msg.ID
	sent, ok := m.sentAtLocked(msg.Ack)
	if ok && sent.After(m.leaseAt[peer]) {
		m.leaseAt[peer] = sent
	}
	prev, had := m.peers[peer]
	// Messages on a stream arrive in order, but one from a stream being
	// replaced may be overtaken: only one acknowledging a message at least
	// as recent as the latest answer's counts as an answer.
	if ok && (!had || !sent.Before(prev.sent)) {
		m.peers[peer] = peerReply{Peer: Peer{Facts: msg.Facts, At: now}, sent: sent, heard: msg.HeardMs}
	} else {
		sent = time.Time{}
	}
	m.mu.Unlock()
	u := Update{Peer: peer, Facts: msg.Facts, Sent: sent, Announce: msg.Announce}
	if had && !sent.IsZero() {
		u.Prev = prev.Facts
	}
	m.publish(u)
	if msg.Round {
		select {
		case m.trigger <- struct{}{}:
		default:
		}
	}
	if msg.Answer || msg.Announce {
		m.spawn(func() { m.sendNow(peer, false) })
	}
}

// HandleProbe answers a probe of the older protocol (ALPNv1) from a peer
// whose identity the transport has authenticated.
func (m *Mesh) HandleProbe(from string, req *Request) Reply {
	now := time.Now()
	m.mu.Lock()
	m.heard[from] = now
	m.mu.Unlock()
	m.publish(Update{Peer: from, Facts: req.Facts, Announce: req.Announce})
	return Reply{Node: m.self, HeardMs: m.heardAges(now), Facts: m.facts()}
}

// IsMember reports whether name is a current member.
func (m *Mesh) IsMember(name string) bool { return m.members().members[name] }

func (m *Mesh) heardAges(now time.Time) map[string]int64 {
	voters := m.members().voters
	out := make(map[string]int64, len(voters))
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range voters {
		if name == m.self {
			continue
		}
		if age := m.heardAgeLocked(now, name); age < 0 {
			out[name] = -1
		} else {
			out[name] = age.Milliseconds()
		}
	}
	return out
}

// heardAgeLocked is the time since name's last message. For a peer not heard
// from since this process started it is the uptime, or -1 (not silent)
// during the startup grace.
func (m *Mesh) heardAgeLocked(now time.Time, name string) time.Duration {
	if at, ok := m.heard[name]; ok {
		return now.Sub(at)
	}
	if up := now.Sub(m.started); up >= StartupGrace {
		return up
	}
	return -1
}

// majority of n voters.
func majority(n int) int { return n/2 + 1 }

// LeaseValid reports whether enough peers acknowledged a message sent
// within the lease to form a majority of voters with this node.
func (m *Mesh) LeaseValid(now time.Time) bool {
	exp, ok := m.LeaseExpiry()
	return ok && (exp.IsZero() || now.Before(exp))
}

// LeaseExpiry returns when the lease runs out unless more answers arrive:
// the send time of the acknowledged message that completes a majority,
// plus the lease. It is zero when no peer's answer is needed (a single voter), and
// ok is false when too few peers have ever answered.
func (m *Mesh) LeaseExpiry() (exp time.Time, ok bool) {
	voters := m.members().voters
	need := majority(len(voters)) - 1
	if need <= 0 {
		return time.Time{}, true
	}
	var at [8]time.Time
	times := at[:0]
	m.mu.Lock()
	for _, v := range voters {
		if v == m.self {
			continue
		}
		if t, ok := m.leaseAt[v]; ok {
			times = append(times, t)
		}
	}
	m.mu.Unlock()
	if len(times) < need {
		return time.Time{}, false
	}
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) })
	return times[need-1].Add(m.lease), true
}

// Dead reports whether name has provably lost its lease: enough voters,
// counting this node, have not heard from it for Lease+Margin that it cannot
// have had a majority's answers within its lease.
func (m *Mesh) Dead(now time.Time, name string) bool {
	voters := m.members().voters
	need := len(voters) - majority(len(voters)) + 1
	silent := m.lease + m.margin
	m.mu.Lock()
	defer m.mu.Unlock()
	count := 0
	for _, v := range voters {
		switch {
		case v == name:
			continue
		case v == m.self:
			if m.heardAgeLocked(now, name) >= silent {
				count++
			}
		default:
			r, ok := m.peers[v]
			if !ok || now.Sub(r.At) >= m.lease {
				continue // no fresh word from this voter
			}
			if age, ok := r.heard[name]; ok && time.Duration(age)*time.Millisecond >= silent {
				count++
			}
		}
	}
	return count >= need
}

// Peer returns name's latest answer.
func (m *Mesh) Peer(name string) (Peer, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.peers[name]
	return r.Peer, ok
}

// Peers returns every peer's latest answer.
func (m *Mesh) Peers() map[string]Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Peer, len(m.peers))
	for name, r := range m.peers {
		out[name] = r.Peer
	}
	return out
}

// Heard returns when name's last message arrived; zero if never.
func (m *Mesh) Heard(name string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heard[name]
}
