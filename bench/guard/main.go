// Command guard is `make bench-guard`: the throughput of tandem's log
// filters against Debian's fail2ban on the same generated sshd log, in the
// same run, and the latency from a log line being written to a ban being
// decided.
//
// Throughput: it writes a large auth.log of mixed sshd traffic (half
// failures, from a few thousand hosts), then times `tandem guard test sshd
// FILE` and Debian's `fail2ban-regex FILE sshd.conf` (both in the sshd
// filter's normal mode, both printing only their summary) -runs times
// each, alternating, and prints the medians, lines per second and the
// ratio. fail2ban-regex is Debian's installed one when present; otherwise
// the bench fetches Debian's fail2ban package with apt-get download and
// unpacks it into a cache directory, so no fail2ban service ever runs on
// the machine.
//
// Latency (-latency N): N lines appended one at a time to a followed log
// file, each a failure that decides a ban (maxretry 1), timed from the
// write to the engine's decide callback, in process (p50, p99, max).
//
// Lab latency (-lab-latency, root): in a lab of two app nodes and a
// witness, -lab-trials failure lines written on node1 (each a new source,
// maxretry 1), timed from the write until the address is in the nftables
// ban set of every app node, and fail2ban's figure in the same lab
// (Debian's package on node1 with its nftables action): see lablatency.go.
//
// It is a benchmark, not a timed test; it exits 1 when a goal is missed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	tandemBin  string
	fail2ban   string // fail2ban-regex to run; "" finds or fetches Debian's
	cacheDir   string
	lines      int
	runs       int
	latency    int
	keep       bool
	jsonOut    string
	skipF2B    bool
	minRatio   float64
	maxLatency time.Duration
	labLatency bool
	labName    string
	labTrials  int
}

var errGoals = errors.New("a goal was missed")

func main() {
	var o options
	flag.StringVar(&o.tandemBin, "tandem-bin", "bin/tandem", "tandem binary (make build)")
	flag.StringVar(&o.fail2ban, "fail2ban-regex", "", "fail2ban-regex to compare with (default: Debian's, installed or fetched with apt-get download)")
	flag.StringVar(&o.cacheDir, "cache", "/var/cache/tandem-bench", "where Debian's fail2ban package is unpacked when it is not installed")
	flag.IntVar(&o.lines, "lines", 1_000_000, "lines of the generated sshd log")
	flag.IntVar(&o.runs, "runs", 5, "timed runs of each tool (the median is reported)")
	flag.IntVar(&o.latency, "latency", 200, "lines for the in-process write-to-decision latency (0 skips it)")
	flag.BoolVar(&o.labLatency, "lab-latency", false, "also measure write-to-ban-in-nftables latency in a lab (needs root)")
	flag.StringVar(&o.labName, "lab", "bench-guard", "lab for -lab-latency")
	flag.IntVar(&o.labTrials, "lab-trials", 100, "bans timed by -lab-latency")
	flag.BoolVar(&o.keep, "keep", false, "keep the generated log")
	flag.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	flag.BoolVar(&o.skipF2B, "no-fail2ban", false, "measure tandem only")
	flag.Float64Var(&o.minRatio, "goal-ratio", 20, "throughput goal: tandem at least this many times fail2ban-regex")
	flag.DurationVar(&o.maxLatency, "goal-latency", 100*time.Millisecond, "latency goal at p99")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout)
	stop()
	switch {
	case errors.Is(err, errGoals):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench-guard:", err)
		os.Exit(1)
	}
}

// report is the run's figures; also the JSON file's schema.
type report struct {
	Lines      int             `json:"lines"`
	Runs       int             `json:"runs"`
	Tandem     throughput      `json:"tandem"`
	Fail2ban   *throughput     `json:"fail2ban,omitempty"`
	Ratio      float64         `json:"ratio,omitempty"`
	Latency    *latencyFigures `json:"engine_latency,omitempty"`
	LabLatency *latencyFigures `json:"ban_latency,omitempty"`
	Goals      []goal          `json:"goals"`
}

type throughput struct {
	Tool          string    `json:"tool"`
	Seconds       []float64 `json:"seconds"`
	MedianSeconds float64   `json:"median_seconds"`
	LinesPerSec   float64   `json:"lines_per_second"`
	Matched       int       `json:"matched"`
}

