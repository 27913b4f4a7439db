package failover

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Policy is the placement policy.
type Policy struct {
	Preempt         bool          // move back to a higher-priority node when it recovers
	Cooloff         time.Duration // no health-driven move sooner than this after the last move
	MaxMovesPerHour int           // health-driven moves beyond this are suppressed
}

// NodeView is what the DC knows about one member at decision time.
type NodeView struct {
	Reachable bool      // a probe reply arrived within the lease
	Healthy   bool      // its local checks pass
	Starting  bool      // just started and not healthy yet: not a failure
	Dead      bool      // provably fenced: see Mesh.Dead
	Released  bool      // reports the IP not configured at the current epoch
	FaultAt   time.Time // when it was last seen healthy and reachable
}

// Decision is a command for the DC to commit, with a human reason.
type Decision struct {
	Cmd    state.Command
	Reason string
}

// Decide returns what the DC should commit next, or nil when nothing should
// change. It is a pure function of its inputs so every rule is unit-tested.
func Decide(now time.Time, s state.Snapshot, nodes map[string]NodeView, p Policy) *Decision {
	if s.Policy != nil {
		// The cluster's published policy wins over the DC's own defaults.
		p = Policy{Preempt: s.Policy.Preempt, Cooloff: s.Policy.Cooloff, MaxMovesPerHour: s.Policy.MaxMovesPerHour}
	}
	h := s.Holder
	// A pending holder is activated once the previous one cannot hold the IP.
	if h.Node != "" && !h.Active {
		prev := nodes[h.Previous]
		if releasedOrGone(s, nodes, h.Previous) {
			why := "previous holder released the IP"
			if prev.Dead {
				why = "previous holder's lease expired"
			}
			return &Decision{Cmd: state.Activate{Epoch: h.Epoch, At: now}, Reason: why}
		}
		return nil
	}
	if s.Mode == state.ModeMaintenance {
		return nil
	}
	cur, hasHolder := nodes[h.Node]
	if h.Node == "" || !hasHolder {
		best := candidate(s, nodes, "")
		if best == "" {
			return nil
		}
		active := releasedOrGone(s, nodes, h.Previous)
		return &Decision{
			Cmd:    state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: active, Reason: "initial placement", At: now},
			Reason: fmt.Sprintf("no holder: placing the IP on %s", best),
		}
	}
	if cur.Dead {
		best := candidate(s, nodes, h.Node)
		if best == "" {
			return nil
		}
		return &Decision{
			Cmd: state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: true,
				Reason: "holder lost", FaultAt: cur.FaultAt, At: now},
			Reason: fmt.Sprintf("%s is unreachable and its lease has expired: moving to %s", h.Node, best),
		}
	}
	if !throttleOK(now, s, p) {
		return nil
	}
	if cur.Reachable && !cur.Healthy && !cur.Starting {
		best := candidate(s, nodes, h.Node)
		if best == "" {
			return nil
		}
		return &Decision{
			Cmd: state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: false,
				Reason: "holder unhealthy", FaultAt: cur.FaultAt, At: now},
			Reason: fmt.Sprintf("%s failed its health checks: moving to %s", h.Node, best),
		}
	}
	if p.Preempt && cur.Reachable {
		best := candidate(s, nodes, "")
		if best != "" && best != h.Node && s.Members[best].Priority > s.Members[h.Node].Priority {
			return &Decision{
				Cmd:    state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: false, Reason: "preempt", At: now, Drain: true},
				Reason: fmt.Sprintf("preempting: %s has a higher priority than %s", best, h.Node),
			}
		}
	}
	return nil
}

// releasedOrGone reports whether the previous holder can no longer have the
// IP: there was none, it released it, its lease expired, or it was removed
// from the cluster (operators remove only nodes that are off or have left).
func releasedOrGone(s state.Snapshot, nodes map[string]NodeView, prev string) bool {
	if prev == "" {
		return true
	}
	if _, member := s.Members[prev]; !member {
		return true
	}
	v := nodes[prev]
	return v.Dead || v.Released
}

// throttleOK applies the cool-off and the hourly cap to health-driven moves.
// A lost holder is always replaced: an IP on nobody is worse than a flap.
func throttleOK(now time.Time, s state.Snapshot, p Policy) bool {
	if last, ok := s.LastMove(); ok && last.From != "" && now.Sub(last.DecidedAt) < p.Cooloff {
		return false
	}
	if p.MaxMovesPerHour > 0 && s.MovesSince(now.Add(-time.Hour)) >= p.MaxMovesPerHour {
		return false
	}
	return true
}

// candidate picks the healthy, reachable app node with the highest priority
// (then the lowest name), excluding one node.
func candidate(s state.Snapshot, nodes map[string]NodeView, exclude string) string {
	var ok []state.Member
	for _, name := range s.Apps() {
		v := nodes[name]
		if name == exclude || !v.Reachable || !v.Healthy || v.Dead {
			continue
		}
		ok = append(ok, s.Members[name])
	}
	if len(ok) == 0 {
		return ""
	}
	slices.SortFunc(ok, func(a, b state.Member) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return ok[0].Name
}
