// Command deploy is `make bench-deploy`: in a lab of two app nodes and a
// witness, with a client requesting the site through the floating IP every
// 10 ms, it delivers N new builds of the example site with tandem (pushed
// to the lab's forge, announced by its webhook, rolled out node by node
// through the floating IP), then N more with the naive receiver the setup
// tandem replaces used (a small receiver on each node that runs `dpkg -i`
// of the new .deb at once when the webhook arrives, every node at the same
// time). It prints, per system, the failed requests and the time from the
// webhook to every node serving the new version (median, p95, max), the
// ratios, and issue 9's goals: 0 failed requests for tandem across all
// deploys, and webhook to all nodes updated within 15 s. It exits 1 when a
// goal is missed. It needs root and always tears its lab down.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/labforge"
	"github.com/tandem-ha/tandem/internal/labprobe"
)

// Systems measured.
const (
	systemTandem = "tandem"
	systemNaive  = "naive"
)

var appNodes = []string{"node1", "node2"}

type options struct {
	tandemBin string
	deploys   int
	labName   string
	jsonPath  string
	timeout   time.Duration
	settle    time.Duration
	systems   []string
	keep      bool
}

var errGoals = errors.New("a goal was missed")

func main() {
	var o options
	var systems string
	flag.StringVar(&o.tandemBin, "tandem-bin", "bin/tandem", "tandem binary to package and install on the nodes (make build)")
	flag.IntVar(&o.deploys, "deploys", 10, "deploys per system")
	flag.StringVar(&o.labName, "lab", "bench-deploy", "name of the lab the benchmark creates and removes")
	flag.StringVar(&o.jsonPath, "json", "", "write every deploy's figures to this file as JSON")
	flag.DurationVar(&o.timeout, "deploy-timeout", 3*time.Minute, "a deploy whose nodes are not all updated this long after the webhook fails")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "keep counting failed requests this long after all nodes are updated")
	flag.StringVar(&systems, "systems", "tandem,naive", "comma-separated systems to measure, in order")
	flag.BoolVar(&o.keep, "keep", false, "leave the lab up at the end (debugging)")
	flag.Parse()
	if err := o.validate(systems); err != nil {
		fmt.Fprintln(os.Stderr, "bench-deploy:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout)
	stop()
	switch {
	case errors.Is(err, errGoals):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench-deploy:", err)
		os.Exit(1)
	}
}

func (o *options) validate(systems string) error {
	if o.deploys < 1 || o.deploys > 200 {
		return fmt.Errorf("-deploys must be 1 to 200, got %d", o.deploys)
	}
	if o.timeout < 10*time.Second || o.settle < 0 {
		return fmt.Errorf("-deploy-timeout must be at least 10s and -settle not negative")
	}
	for _, s := range strings.Split(systems, ",") {
		s = strings.TrimSpace(s)
		if s != systemTandem && s != systemNaive {
			return fmt.Errorf("-systems: unknown system %q; use tandem and/or naive", s)
		}
		o.systems = append(o.systems, s)
	}
	if err := lab.ValidateName(o.labName); err != nil {
		return err
	}
	abs, err := filepath.Abs(o.tandemBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("-tandem-bin %s: %w (run make build)", abs, err)
	}
	o.tandemBin = abs
	return nil
}

// bench is one run's lab and probes.
type bench struct {
	l     *lab.Lab
	o     options
	out   io.Writer
	vip   *labprobe.Client            // every 10 ms through the floating IP
	nodes map[string]*labprobe.Client // every 50 ms to each app node directly
	obs   *labprobe.Observer
	addrs map[string]string
	minor int // the last version delivered was 0.<minor>.0
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the lab needs root: run it as root (sudo make bench-deploy)")
	}
	tmp, err := os.MkdirTemp("", "bench-deploy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// Others may rebuild bin/tandem while the benchmark runs: use a copy.
	if o.tandemBin, err = copyExe(o.tandemBin, filepath.Join(tmp, "tandem")); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := lab.New(lab.Options{Name: o.labName, Exe: o.tandemBin, Logger: logger})
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	version := "unknown"
	if v, err := exec.CommandContext(ctx, o.tandemBin, "version").Output(); err == nil {
		version = strings.TrimSpace(string(v))
	}
	fmt.Fprintf(out, "bench-deploy: tandem %s, %d deploys per system, lab %q on %s, %s\n",
		version, o.deploys, o.labName, host, time.Now().UTC().Format(time.RFC3339))
	upErr := l.Up(ctx, lab.UpOptions{Nodes: 2, Witness: true, Progress: out})
	if errors.Is(upErr, lab.ErrExists) {
		return fmt.Errorf("%w\n(an earlier run was killed before it could clean up; 'tandem lab down --name %s' removes it)", upErr, o.labName)
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(out, "lab %s left up (-keep); remove it with: tandem lab down --name %s\n", o.labName, o.labName)
			return
		}
		fmt.Fprintf(out, "tearing down lab %s\n", o.labName)
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if derr := l.Down(dctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down lab %s: %w", o.labName, derr))
		}
	}()
	if upErr != nil {
		return fmt.Errorf("lab up: %w", upErr)
	}
	if err := labcluster.Provision(ctx, l, labcluster.Options{Exe: o.tandemBin, Progress: out, Logger: logger,
		// The goal is stated for tandem's default soak, not the lab's shorter one.
		Config: labcluster.DefaultSoakConfig()}); err != nil {
		return fmt.Errorf("provision tandem: %w", err)
	}
	b, err := newBench(ctx, l, o, out)
	if err != nil {
		return err
	}
	pctx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	b.start(pctx)

	rep := &report{Lab: o.labName, Host: host, TandemVersion: version, Deploys: o.deploys, Started: time.Now().UTC()}
	var runErr error
	for _, sys := range o.systems {
		if ctx.Err() != nil {
			break
		}
		var deploy func(ctx context.Context, version string) (time.Time, error)
		switch sys {
		case systemTandem:
			deploy = b.tandemDeploy
		case systemNaive:
			fmt.Fprintln(out, "\nstarting the naive receiver on every app node")
			if err := startNaive(ctx, l); err != nil {
				runErr = errors.Join(runErr, fmt.Errorf("naive receiver: %w", err))
				continue
			}
			deploy = b.naiveDeploy
		}
		for i := 0; i < o.deploys && ctx.Err() == nil; i++ {
			res := b.measure(ctx, sys, deploy)
			rep.Results = append(rep.Results, res)
			fmt.Fprintf(out, "%-7s deploy %2d %-8s webhook→all updated %s, failed requests %d%s\n", sys, i+1, res.Version,
				fmtMs(res.DoneMs), res.FailedRequests, errNote(res.Error))
		}
	}
	stopProbes()
	rep.Finished = time.Now().UTC()
	rep.SplitBrain = len(b.obs.Report().SplitBrain)
	rep.summarize()
	rep.print(out)
	if o.jsonPath != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if werr := os.WriteFile(o.jsonPath, append(data, '\n'), 0o644); werr != nil {
			runErr = errors.Join(runErr, werr)
		}
	}
	if runErr != nil {
		return runErr
	}
	if !rep.passed() {
		return errGoals
	}
	return nil
}

