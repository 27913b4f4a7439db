package failover

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// ProbeRequest is sent by every node to every other member each interval.
type ProbeRequest struct {
	From string `json:"from"`
	// Leader is set when the sender is the raft leader. A request may arrive
	// late (TCP retransmits it after a partition heals), so receivers use it
	// only to learn of newer epochs, never to confirm one.
	Leader *LeaderView `json:"leader,omitempty"`
	// Changed asks a leader to probe the sender now because its health has
	// just changed. The leader learns the new health from its probe's reply,
	// never from this request, so a late request is harmless.
	Changed bool `json:"changed,omitempty"`
}

// LeaderView is the raft leader's committed holder.
type LeaderView struct {
	Term   uint64 `json:"term"`
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
	Active bool   `json:"active"`
	// Held is the move the leader holds back, if any, so that every node's
	// status shows it.
	Held *Hold `json:"held,omitempty"`
}

// CheckStatus is one health check's latest result, for status output.
type CheckStatus struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Healthy bool   `json:"healthy"`
	Output  string `json:"output"`
}

// ProbeReply is a node's answer to a probe.
type ProbeReply struct {
	Node           string `json:"node"`
	Role           string `json:"role"`
	Healthy        bool   `json:"healthy"`
	UnhealthyForMs int64  `json:"unhealthy_for_ms"`
	// Starting is set while a node that just started has not yet passed its
	// checks (they start failing until "rise" passes), for at most
	// StartupGrace: not yet healthy is not a failure.
	Starting bool          `json:"starting,omitempty"`
	Checks   []CheckStatus `json:"checks"`
	Holding  bool          `json:"holding"` // the IP is configured here
	Epoch    uint64        `json:"epoch"`   // the holder epoch in its applied state
	// Leader is set when the replier is the raft leader. A reply is at least
	// as recent as the request it answers, so the prober may use it to
	// confirm the committed holder: a node with a stale log never acts.
	Leader *LeaderView `json:"leader,omitempty"`
	// HeardMs is, per peer, the age in milliseconds of the last probe received
	// from it; for a peer never heard from since this process started, its
	// uptime, or -1 during the startup grace (see StartupGrace).
	HeardMs map[string]int64 `json:"heard_ms"`
}

// Transport sends one probe. The production one is mTLS HTTP (HTTPTransport).
type Transport interface {
	Probe(ctx context.Context, addr string, req ProbeRequest) (ProbeReply, error)
}

// Local supplies this node's part of a reply (health, holding, epoch).
type Local func() ProbeReply

type peerReply struct {
	reply ProbeReply
	at    time.Time
}

// Mesh probes all members and answers their probes. It is the single source
// of liveness for both the lease and the DC's decisions.
type Mesh struct {
	self     string
	machine  *state.Machine
	tr       Transport
	local    Local
	leader   func() *LeaderView
	onLeader func(from string, v LeaderView, sent time.Time)
	onPeer   func()
	interval time.Duration
	lease    time.Duration
	margin   time.Duration
	log      *slog.Logger
	started  time.Time

	kick     chan struct{}
	announce atomic.Bool // the next round's requests carry Changed

	mu       sync.Mutex
	heard    map[string]time.Time // last probe received from a peer
	leaseAt  map[string]time.Time // send time of the latest probe a peer answered
	replies  map[string]peerReply
	inflight map[string]int
}

// MeshOptions configures a Mesh.
type MeshOptions struct {
	Self    string
	Machine *state.Machine
	Tr      Transport
	Local   Local
	Leader  func() *LeaderView // nil unless this node leads
	// OnLeader is called for each leader view received: in a reply, with
	// the send time of the request it answers; in a request, with a zero
	// time, since its age is unknown.
	OnLeader func(from string, v LeaderView, sent time.Time)
	// OnPeerChange is called when a peer's reply changes its health or
	// whether it holds the IP, so the DC can decide without waiting.
	OnPeerChange func()
	Interval     time.Duration
	Lease        time.Duration
	Margin       time.Duration
	Logger       *slog.Logger
}

// maxInflight bounds concurrent probes per peer, so one stalled connection
// (a lost segment waiting for TCP's retransmit) does not stop the lease.
const maxInflight = 4

// NewMesh returns a mesh; call Run to start probing.
func NewMesh(o MeshOptions) *Mesh {
	return &Mesh{
		self: o.Self, machine: o.Machine, tr: o.Tr, local: o.Local, leader: o.Leader, onLeader: o.OnLeader, onPeer: o.OnPeerChange,
		interval: o.Interval, lease: o.Lease, margin: o.Margin, log: o.Logger,
		started: time.Now(), kick: make(chan struct{}, 1),
		heard: map[string]time.Time{}, leaseAt: map[string]time.Time{},
		replies: map[string]peerReply{}, inflight: map[string]int{},
	}
}

// Run probes every other member each interval until ctx ends.
func (m *Mesh) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var req ProbeRequest
		req.From = m.self
		req.Changed = m.announce.Swap(false)
		if m.leader != nil {
			req.Leader = m.leader()
		}
		for _, mem := range m.machine.View().Members {
			if mem.Name == m.self || mem.Address == "" {
				continue
			}
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
			go func(mem state.Member) {
				defer wg.Done()
				m.probe(ctx, mem, req)
			}(mem)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
	}
}

// Kick starts a probe round now, e.g. to carry a new leader view to the
// nodes without waiting for the next interval.
func (m *Mesh) Kick() { wake(m.kick) }

