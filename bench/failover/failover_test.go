package main

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/labprobe"
	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestPercentileAndMedian(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name          string
		in            []float64
		median, p95   float64
		max           float64
		medianIsInf   bool
		p95IsInf, mIn bool
	}{
		{name: "one", in: []float64{5}, median: 5, p95: 5, max: 5},
		{name: "odd", in: []float64{3, 1, 2}, median: 2, p95: 3, max: 3},
		{name: "even", in: []float64{4, 1, 3, 2}, median: 2.5, p95: 4, max: 4},
		{name: "twenty", in: seq(1, 20), median: 10.5, p95: 19, max: 20},
		{name: "a failed trial is the max", in: []float64{1, 2, inf}, median: 2, p95IsInf: true, mIn: true},
		{name: "mostly failed", in: []float64{1, inf, inf}, medianIsInf: true, p95IsInf: true, mIn: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := median(append([]float64(nil), tt.in...))
			p := percentile(append([]float64(nil), tt.in...), 95)
			mx := percentile(append([]float64(nil), tt.in...), 100)
			check := func(what string, got, want float64, wantInf bool) {
				if wantInf {
					if !math.IsInf(got, 1) {
						t.Errorf("%s = %v; want +Inf", what, got)
					}
					return
				}
				if got != want {
					t.Errorf("%s = %v; want %v", what, got, want)
				}
			}
			check("median", m, tt.median, tt.medianIsInf)
			check("p95", p, tt.p95, tt.p95IsInf)
			check("max", mx, tt.max, tt.mIn)
		})
	}
}

func seq(from, to int) []float64 {
	var out []float64
	for i := to; i >= from; i-- { // unsorted on purpose
		out = append(out, float64(i))
	}
	return out
}

func trials(system, fault string, outages ...float64) []result {
	var rs []result
	for i, o := range outages {
		r := result{System: system, Fault: fault, Trial: i + 1, OK: o >= 0, OutageMs: o}
		if o < 0 {
			r.OutageMs, r.Error = 0, "timeout"
		}
		rs = append(rs, r)
	}
	return rs
}

func goalsOf(rep *report) map[string]bool {
	rep.summarize()
	out := map[string]bool{}
	for _, g := range rep.Goals {
		out[g.Name] = g.Pass
	}
	return out
}

func TestGoals(t *testing.T) {
	const (
		pMed   = "power loss: median <= 1.0s"
		pMax   = "power loss: max <= 1.5s"
		aMed   = "app failure: median <= 1.0s"
		pRatio = "power loss: >= 2.5x faster than keepalived"
		aRatio = "app failure: >= 2.5x faster than keepalived"
		split  = "zero split-brain samples"
	)
	base := func() []result {
		var rs []result
		rs = append(rs, trials(systemTandem, faultPowerLoss, 600, 700, 800)...)
		rs = append(rs, trials(systemTandem, faultAppFailure, 300, 400, 500)...)
		rs = append(rs, trials(systemKeepalived, faultPowerLoss, 3000, 3200, 3400)...)
		rs = append(rs, trials(systemKeepalived, faultAppFailure, 1000, 1100, 1200)...)
		return rs
	}
	tests := []struct {
		name   string
		mutate func([]result) []result
		fail   []string
	}{
		{"all met", func(rs []result) []result { return rs }, nil},
		{"slow app failure", func(rs []result) []result {
			for i := range rs {
				if rs[i].System == systemTandem && rs[i].Fault == faultAppFailure {
					rs[i].OutageMs = 750
				}
			}
			return rs
		}, []string{aRatio}},
		{"one slow power loss", func(rs []result) []result {
			rs[2].OutageMs = 1600
			return rs
		}, []string{pMax}},
		{"a failed tandem trial", func(rs []result) []result {
			rs[0].OK, rs[0].Error = false, "timeout"
			return rs
		}, []string{pMax}},
		{"split brain", func(rs []result) []result {
			rs[4].SplitBrain = 2
			return rs
		}, []string{split}},
		{"keepalived split brain is not a goal", func(rs []result) []result {
			rs[7].SplitBrain = 2
			return rs
		}, nil},
		{"no keepalived", func(rs []result) []result { return rs[:6] }, []string{pRatio, aRatio}},
		{"no tandem", func(rs []result) []result { return rs[6:] }, []string{pMed, pMax, aMed, pRatio, aRatio, split}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := &report{Results: tt.mutate(base())}
			got := goalsOf(rep)
			if len(got) != 6 {
				t.Fatalf("%d goals: %v", len(got), got)
			}
			want := map[string]bool{}
			for name := range got {
				want[name] = true
			}
			for _, f := range tt.fail {
				want[f] = false
			}
			for name, pass := range want {
				if got[name] != pass {
					t.Errorf("%s: pass = %v; want %v", name, got[name], pass)
				}
			}
			if rep.allPass() != (len(tt.fail) == 0) {
				t.Errorf("allPass = %v with failing goals %v", rep.allPass(), tt.fail)
			}
		})
	}
}

