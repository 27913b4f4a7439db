package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// report is the whole run; it is also the JSON file's schema.
type report struct {
	Lab                 string    `json:"lab"`
	Host                string    `json:"host"`
	TandemVersion       string    `json:"tandem_version"`
	Trials              int       `json:"trials_per_series"`
	JitterMs            float64   `json:"fault_jitter_ms"` // each fault waits a random time up to this
	Started             time.Time `json:"started"`
	Finished            time.Time `json:"finished"`
	TandemSettings      string    `json:"tandem_settings"`
	KeepalivedSettings  string    `json:"keepalived_settings,omitempty"`
	KeepalivedTransport string    `json:"keepalived_transport,omitempty"`
	Notes               []string  `json:"notes,omitempty"`
	Summary             []summary `json:"summary"`
	Goals               []goal    `json:"goals"`
	Results             []result  `json:"results"`
	// Idle holds each system's idle CPU and memory per node (-idle).
	Idle []idleFigure `json:"idle,omitempty"`
}

// summary is one system and fault type. A failed trial counts as an
// infinite outage, so it can only raise the figures.
type summary struct {
	System     string  `json:"system"`
	Fault      string  `json:"fault"`
	Trials     int     `json:"trials"`
	Failed     int     `json:"failed"`
	MedianMs   float64 `json:"median_ms"` // -1 when infinite (too many failed trials)
	P95Ms      float64 `json:"p95_ms"`
	MaxMs      float64 `json:"max_ms"`
	SplitBrain int     `json:"split_brain_samples"`
	Moves      int     `json:"moves"`
	// After the takeovers: failed requests and VIP drops (each one an
	// outage no fault explains).
	LaterFailures int `json:"later_failed_requests"`
	VIPDrops      int `json:"later_vip_drops"`
}

// goal is one of issue 3's goals and whether this run met it.
type goal struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// percentile returns the nearest-rank p-th percentile of ds (which it
// sorts); +Inf stands for a failed trial.
func percentile(ds []float64, p float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	rank = min(max(rank, 1), len(ds))
	return ds[rank-1]
}

// median is the middle value, or the mean of the two middle values.
func median(ds []float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}

func msOut(v float64) float64 {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return -1
	}
	return math.Round(v*10) / 10
}

func summarize(system, fault string, rs []result) (summary, []float64) {
	s := summary{System: system, Fault: fault}
	var ds []float64
	for _, r := range rs {
		if r.System != system || r.Fault != fault || r.Skipped {
			continue
		}
		s.Trials++
		s.SplitBrain += r.SplitBrain
		s.Moves += r.Moves
		s.LaterFailures += r.LaterFailures
		s.VIPDrops += r.VIPDrops
		if r.OK {
			ds = append(ds, r.OutageMs)
		} else {
			s.Failed++
			ds = append(ds, math.Inf(1))
		}
	}
	s.MedianMs = msOut(median(slices.Clone(ds)))
	s.P95Ms = msOut(percentile(slices.Clone(ds), 95))
	s.MaxMs = msOut(percentile(slices.Clone(ds), 100))
	return s, ds
}

func (rep *report) find(system, fault string) (summary, bool) {
	for _, s := range rep.Summary {
		if s.System == system && s.Fault == fault && s.Trials > 0 {
			return s, true
		}
	}
	return summary{}, false
}

// summarize fills Summary and Goals from Results.
func (rep *report) summarize() {
	rep.Summary = nil
	for _, sys := range []string{systemTandem, systemKeepalived} {
		for _, f := range []string{faultPowerLoss, faultAppFailure} {
			if s, _ := summarize(sys, f, rep.Results); s.Trials > 0 {
				rep.Summary = append(rep.Summary, s)
			}
		}
	}
	rep.Goals = evalGoals(rep)
}

// within reports whether a figure in ms (-1 = infinite) is at most limit.
func within(ms float64, limit time.Duration) bool {
	return ms >= 0 && ms <= float64(limit)/float64(time.Millisecond)
}

