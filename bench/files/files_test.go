package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	xs := []float64{0.5, 0.1, 0.3, 0.2, 0.4}
	for _, tt := range []struct{ p, want float64 }{{50, 0.3}, {99, 0.5}, {100, 0.5}, {1, 0.1}} {
		if got := percentile(xs, tt.p); got != tt.want {
			t.Errorf("p%v = %v; want %v", tt.p, got, tt.want)
		}
	}
}

func TestReportGoals(t *testing.T) {
	rows := []row{
		{name: "tandem", lags: []float64{0.1, 0.2, 0.3}, smallOK: true},
		{name: "lsyncd (defaults)", lags: []float64{10, 15, 15.5}},
		{name: "lsyncd (delay = 1)", lags: []float64{1, 1.2, 1.6}},
	}
	var out bytes.Buffer
	if err := report(&out, rows, []float64{0, 0, 0.2}); err != nil {
		t.Fatalf("report = %v\n%s", err, out.String())
	}
	if strings.Count(out.String(), "goal PASS") != 4 {
		t.Errorf("want 4 passed goals:\n%s", out.String())
	}
	rows[0].lags = []float64{0.1, 2}
	if err := report(&out, rows, nil); !errors.Is(err, errGoals) {
		t.Errorf("a p99 of 2s passed: %v", err)
	}
}
