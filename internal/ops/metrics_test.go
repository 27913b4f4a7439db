package ops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestCollector(t *testing.T) {
	s, fc, _ := newService(t)
	c := s.Collector()
	// The two moves in the log predate the collector: history, not counted.
	want := `
# HELP tandem_holder_epoch Epoch of the committed holder (a fencing token).
# TYPE tandem_holder_epoch gauge
tandem_holder_epoch 2
# HELP tandem_vip_held 1 when the floating IP is configured on this node.
# TYPE tandem_vip_held gauge
tandem_vip_held 1
# HELP tandem_health_check_up 1 when a health check passes (after rise/fall).
# TYPE tandem_health_check_up gauge
tandem_health_check_up{check="web"} 1
`
	names := []string{"tandem_holder_epoch", "tandem_vip_held", "tandem_health_check_up", "tandem_moves_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if err := fc.Apply(context.Background(), state.SetHolder{Node: "node2", PrevEpoch: 2, Reason: "switchover", At: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	want = strings.Replace(want, "tandem_holder_epoch 2", "tandem_holder_epoch 3", 1) + `
# HELP tandem_moves_total Moves of the floating IP committed while this agent ran, by reason.
# TYPE tandem_moves_total counter
tandem_moves_total{reason="switchover"} 1
`
	for range 2 { // a second scrape must not count the move again
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
			t.Fatal(err)
		}
	}
}
