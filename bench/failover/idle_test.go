package main

import (
	"math"
	"testing"
	"time"
)

func TestIdleFigures(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a, err := parseProcSample("100\n10 50 20 3 2 30000\n11 5 5 0 0 2000\n", t0)
	if err != nil {
		t.Fatal(err)
	}
	// PID 11 ended and PID 12 started: only PID 10's 60 ticks count.
	b, err := parseProcSample("100\n10 80 40 10 5 31000\n12 1 1 0 0 1000\n", t0.Add(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got := idleCPU(a, b); math.Abs(got-1.0) > 1e-9 {
		t.Errorf("idleCPU = %v%%; want 1%% (60 ticks at 100 Hz in 60 s)", got)
	}
	if b.rssKB != 32000 {
		t.Errorf("rss = %d kB; want the sum, 32000", b.rssKB)
	}
	for _, bad := range []string{"", "x\n1 2 3 4 5 6", "100\n", "100\n1 2 x 4 5 6"} {
		if _, err := parseProcSample(bad, t0); err == nil {
			t.Errorf("parseProcSample(%q) accepted", bad)
		}
	}
}

func TestIdleGoal(t *testing.T) {
	figs := []idleFigure{
		{System: systemTandem, Node: "node1", CPUPct: 0.6, RSSMB: 35},
		{System: systemTandem, Node: "witness", CPUPct: 0.9, RSSMB: 33},
		{System: systemKeepalived, Node: "node1", CPUPct: 3, RSSMB: 5},
	}
	if g := idleGoal(figs); !g.Pass || g.Detail != "highest 0.90% (witness)" {
		t.Errorf("goal = %+v; want a pass naming the witness", g)
	}
	figs[0].CPUPct = 1.2
	if g := idleGoal(figs); g.Pass {
		t.Errorf("goal = %+v; want a failure at 1.2%%", g)
	}
	if g := idleGoal(figs[2:]); g.Pass {
		t.Error("the goal passed with no tandem figure")
	}
	if cpu, rss, ok := idleMedian(figs, systemTandem); !ok || cpu != (1.2+0.9)/2 || rss != 34 {
		t.Errorf("median = %v %v %v", cpu, rss, ok)
	}
}