// wake signals a loop waiting on ch (capacity 1) without blocking: a signal
// already pending covers this one.
func wake(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Announce starts a probe round now whose requests ask the leader to probe
// this node at once: its health has changed, and waiting for the leader's
// next round would add up to an interval to the failover.
func (m *Mesh) Announce() {
	m.announce.Store(true)
	m.Kick()
}

func (m *Mesh) probe(ctx context.Context, mem state.Member, req ProbeRequest) {
	defer func() {
		m.mu.Lock()
		m.inflight[mem.Name]--
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, m.lease)
	defer cancel()
	sent := time.Now()
	reply, err := m.tr.Probe(ctx, mem.Address, req)
	if err != nil {
		m.log.Debug("probe failed", "peer", mem.Name, "err", err)
		return
	}
	if reply.Node != mem.Name {
		m.log.Warn("probe answered by the wrong node", "peer", mem.Name, "answered", reply.Node)
		return
	}
	if reply.Leader != nil && m.onLeader != nil {
		m.onLeader(mem.Name, *reply.Leader, sent)
	}
	now := time.Now()
	changed := false
	m.mu.Lock()
	if sent.After(m.leaseAt[mem.Name]) {
		m.leaseAt[mem.Name] = sent
	}
	if prev, ok := m.replies[mem.Name]; !ok || now.After(prev.at) {
		changed = ok && (prev.reply.Healthy != reply.Healthy || prev.reply.Holding != reply.Holding)
		m.replies[mem.Name] = peerReply{reply: reply, at: now}
	}
	m.mu.Unlock()
	if changed && m.onPeer != nil {
		m.onPeer()
	}
}

// HandleProbe answers a probe from a peer whose identity the transport has
// authenticated.
func (m *Mesh) HandleProbe(from string, req ProbeRequest) ProbeReply {
	now := time.Now()
	m.mu.Lock()
	m.heard[from] = now
	m.mu.Unlock()
	if req.Leader != nil && m.onLeader != nil {
		m.onLeader(from, *req.Leader, time.Time{})
	}
	r := m.local()
	r.Node = m.self
	if m.leader != nil {
		r.Leader = m.leader()
	}
	if req.Changed && r.Leader != nil { // only the leader decides
		m.Kick()
	}
	r.HeardMs = m.heardAges(now)
	return r
}

func (m *Mesh) heardAges(now time.Time) map[string]int64 {
	out := map[string]int64{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range m.machine.View().Voters() {
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

// StartupGrace is how long a freshly started node waits for a peer it has
// never heard from before it may call that peer silent. After a restart of
// the whole cluster, the nodes come back one by one; without the grace, the
// first to start would declare the others dead and move the IP.
const StartupGrace = 10 * time.Second

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
	voters := m.machine.View().Voters()
	need := majority(len(voters)) - 1
	if need <= 0 {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	have := 0
	for _, v := range voters {
		if v == m.self {
			continue
		}
		if at, ok := m.leaseAt[v]; ok && now.Sub(at) < m.lease {
			have++
		}
	}
	return have >= need
}

// Dead reports whether name has provably lost its lease: enough voters,
// counting this node, have not heard from it for Lease+Margin that it cannot
// have had a majority's answers within its lease.
func (m *Mesh) Dead(now time.Time, name string) bool {
	voters := m.machine.View().Voters()
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
			r, ok := m.replies[v]
			if !ok || now.Sub(r.at) >= m.lease {
				continue // no fresh word from this voter
			}
			if age, ok := r.reply.HeardMs[name]; ok && time.Duration(age)*time.Millisecond >= silent {
				count++
			}
		}
	}
	return count >= need
}

// Views builds the DC's view of every member at now.
func (m *Mesh) Views(now time.Time, epoch uint64) map[string]NodeView {
	s := m.machine.View()
	out := map[string]NodeView{}
	self := m.local()
	for name := range s.Members {
		if name == m.self {
			out[name] = NodeView{
				Reachable: true, Healthy: self.Healthy, Starting: self.Starting,
				Released: !self.Holding && self.Epoch >= epoch,
				FaultAt:  now.Add(-time.Duration(self.UnhealthyForMs) * time.Millisecond),
			}
			continue
		}
		m.mu.Lock()
		r, ok := m.replies[name]
		heard := m.heard[name]
		m.mu.Unlock()
		v := NodeView{}
		if ok && now.Sub(r.at) < m.lease {
			v.Reachable = true
			v.Healthy = r.reply.Healthy
			v.Starting = r.reply.Starting
			v.Released = !r.reply.Holding && r.reply.Epoch >= epoch
			v.FaultAt = r.at.Add(-time.Duration(r.reply.UnhealthyForMs) * time.Millisecond)
		}
		v.Dead = m.Dead(now, name)
		if v.Dead {
			v.FaultAt = heard
			if ok && r.at.After(heard) {
				v.FaultAt = r.at
			}
		}
		out[name] = v
	}
	return out
}

// PeerReplies returns the latest reply from each peer with its age, for
// status output.
func (m *Mesh) PeerReplies(now time.Time) map[string]PeerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]PeerStatus, len(m.replies))
	for name, r := range maps.All(m.replies) {
		out[name] = PeerStatus{Reply: r.reply, Age: now.Sub(r.at)}
	}
	return out
}

// PeerStatus is a peer's latest reply and how old it is.
type PeerStatus struct {
	Reply ProbeReply
	Age   time.Duration
}
