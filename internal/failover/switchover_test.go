package failover

import (
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestPlanSwitchover(t *testing.T) {
	active1 := state.Holder{Node: "node1", Epoch: 4, Active: true}
	pending := snap(active1)
	pending.Members["node3"] = state.Member{Name: "node3", Role: state.RoleApp, Pending: true}
	sick := NodeView{Reachable: true, Healthy: false}
	tests := []struct {
		name      string
		s         state.Snapshot
		views     map[string]NodeView
		to        string
		wantNode  string // "" with wantErr "": not ready yet
		wantErr   string
		wantReady bool
	}{
		{"best standby", snap(active1), map[string]NodeView{"node1": healthy, "node2": healthy}, "", "node2", "", true},
		{"named target", snap(active1), map[string]NodeView{"node1": healthy, "node2": healthy}, "node2", "node2", "", true},
		{"target not healthy yet waits", snap(active1), map[string]NodeView{"node1": healthy, "node2": sick}, "node2", "", "", false},
		{"no standby yet waits", snap(active1), map[string]NodeView{"node1": healthy, "node2": {}}, "", "", "", false},
		{"dead target waits", snap(active1), map[string]NodeView{"node2": {Reachable: true, Healthy: true, Dead: true}}, "node2", "", "", false},
		{"unknown node", snap(active1), nil, "node9", "", "not a member", false},
		{"witness", snap(active1), nil, "witness", "", "witness", false},
		{"already holder", snap(active1), nil, "node1", "", "already holds", false},
		{"pending member", pending, nil, "node3", "", "not a voter yet", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, ready, err := PlanSwitchover(now0, tt.s, tt.views, tt.to)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || ready != tt.wantReady {
				t.Fatalf("PlanSwitchover = %+v, %v, %v; want ready=%v", cmd, ready, err, tt.wantReady)
			}
			if !ready {
				return
			}
			if cmd.Node != tt.wantNode || cmd.PrevEpoch != 4 || !cmd.Drain || cmd.Active || cmd.Reason != "switchover" {
				t.Errorf("cmd = %+v; want a draining, pending move to %s from epoch 4", cmd, tt.wantNode)
			}
		})
	}
	// With nobody holding the IP there is nothing to drain: the move is
	// active at once.
	cmd, ready, err := PlanSwitchover(now0, snap(state.Holder{Epoch: 7}), map[string]NodeView{"node2": healthy}, "node2")
	if err != nil || !ready || !cmd.Active || cmd.PrevEpoch != 7 {
		t.Errorf("no holder: %+v, %v, %v; want an active move from epoch 7", cmd, ready, err)
	}
}

func TestHoldBackReason(t *testing.T) {
	tests := []struct {
		name                                          string
		mine, holding, lease, confirmed, contradicted bool
		retrying                                      bool
		want                                          string
	}{
		{"not the holder", false, false, true, true, false, false, ""},
		{"holding", true, true, true, true, false, false, ""},
		{"no lease", true, false, false, true, false, false, "no quorum lease"},
		{"contradicted", true, false, true, true, true, false, "announced epoch 9"},
		{"unconfirmed", true, false, true, false, false, false, "waiting for the raft leader to confirm epoch 7"},
		{"retrying", true, false, true, true, false, true, "retrying"},
	}
	for _, tt := range tests {
		got := holdBackReason(tt.mine, tt.holding, tt.lease, tt.confirmed, tt.contradicted, 7, 9, tt.retrying)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q; want %q", tt.name, got, tt.want)
		}
	}
}
