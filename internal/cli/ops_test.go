package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestPrintStatusShowsPenaltiesAndHeldMove(t *testing.T) {
	until := time.Date(2026, 11, 25, 12, 7, 0, 0, time.UTC)
	st := localapi.Status{
		Node: "node1", Role: "app",
		Members: []localapi.Member{
			{Name: "node1", Role: "app", Failures: 3, Penalised: true, PenalisedUntil: &until},
			{Name: "node2", Role: "app", Failures: 1},
			{Name: "witness", Role: "witness"},
		},
		HeldMove: &localapi.HeldMove{From: "node2", To: "node1", Kind: "backoff", Reason: "every healthy standby is penalised", Until: &until},
	}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{"FAILURES", "3, PENALISED until 12:07:00", "held move: node2 -> node1, backoff", "every healthy standby is penalised"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}
