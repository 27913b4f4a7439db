package liveness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Transport sends one probe and returns the reply, giving up at deadline
// or when ctx ends. StreamTransport is the production one.
type Transport interface {
	Probe(ctx context.Context, addr string, deadline time.Time, req *Request) (Reply, error)
}

// Source contributes one fact to this node's messages.
type Source struct {
	// Name identifies the fact, e.g. "failover"; at most MaxFactName bytes.
	Name string
	// Value returns the fact's current encoding, or nil to leave it out. It
	// is called for every reply (and every probe round with InProbes), so
	// it must be cheap and must not block.
	Value func() []byte
	// InProbes also sends the fact with this node's own probes, for facts
	// peers must learn even when they do not probe this node. Receivers
	// see those with a zero Update.Sent: a probe may arrive late.
	InProbes bool
}

// Update tells subscribers of one message from a peer.
type Update struct {
	Peer  string
	Facts Facts
	// Prev holds the facts of the peer's previous reply; nil for a first
	// reply and for probes.
	Prev Facts
	// Sent is the send time of the probe this reply answers: the facts are
	// at least that recent. It is zero for a probe from the peer, whose age
	// is unknown.
	Sent time.Time
	// Announce is set on a probe whose sender asks to be probed now (see
	// Mesh.Announce).
	Announce bool
}

// Peer is a peer's latest reply.
type Peer struct {
	Facts Facts
	At    time.Time // when the reply arrived
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

// maxInflight bounds concurrent probes per peer, so one stalled connection
// (a lost segment waiting for TCP's retransmit) does not stop the lease.
const maxInflight = 4

// Mesh probes all members and answers their probes. It is the single source
// of liveness for the lease, the DC's decisions and every capability's
// view of its peers.
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
	announce atomic.Bool // the next round's probes carry Announce
	roster   atomic.Pointer[roster]

	smu     sync.RWMutex
	sources []Source
	subs    []func(Update)

	mu       sync.Mutex
	heard    map[string]time.Time // last probe received from a peer
	leaseAt  map[string]time.Time // send time of the latest probe a peer answered
	peers    map[string]peerReply
	inflight map[string]int

	cmu    sync.Mutex
	conns  map[closer]struct{} // streams being served, closed when Run ends
	closed bool
}

type peerReply struct {
	Peer
	sent  time.Time
	heard map[string]int64
}

type closer interface{ Close() error }

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
		started: time.Now(), kick: make(chan struct{}, 1),
		heard: map[string]time.Time{}, leaseAt: map[string]time.Time{},
		peers: map[string]peerReply{}, inflight: map[string]int{}, conns: map[closer]struct{}{},
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

// Subscribe calls fn for every message from a peer: each reply to this
// node's probes and each probe it receives. Calls come from the mesh's
// goroutines, concurrently; fn must return quickly and not call back into
// blocking work.
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