func TestSummarySkipsAndCountsFailures(t *testing.T) {
	rs := trials(systemTandem, faultPowerLoss, 100, 200, -1, 300)
	rs = append(rs, result{System: systemTandem, Fault: faultPowerLoss, Skipped: true, Error: "baseline"})
	rs[1].SplitBrain, rs[1].LaterFailures, rs[1].VIPDrops = 3, 7, 1
	s, _ := summarize(systemTandem, faultPowerLoss, rs)
	if s.Trials != 4 || s.Failed != 1 || s.SplitBrain != 3 || s.LaterFailures != 7 || s.VIPDrops != 1 {
		t.Errorf("summary = %+v", s)
	}
	if s.MedianMs != 250 || s.MaxMs != -1 {
		t.Errorf("median %v max %v; want 250 and -1 (a failed trial)", s.MedianMs, s.MaxMs)
	}
}

func TestFirstServedSkipsTheFaultedNode(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	body := func(n string) string { return `{"status": "ok", "version": "0.1.0", "node": "` + n + `"}` }
	res := []labprobe.Result{
		{Start: at(-10), End: at(-5), OK: true, Body: body("node1")},
		{Start: at(10), End: at(15), OK: true, Body: body("node1")}, // still dying
		{Start: at(20), End: at(270), OK: false, Err: "timeout"},
		{Start: at(600), End: at(610), OK: true, Body: body("node2")},
		{Start: at(620), End: at(625), OK: true, Body: body("node2")},
	}
	got, ok := firstServed(res, t0, "node1")
	if !ok || !got.End.Equal(at(610)) || nodeOf(got) != "node2" {
		t.Errorf("firstServed = %+v, %v; want node2's request ending at +610ms", got, ok)
	}
	if _, ok := firstServed(res[:3], t0, "node1"); ok {
		t.Error("firstServed found a request with only the faulted node answering")
	}
	if f, ok := firstFailure(res, t0); !ok || !f.Start.Equal(at(20)) {
		t.Errorf("firstFailure = %+v, %v", f, ok)
	}
	if n := nodeOf(labprobe.Result{Body: "hello"}); n != "?" {
		t.Errorf("nodeOf(unknown body) = %q", n)
	}
}

func TestDrops(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ch := []labprobe.Sample{
		{At: t0, Holders: []string{"node1"}},
		{At: t0.Add(100 * time.Millisecond)}, // the fault's own gap
		{At: t0.Add(600 * time.Millisecond), Holders: []string{"node2"}},
		{At: t0.Add(5 * time.Second)}, // lease lost
		{At: t0.Add(5100 * time.Millisecond), Holders: []string{"node2"}},
	}
	if got := drops(ch, t0.Add(610*time.Millisecond)); got != 1 {
		t.Errorf("drops = %d; want 1", got)
	}
}

