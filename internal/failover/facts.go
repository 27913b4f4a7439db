package failover

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/liveness"
)

// Names of the facts failover contributes to the liveness mesh.
const (
	// FactNode carries a node's NodeFacts.
	FactNode = "failover"
	// FactLeader carries the raft leader's LeaderView, only while it leads.
	FactLeader = "failover.leader"
	// FactHeld carries, in the DC's messages, the move it holds back (JSON;
	// absent when none), so every node's status can show it.
	FactHeld = "failover.held"
)

// LeaderView is the raft leader's committed holder. In a message that
// answers nothing (liveness.Update.Sent is zero) it may be late (TCP
// retransmits it after a partition heals), so receivers use it only to
// learn of newer epochs; in an answer it is at least as recent as the
// receiver's message it acknowledges, so the receiver may use it to confirm
// the committed holder: a node with a stale log never acts.
type LeaderView struct {
	Term   uint64 `json:"term"`
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
	Active bool   `json:"active"`
}

// NodeFacts is what a node tells its peers about itself for failover.
type NodeFacts struct {
	Node           string `json:"node"`
	Role           string `json:"role"`
	Healthy        bool   `json:"healthy"`
	UnhealthyForMs int64  `json:"unhealthy_for_ms"`
	// Starting is set while a node that just started has not yet passed its
	// checks (they start failing until "rise" passes), for at most
	// liveness.StartupGrace: not yet healthy is not a failure.
	Starting bool                 `json:"starting,omitempty"`
	Checks   []health.CheckStatus `json:"checks"`
	Holding  bool                 `json:"holding"` // the IP is configured here
	Epoch    uint64               `json:"epoch"`   // the holder epoch in its applied state
}

const factsVersion = 1

const (
	factHealthy = 1 << iota
	factStarting
	factHolding
)

var errFacts = errors.New("malformed failover facts")

// appendFacts encodes f (without Node, which the mesh carries). The checks
// come last, so deciding never has to decode them.
func appendFacts(b []byte, f *NodeFacts) []byte {
	var flags byte
	if f.Healthy {
		flags |= factHealthy
	}
	if f.Starting {
		flags |= factStarting
	}
	if f.Holding {
		flags |= factHolding
	}
	b = append(b, factsVersion, flags)
	b = binary.AppendUvarint(b, f.Epoch)
	b = binary.AppendUvarint(b, uint64(max(f.UnhealthyForMs, 0)))
	b = binary.AppendUvarint(b, uint64(len(f.Role)))
	b = append(b, f.Role...)
	return health.AppendWire(b, f.Checks)
}

// decodeFacts decodes a peer's facts, with its checks when withChecks.
func decodeFacts(b []byte, withChecks bool) (NodeFacts, error) {
	var f NodeFacts
	if len(b) < 2 || b[0] != factsVersion {
		return f, fmt.Errorf("%w: unknown version", errFacts)
	}
	flags := b[1]
	f.Healthy, f.Starting, f.Holding = flags&factHealthy != 0, flags&factStarting != 0, flags&factHolding != 0
	b = b[2:]
	var n int
	if f.Epoch, n = binary.Uvarint(b); n <= 0 {
		return f, fmt.Errorf("%w: epoch", errFacts)
	}
	b = b[n:]
	ms, n := binary.Uvarint(b)
	if n <= 0 || ms > 1<<53 {
		return f, fmt.Errorf("%w: unhealthy time", errFacts)
	}
	f.UnhealthyForMs, b = int64(ms), b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > 64 || l > uint64(len(b)-n) {
		return f, fmt.Errorf("%w: role", errFacts)
	}
	f.Role, b = string(b[n:n+int(l)]), b[n+int(l):]
	if !withChecks {
		return f, nil
	}
	checks, rest, err := health.DecodeWire(b)
	if err != nil {
		return f, fmt.Errorf("%w: %w", errFacts, err)
	}
	if len(rest) != 0 {
		return f, fmt.Errorf("%w: trailing bytes", errFacts)
	}
	f.Checks = checks
	return f, nil
}

// EncodeLeaderView is v as the FactLeader value a leader sends (the lab's
// end-to-end tests forge one, to show that only the leader is believed).
func EncodeLeaderView(v LeaderView) []byte { return appendLeaderView(nil, &v) }

