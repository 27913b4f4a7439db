package agent

import (
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestStatusShowsFailuresAndHeldMove(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cfg := &config.Config{Failover: config.Failover{FailureThreshold: 3, FailureWindow: config.Duration(10 * time.Minute)}}
	st := localapi.Status{Members: []localapi.Member{{Name: "node1"}, {Name: "node2"}, {Name: "witness"}}}
	held := &failover.Hold{From: "node2", To: "node1", Kind: failover.HoldBackoff, Reason: "backing off", Until: now.Add(10 * time.Second)}
	addFailures(&st, now, failureState(now), cfg, held)
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
