package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"
)

// goalDone is issue 9's bound on webhook to all nodes updated, for two
// nodes with the default soak.
const goalDone = 15 * time.Second

// report is the whole run; it is also the JSON file's schema.
type report struct {
	Lab           string    `json:"lab"`
	Host          string    `json:"host"`
	TandemVersion string    `json:"tandem_version"`
	Deploys       int       `json:"deploys_per_system"`
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished"`
	SplitBrain    int       `json:"split_brain_samples"`
	Summary       []summary `json:"summary"`
	Goals         []goal    `json:"goals"`
	Results       []result  `json:"results"`
}

type summary struct {
	System         string  `json:"system"`
	Deploys        int     `json:"deploys"`
	Failed         int     `json:"failed_deploys"`
	FailedRequests int     `json:"failed_requests"`
	Requests       int     `json:"requests"`
	MedianFailed   float64 `json:"median_failed_requests_per_deploy"`
	MedianMs       float64 `json:"median_ms"` // -1 when more than half the deploys failed
	P95Ms          float64 `json:"p95_ms"`
	MaxMs          float64 `json:"max_ms"`
}

type goal struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
}

// percentile is the nearest-rank p-th percentile of xs (sorted in place);
// +Inf stands for a failed deploy. It returns -1 for +Inf.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	slices.Sort(xs)
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	v := xs[max(0, min(i, len(xs)-1))]
	if math.IsInf(v, 1) {
		return -1
	}
	return v
}

func (r *report) summarize() {
	r.Summary, r.Goals = nil, nil
	for _, sys := range []string{systemTandem, systemNaive} {
		s := summary{System: sys}
		var ms, failed []float64
		for _, res := range r.Results {
			if res.System != sys {
				continue
			}
			s.Deploys++
			s.FailedRequests += res.FailedRequests
			s.Requests += res.Requests
			failed = append(failed, float64(res.FailedRequests))
			if res.DoneMs < 0 || res.Error != "" {
				s.Failed++
				ms = append(ms, math.Inf(1))
			} else {
				ms = append(ms, res.DoneMs)
			}
		}
		if s.Deploys == 0 {
			continue
		}
		s.MedianFailed = percentile(failed, 50)
		s.MedianMs, s.P95Ms, s.MaxMs = percentile(ms, 50), percentile(ms, 95), percentile(ms, 100)
		r.Summary = append(r.Summary, s)
	}
	for _, s := range r.Summary {
		if s.System != systemTandem {
			continue
		}
		r.Goals = append(r.Goals,
			goal{Name: "tandem: 0 failed requests across all deploys", Pass: s.FailedRequests == 0 && s.Failed == 0,
				Detail: fmt.Sprintf("%d of %d requests failed, %d of %d deploys failed", s.FailedRequests, s.Requests, s.Failed, s.Deploys)},
			goal{Name: fmt.Sprintf("tandem: webhook to all nodes updated ≤ %v (median)", goalDone),
				Pass:   s.MedianMs >= 0 && s.MedianMs <= float64(goalDone/time.Millisecond),
				Detail: "median " + fmtMs(s.MedianMs)})
	}
	r.Goals = append(r.Goals, goal{Name: "no split brain", Pass: r.SplitBrain == 0,
		Detail: fmt.Sprintf("%d samples with two holders", r.SplitBrain)})
}

func (r *report) passed() bool {
	for _, g := range r.Goals {
		if !g.Pass {
			return false
		}
	}
	return true
}

func fmtMs(ms float64) string {
	if ms < 0 {
		return "∞"
	}
	return fmt.Sprintf("%.1fs", ms/1000)
}

func ratio(a, b float64) string {
	if a < 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n%-8s %7s %6s %16s %18s %9s %9s %9s\n", "system", "deploys", "failed", "failed requests", "failed/deploy p50", "p50", "p95", "max")
	var t, n *summary
	for i := range r.Summary {
		s := &r.Summary[i]
		fmt.Fprintf(w, "%-8s %7d %6d %9d/%-6d %18.0f %9s %9s %9s\n", s.System, s.Deploys, s.Failed, s.FailedRequests, s.Requests,
			s.MedianFailed, fmtMs(s.MedianMs), fmtMs(s.P95Ms), fmtMs(s.MaxMs))
		switch s.System {
		case systemTandem:
			t = s
		case systemNaive:
			n = s
		}
	}
	if t != nil && n != nil {
		fmt.Fprintf(w, "\nratios tandem/naive: webhook→all updated (median) %s, failed requests %d vs %d\n",
			ratio(t.MedianMs, n.MedianMs), t.FailedRequests, n.FailedRequests)
	}
	fmt.Fprintln(w, "\ngoals (issue 9):")
	for _, g := range r.Goals {
		mark := "PASS"
		if !g.Pass {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", mark, g.Name, g.Detail)
	}
}