func appendLeaderView(b []byte, v *LeaderView) []byte {
	b = append(b, factsVersion)
	b = binary.AppendUvarint(b, v.Term)
	b = binary.AppendUvarint(b, uint64(len(v.Holder)))
	b = append(b, v.Holder...)
	b = binary.AppendUvarint(b, v.Epoch)
	if v.Active {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeLeaderView(b []byte) (LeaderView, error) {
	var v LeaderView
	if len(b) < 1 || b[0] != factsVersion {
		return v, fmt.Errorf("%w: unknown leader view version", errFacts)
	}
	b = b[1:]
	var n int
	if v.Term, n = binary.Uvarint(b); n <= 0 {
		return v, fmt.Errorf("%w: term", errFacts)
	}
	b = b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > 253 || l > uint64(len(b)-n) {
		return v, fmt.Errorf("%w: holder", errFacts)
	}
	v.Holder, b = string(b[n:n+int(l)]), b[n+int(l):]
	if v.Epoch, n = binary.Uvarint(b); n <= 0 {
		return v, fmt.Errorf("%w: epoch", errFacts)
	}
	b = b[n:]
	if len(b) != 1 || b[0] > 1 {
		return v, fmt.Errorf("%w: active", errFacts)
	}
	v.Active = b[0] == 1
	return v, nil
}

// PeerStatus is a peer's latest facts and how old they are.
type PeerStatus struct {
	Reply NodeFacts
	Age   time.Duration
}

// peerFacts decodes the failover facts in a peer's latest answer.
func (n *Node) peerFacts(name string, withChecks bool) (NodeFacts, time.Time, bool) {
	p, ok := n.mesh.Peer(name)
	if !ok {
		return NodeFacts{}, time.Time{}, false
	}
	b, ok := p.Facts.Get(FactNode)
	if !ok {
		return NodeFacts{}, time.Time{}, false
	}
	f, err := decodeFacts(b, withChecks)
	if err != nil {
		n.log.Debug("bad failover facts", "peer", name, "err", err)
		return NodeFacts{}, time.Time{}, false
	}
	f.Node = name
	return f, p.At, true
}

// onUpdate follows the liveness mesh's messages.
func (n *Node) onUpdate(u liveness.Update) {
	if b, ok := u.Facts.Get(FactLeader); ok {
		if v, err := decodeLeaderView(b); err == nil {
			n.onLeaderView(u.Peer, v, u.Sent)
		}
	}
	if u.Announce && n.o.Cluster.IsLeader() { // only the leader decides
		n.mesh.Kick()
	}
	if u.Sent.IsZero() {
		return
	}
	if n.waiting.Load() {
		n.poke() // this answer may complete the lease a pending acquire needs
	}
	if !n.o.Cluster.IsLeader() {
		return
	}
	now := time.Now()
	n.mu.Lock()
	n.answered[u.Peer] = now
	short := n.short
	n.mu.Unlock()
	every := n.mesh.Interval()
	switch {
	case n.roundComplete(now):
		n.pokeController() // the round's answers are in
	case short && now.Sub(now.Truncate(every)) >= every/10:
		// The last round missed an answer, so a peer may be dying, and
		// this answer, later than the DC's timer in its round, may be the
		// report that proves it.
		n.pokeController()
	case u.Prev != nil && factsChanged(u.Prev, u.Facts):
		n.pokeController() // the DC decides now, not when the round is in
	}
}

// factsChanged reports whether a peer's health or holding differs between
// two of its answers.
func factsChanged(prev, cur liveness.Facts) bool {
	pb, _ := prev.Get(FactNode)
	cb, _ := cur.Get(FactNode)
	p, err1 := decodeFacts(pb, false)
	c, err2 := decodeFacts(cb, false)
	return err1 == nil && err2 == nil && (c.Healthy != p.Healthy || c.Holding != p.Holding)
}

// Views builds the DC's view of every member at now.
func (n *Node) Views(now time.Time, epoch uint64) map[string]NodeView {
	s := n.o.Machine.View()
	out := make(map[string]NodeView, len(s.Members))
	lease := n.mesh.Lease()
	for name := range s.Members {
		if name == n.o.Name {
			self := n.localFacts(false)
			out[name] = NodeView{
				Reachable: true, Healthy: self.Healthy, Starting: self.Starting,
				Released: !self.Holding && self.Epoch >= epoch,
				FaultAt:  now.Add(-time.Duration(self.UnhealthyForMs) * time.Millisecond),
			}
			continue
		}
		f, at, ok := n.peerFacts(name, false)
		heard := n.mesh.Heard(name)
		v := NodeView{}
		if ok && now.Sub(at) < lease {
			v.Reachable = true
			v.Healthy = f.Healthy
			v.Starting = f.Starting
			v.Released = !f.Holding && f.Epoch >= epoch
			v.FaultAt = at.Add(-time.Duration(f.UnhealthyForMs) * time.Millisecond)
		}
		v.Dead = n.mesh.Dead(now, name)
		if v.Dead {
			v.FaultAt = heard
			if ok && at.After(heard) {
				v.FaultAt = at
			}
		}
		out[name] = v
	}
	return out
}

// heldFact is the DC's FactHeld value: the move it holds back, or nil.
func (n *Node) heldFact() []byte {
	if !n.o.Cluster.IsLeader() {
		return nil
	}
	n.mu.Lock()
	h := n.held
	n.mu.Unlock()
	if h == nil {
		return nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil
	}
	return b
}

// heldFresh is how old the DC's answer may be for its held move to show.
const heldFresh = 2 * time.Second

// leaderHeld is the move the raft leader reported holding back in its
// latest answer, if that answer is fresh.
func (n *Node) leaderHeld(now time.Time) *Hold {
	leader, _ := n.o.Cluster.Leader()
	if leader == "" || leader == n.o.Name {
		return nil
	}
	p, ok := n.mesh.Peer(leader)
	if !ok || now.Sub(p.At) >= heldFresh {
		return nil
	}
	b, ok := p.Facts.Get(FactHeld)
	if !ok {
		return nil
	}
	var h Hold
	if json.Unmarshal(b, &h) != nil {
		return nil
	}
	return &h
}
