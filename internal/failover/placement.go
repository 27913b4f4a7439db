package failover

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Reasons recorded in the move history. The first two are failures of the
// node moved away from, and count towards its penalty.
const (
	ReasonUnhealthy = "holder unhealthy"
	ReasonLost      = "holder lost"
	ReasonInitial   = "initial placement"
	ReasonPreempt   = "preempt"
)

// Defaults for a policy that carries no failure fields (published by an
// older version).
const (
	DefaultFailureThreshold = 3
	DefaultFailureWindow    = 10 * time.Minute
)

// minBackoff is the base of the back-off when the cool-off is shorter.
const minBackoff = time.Second

// NodeView is what the DC knows about one member at decision time.
type NodeView struct {
	Reachable bool      // a probe reply arrived within the lease
	Healthy   bool      // its local checks pass
	Starting  bool      // just started and not healthy yet: not a failure
	Dead      bool      // provably fenced: see Mesh.Dead
	Released  bool      // reports the IP not configured at the current epoch
	FaultAt   time.Time // when it was last seen healthy and reachable
}

// Decision is what the DC should do next, with a human reason: commit Cmd,
// or, when Cmd is nil, nothing yet because the move in Held is held back.
type Decision struct {
	Cmd    state.Command
	Reason string
	Held   *Hold
}

// Hold is a move away from an unhealthy holder that placement holds back.
type Hold struct {
	From   string    `json:"from"`
	To     string    `json:"to,omitempty"` // "" when no standby is healthy
	Kind   string    `json:"kind"`         // HoldCooloff, HoldBackoff or HoldNoStandby
	Reason string    `json:"reason"`
	Until  time.Time `json:"until,omitzero"` // zero: until a standby is healthy
}

// Kinds of Hold.
const (
	HoldCooloff   = "cooloff"    // the cool-off after the last move
	HoldBackoff   = "backoff"    // every healthy standby is penalised
	HoldNoStandby = "no_standby" // no standby is healthy and reachable
)

// Failures is one node's recent failures, as every node computes them from
// the replicated move history.
type Failures struct {
	Count     int       // failures within the window, since the last reset
	Penalised bool      // Count is at or over the threshold
	Until     time.Time // when the count drops below the threshold; zero unless penalised
}

// EffectivePolicy returns the cluster's published policy, or fallback (the
// DC's own configuration) before one is published, with the failure
// defaults filled in.
func EffectivePolicy(s state.Snapshot, fallback state.Policy) state.Policy {
	p := fallback
	if s.Policy != nil {
		p = *s.Policy
	}
	if p.FailureThreshold <= 0 {
		p.FailureThreshold = DefaultFailureThreshold
	}
	if p.FailureWindow <= 0 {
		p.FailureWindow = DefaultFailureWindow
	}
	return p
}

// NodeFailures counts each app node's failures: the moves away from it
// because it was unhealthy or lost, decided within the policy's window
// before now and after its last reset. A node at or over the threshold is
// penalised until enough of those failures leave the window.
func NodeFailures(now time.Time, s state.Snapshot, p state.Policy) map[string]Failures {
	since := now.Add(-p.FailureWindow)
	times := map[string][]time.Time{}
	for _, mv := range s.Moves {
		if mv.From == "" || (mv.Reason != ReasonUnhealthy && mv.Reason != ReasonLost) {
			continue
		}
		if !mv.DecidedAt.After(since) || !mv.DecidedAt.After(s.FailureResets[mv.From]) {
			continue
		}
		times[mv.From] = append(times[mv.From], mv.DecidedAt)
	}
	out := map[string]Failures{}
	for _, name := range s.Apps() {
		ts := times[name]
		f := Failures{Count: len(ts)}
		if f.Count >= p.FailureThreshold {
			slices.SortFunc(ts, time.Time.Compare)
			// Below the threshold once the oldest Count-Threshold+1 expire.
			f.Penalised = true
			f.Until = ts[f.Count-p.FailureThreshold].Add(p.FailureWindow)
		}
		out[name] = f
	}
	return out
}

// backoff is how long after the last move a move to a penalised target
// waits: the cool-off (at least a second) doubled for each failure of the
// target at or over the threshold, and never longer than the window, after
// which the target's penalty has lapsed anyway.
func backoff(p state.Policy, f Failures) time.Duration {
	d := max(p.Cooloff, minBackoff)
	for i := p.FailureThreshold; i <= f.Count && d < p.FailureWindow; i++ {
		d *= 2
	}
	return min(d, p.FailureWindow)
}