type goal struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func run(ctx context.Context, o options, out io.Writer) error {
	tandem, err := filepath.Abs(o.tandemBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(tandem); err != nil {
		return fmt.Errorf("tandem binary: %w (run make build)", err)
	}
	dir, err := os.MkdirTemp("", "bench-guard-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	logPath := filepath.Join(dir, "auth.log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	if err := generate(f, o.lines, 1); err != nil {
		f.Close()
		return fmt.Errorf("generate log: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	fi, _ := os.Stat(logPath)
	fmt.Fprintf(out, "bench-guard: %d sshd log lines (%.1f MB) in %s\n", o.lines, float64(fi.Size())/1e6, logPath)

	var f2b *fail2banRegex
	if !o.skipF2B {
		if f2b, err = findFail2ban(ctx, o.fail2ban, o.cacheDir, out); err != nil {
			return err
		}
	}
	r := report{Lines: o.lines, Runs: o.runs}
	r.Tandem.Tool = "tandem guard test sshd"
	if f2b != nil {
		r.Fail2ban = &throughput{Tool: "fail2ban-regex sshd.conf (Debian " + f2b.version + ")"}
	}
	// Warm the page cache, then alternate the tools so neither gets the
	// quieter moments of the machine.
	if _, err := os.ReadFile(logPath); err != nil {
		return err
	}
	for i := range o.runs {
		secs, matched, err := timeTandem(ctx, tandem, logPath)
		if err != nil {
			return err
		}
		r.Tandem.Seconds = append(r.Tandem.Seconds, secs)
		r.Tandem.Matched = matched
		fmt.Fprintf(out, "  run %d: tandem %.3fs", i+1, secs)
		if f2b != nil {
			secs, matched, err := f2b.time(ctx, logPath)
			if err != nil {
				return err
			}
			r.Fail2ban.Seconds = append(r.Fail2ban.Seconds, secs)
			r.Fail2ban.Matched = matched
			fmt.Fprintf(out, ", fail2ban-regex %.3fs", secs)
		}
		fmt.Fprintln(out)
	}
	finish := func(t *throughput) {
		t.MedianSeconds = median(t.Seconds)
		t.LinesPerSec = float64(o.lines) / t.MedianSeconds
	}
	finish(&r.Tandem)
	if r.Fail2ban != nil {
		finish(r.Fail2ban)
		r.Ratio = r.Tandem.LinesPerSec / r.Fail2ban.LinesPerSec
		r.Goals = append(r.Goals, goal{Name: "throughput vs fail2ban-regex", Want: fmt.Sprintf(">= %gx", o.minRatio),
			Got: fmt.Sprintf("%.1fx", r.Ratio), Met: r.Ratio >= o.minRatio})
	}
	if o.latency > 0 {
		lat, err := engineLatency(ctx, dir, o.latency)
		if err != nil {
			return fmt.Errorf("engine latency: %w", err)
		}
		r.Latency = lat
		r.Goals = append(r.Goals, goal{Name: "line written -> ban decided (in process) p99", Want: "<= " + o.maxLatency.String(),
			Got: fmtMs(lat.P99), Met: lat.P99 <= o.maxLatency.Seconds()*1000})
	}
	if o.labLatency {
		lat, err := labLatency(ctx, o, tandem, out)
		if err != nil {
			return fmt.Errorf("lab ban latency: %w", err)
		}
		r.LabLatency = lat
		r.Goals = append(r.Goals, goal{Name: "line written -> ban in every node's nftables set p99", Want: "<= " + o.maxLatency.String(),
			Got: fmtMs(lat.P99), Met: lat.P99 <= o.maxLatency.Seconds()*1000})
	}
	printReport(out, &r)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	for _, g := range r.Goals {
		if !g.Met {
			return errGoals
		}
	}
	return nil
}

func timeTandem(ctx context.Context, bin, logPath string) (float64, int, error) {
	cmd := exec.CommandContext(ctx, bin, "guard", "test", "sshd", logPath, "--json")
	start := time.Now()
	b, err := cmd.Output()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, 0, fmt.Errorf("tandem guard test: %w", err)
	}
	var rep struct {
		Matched int `json:"matched"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, 0, fmt.Errorf("tandem guard test output: %w", err)
	}
	return secs, rep.Matched, nil
}

// fail2banRegex runs Debian's fail2ban-regex, installed or unpacked.
type fail2banRegex struct {
	argv    []string // command before the arguments
	env     []string
	filter  string // sshd.conf
	version string
}

var f2bLines = regexp.MustCompile(`Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed`)

func (f *fail2banRegex) time(ctx context.Context, logPath string) (float64, int, error) {
	args := append(slices.Clone(f.argv[1:]), "--print-no-missed", "--print-no-ignored", logPath, f.filter)
	cmd := exec.CommandContext(ctx, f.argv[0], args...)
	cmd.Env = append(os.Environ(), f.env...)
	start := time.Now()
	b, err := cmd.CombinedOutput()
	secs := time.Since(start).Seconds()
	if err != nil {
		return 0, 0, fmt.Errorf("fail2ban-regex: %w\n%s", err, tail(b))
	}
	m := f2bLines.FindSubmatch(b)
	if m == nil {
		return 0, 0, fmt.Errorf("fail2ban-regex printed no Lines: summary:\n%s", tail(b))
	}
	matched, _ := strconv.Atoi(string(m[3]))
	return secs, matched, nil
}

func tail(b []byte) []byte {
	if len(b) > 2000 {
		return b[len(b)-2000:]
	}
	return b
}

// findFail2ban returns fail2ban-regex: the one given, Debian's installed
// one, or Debian's package fetched with apt-get download and unpacked
// (never installed, so its service does not run here).
func findFail2ban(ctx context.Context, given, cache string, out io.Writer) (*fail2banRegex, error) {
	if given != "" {
		return &fail2banRegex{argv: []string{given}, filter: "/etc/fail2ban/filter.d/sshd.conf", version: "given"}, nil
	}
	if p, err := exec.LookPath("fail2ban-regex"); err == nil {
		if _, err := os.Stat("/etc/fail2ban/filter.d/sshd.conf"); err == nil {
			return &fail2banRegex{argv: []string{p}, filter: "/etc/fail2ban/filter.d/sshd.conf", version: debVersion("fail2ban")}, nil
		}
	}
	root := filepath.Join(cache, "fail2ban")
	if _, err := os.Stat(filepath.Join(root, "usr/bin/fail2ban-regex")); err != nil {
		fmt.Fprintln(out, "bench-guard: fetching Debian's fail2ban package (apt-get download; unpacked, not installed)")
		dl := filepath.Join(cache, "download")
		if err := os.MkdirAll(dl, 0o755); err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, "apt-get", "download", "fail2ban")
		cmd.Dir = dl
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download fail2ban: %w\n%s(or pass -no-fail2ban, or -fail2ban-regex PATH)", err, b)
		}
		debs, _ := filepath.Glob(filepath.Join(dl, "fail2ban_*.deb"))
		if len(debs) == 0 {
			return nil, errors.New("apt-get download fail2ban left no .deb")
		}
		if b, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[len(debs)-1], root).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("dpkg-deb -x: %w\n%s", err, b)
		}
	}
	version := "?"
	if debs, _ := filepath.Glob(filepath.Join(cache, "download", "fail2ban_*.deb")); len(debs) > 0 {
		version = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(debs[len(debs)-1]), "fail2ban_"), "_all.deb")
	}
	return &fail2banRegex{
		argv:    []string{"python3", filepath.Join(root, "usr/bin/fail2ban-regex")},
		env:     []string{"PYTHONPATH=" + filepath.Join(root, "usr/lib/python3/dist-packages")},
		filter:  filepath.Join(root, "etc/fail2ban/filter.d/sshd.conf"),
		version: version,
	}, nil
}

func debVersion(pkg string) string {
	b, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return "?"
	}
	return string(b)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtMs(ms float64) string { return fmt.Sprintf("%.2fms", ms) }

func printReport(out io.Writer, r *report) {
	fmt.Fprintf(out, "\nthroughput on %d lines (median of %d runs):\n", r.Lines, r.Runs)
	row := func(t *throughput) {
		fmt.Fprintf(out, "  %-44s %8.3fs %10.0f lines/s  %d matched\n", t.Tool, t.MedianSeconds, t.LinesPerSec, t.Matched)
	}
	row(&r.Tandem)
	if r.Fail2ban != nil {
		row(r.Fail2ban)
		fmt.Fprintf(out, "  ratio: tandem is %.1fx fail2ban-regex\n", r.Ratio)
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(out, "\nline written -> ban decided, in process (%d lines): p50 %s, p99 %s, max %s\n", l.N, fmtMs(l.P50), fmtMs(l.P99), fmtMs(l.Max))
	}
	if l := r.LabLatency; l != nil {
		fmt.Fprintf(out, "line written -> ban in every node's nftables set, lab (%d bans): p50 %s, p99 %s, max %s\n", l.N, fmtMs(l.P50), fmtMs(l.P99), fmtMs(l.Max))
	}
	fmt.Fprintln(out, "\ngoals:")
	for _, g := range r.Goals {
		mark := "met"
		if !g.Met {
			mark = "MISSED"
		}
		fmt.Fprintf(out, "  %-56s want %-10s got %-10s %s\n", g.Name, g.Want, g.Got, mark)
	}
}
