package ops

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// failureState has node1 fail three times within a few minutes (penalised
// by the defaults: 3 in 10 min); planned moves are nobody's failure.
func failureState(now time.Time) state.Snapshot {
	mv := func(epoch uint64, from, to, reason string, ago time.Duration) state.Move {
		return state.Move{Epoch: epoch, From: from, To: to, Reason: reason, DecidedAt: now.Add(-ago)}
	}
	return state.Snapshot{
		Membership: state.Membership{Members: map[string]state.Member{
			"node1":   {Name: "node1", Role: state.RoleApp},
			"node2":   {Name: "node2", Role: state.RoleApp},
			"witness": {Name: "witness", Role: state.RoleWitness},
		}},
		Failover: state.Failover{
			Holder: state.Holder{Node: "node2", Epoch: 6, Active: true},
			Mode:   state.ModeAuto,
			Moves: []state.Move{
				mv(2, "node1", "node2", failover.ReasonUnhealthy, 3*time.Minute),
				mv(3, "node2", "node1", "switchover", 2*time.Minute),
				mv(4, "node1", "node2", failover.ReasonLost, 90*time.Second),
				mv(5, "node2", "node1", "switchover", time.Minute),
				mv(6, "node1", "node2", failover.ReasonUnhealthy, 30*time.Second),
			},
		},
	}
}

func TestStatusShowsFailuresAndHeldMove(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := localapi.Status{Members: []localapi.Member{{Name: "node1"}, {Name: "node2"}, {Name: "witness"}}}
	held := &failover.Hold{From: "node2", To: "node1", Kind: failover.HoldBackoff, Reason: "backing off", Until: now.Add(10 * time.Second)}
	addFailures(&st, now, failureState(now), state.Policy{FailureThreshold: 3, FailureWindow: 10 * time.Minute}, held)
	n1, n2, w := st.Members[0], st.Members[1], st.Members[2]
	if n1.Failures != 3 || !n1.Penalised || n1.PenalisedUntil == nil || !n1.PenalisedUntil.Equal(now.Add(7*time.Minute)) {
		t.Errorf("node1 = %d failures, penalised %v until %v; want 3, true, %v", n1.Failures, n1.Penalised, n1.PenalisedUntil, now.Add(7*time.Minute))
	}
	if n2.Failures != 0 || n2.Penalised || n2.PenalisedUntil != nil {
		t.Errorf("node2 = %+v; want no failures", n2)
	}
	if w.Failures != 0 || w.Penalised {
		t.Errorf("witness = %+v; want no failures", w)
	}
	if h := st.HeldMove; h == nil || h.Kind != "backoff" || h.To != "node1" || h.Until == nil || !h.Until.Equal(now.Add(10*time.Second)) {
		t.Errorf("held move = %+v; want a backoff to node1 until +10s", h)
	}
}

// TestFailureGauges checks the collector's failure and hold gauges: node1
// failed three times and the DC holds a move back.
func TestFailureGauges(t *testing.T) {
	now := t0.Add(time.Hour) // newService's own moves are outside the window
	s, fc, ff := newService(t)
	s.o.Now = func() time.Time { return now }
	for _, mv := range failureState(now).Moves {
		if err := fc.Apply(t.Context(), state.SetHolder{Node: mv.To, PrevEpoch: fc.m.View().Holder.Epoch, Active: true, Reason: mv.Reason, At: mv.DecidedAt}); err != nil {
			t.Fatal(err)
		}
	}
	ff.st.Held = &failover.Hold{From: "node2", To: "node1", Kind: failover.HoldBackoff, Until: now.Add(10 * time.Second)}
	until := now.Add(-3*time.Minute + failover.DefaultFailureWindow).Unix()
	want := `
# HELP tandem_move_held 1 for the reason placement holds a move off an unhealthy holder back (cooloff, backoff, no_standby).
# TYPE tandem_move_held gauge
tandem_move_held{kind="backoff"} 1
tandem_move_held{kind="cooloff"} 0
tandem_move_held{kind="no_standby"} 0
# HELP tandem_node_failures Each app node's failures (moves away from it, unhealthy or lost) within the failure window.
# TYPE tandem_node_failures gauge
tandem_node_failures{node="node1"} 3
tandem_node_failures{node="node2"} 0
# HELP tandem_node_penalised_until_seconds Unix time at which a penalised node's penalty lapses (0 when not penalised).
# TYPE tandem_node_penalised_until_seconds gauge
tandem_node_penalised_until_seconds{node="node1"} ` + fmt.Sprint(until) + `
tandem_node_penalised_until_seconds{node="node2"} 0
`
	names := []string{"tandem_move_held", "tandem_node_failures", "tandem_node_penalised_until_seconds"}
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}
