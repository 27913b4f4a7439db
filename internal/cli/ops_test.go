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

func TestPrintableStripsTerminalControl(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ok 200", "ok 200"},
		{"\x1b[2J\x1b[Hpwned", "?[2J?[Hpwned"},
		{"line1\r\nline2", "line1??line2"},
		{"tab\there", "tab here"},
		{"c1 \u009b31m", "c1 ?31m"},
		{"bad \xff utf8", "bad ? utf8"},
		{"ünïcode ✓", "ünïcode ✓"},
	}
	for _, tt := range tests {
		if got := printable(tt.in); got != tt.want {
			t.Errorf("printable(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestPrintableLinesKeepsLines(t *testing.T) {
	if got, want := printableLines("gate failed\r\n  \x1b[31mjournal\n", "  "), "gate failed\n    ?[31mjournal"; got != want {
		t.Errorf("printableLines = %q; want %q", got, want)
	}
}
