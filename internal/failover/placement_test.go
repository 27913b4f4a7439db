package failover

import (
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

var now0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func snap(holder state.Holder, moves ...state.Move) state.Snapshot {
	return state.Snapshot{
		Membership: state.Membership{Members: map[string]state.Member{
			"node1":   {Name: "node1", Role: state.RoleApp},
			"node2":   {Name: "node2", Role: state.RoleApp, Priority: 0},
			"witness": {Name: "witness", Role: state.RoleWitness},
		}},
		Failover: state.Failover{
			Holder: holder,
			Mode:   state.ModeAuto,
			Moves:  moves,
		},
	}
}

var healthy = NodeView{Reachable: true, Healthy: true}

// mv is a committed move decided ago before now0.
func mv(epoch uint64, from, to, reason string, ago time.Duration) state.Move {
	at := now0.Add(ago)
	return state.Move{Epoch: epoch, From: from, To: to, Reason: reason, DecidedAt: at, ActivatedAt: at}
}

func TestDecide(t *testing.T) {
	policy := state.Policy{Cooloff: 20 * time.Second, FailureThreshold: 3, FailureWindow: 10 * time.Minute}
	active1 := state.Holder{Node: "node1", Epoch: 1, Active: true}
	tests := []struct {
		name   string
		s      state.Snapshot
		nodes  map[string]NodeView
		policy state.Policy
		want   state.Command // nil: no command
		held   string        // the Hold kind expected when want is nil; "" for no decision at all
	}{
		{
			name:  "initial placement picks lowest name among equals",
			s:     snap(state.Holder{}),
			nodes: map[string]NodeView{"node1": healthy, "node2": healthy, "witness": {Reachable: true}},
			want:  state.SetHolder{Node: "node1", PrevEpoch: 0, Active: true, Reason: "initial placement", At: now0},
		},
		{
			name:  "initial placement skips unhealthy",
			s:     snap(state.Holder{}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 0, Active: true, Reason: "initial placement", At: now0},
		},
		{
			name:  "no healthy candidate: nothing",
			s:     snap(state.Holder{}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": {}},
		},
		{
			name:  "healthy holder stays",
			s:     snap(active1),
			nodes: map[string]NodeView{"node1": healthy, "node2": healthy},
		},
		{
			name:  "dead holder replaced at once, active",
			s:     snap(active1),
			nodes: map[string]NodeView{"node1": {Dead: true, FaultAt: now0.Add(-time.Second)}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 1, Active: true, Reason: "holder lost", FaultAt: now0.Add(-time.Second), At: now0},
		},
		{
			name:  "unreachable but not provably dead: wait",
			s:     snap(active1),
			nodes: map[string]NodeView{"node1": {}, "node2": healthy},
		},
		{
			name:  "unhealthy holder: pending move, old holder must release",
			s:     snap(active1),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 1, Active: false, Reason: "holder unhealthy", At: now0},
		},
		{
			name:  "holder still starting after a restart: no move",
			s:     snap(active1),
			nodes: map[string]NodeView{"node1": {Reachable: true, Starting: true}, "node2": healthy},
		},
		{
			name: "unhealthy holder within cool-off: held back",
			s: snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
				state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-5 * time.Second)}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			held:  HoldCooloff,
		},
		{
			name: "unhealthy holder as soon as the cool-off ends: moves",
			s: snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
				state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-20 * time.Second)}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 2, Active: false, Reason: "holder unhealthy", At: now0},
		},
		{
			name:  "unhealthy holder, no healthy standby: held back",
			s:     snap(active1),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": {Reachable: true}},
			held:  HoldNoStandby,
		},
		{
			name: "dead holder within cool-off: still moves",
			s: snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
				state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-5 * time.Second)}),
			nodes: map[string]NodeView{"node1": {Dead: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 2, Active: true, Reason: "holder lost", At: now0},
		},
		{
			// Issue 13: the hourly cap held every hung app after the 6th
			// move. Lost holders are not the standby's failures.
			name: "many moves within the hour: an unhealthy holder still moves",
			s: snap(state.Holder{Node: "node1", Epoch: 8, Active: true},
				mv(2, "node1", "node2", ReasonLost, -9*time.Minute),
				mv(3, "node2", "node1", ReasonUnhealthy, -8*time.Minute),
				mv(4, "node1", "node2", ReasonLost, -7*time.Minute),
				mv(5, "node2", "node1", ReasonLost, -6*time.Minute),
				mv(6, "node1", "node2", ReasonUnhealthy, -5*time.Minute),
				mv(7, "node2", "node1", "switchover", -4*time.Minute),
				mv(8, "node2", "node1", ReasonUnhealthy, -time.Minute)),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 8, Active: false, Reason: "holder unhealthy", At: now0},
		},
		{
			name: "penalised standby: held back for the back-off",
			s: snap(state.Holder{Node: "node1", Epoch: 5, Active: true},
				mv(2, "node2", "node1", ReasonUnhealthy, -3*time.Minute),
				mv(3, "node2", "node1", ReasonUnhealthy, -2*time.Minute),
				mv(4, "node2", "node1", ReasonLost, -time.Minute),
				mv(5, "node2", "node1", ReasonUnhealthy, -30*time.Second)),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			held:  HoldBackoff,
		},
		{
			name: "penalised standby: moves once the back-off has passed",
			s: snap(state.Holder{Node: "node1", Epoch: 4, Active: true},
				mv(2, "node2", "node1", ReasonUnhealthy, -4*time.Minute),
				mv(3, "node2", "node1", ReasonUnhealthy, -3*time.Minute),
				mv(4, "node2", "node1", ReasonLost, -2*time.Minute)),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 4, Active: false, Reason: "holder unhealthy", At: now0},
		},
		{
			name: "penalties decay: failures older than the window do not count",
			s: snap(state.Holder{Node: "node1", Epoch: 5, Active: true},
				mv(2, "node2", "node1", ReasonUnhealthy, -13*time.Minute),
				mv(3, "node2", "node1", ReasonUnhealthy, -12*time.Minute),
				mv(4, "node2", "node1", ReasonLost, -11*time.Minute),
				mv(5, "node2", "node1", ReasonUnhealthy, -30*time.Second)),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 5, Active: false, Reason: "holder unhealthy", At: now0},
		},
		{
			name: "reset clears the penalty",
			s: func() state.Snapshot {
				s := snap(state.Holder{Node: "node1", Epoch: 5, Active: true},
					mv(2, "node2", "node1", ReasonUnhealthy, -3*time.Minute),
					mv(3, "node2", "node1", ReasonUnhealthy, -2*time.Minute),
					mv(4, "node2", "node1", ReasonLost, -time.Minute),
					mv(5, "node2", "node1", ReasonUnhealthy, -30*time.Second))
				s.FailureResets = map[string]time.Time{"node2": now0.Add(-time.Second)}
				return s
			}(),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 5, Active: false, Reason: "holder unhealthy", At: now0},
		},
		{
			name: "a lost holder is always replaced, even by a penalised node",
			s: snap(state.Holder{Node: "node1", Epoch: 5, Active: true},
				mv(2, "node2", "node1", ReasonUnhealthy, -3*time.Minute),
				mv(3, "node2", "node1", ReasonUnhealthy, -2*time.Minute),
				mv(4, "node2", "node1", ReasonLost, -time.Minute),
				mv(5, "node2", "node1", ReasonUnhealthy, -time.Second)),
			nodes: map[string]NodeView{"node1": {Dead: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 5, Active: true, Reason: "holder lost", At: now0},
		},
		{
			name: "a single failing node is left: no preemption back to it",
			s: func() state.Snapshot {
				s := snap(state.Holder{Node: "node2", Epoch: 6, Active: true},
					mv(2, "node1", "node2", ReasonUnhealthy, -5*time.Minute),
					mv(3, "node2", "node1", ReasonPreempt, -4*time.Minute),
					mv(4, "node1", "node2", ReasonLost, -3*time.Minute),
					mv(5, "node2", "node1", ReasonPreempt, -2*time.Minute),
					mv(6, "node1", "node2", ReasonUnhealthy, -time.Minute))
				m := s.Members["node1"]
				m.Priority = 10
				s.Members["node1"] = m
				return s
			}(),
			nodes:  map[string]NodeView{"node1": healthy, "node2": healthy},
			policy: state.Policy{Preempt: true, FailureThreshold: 3, FailureWindow: 10 * time.Minute},
		},
		{
			name:  "pending move activated when previous holder released",
			s:     snap(state.Holder{Node: "node2", Epoch: 2, Previous: "node1"}),
			nodes: map[string]NodeView{"node1": {Reachable: true, Released: true}, "node2": healthy},
			want:  state.Activate{Epoch: 2, At: now0},
		},
		{
			name:  "pending move activated when previous holder's lease expired",
			s:     snap(state.Holder{Node: "node2", Epoch: 2, Previous: "node1"}),
			nodes: map[string]NodeView{"node1": {Dead: true}, "node2": healthy},
			want:  state.Activate{Epoch: 2, At: now0},
		},
		{
			name:  "pending move waits while previous holder may hold",
			s:     snap(state.Holder{Node: "node2", Epoch: 2, Previous: "node1"}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
		},
		{
			name:  "maintenance freezes placement",
			s:     func() state.Snapshot { s := snap(active1); s.Mode = state.ModeMaintenance; return s }(),
			nodes: map[string]NodeView{"node1": {Dead: true}, "node2": healthy},
		},
		{
			name: "no preemption by default",
			s: func() state.Snapshot {
				s := snap(state.Holder{Node: "node2", Epoch: 1, Active: true})
				m := s.Members["node1"]
				m.Priority = 10
				s.Members["node1"] = m
				return s
			}(),
			nodes: map[string]NodeView{"node1": healthy, "node2": healthy},
		},
		{
			name: "preemption when enabled",
			s: func() state.Snapshot {
				s := snap(state.Holder{Node: "node2", Epoch: 1, Active: true})
				m := s.Members["node1"]
				m.Priority = 10
				s.Members["node1"] = m
				return s
			}(),
			nodes:  map[string]NodeView{"node1": healthy, "node2": healthy},
			policy: state.Policy{Preempt: true},
			want:   state.SetHolder{Node: "node1", PrevEpoch: 1, Active: false, Reason: "preempt", At: now0, Drain: true},
		},
		{
			name:  "witness is never a candidate",
			s:     snap(state.Holder{}),
			nodes: map[string]NodeView{"node1": {}, "node2": {}, "witness": healthy},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy
			if tt.policy != (state.Policy{}) {
				p = tt.policy
			}
			d := Decide(now0, tt.s, tt.nodes, p)
			switch {
			case tt.want == nil && tt.held == "" && d != nil:
				t.Fatalf("Decide() = %#v (%s); want no decision", d.Cmd, d.Reason)
			case tt.want == nil && tt.held != "" && (d == nil || d.Cmd != nil || d.Held == nil || d.Held.Kind != tt.held):
				t.Fatalf("Decide() = %+v; want a move held back for %s", d, tt.held)
			case tt.want != nil && d == nil:
				t.Fatalf("Decide() = nil; want %#v", tt.want)
			case tt.want != nil && d.Cmd != tt.want:
				t.Fatalf("Decide() = %#v (%s); want %#v", d.Cmd, d.Reason, tt.want)
			}
		})
	}
}

