package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/labprobe"
)

// outcome is what one step did to the site (the JSON report's "faults").
type outcome struct {
	N          int      `json:"n"`
	Kind       string   `json:"kind"` // "a+b" for an overlapping pair
	Faults     []string `json:"faults"`
	Targets    []string `json:"targets"`
	DurationMs float64  `json:"duration_ms"` // the longest of its faults
	OutageMs   float64  `json:"outage_ms"`   // longest run of failed requests, to the next success
	Failed     int      `json:"failed_requests"`
	Moves      int      `json:"moves"` // epochs committed from the fault until settled
	Settled    bool     `json:"settled"`
	SettleMs   float64  `json:"settle_ms"` // from the end of the fault to settled
	SplitBrain int      `json:"split_brain_samples"`
	// StandbyOK: a healthy standby that was not penalised existed when the
	// fault began. Only then is the outage bound checked.
	StandbyOK bool    `json:"standby_ok"`
	BoundMs   float64 `json:"bound_ms,omitempty"` // 0: not checked (pair, or no healthy unpenalised standby)
	Held      string  `json:"held,omitempty"`     // a move the DC held back during the fault, and why
	Violation string  `json:"violation,omitempty"`
	Error     string  `json:"error,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// longestOutage is the longest time the client went unserved among the
// requests started in [from, to): from the start of a failed request to the
// end of the first successful one started after it. A run of failures with
// no success by to lasts until to.
func longestOutage(res []labprobe.Result, from, to time.Time) (time.Duration, int) {
	var longest time.Duration
	var runStart time.Time
	failed := 0
	for _, r := range res {
		if r.Start.Before(from) || !r.Start.Before(to) {
			continue
		}
		switch {
		case !r.OK:
			failed++
			if runStart.IsZero() {
				runStart = r.Start
			}
		case !runStart.IsZero():
			longest = max(longest, r.End.Sub(runStart))
			runStart = time.Time{}
		}
	}
	if !runStart.IsZero() {
		longest = max(longest, to.Sub(runStart))
	}
	return longest, failed
}

// splitBrainIn counts the observer's samples with two holders in [from, to).
func splitBrainIn(rep labprobe.Report, from, to time.Time) int {
	n := 0
	for _, s := range rep.SplitBrain {
		if !s.At.Before(from) && s.At.Before(to) {
			n++
		}
	}
	return n
}

// check sets the outcome's violation, if any: a split brain, a fault that
// did not settle, or an outage over the bound for a single fault while a
// healthy standby that was not penalised existed.
func (o *outcome) check(f fault, single bool) {
	if single && o.StandbyOK {
		o.BoundMs = ms(bound(f.Kind, f.Duration))
	}
	var why []string
	if o.SplitBrain > 0 {
		why = append(why, fmt.Sprintf("split brain (%d samples)", o.SplitBrain))
	}
	if !o.Settled {
		why = append(why, "did not settle")
	}
	if o.BoundMs > 0 && o.OutageMs > o.BoundMs {
		why = append(why, fmt.Sprintf("outage %.3fs over the %.1fs bound with a healthy, unpenalised standby", o.OutageMs/1000, o.BoundMs/1000))
	}
	o.Violation = strings.Join(why, "; ")
}

func (o outcome) line() string {
	settled := fmt.Sprintf("settled %.1fs", o.SettleMs/1000)
	if !o.Settled {
		settled = "NOT SETTLED"
	}
	bnd := "unbounded"
	if o.BoundMs > 0 {
		bnd = fmt.Sprintf("bound %.1fs", o.BoundMs/1000)
	}
	s := fmt.Sprintf("%4d %-40s %-14s %4.1fs  outage %6.3fs (%s)  moves %d  %s", o.N, strings.Join(o.Faults, "+"),
		strings.Join(o.Targets, ","), o.DurationMs/1000, o.OutageMs/1000, bnd, o.Moves, settled)
	if o.SplitBrain > 0 {
		s += fmt.Sprintf("  SPLIT BRAIN %d", o.SplitBrain)
	}
	if o.Held != "" {
		s += "  held: " + o.Held
	}
	if o.Violation != "" {
		s += "  FAIL: " + o.Violation
	} else if o.Error != "" {
		s += "  error: " + o.Error
	}
	return s
}

// kindSummary sums up the steps of one kind.
type kindSummary struct {
	Kind       string  `json:"kind"`
	Count      int     `json:"count"`
	Checked    int     `json:"checked"` // outage bound applied
	MedianMs   float64 `json:"outage_median_ms"`
	MaxMs      float64 `json:"outage_max_ms"`
	Moves      int     `json:"moves"`
	Unsettled  int     `json:"unsettled"`
	SplitBrain int     `json:"split_brain_samples"`
	Violations int     `json:"violations"`
}

// report is the whole campaign (printed with -json).
type report struct {
	Seed      uint64        `json:"seed"`
	Faults    int           `json:"faults"`
	Overlap   bool          `json:"overlap"`
	Lab       string        `json:"lab"`
	Settings  string        `json:"tandem_settings"`
	Started   time.Time     `json:"started"`
	Finished  time.Time     `json:"finished"`
	Outcomes  []outcome     `json:"outcomes"`
	Summary   []kindSummary `json:"summary"`
	Pass      bool          `json:"pass"`
	Stopped   string        `json:"stopped,omitempty"` // why the campaign ended early
	Violation int           `json:"violations"`
}

func (r *report) summarize() {
	by := map[string][]outcome{}
	for _, o := range r.Outcomes {
		by[o.Kind] = append(by[o.Kind], o)
	}
	r.Summary = nil
	r.Violation = 0
	for _, kind := range slices.Sorted(maps.Keys(by)) {
		list := by[kind]
		s := kindSummary{Kind: kind, Count: len(list)}
		var outs []float64
		for _, o := range list {
			outs = append(outs, o.OutageMs)
			s.MaxMs = max(s.MaxMs, o.OutageMs)
			s.Moves += o.Moves
			s.SplitBrain += o.SplitBrain
			if o.BoundMs > 0 {
				s.Checked++
			}
			if !o.Settled {
				s.Unsettled++
			}
			if o.Violation != "" {
				s.Violations++
			}
		}
		slices.Sort(outs)
		s.MedianMs = outs[len(outs)/2]
		if len(outs)%2 == 0 {
			s.MedianMs = (outs[len(outs)/2-1] + outs[len(outs)/2]) / 2
		}
		r.Violation += s.Violations
		r.Summary = append(r.Summary, s)
	}
	r.Pass = r.Violation == 0 && r.Stopped == "" && len(r.Outcomes) == r.Faults
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nsummary by kind (outage: longest run of failed requests to the next success)\n")
	fmt.Fprintf(w, "  %-40s %5s %7s %9s %9s %5s %9s %11s %10s\n", "kind", "count", "checked", "median", "max", "moves", "unsettled", "split-brain", "violations")
	for _, s := range r.Summary {
		fmt.Fprintf(w, "  %-40s %5d %7d %8.3fs %8.3fs %5d %9d %11d %10d\n", s.Kind, s.Count, s.Checked,
			s.MedianMs/1000, s.MaxMs/1000, s.Moves, s.Unsettled, s.SplitBrain, s.Violations)
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s: %d of %d faults run, %d violations (seed %d, replay with SEED=%d)\n",
		verdict, len(r.Outcomes), r.Faults, r.Violation, r.Seed, r.Seed)
	if r.Stopped != "" {
		fmt.Fprintf(w, "stopped early: %s\n", r.Stopped)
	}
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
