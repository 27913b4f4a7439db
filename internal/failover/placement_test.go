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

func TestDecide(t *testing.T) {
	policy := Policy{Cooloff: 20 * time.Second, MaxMovesPerHour: 3}
	active1 := state.Holder{Node: "node1", Epoch: 1, Active: true}
	tests := []struct {
		name   string
		s      state.Snapshot
		nodes  map[string]NodeView
		policy Policy
		want   state.Command // nil: no decision
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
			name: "unhealthy holder within cool-off: no move",
			s: snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
				state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-5 * time.Second)}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
		},
		{
			name: "dead holder within cool-off: still moves",
			s: snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
				state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-5 * time.Second)}),
			nodes: map[string]NodeView{"node1": {Dead: true}, "node2": healthy},
			want:  state.SetHolder{Node: "node2", PrevEpoch: 2, Active: true, Reason: "holder lost", At: now0},
		},
		{
			name: "hourly cap reached: no health move",
			s: snap(state.Holder{Node: "node1", Epoch: 4, Active: true},
				state.Move{Epoch: 2, DecidedAt: now0.Add(-50 * time.Minute)},
				state.Move{Epoch: 3, DecidedAt: now0.Add(-40 * time.Minute)},
				state.Move{Epoch: 4, DecidedAt: now0.Add(-30 * time.Minute)}),
			nodes: map[string]NodeView{"node1": {Reachable: true}, "node2": healthy},
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
			policy: Policy{Preempt: true},
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
			if tt.policy != (Policy{}) {
				p = tt.policy
			}
			d := Decide(now0, tt.s, tt.nodes, p)
			switch {
			case tt.want == nil && d != nil:
				t.Fatalf("Decide() = %#v (%s); want no decision", d.Cmd, d.Reason)
			case tt.want != nil && d == nil:
				t.Fatalf("Decide() = nil; want %#v", tt.want)
			case tt.want != nil && d.Cmd != tt.want:
				t.Fatalf("Decide() = %#v; want %#v", d.Cmd, tt.want)
			}
		})
	}
}

func TestDecideUsesPublishedPolicy(t *testing.T) {
	s := snap(state.Holder{Node: "node1", Epoch: 2, Active: true},
		state.Move{Epoch: 2, From: "node2", To: "node1", DecidedAt: now0.Add(-10 * time.Second)})
	nodes := map[string]NodeView{"node1": {Reachable: true}, "node2": healthy}
	// The DC's own policy (a witness's defaults) says 20 s of cool-off...
	own := Policy{Cooloff: 20 * time.Second, MaxMovesPerHour: 6}
	if d := Decide(now0, s, nodes, own); d != nil {
		t.Fatalf("Decide with 20s cool-off = %v; want none", d.Reason)
	}
	// ...but the app nodes published 5 s.
	s.Policy = &state.Policy{Cooloff: 5 * time.Second, MaxMovesPerHour: 6}
	if d := Decide(now0, s, nodes, own); d == nil {
		t.Fatal("Decide ignored the published 5s cool-off")
	}
}