func errNote(e string) string {
	if e == "" {
		return ""
	}
	return " (FAILED: " + e + ")"
}

func newBench(ctx context.Context, l *lab.Lab, o options, out io.Writer) (*bench, error) {
	b := &bench{l: l, o: o, out: out, nodes: map[string]*labprobe.Client{}, addrs: map[string]string{}, minor: 1}
	members, err := l.Members()
	if err != nil {
		return nil, err
	}
	clientNS := l.NetnsPath(lab.ClientName)
	paths := map[string]string{}
	for _, m := range members {
		if m.Role == lab.RoleClient {
			continue
		}
		paths[m.Name] = l.NetnsPath(m.Name)
		if m.Role != lab.RoleApp {
			continue
		}
		b.addrs[m.Name] = m.Address
		c, err := labprobe.NewClient(clientNS, fmt.Sprintf("http://%s:%d/healthz", m.Address, labcluster.SitePort), 50*time.Millisecond, time.Second)
		if err != nil {
			return nil, err
		}
		b.nodes[m.Name] = c
	}
	// 5 s, as a browser's patience: during a planned move's drain a new
	// connection's SYN is dropped and retransmitted after TCP's 1 s timeout.
	b.vip, err = labprobe.NewClient(clientNS, labcluster.VIPURL+"healthz", 10*time.Millisecond, 5*time.Second)
	if err != nil {
		return nil, err
	}
	b.obs = labprobe.NewObserver(lab.FloatingIP, paths, 5*time.Millisecond)
	return b, nil
}

