package agent

import (
	"context"
	"testing"

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
