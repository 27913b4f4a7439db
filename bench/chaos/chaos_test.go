package main

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/labprobe"
)

func TestPlanIsDeterministic(t *testing.T) {
	a, b := plan(7, 300, true), plan(7, 300, true)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed drew two different campaigns")
	}
	if reflect.DeepEqual(a, plan(8, 300, true)) {
		t.Fatal("seeds 7 and 8 drew the same campaign")
	}
	seen := map[string]bool{}
	pairs := 0
	for _, s := range a {
		if len(s.Faults) == 2 {
			pairs++
		}
		for _, f := range s.Faults {
			seen[f.Kind] = true
			if f.Duration < time.Second || f.Duration > 6*time.Second {
				t.Errorf("step %d: %s lasts %v; want 1-6s", s.N, f.Kind, f.Duration)
			}
			if f.Kind == kindHolderNetem && (f.Delay <= 0 || f.Loss <= 0) {
				t.Errorf("step %d: netem without degradation: %+v", s.N, f)
			}
		}
		if s.Gap < 2*time.Second || s.Gap > 5*time.Second {
			t.Errorf("step %d: gap %v; want 2-5s", s.N, s.Gap)
		}
	}
	if len(seen) != len(kinds) {
		t.Errorf("300 steps drew %d of the %d kinds: %v", len(seen), len(kinds), seen)
	}
	if pairs < 30 || pairs > 120 {
		t.Errorf("%d overlapping pairs in 300 steps; want about a quarter", pairs)
	}
	for _, s := range plan(7, 300, false) {
		if len(s.Faults) != 1 {
			t.Fatalf("step %d has %d faults without -overlap", s.N, len(s.Faults))
		}
	}
}

func TestLongestOutage(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	req := func(startMs, endMs int, ok bool) labprobe.Result {
		return labprobe.Result{Start: t0.Add(time.Duration(startMs) * time.Millisecond), End: t0.Add(time.Duration(endMs) * time.Millisecond), OK: ok}
	}
	tests := []struct {
		name       string
		res        []labprobe.Result
		want       time.Duration
		wantFailed int
	}{
		{"all served", []labprobe.Result{req(0, 5, true), req(15, 20, true)}, 0, 0},
		{"one run", []labprobe.Result{req(0, 5, true), req(15, 265, false), req(30, 280, false), req(600, 610, true)}, 595 * time.Millisecond, 2},
		{"the longest of two runs", []labprobe.Result{req(10, 260, false), req(100, 110, true), req(200, 450, false), req(900, 905, true)}, 705 * time.Millisecond, 2},
		{"a run that never ends lasts to the end", []labprobe.Result{req(0, 5, true), req(500, 750, false)}, 1500 * time.Millisecond, 1},
		{"requests before the window do not count", []labprobe.Result{req(-500, -250, false), req(0, 5, true)}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, failed := longestOutage(tt.res, t0, t0.Add(2*time.Second))
			if got != tt.want || failed != tt.wantFailed {
				t.Errorf("longestOutage = %v, %d failed; want %v, %d", got, failed, tt.want, tt.wantFailed)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	hang := fault{Kind: kindHolderHang, Duration: 5 * time.Second}
	tests := []struct {
		name   string
		o      outcome
		single bool
		want   string // part of the violation; "" for none
	}{
		{"within the bound", outcome{Settled: true, StandbyOK: true, OutageMs: 2200}, true, ""},
		{"over the bound with a healthy standby", outcome{Settled: true, StandbyOK: true, OutageMs: 4800}, true, "over the 2.5s bound"},
		{"over the bound, standby penalised: not checked", outcome{Settled: true, OutageMs: 4800}, true, ""},
		{"over the bound in a pair: not checked", outcome{Settled: true, StandbyOK: true, OutageMs: 4800}, false, ""},
		{"split brain always fails", outcome{Settled: true, SplitBrain: 1}, false, "split brain"},
		{"unsettled always fails", outcome{}, false, "did not settle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.check(hang, tt.single)
			if (tt.want == "") != (o.Violation == "") || !strings.Contains(o.Violation, tt.want) {
				t.Errorf("violation = %q; want %q", o.Violation, tt.want)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	r := &report{Faults: 3, Outcomes: []outcome{
		{Kind: kindHolderHang, OutageMs: 2000, Moves: 1, Settled: true, BoundMs: 2500},
		{Kind: kindHolderHang, OutageMs: 3000, Moves: 1, Settled: true, BoundMs: 2500, Violation: "over"},
		{Kind: kindWitnessPower, Settled: true},
	}}
	r.summarize()
	if r.Pass || r.Violation != 1 || len(r.Summary) != 2 {
		t.Fatalf("summary = %+v, pass %v; want 2 kinds, 1 violation, fail", r.Summary, r.Pass)
	}
	h := r.Summary[0]
	if h.Kind != kindHolderHang || h.Count != 2 || h.MedianMs != 2500 || h.MaxMs != 3000 || h.Moves != 2 || h.Checked != 2 {
		t.Errorf("holder_hang summary = %+v", h)
	}
}