func TestDecideUsesPublishedPolicy(t *testing.T) {
	s := snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
		state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-10 * time.Second)})
	nodes := map[string]NodeView{"node1": {Reachable: true}, "node2": healthy}
	// The DC's own policy (a witness's defaults) says 20 s of cool-off...
	own := state.Policy{Cooloff: 20 * time.Second}
	if d := Decide(now0, s, nodes, own); d == nil || d.Cmd != nil {
		t.Fatalf("Decide with 20s cool-off = %+v; want the move held back", d)
	}
	// ...but the app nodes published 5 s.
	s.Policy = &state.Policy{Cooloff: 5 * time.Second}
	if d := Decide(now0, s, nodes, own); d == nil || d.Cmd == nil {
		t.Fatal("Decide ignored the published 5s cool-off")
	}
}

func TestNodeFailures(t *testing.T) {
	p := state.Policy{FailureThreshold: 2, FailureWindow: 10 * time.Minute}
	tests := []struct {
		name   string
		moves  []state.Move
		resets map[string]time.Time
		want   Failures // node1's
	}{
		{"no moves", nil, nil, Failures{}},
		{"planned moves are not failures", []state.Move{
			mv(2, "node1", "node2", "switchover", -time.Minute),
			mv(3, "node1", "node2", ReasonPreempt, -time.Minute),
			mv(4, "", "node1", ReasonInitial, -time.Minute),
		}, nil, Failures{}},
		{"moves to the node are not its failures", []state.Move{
			mv(2, "node2", "node1", ReasonUnhealthy, -time.Minute),
		}, nil, Failures{}},
		{"below the threshold", []state.Move{
			mv(2, "node1", "node2", ReasonLost, -time.Minute),
		}, nil, Failures{Count: 1}},
		{"at the threshold: penalised until the oldest leaves the window", []state.Move{
			mv(2, "node1", "node2", ReasonLost, -3*time.Minute),
			mv(3, "node1", "node2", ReasonUnhealthy, -time.Minute),
		}, nil, Failures{Count: 2, Penalised: true, Until: now0.Add(7 * time.Minute)}},
		{"over the threshold: until enough have left", []state.Move{
			mv(2, "node1", "node2", ReasonLost, -5*time.Minute),
			mv(3, "node1", "node2", ReasonUnhealthy, -3*time.Minute),
			mv(4, "node1", "node2", ReasonUnhealthy, -time.Minute),
		}, nil, Failures{Count: 3, Penalised: true, Until: now0.Add(7 * time.Minute)}},
		{"older than the window: decayed", []state.Move{
			mv(2, "node1", "node2", ReasonLost, -11*time.Minute),
			mv(3, "node1", "node2", ReasonUnhealthy, -time.Minute),
		}, nil, Failures{Count: 1}},
		{"reset: earlier failures do not count", []state.Move{
			mv(2, "node1", "node2", ReasonLost, -3*time.Minute),
			mv(3, "node1", "node2", ReasonUnhealthy, -time.Minute),
		}, map[string]time.Time{"node1": now0.Add(-2 * time.Minute)}, Failures{Count: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := snap(state.Holder{}, tt.moves...)
			s.FailureResets = tt.resets
			got := NodeFailures(now0, s, p)
			if got["node1"] != tt.want {
				t.Errorf("node1 = %+v; want %+v", got["node1"], tt.want)
			}
			if _, ok := got["witness"]; ok {
				t.Error("a witness has a failure count")
			}
		})
	}
}