func (b *bench) start(ctx context.Context) {
	go func() { _ = b.obs.Run(ctx) }()
	go func() { _ = b.vip.Run(ctx) }()
	for _, c := range b.nodes {
		go func() { _ = c.Run(ctx) }()
	}
	time.Sleep(500 * time.Millisecond)
}

// result is one deploy.
type result struct {
	System         string    `json:"system"`
	Version        string    `json:"version"`
	Webhook        time.Time `json:"webhook"`
	DoneMs         float64   `json:"webhook_to_all_updated_ms"` // -1: not every node updated in time
	FailedRequests int       `json:"failed_requests"`
	Requests       int       `json:"requests"`
	Error          string    `json:"error,omitempty"`
}

// measure runs one deploy of the next version with deploy (which returns
// when it sent the webhook) and watches until every app node serves it.
func (b *bench) measure(ctx context.Context, sys string, deploy func(context.Context, string) (time.Time, error)) result {
	b.minor++
	v := fmt.Sprintf("0.%d.0", b.minor)
	res := result{System: sys, Version: v, DoneMs: -1}
	sent, err := deploy(ctx, v)
	res.Webhook = sent
	if err != nil {
		res.Error = err.Error()
		return res
	}
	done, err := b.waitUpdated(ctx, v, sent)
	if err != nil {
		res.Error = err.Error()
	} else {
		res.DoneMs = float64(done.Sub(sent)) / float64(time.Millisecond)
	}
	// Count failures until the system has settled.
	select {
	case <-ctx.Done():
	case <-time.After(b.o.settle):
	}
	if sys == systemTandem {
		if err := b.waitIdle(ctx); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}
	end := time.Now()
	for _, r := range b.vip.Results() {
		if !r.Start.Before(sent) && r.Start.Before(end) {
			res.Requests++
			if !r.OK {
				res.FailedRequests++
			}
		}
	}
	return res
}

// waitUpdated returns when every app node first served version after since.
func (b *bench) waitUpdated(ctx context.Context, version string, since time.Time) (time.Time, error) {
	want := fmt.Sprintf("%q", version)
	deadline := time.Now().Add(b.o.timeout)
	for {
		var last time.Time
		all := true
		for _, c := range b.nodes {
			first := time.Time{}
			for _, r := range c.Results() {
				if r.OK && r.Start.After(since) && strings.Contains(r.Body, want) {
					first = r.End
					break
				}
			}
			if first.IsZero() {
				all = false
				break
			}
			if first.After(last) {
				last = first
			}
		}
		if all {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("not every node served %s within %v", version, b.o.timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tandemDeploy publishes the build to the lab's forge and sends the
// forge's webhook to the cluster; it returns when the webhook was sent.
func (b *bench) tandemDeploy(ctx context.Context, version string) (time.Time, error) {
	res, err := labcluster.Push(ctx, b.l, labcluster.PushOptions{Exe: b.o.tandemBin, Version: version, NoWebhook: true})
	if err != nil {
		return time.Time{}, err
	}
	f, err := labforge.Open(labcluster.ForgeDir(b.l))
	if err != nil {
		return time.Time{}, err
	}
	h, err := f.MakeHook(labforge.SourceGitLab, res.ID, labforge.HookOptions{})
	if err != nil {
		return time.Time{}, err
	}
	sent := time.Now()
	resp, err := labcluster.SendHook(ctx, b.l, b.o.tandemBin, labcluster.WebhookURL(labforge.SourceGitLab), h)
	if err != nil {
		return sent, err
	}
	if resp.Status != 202 {
		return sent, fmt.Errorf("the webhook was answered %d %s, want 202", resp.Status, resp.Body)
	}
	return sent, nil
}

// waitIdle waits until the cluster runs no rollout (`tandem releases
// --json` shows the running one), so the next deploy is measured alone.
func (b *bench) waitIdle(ctx context.Context) error {
	deadline := time.Now().Add(b.o.timeout)
	for {
		out, err := labcluster.Sh(ctx, b.l, "node1", "tandem releases --json")
		if err == nil {
			var st struct {
				Rollout json.RawMessage `json:"rollout"`
			}
			if json.Unmarshal([]byte(out), &st) == nil && (len(st.Rollout) == 0 || string(st.Rollout) == "null") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the rollout did not end within %v (%v)", b.o.timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func copyExe(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	return dst, nil
}
