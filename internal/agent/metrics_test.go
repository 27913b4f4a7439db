package agent

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/failover"
)

type plainProvider struct{}

func (plainProvider) Acquire(context.Context) error      { return nil }
func (plainProvider) Release(context.Context) error      { return nil }
func (plainProvider) Held(context.Context) (bool, error) { return false, nil }

type drainingProvider struct {
	plainProvider
	stopped bool
}

func (d *drainingProvider) StopNew(context.Context) error         { d.stopped = true; return nil }
func (d *drainingProvider) InFlight(context.Context) (int, error) { return 7, nil }

// TestInstrumentKeepsDrainer: the metrics wrapper must not hide a provider's
// ability to drain, or planned moves would cut connections.
func TestInstrumentKeepsDrainer(t *testing.T) {
	m := newMetrics()
	if _, ok := instrument(plainProvider{}, m).(failover.Drainer); ok {
		t.Errorf("a provider that cannot drain became a Drainer")
	}
	inner := &drainingProvider{}
	d, ok := instrument(inner, m).(failover.Drainer)
	if !ok {
		t.Fatal("the wrapper hides the provider's Drainer")
	}
	if err := d.StopNew(context.Background()); err != nil || !inner.stopped {
		t.Errorf("StopNew did not reach the provider (err %v)", err)
	}
	if n, err := d.InFlight(context.Background()); err != nil || n != 7 {
		t.Errorf("InFlight = %d, %v; want 7 from the provider", n, err)
	}
}

// TestObserveFailures checks the failure gauges against a state where
// node1 failed three times in a minute and the DC holds a move back.
func TestObserveFailures(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := failureState(now)
	held := &failover.Hold{From: "node2", To: "node1", Kind: failover.HoldBackoff, Until: now.Add(10 * time.Second)}
	m := newMetrics()
	m.observeFailures(now, s, state.Policy{}, held)
	checks := []struct {
		name string
		got  float64
		want float64
	}{
		{"node1 failures", value(t, m.failures.WithLabelValues("node1")), 3},
		{"node1 penalised", value(t, m.penalised.WithLabelValues("node1")), 1},
		{"node1 until", value(t, m.penalisedUntil.WithLabelValues("node1")), float64(now.Add(-3*time.Minute + failover.DefaultFailureWindow).Unix())},
		{"node2 failures", value(t, m.failures.WithLabelValues("node2")), 0},
		{"node2 penalised", value(t, m.penalised.WithLabelValues("node2")), 0},
		{"held backoff", value(t, m.moveHeld.WithLabelValues("backoff")), 1},
		{"held cooloff", value(t, m.moveHeld.WithLabelValues("cooloff")), 0},
		{"held until", value(t, m.moveHeldUntil), float64(now.Add(10 * time.Second).Unix())},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}
	m.observeFailures(now, s, state.Policy{}, nil)
	if got := value(t, m.moveHeld.WithLabelValues("backoff")); got != 0 {
		t.Errorf("held backoff after the hold ended = %v; want 0", got)
	}
}

// failureState has node1 fail three times (penalised by the defaults).
func failureState(now time.Time) state.Snapshot {
	mv := func(epoch uint64, from, to, reason string, ago time.Duration) state.Move {
		return state.Move{Epoch: epoch, From: from, To: to, Reason: reason, DecidedAt: now.Add(-ago)}
	}
	return state.Snapshot{
		Members: map[string]state.Member{
			"node1":   {Name: "node1", Role: state.RoleApp},
			"node2":   {Name: "node2", Role: state.RoleApp},
			"witness": {Name: "witness", Role: state.RoleWitness},
		},
		Holder: state.Holder{Node: "node2", Epoch: 6, Active: true},
		Mode:   state.ModeAuto,
		Moves: []state.Move{
			mv(2, "node1", "node2", failover.ReasonUnhealthy, 3*time.Minute),
			mv(3, "node2", "node1", "switchover", 2*time.Minute),
			mv(4, "node1", "node2", failover.ReasonLost, 90*time.Second),
			mv(5, "node2", "node1", "switchover", time.Minute),
			mv(6, "node1", "node2", failover.ReasonUnhealthy, 30*time.Second),
		},
	}
}

func value(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