// TestUnpenalisedStandbyPreferred checks that with three app nodes a
// penalised node is passed over even when its priority is higher.
func TestUnpenalisedStandbyPreferred(t *testing.T) {
	s := snap(state.Holder{Node: "node1", Epoch: 5, Active: true},
		mv(2, "node2", "node1", ReasonUnhealthy, -4*time.Minute),
		mv(3, "node2", "node1", ReasonLost, -3*time.Minute),
		mv(4, "node2", "node1", ReasonUnhealthy, -2*time.Minute),
		mv(5, "node3", "node1", "switchover", -time.Minute))
	s.Members["node2"] = state.Member{Name: "node2", Role: state.RoleApp, Priority: 10}
	s.Members["node3"] = state.Member{Name: "node3", Role: state.RoleApp}
	nodes := map[string]NodeView{"node1": {Reachable: true}, "node2": healthy, "node3": healthy}
	d := Decide(now0, s, nodes, state.Policy{Cooloff: 5 * time.Second})
	if d == nil || d.Cmd == nil || d.Cmd.(state.SetHolder).Node != "node3" {
		t.Fatalf("Decide() = %+v; want a move to node3, not the penalised node2", d)
	}
}

// TestFlappingPairBacksOff runs placement on a fake clock against a pair of
// nodes that each fail as soon as they hold the IP. Moves must come ever
// further apart (exponential back-off), never stop altogether, and each
// move must be to the other node.
func TestFlappingPairBacksOff(t *testing.T) {
	p := state.Policy{Cooloff: 5 * time.Second, FailureThreshold: 3, FailureWindow: time.Hour}
	m := state.New()
	apply := func(c state.Command) {
		t.Helper()
		b, err := state.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Apply(m.View().Index+1, b); err != nil {
			t.Fatalf("apply %s: %v", c.Type(), err)
		}
	}
	apply(state.AddMember{Member: state.Member{Name: "node1", Role: state.RoleApp}})
	apply(state.AddMember{Member: state.Member{Name: "node2", Role: state.RoleApp}})
	apply(state.SetPolicy{Policy: p})
	now := now0
	var gaps []time.Duration
	var lastMove time.Time
	var holds int
	for step := 0; step < 40*60*10 && len(gaps) < 10; step++ { // 40 minutes in 100 ms steps
		now = now.Add(100 * time.Millisecond)
		s := m.View()
		nodes := map[string]NodeView{"node1": healthy, "node2": healthy}
		if h := s.Holder; h.Node != "" && h.Active {
			nodes[h.Node] = NodeView{Reachable: true, FaultAt: now} // fails as soon as it holds
		} else if h.Node != "" {
			nodes[h.Previous] = NodeView{Reachable: true, Released: true}
		}
		d := Decide(now, s, nodes, state.Policy{})
		switch {
		case d == nil:
		case d.Cmd == nil:
			holds++
		default:
			if sh, ok := d.Cmd.(state.SetHolder); ok && s.Holder.Node != "" {
				if sh.Node == s.Holder.Node {
					t.Fatalf("move to the holder itself: %+v", sh)
				}
				if !lastMove.IsZero() {
					gaps = append(gaps, now.Sub(lastMove))
				}
				lastMove = now
			}
			apply(d.Cmd)
		}
	}
	if len(gaps) < 10 {
		t.Fatalf("only %d moves in 40 minutes (gaps %v): the pair froze", len(gaps)+1, gaps)
	}
	t.Logf("gaps between moves: %v", gaps)
	// The first moves come at the cool-off; once both nodes are penalised
	// each wait is at least the one before and they double.
	if gaps[0] != p.Cooloff {
		t.Errorf("first gap %v; want about the 5s cool-off", gaps[0])
	}
	for i := 1; i < len(gaps); i++ {
		if gaps[i] < gaps[i-1] {
			t.Errorf("gap %d (%v) is shorter than gap %d (%v): not backing off", i, gaps[i], i-1, gaps[i-1])
		}
	}
	if last := gaps[len(gaps)-1]; last < 8*gaps[0] {
		t.Errorf("last gap %v; want at least 8x the first (%v): not exponential", last, gaps[0])
	}
	if holds == 0 {
		t.Error("no move was reported held back")
	}
}
