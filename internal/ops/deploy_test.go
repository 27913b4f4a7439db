package ops

import (
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestDeliveryStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if ds := deliveryStatus(&state.Deploy{}); ds != nil {
		t.Errorf("no delivery yet: %+v; want nil", ds)
	}
	dep := &state.Deploy{
		Installed:  map[string]map[string]state.Release{"node1": {"site": {Package: "site", Version: "2", Digest: "ab"}}},
		Deliveries: []state.Delivery{{ID: "d-1", Status: state.DeliveryRunning}, {ID: "d-2", Status: state.DeliveryQueued}},
		Rollout: &state.Rollout{ID: "d-1", Package: "site", Version: "3", Phase: state.PhaseForward, Driver: "witness", StartedAt: t0,
			Steps: []state.Step{{N: 2, Action: "install", Node: "node2", State: state.StepStarted}}},
		Lock: &state.Lock{Message: "freeze"},
	}
	ds := deliveryStatus(dep)
	if ds.Installed["node1"]["site"].Version != "2" || ds.Queued != 1 || ds.Locked != "freeze" {
		t.Errorf("%+v", ds)
	}
	if ds.Rollout == nil || ds.Rollout.Step != "#2 install node2 started" || ds.Rollout.Version != "3" {
		t.Errorf("rollout %+v", ds.Rollout)
	}
}