// Decide returns what the DC should commit next, or nil when nothing should
// change. fallback is the DC's own policy, used until the app nodes publish
// the cluster's. It is a pure function of its inputs so every rule is
// unit-tested.
//
// The rules: a lost holder is always replaced at once (an IP on nobody is
// worse than a flap), preferring a node that is not penalised. An unhealthy
// holder is moved once the cool-off after the last move ends, to the best
// healthy standby that is not penalised; when every healthy standby is
// penalised, the move waits an exponential back-off after the last move.
// Preemption never moves to a penalised node.
func Decide(now time.Time, s state.Snapshot, nodes map[string]NodeView, fallback state.Policy) *Decision {
	p := EffectivePolicy(s, fallback)
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
	fails := NodeFailures(now, s, p)
	cur, hasHolder := nodes[h.Node]
	if h.Node == "" || !hasHolder {
		best, _ := candidate(s, nodes, "", fails)
		if best == "" {
			return nil
		}
		active := releasedOrGone(s, nodes, h.Previous)
		return &Decision{
			Cmd:    state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: active, Reason: ReasonInitial, At: now},
			Reason: fmt.Sprintf("no holder: placing the IP on %s", best),
		}
	}
	if cur.Dead {
		best, _ := candidate(s, nodes, h.Node, fails)
		if best == "" {
			return nil
		}
		return &Decision{
			Cmd: state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: true,
				Reason: ReasonLost, FaultAt: cur.FaultAt, At: now},
			Reason: fmt.Sprintf("%s is unreachable and its lease has expired: moving to %s", h.Node, best),
		}
	}
	last, moved := s.LastMove()
	coolUntil := time.Time{}
	if moved && last.From != "" {
		coolUntil = last.DecidedAt.Add(p.Cooloff)
	}
	if cur.Reachable && !cur.Healthy && !cur.Starting {
		return moveUnhealthy(now, s, nodes, p, fails, cur, coolUntil)
	}
	if p.Preempt && cur.Reachable && !now.Before(coolUntil) {
		best, penalised := candidate(s, nodes, "", fails)
		if best != "" && !penalised && best != h.Node && s.Members[best].Priority > s.Members[h.Node].Priority {
			return &Decision{
				Cmd:    state.SetHolder{Node: best, PrevEpoch: h.Epoch, Active: false, Reason: ReasonPreempt, At: now, Drain: true},
				Reason: fmt.Sprintf("preempting: %s has a higher priority than %s", best, h.Node),
			}
		}
	}
	return nil
}

// moveUnhealthy moves the IP off a reachable holder that fails its checks,
// or says why the move is held back.
func moveUnhealthy(now time.Time, s state.Snapshot, nodes map[string]NodeView, p state.Policy,
	fails map[string]Failures, cur NodeView, coolUntil time.Time) *Decision {
	from := s.Holder.Node
	best, penalised := candidate(s, nodes, from, fails)
	hold := func(kind string, until time.Time, format string, args ...any) *Decision {
		why := fmt.Sprintf(format, args...)
		return &Decision{Reason: why, Held: &Hold{From: from, To: best, Kind: kind, Reason: why, Until: until}}
	}
	if best == "" {
		return hold(HoldNoStandby, time.Time{}, "%s failed its health checks but no standby is healthy", from)
	}
	if penalised {
		// The back-off is never shorter than the cool-off, so it is the
		// one to report.
		f := fails[best]
		last, _ := s.LastMove()
		wait := backoff(p, f)
		if until := last.DecidedAt.Add(wait); now.Before(until) {
			return hold(HoldBackoff, until, "%s failed its health checks, but every healthy standby is penalised (%s: %d failures in %v): backing off %v after the last move",
				from, best, f.Count, p.FailureWindow, wait)
		}
	}
	if now.Before(coolUntil) {
		return hold(HoldCooloff, coolUntil, "%s failed its health checks: moving to %s when the cool-off after the last move ends", from, best)
	}
	why := fmt.Sprintf("%s failed its health checks: moving to %s", from, best)
	if penalised {
		why += " (penalised, after backing off)"
	}
	return &Decision{
		Cmd: state.SetHolder{Node: best, PrevEpoch: s.Holder.Epoch, Active: false,
			Reason: ReasonUnhealthy, FaultAt: cur.FaultAt, At: now},
		Reason: why,
	}
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

// candidate picks the healthy, reachable app node that is not penalised with
// the highest priority (then the lowest name), excluding one node. When
// every such node is penalised it picks the best penalised one and says so.
func candidate(s state.Snapshot, nodes map[string]NodeView, exclude string, fails map[string]Failures) (string, bool) {
	var ok []state.Member
	for _, name := range s.Apps() {
		v := nodes[name]
		if name == exclude || !v.Reachable || !v.Healthy || v.Dead {
			continue
		}
		ok = append(ok, s.Members[name])
	}
	if len(ok) == 0 {
		return "", false
	}
	slices.SortFunc(ok, func(a, b state.Member) int {
		if c := cmp.Compare(b2i(fails[a.Name].Penalised), b2i(fails[b.Name].Penalised)); c != 0 {
			return c // not penalised first
		}
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return ok[0].Name, fails[ok[0].Name].Penalised
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