func evalGoals(rep *report) []goal {
	var gs []goal
	add := func(name string, pass bool, format string, a ...any) {
		gs = append(gs, goal{Name: name, Pass: pass, Detail: fmt.Sprintf(format, a...)})
	}
	tp, okP := rep.find(systemTandem, faultPowerLoss)
	ta, okA := rep.find(systemTandem, faultAppFailure)
	add("power loss: median <= 1.0s", okP && within(tp.MedianMs, time.Second), "median %s", fmtMs(tp.MedianMs, okP))
	add("power loss: max <= 1.5s", okP && within(tp.MaxMs, 1500*time.Millisecond), "max %s", fmtMs(tp.MaxMs, okP))
	add("app failure: median <= 1.0s", okA && within(ta.MedianMs, time.Second), "median %s", fmtMs(ta.MedianMs, okA))
	for _, f := range []struct {
		fault string
		t     summary
		ok    bool
	}{{faultPowerLoss, tp, okP}, {faultAppFailure, ta, okA}} {
		k, okK := rep.find(systemKeepalived, f.fault)
		r, ok := ratio(k.MedianMs, f.t.MedianMs)
		name := strings.ReplaceAll(f.fault, "_", " ") + ": >= 2.5x faster than keepalived"
		if !okK || !f.ok || !ok {
			add(name, false, "no ratio: keepalived median %s, tandem median %s", fmtMs(k.MedianMs, okK), fmtMs(f.t.MedianMs, f.ok))
			continue
		}
		add(name, r >= 2.5, "%.1fx (keepalived %s / tandem %s)", r, fmtMs(k.MedianMs, true), fmtMs(f.t.MedianMs, true))
	}
	split, trials := 0, 0
	for _, s := range rep.Summary {
		if s.System == systemTandem {
			split += s.SplitBrain
			trials += s.Trials
		}
	}
	add("zero split-brain samples", trials > 0 && split == 0, "%d in %d tandem trials", split, trials)
	return gs
}

// ratio is keepalived's median over tandem's; ok is false when either is
// missing or infinite.
func ratio(keepalivedMs, tandemMs float64) (float64, bool) {
	if keepalivedMs < 0 || tandemMs <= 0 {
		return 0, false
	}
	return keepalivedMs / tandemMs, true
}

func (rep *report) allPass() bool {
	for _, g := range rep.Goals {
		if !g.Pass {
			return false
		}
	}
	return len(rep.Goals) > 0
}

func fmtMs(ms float64, ok bool) string {
	switch {
	case !ok:
		return "n/a"
	case ms < 0:
		return "fail"
	}
	return fmt.Sprintf("%.3fs", ms/1000)
}

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nresults (outage = fault to the end of the first successful request through the VIP started after it;\n")
	fmt.Fprintf(w, "a request every %v with a %v timeout; observer sampling every %v; each fault after a random wait of up to %v)\n",
		requestEvery, requestTimeout, observeEvery, time.Duration(rep.JitterMs*float64(time.Millisecond)))
	fmt.Fprintf(w, "tandem:     %s\n", rep.TandemSettings)
	if rep.KeepalivedSettings != "" {
		fmt.Fprintf(w, "keepalived: %s\n", rep.KeepalivedSettings)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "\n%-11s %-12s %6s %6s %9s %9s %9s %12s %6s %15s\n", "system", "fault", "trials", "failed", "median", "p95", "max", "split-brain", "moves", "later fails/drops")
	for _, s := range rep.Summary {
		fmt.Fprintf(w, "%-11s %-12s %6d %6d %9s %9s %9s %12d %6d %11d/%d\n", s.System, strings.ReplaceAll(s.Fault, "_", " "),
			s.Trials, s.Failed, fmtMs(s.MedianMs, true), fmtMs(s.P95Ms, true), fmtMs(s.MaxMs, true), s.SplitBrain, s.Moves, s.LaterFailures, s.VIPDrops)
	}
	fmt.Fprintln(w, "(moves: holder changes per trial, 1 expected; later fails/drops: failed requests and VIP drops after the takeover,\n while the fault is undone and the system settles, each an outage no fault explains)")
	fmt.Fprintln(w)
	for _, f := range []string{faultPowerLoss, faultAppFailure} {
		t, okT := rep.find(systemTandem, f)
		k, okK := rep.find(systemKeepalived, f)
		if r, ok := ratio(k.MedianMs, t.MedianMs); okT && okK && ok {
			fmt.Fprintf(w, "%-12s tandem is %.1fx faster than keepalived (median %s vs %s)\n",
				strings.ReplaceAll(f, "_", " ")+":", r, fmtMs(t.MedianMs, true), fmtMs(k.MedianMs, true))
		}
	}
	fmt.Fprintln(w, "\ngoals (issue 3):")
	for _, g := range rep.Goals {
		verdict := "FAIL"
		if g.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "  %s  %-45s %s\n", verdict, g.Name, g.Detail)
	}
	if k, ok := rep.splitBrain(systemKeepalived); ok {
		fmt.Fprintf(w, "  (keepalived: %d split-brain samples; not a goal, for comparison)\n", k)
	}
}

func (rep *report) splitBrain(system string) (int, bool) {
	n, found := 0, false
	for _, s := range rep.Summary {
		if s.System == system {
			n += s.SplitBrain
			found = true
		}
	}
	return n, found
}

func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