// facts collects this node's facts, only those sent with probes when
// probes is set.
func (m *Mesh) facts(probes bool) Facts {
	m.smu.RLock()
	defer m.smu.RUnlock()
	var out Facts
	for _, s := range m.sources {
		if probes && !s.InProbes {
			continue
		}
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
	for _, name := range s.Names() {
		mem := s.Members[name]
		nr.members[name] = true
		if name != m.self && mem.Address != "" {
			nr.peers = append(nr.peers, mem)
		}
	}
	nr.voters = s.Voters()
	m.roster.Store(nr)
	return nr
}

// Run probes every other member each interval until ctx ends, then closes
// the streams it serves.
//
// Rounds start on multiples of the interval on the wall clock, so that on
// nodes with synchronised clocks they coincide: a node's probes, its
// peers' probes and all their replies then arrive within a millisecond or
// two, and an idle agent wakes once per interval instead of once per
// message. Waking up costs far more CPU than the messages themselves.
func (m *Mesh) Run(ctx context.Context) error {
	t := time.NewTimer(untilNext(time.Now(), m.interval))
	defer t.Stop()
	var wg sync.WaitGroup
	defer func() {
		m.closeConns()
		wg.Wait()
		if c, ok := m.tr.(closer); ok {
			c.Close()
		}
	}()
	for {
		req := &Request{From: m.self, Announce: m.announce.Swap(false), Facts: m.facts(true)}
		deadline := time.Now().Add(m.lease)
		for _, mem := range m.members().peers {
			m.mu.Lock()
			busy := m.inflight[mem.Name] >= maxInflight
			if !busy {
				m.inflight[mem.Name]++
			}
			m.mu.Unlock()
			if busy {
				continue
			}
			wg.Add(1)
			go func(name, addr string) {
				defer wg.Done()
				m.probe(ctx, name, addr, deadline, req)
			}(mem.Name, mem.Address)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			t.Reset(untilNext(time.Now(), m.interval))
		case <-m.kick:
		}
	}
}

// untilNext is the time from now to the next multiple of every on the wall
// clock.
func untilNext(now time.Time, every time.Duration) time.Duration {
	return now.Truncate(every).Add(every).Sub(now)
}

// Kick starts a probe round now, e.g. to carry a new fact to the peers
// without waiting for the next interval.
func (m *Mesh) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Announce starts a probe round now whose probes ask the receivers to
// probe this node at once: one of its facts has just changed, and waiting
// for their next round would add up to an interval to their reaction.
func (m *Mesh) Announce() {
	m.announce.Store(true)
	m.Kick()
}

func (m *Mesh) probe(ctx context.Context, name, addr string, deadline time.Time, req *Request) {
	defer func() {
		m.mu.Lock()
		m.inflight[name]--
		m.mu.Unlock()
	}()
	sent := time.Now()
	reply, err := m.tr.Probe(ctx, addr, deadline, req)
	if err != nil {
		m.log.Debug("probe failed", "peer", name, "err", err)
		return
	}
	if reply.Node != name {
		m.log.Warn("probe answered by the wrong node", "peer", name, "answered", reply.Node)
		return
	}
	now := time.Now()
	m.mu.Lock()
	if sent.After(m.leaseAt[name]) {
		m.leaseAt[name] = sent
	}
	prev, ok := m.peers[name]
	newer := !ok || sent.After(prev.sent)
	if newer {
		m.peers[name] = peerReply{Peer: Peer{Facts: reply.Facts, At: now}, sent: sent, heard: reply.HeardMs}
	}
	m.mu.Unlock()
	if !newer {
		return // a reply to an older probe overtaken by a newer one's
	}
	u := Update{Peer: name, Facts: reply.Facts, Sent: sent}
	if ok {
		u.Prev = prev.Facts
	}
	m.publish(u)
}

// HandleProbe answers a probe from a peer whose identity the transport has
// authenticated.
func (m *Mesh) HandleProbe(from string, req *Request) Reply {
	now := time.Now()
	m.mu.Lock()
	m.heard[from] = now
	m.mu.Unlock()
	m.publish(Update{Peer: from, Facts: req.Facts, Announce: req.Announce})
	return Reply{Node: m.self, HeardMs: m.heardAges(now), Facts: m.facts(false)}
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

// heardAgeLocked is the time since name's last probe. For a peer not heard
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

// LeaseValid reports whether enough peers answered a probe sent within the
// lease to form a majority of voters with this node.
func (m *Mesh) LeaseValid(now time.Time) bool {
	exp, ok := m.LeaseExpiry()
	return ok && (exp.IsZero() || now.Before(exp))
}

// LeaseExpiry returns when the lease runs out unless more answers arrive:
// the send time of the answered probe that completes a majority, plus the
// lease. It is zero when no peer's answer is needed (a single voter), and
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

// Peer returns name's latest reply.
func (m *Mesh) Peer(name string) (Peer, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.peers[name]
	return r.Peer, ok
}

// Peers returns every peer's latest reply.
func (m *Mesh) Peers() map[string]Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Peer, len(m.peers))
	for name, r := range m.peers {
		out[name] = r.Peer
	}
	return out
}

// Heard returns when name's last probe arrived; zero if never.
func (m *Mesh) Heard(name string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heard[name]
}

// track registers a served stream so Run's end closes it; false when the
// mesh has stopped.
func (m *Mesh) track(c closer) bool {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Mesh) untrack(c closer) {
	m.cmu.Lock()
	delete(m.conns, c)
	m.cmu.Unlock()
}

func (m *Mesh) closeConns() {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	m.closed = true
	for c := range m.conns {
		c.Close()
	}
	clear(m.conns)
}
