package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// TestDeployMetrics: /metrics has deliveries by source and outcome,
// rollouts by outcome and their duration, under the names the README gives.
func TestDeployMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newDeployMetrics(reg)
	m.delivered("gitlab", "accepted")
	m.delivered("gitlab", "bad_signature")
	m.delivered("gitlab", "bad_signature")
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	m.finished(state.Rollout{Outcome: state.DeliveryDeployed, StartedAt: t0, EndedAt: t0.Add(12 * time.Second)})
	m.finished(state.Rollout{Outcome: state.DeliveryRolledBack, StartedAt: t0, EndedAt: t0.Add(40 * time.Second)})
	want := `
# HELP tandem_deploy_deliveries_total Webhook deliveries received by this node, by source and outcome.
# TYPE tandem_deploy_deliveries_total counter
tandem_deploy_deliveries_total{outcome="accepted",source="gitlab"} 1
tandem_deploy_deliveries_total{outcome="bad_signature",source="gitlab"} 2
# HELP tandem_deploy_rollouts_total Rollouts this node drove to an end, by outcome.
# TYPE tandem_deploy_rollouts_total counter
tandem_deploy_rollouts_total{outcome="deployed"} 1
tandem_deploy_rollouts_total{outcome="rolled_back"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tandem_deploy_deliveries_total", "tandem_deploy_rollouts_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.duration, "tandem_deploy_rollout_duration_seconds"); n != 2 {
		t.Errorf("%d duration series; want one per outcome (2)", n)
	}
	if got := testutil.ToFloat64(m.rollouts.WithLabelValues(state.DeliveryDeployed)); got != 1 {
		t.Errorf("deployed rollouts %v; want 1", got)
	}
}
