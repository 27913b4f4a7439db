package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
)

// idleGoalPct is issue 8's goal: an idle agent uses at most this share of
// one core.
const idleGoalPct = 1.0

// idleFigure is one system's processes on one node over the idle window.
type idleFigure struct {
	System string  `json:"system"`
	Node   string  `json:"node"`
	CPUPct float64 `json:"cpu_percent_of_a_core"`
	RSSMB  float64 `json:"rss_mb"`
}

// procSample is the summed CPU time (its own and its reaped children's,
// such as keepalived's check scripts) and RSS of a system's processes on
// a node, per PID.
type procSample struct {
	at    time.Time
	ticks map[int]int64
	rssKB int64
	hz    int64
}

// idleScript prints "hz" and then, per process named name, its PID, utime,
// stime, cutime, cstime (from /proc/PID/stat) and VmRSS in kB.
const idleScript = `getconf CLK_TCK
for p in $(pgrep -x %s); do
  s=$(cut -d' ' -f14-17 /proc/$p/stat 2>/dev/null) || continue
  r=$(awk '/^VmRSS/{print $2}' /proc/$p/status 2>/dev/null) || continue
  echo "$p $s $r"
done`

func parseProcSample(out string, at time.Time) (procSample, error) {
	s := procSample{at: at, ticks: map[int]int64{}}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	hz, err := strconv.ParseInt(strings.TrimSpace(lines[0]), 10, 64)
	if err != nil || hz <= 0 {
		return s, fmt.Errorf("CLK_TCK %q: %v", lines[0], err)
	}
	s.hz = hz
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 6 {
			continue // the process ended between pgrep and the read
		}
		var v [6]int64
		for i := range f {
			if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
				return s, fmt.Errorf("process line %q: %w", l, err)
			}
		}
		s.ticks[int(v[0])] = v[1] + v[2] + v[3] + v[4]
		s.rssKB += v[5]
	}
	if len(s.ticks) == 0 {
		return s, fmt.Errorf("no process found")
	}
	return s, nil
}

// idleCPU is the CPU share of one core the processes present in both
// samples used between them.
func idleCPU(a, b procSample) float64 {
	var ticks int64
	for pid, t1 := range b.ticks {
		if t0, ok := a.ticks[pid]; ok {
			ticks += t1 - t0
		}
	}
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return 100 * float64(ticks) / float64(b.hz) / secs
}

// measureIdle waits settle, then samples process (the process name) on
// nodes, waits window and samples again.
func measureIdle(ctx context.Context, b *bench, system, process string, nodes []string, settle, window time.Duration) ([]idleFigure, error) {
	fmt.Fprintf(b.out, "  %s: settling for %v, then measuring idle CPU and memory for %v\n", system, settle, window)
	if err := sleep(ctx, settle); err != nil {
		return nil, err
	}
	sample := func(node string) (procSample, error) {
		at := time.Now()
		out, err := b.sh(ctx, node, fmt.Sprintf(idleScript, process))
		if err != nil {
			return procSample{}, err
		}
		s, err := parseProcSample(out, at)
		if err != nil {
			return s, fmt.Errorf("%s on %s: %w", process, node, err)
		}
		return s, nil
	}
	first := map[string]procSample{}
	for _, n := range nodes {
		s, err := sample(n)
		if err != nil {
			return nil, err
		}
		first[n] = s
	}
	if err := sleep(ctx, window); err != nil {
		return nil, err
	}
	var out []idleFigure
	for _, n := range nodes {
		s, err := sample(n)
		if err != nil {
			return nil, err
		}
		out = append(out, idleFigure{System: system, Node: n, CPUPct: idleCPU(first[n], s), RSSMB: float64(s.rssKB) / 1024})
	}
	return out, nil
}

// idleMedian returns the median CPU and RSS of system's figures.
func idleMedian(figs []idleFigure, system string) (cpu, rss float64, ok bool) {
	var cs, rs []float64
	for _, f := range figs {
		if f.System == system {
			cs, rs = append(cs, f.CPUPct), append(rs, f.RSSMB)
		}
	}
	if len(cs) == 0 {
		return 0, 0, false
	}
	return median(cs), median(rs), true
}

// idleGoal is issue 8's goal on the measured figures: every tandem agent
// at most idleGoalPct of a core.
func idleGoal(figs []idleFigure) goal {
	worst, node, n := 0.0, "", 0
	for _, f := range figs {
		if f.System == systemTandem {
			n++
			if f.CPUPct >= worst {
				worst, node = f.CPUPct, f.Node
			}
		}
	}
	return goal{Name: fmt.Sprintf("idle agent <= %.0f%% of a core on every node", idleGoalPct),
		Pass: n > 0 && worst <= idleGoalPct, Detail: fmt.Sprintf("highest %.2f%% (%s)", worst, node)}
}

func printIdle(w io.Writer, figs []idleFigure, window time.Duration) {
	fmt.Fprintf(w, "\nidle (each system alone in the same lab, %v after settling): CPU in %% of one core (own and reaped\nchildren's time, from /proc/PID/stat), RSS summed over the system's processes\n", window)
	nodes := []string{"node1", "node2", lab.WitnessName}
	fmt.Fprintf(w, "%-11s", "system")
	for _, n := range nodes {
		fmt.Fprintf(w, " %17s", n)
	}
	fmt.Fprintf(w, " %17s\n", "median")
	for _, sys := range []string{systemTandem, systemKeepalived} {
		cpu, rss, ok := idleMedian(figs, sys)
		if !ok {
			continue
		}
		fmt.Fprintf(w, "%-11s", sys)
		for _, n := range nodes {
			i := slices.IndexFunc(figs, func(f idleFigure) bool { return f.System == sys && f.Node == n })
			if i < 0 {
				fmt.Fprintf(w, " %17s", "-")
				continue
			}
			fmt.Fprintf(w, " %17s", fmt.Sprintf("%.2f%% %5.1fMB", figs[i].CPUPct, figs[i].RSSMB))
		}
		fmt.Fprintf(w, " %17s\n", fmt.Sprintf("%.2f%% %5.1fMB", cpu, rss))
	}
	tc, tr, okT := idleMedian(figs, systemTandem)
	kc, kr, okK := idleMedian(figs, systemKeepalived)
	if okT && okK && kc > 0 && kr > 0 {
		fmt.Fprintf(w, "tandem/keepalived, medians: CPU %.1fx, RSS %.1fx (keepalived runs on the app nodes only)\n", tc/kc, tr/kr)
	}
	g := idleGoal(figs)
	verdict := "FAIL"
	if g.Pass {
		verdict = "PASS"
	}
	fmt.Fprintf(w, "\ngoal (issue 8):\n  %s  %-45s %s\n", verdict, g.Name, g.Detail)
}