func TestKeepalivedConf(t *testing.T) {
	self, peer := netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12")
	for _, unicast := range []bool{false, true} {
		c := keepalivedConf(self, peer, unicast)
		for _, want := range []string{
			"state BACKUP", "nopreempt", "interface eth0", "advert_int 1", "priority 100",
			"virtual_router_id 77", "10.77.0.100/24 dev eth0", `script "curl -fsS -m 1 http://127.0.0.1:8000/healthz"`,
			"interval 1", "track_script", "chk_site", "notify " + notifyScript, "enable_script_security",
		} {
			if !strings.Contains(c, want) {
				t.Errorf("unicast=%v: config lacks %q:\n%s", unicast, want, c)
			}
		}
		// Defaults stay defaults: no tuned timers.
		for _, unwanted := range []string{"rise", "fall", "weight", "preempt_delay"} {
			if strings.Contains(c, unwanted) {
				t.Errorf("unicast=%v: config sets %q", unicast, unwanted)
			}
		}
		hasPeer := strings.Contains(c, "unicast_peer {\n        10.77.0.12\n    }") && strings.Contains(c, "unicast_src_ip 10.77.0.11")
		if hasPeer != unicast {
			t.Errorf("unicast=%v but unicast_peer present=%v:\n%s", unicast, hasPeer, c)
		}
		if strings.Count(c, "{") != strings.Count(c, "}") {
			t.Errorf("unbalanced braces:\n%s", c)
		}
	}
}

func TestTandemNotReady(t *testing.T) {
	now := time.Unix(10000, 0)
	good := func() localapi.Status {
		return localapi.Status{
			Mode:   "auto",
			Holder: localapi.HolderStatus{Node: "node1", Active: true},
			Members: []localapi.Member{
				{Name: "node1", Role: "app", Suffrage: "voter", Reachable: true, Healthy: true},
				{Name: "node2", Role: "app", Suffrage: "voter", Reachable: true, Healthy: true},
				{Name: "witness", Role: "witness", Suffrage: "voter", Reachable: true},
			},
		}
	}
	tests := []struct {
		name     string
		mutate   func(*localapi.Status)
		vip      []string
		lastMove time.Time
		want     string // substring; "" = ready
	}{
		{"ready", func(*localapi.Status) {}, []string{"node1"}, now.Add(-time.Minute), ""},
		{"node down", func(s *localapi.Status) { s.Members[1].Reachable = false }, []string{"node1"}, time.Time{}, "node2 is not a reachable voter"},
		{"app unhealthy", func(s *localapi.Status) { s.Members[1].Healthy = false }, []string{"node1"}, time.Time{}, "node2 is unhealthy"},
		{"member missing", func(s *localapi.Status) { s.Members = s.Members[:2] }, []string{"node1"}, time.Time{}, "2 members"},
		{"pending holder", func(s *localapi.Status) { s.Holder.Active = false }, []string{"node1"}, time.Time{}, "no active holder"},
		{"vip elsewhere", func(*localapi.Status) {}, []string{"node2"}, time.Time{}, "VIP is on [node2]"},
		{"vip on none", func(*localapi.Status) {}, nil, time.Time{}, "VIP is on []"},
		{"maintenance", func(s *localapi.Status) { s.Mode = "maintenance" }, []string{"node1"}, time.Time{}, "mode is maintenance"},
		{"our cool-off", func(*localapi.Status) {}, []string{"node1"}, now.Add(-2 * time.Second), "cool-off"},
		{"tandem's last failover", func(s *localapi.Status) {
			s.LastFailover = &localapi.Failover{At: now.Add(-time.Second)}
		}, []string{"node1"}, now.Add(-time.Minute), "cool-off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := good()
			tt.mutate(&st)
			got := tandemNotReady(st, tt.vip, tt.lastMove, 6*time.Second, now)
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("tandemNotReady = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestAnomalous(t *testing.T) {
	ok := result{OK: true, Moves: 1}
	tests := []struct {
		name string
		r    func(result) result
		want bool
	}{
		{"clean", func(r result) result { return r }, false},
		{"failed", func(r result) result { r.OK = false; return r }, true},
		{"two moves", func(r result) result { r.Moves = 2; return r }, true},
		{"no move", func(r result) result { r.Moves = 0; return r }, true},
		{"split brain", func(r result) result { r.SplitBrain = 1; return r }, true},
		{"later failures", func(r result) result { r.LaterFailures = 3; return r }, true},
		{"vip drop", func(r result) result { r.VIPDrops = 1; return r }, true},
	}
	for _, tt := range tests {
		if got := tt.r(ok).anomalous(); got != tt.want {
			t.Errorf("%s: anomalous = %v; want %v", tt.name, got, tt.want)
		}
	}
}
