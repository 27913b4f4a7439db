// Command chaos runs a randomized fault campaign against a lab of two app
// nodes and a witness, as an operator's bad day would look: power loss,
// partition, a hung app and a degraded link on the holder; power loss and
// partition of the standby and of the witness; with -overlap, some pairs
// at once. A split-brain observer samples the VIP on every node and a
// client requests the site through it every 15 ms. It prints one line per
// fault and a summary by kind, and exits 1 on any split brain, any fault
// that does not settle, or any single fault with a healthy, unpenalised
// standby whose outage exceeds its kind's bound. The faults come from
// -seed alone, so a failing run replays. Needs root (make chaos).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/labprobe"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// The probes, as issue 13 specifies them.
const (
	observeEvery   = 5 * time.Millisecond
	requestEvery   = 15 * time.Millisecond
	requestTimeout = 250 * time.Millisecond
	settleTimeout  = 90 * time.Second
	// steady is how long the site must be served, by one holder, before
	// a fault: the end of the previous fault's settling.
	steady = 300 * time.Millisecond
)

var appNodes = []string{"node1", "node2"}

type options struct {
	tandemBin string
	faults    int
	seed      uint64
	overlap   bool
	labName   string
	json      bool
	keep      bool
	threshold int
	window    time.Duration
}

// errViolations marks a campaign that ran but found violations.
var errViolations = errors.New("violations found")

func main() {
	var o options
	flag.StringVar(&o.tandemBin, "tandem-bin", "bin/tandem", "tandem binary to install on the nodes (make build)")
	flag.IntVar(&o.faults, "faults", 200, "how many faults (or overlapping pairs) to inject")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the campaign: the same seed draws the same faults")
	flag.BoolVar(&o.overlap, "overlap", false, "make about one step in four an overlapping pair (e.g. the witness down while the holder loses power: no failover possible)")
	flag.StringVar(&o.labName, "lab", "chaos", "name of the lab the campaign creates and removes")
	flag.BoolVar(&o.json, "json", false, "print the report as JSON on stdout (progress goes to stderr)")
	flag.BoolVar(&o.keep, "keep", false, "leave the lab up at the end (remove it with 'tandem lab down --name LAB')")
	flag.IntVar(&o.threshold, "failure-threshold", 3, "tandem's failover.failure_threshold in the lab")
	flag.DurationVar(&o.window, "failure-window", 30*time.Second, "tandem's failover.failure_window in the lab (short, so that the campaign sees nodes penalised and recovering)")
	flag.Parse()
	if o.faults < 1 {
		fmt.Fprintln(os.Stderr, "chaos: -faults must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	switch {
	case errors.Is(err, errViolations):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// campaign holds what every step shares.
type campaign struct {
	lab    *lab.Lab
	o      options
	out    io.Writer
	obs    *labprobe.Observer
	client *labprobe.Client // the current step's
}

func run(ctx context.Context, o options) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root: run it as root (sudo make chaos)")
	}
	out := io.Writer(os.Stdout)
	if o.json {
		out = os.Stderr
	}
	// Others may rebuild bin/tandem meanwhile: use a copy.
	tmp, err := os.MkdirTemp("", "chaos-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	exe := filepath.Join(tmp, "tandem")
	b, err := os.ReadFile(o.tandemBin)
	if err != nil {
		return fmt.Errorf("-tandem-bin: %w (run make build)", err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := lab.New(lab.Options{Name: o.labName, Exe: exe, Logger: logger})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "chaos: %d faults, seed %d, overlap %v, lab %q, %s\n", o.faults, o.seed, o.overlap, o.labName, time.Now().UTC().Format(time.RFC3339))
	upErr := l.Up(ctx, lab.UpOptions{Nodes: 2, Witness: true, Progress: out})
	if errors.Is(upErr, lab.ErrExists) {
		return fmt.Errorf("%w\n('tandem lab down --name %s' removes the lab an earlier run left)", upErr, o.labName)
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(out, "lab %s left up (-keep)\n", o.labName)
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if derr := l.Down(dctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down lab %s: %w", o.labName, derr))
		}
	}()
	if upErr != nil {
		return fmt.Errorf("lab up: %w", upErr)
	}
	settings := fmt.Sprintf("[failover]\nfailure_threshold = %d\nfailure_window = %q\n", o.threshold, o.window.String())
	if err := labcluster.Provision(ctx, l, labcluster.Options{Exe: exe, Progress: out, Logger: logger, Config: settings}); err != nil {
		return fmt.Errorf("provision tandem: %w", err)
	}
	paths := map[string]string{}
	for _, n := range appNodes {
		paths[n] = l.NetnsPath(n)
	}
	// One observer watches the whole campaign; each step has a client of
	// its own, so that its results stay small.
	c := &campaign{lab: l, o: o, out: out, obs: labprobe.NewObserver(lab.FloatingIP, paths, observeEvery)}
	pctx, stopProbes := context.WithCancel(ctx)
	obsDone := make(chan error, 1)
	go func() { obsDone <- c.obs.Run(pctx) }()
	defer func() {
		stopProbes()
		if oerr := <-obsDone; oerr != nil {
			err = errors.Join(err, fmt.Errorf("observer: %w", oerr))
		}
	}()

	rep := &report{Seed: o.seed, Faults: o.faults, Overlap: o.overlap, Lab: o.labName, Started: time.Now().UTC(),
		Settings: strings.ReplaceAll(strings.TrimSpace(settings), "\n", " ")}
	fmt.Fprintf(out, "tandem settings: %s; client every %v (timeout %v), observer every %v\n", rep.Settings, requestEvery, requestTimeout, observeEvery)
	fmt.Fprintf(out, "%4s %-40s %-14s %5s  %s\n", "#", "fault", "target", "dur", "what the client saw")
	for _, s := range plan(o.seed, o.faults, o.overlap) {
		if ctx.Err() != nil {
			rep.Stopped = "interrupted"
			break
		}
		oc, serr := c.step(ctx, s)
		if ctx.Err() != nil {
			rep.Stopped = "interrupted"
			break
		}
		rep.Outcomes = append(rep.Outcomes, oc)
		fmt.Fprintln(out, oc.line())
		if serr != nil {
			rep.Stopped = fmt.Sprintf("step %d: %v", s.N, serr)
			break
		}
	}
	rep.Finished = time.Now().UTC()
	rep.summarize()
	rep.print(out)
	if o.json {
		if err := rep.writeJSON(os.Stdout); err != nil {
			return err
		}
	}
	if !rep.Pass {
		return errViolations
	}
	return nil
}

// step waits for a steady cluster, injects the step's faults, undoes each
// when its duration is over and waits for the cluster to settle. An error
// means the lab could not be driven (not that tandem misbehaved), and ends
// the campaign.
func (c *campaign) step(ctx context.Context, s step) (outcome, error) {
	o := outcome{N: s.N}
	for _, f := range s.Faults {
		o.Faults = append(o.Faults, f.String())
		o.DurationMs = max(o.DurationMs, ms(f.Duration))
	}
	kinds := make([]string, len(s.Faults))
	for i, f := range s.Faults {
		kinds[i] = f.Kind
	}
	o.Kind = strings.Join(kinds, "+")
	client, err := labprobe.NewClient(c.lab.NetnsPath(lab.ClientName), labcluster.VIPURL+"healthz", requestEvery, requestTimeout)
	if err != nil {
		return o, err
	}
	c.client = client
	cctx, stopClient := context.WithCancel(ctx)
	clientDone := make(chan struct{})
	go func() { defer close(clientDone); _ = client.Run(cctx) }()
	defer func() { stopClient(); <-clientDone }()
	if err := sleep(ctx, s.Gap); err != nil {
		return o, err
	}
	before, err := c.ready(ctx, settleTimeout)
	if err != nil {
		o.Error = "not steady before the fault: " + err.Error()
		return o, errors.New(o.Error)
	}
	holder := before.Holder.Node
	standby := other(holder)
	for _, m := range before.Members {
		if m.Name == standby {
			o.StandbyOK = m.Healthy && !m.Penalised
		}
	}
	targets := make([]string, len(s.Faults))
	for i, f := range s.Faults {
		targets[i] = target(f.Kind, holder, standby)
	}
	o.Targets = targets

	t0 := time.Now()
	for i, f := range s.Faults {
		if err := c.inject(ctx, f, targets[i]); err != nil {
			o.Error = err.Error()
			return o, err
		}
	}
	// Ask the witness what placement holds back, if it is up, once the
	// hung app would have been detected.
	heldCh := make(chan string, 1)
	go func() { heldCh <- c.heldMove(ctx, s, t0) }()
	// Undo the faults in the order their durations end.
	idx := make([]int, len(s.Faults))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(s.Faults[a].Duration, s.Faults[b].Duration) })
	var t1 time.Time
	for _, i := range idx {
		f := s.Faults[i]
		if err := sleep(ctx, time.Until(t0.Add(f.Duration))); err != nil {
			return o, err
		}
		if err := c.restore(ctx, f, targets[i]); err != nil {
			o.Error = err.Error()
			return o, err
		}
		t1 = time.Now()
	}
	o.Held = <-heldCh
	after, err := c.ready(ctx, settleTimeout)
	settledAt := time.Now()
	if err == nil {
		o.Settled, o.SettleMs = true, ms(settledAt.Sub(t1))
		o.Moves = int(after.Holder.Epoch - before.Holder.Epoch)
	} else {
		o.Error = err.Error()
	}
	outage, failed := longestOutage(c.client.Results(), t0, settledAt)
	o.OutageMs, o.Failed = ms(outage), failed
	o.SplitBrain = splitBrainIn(c.obs.Report(), t0, settledAt)
	o.check(s.Faults[0], len(s.Faults) == 1)
	return o, nil
}

// target resolves a kind's role to a node.
func target(kind, holder, standby string) string {
	switch {
	case strings.HasPrefix(kind, "holder_"):
		return holder
	case strings.HasPrefix(kind, "standby_"):
		return standby
	}
	return lab.WitnessName
}

func other(node string) string {
	if node == appNodes[0] {
		return appNodes[1]
	}
	return appNodes[0]
}

// heldMove returns the move the DC held back during the step, as the
// witness's status reports it about 2.7 s into the fault, or "".
func (c *campaign) heldMove(ctx context.Context, s step, t0 time.Time) string {
	longest := time.Duration(0)
	for _, f := range s.Faults {
		if strings.HasPrefix(f.Kind, "witness_") {
			return ""
		}
		longest = max(longest, f.Duration)
	}
	at := min(2700*time.Millisecond, longest-200*time.Millisecond)
	if err := sleep(ctx, time.Until(t0.Add(at))); err != nil {
		return ""
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := labcluster.Status(sctx, c.lab, lab.WitnessName)
	if err != nil || st.HeldMove == nil {
		return ""
	}
	return fmt.Sprintf("%s %s->%s", st.HeldMove.Kind, st.HeldMove.From, st.HeldMove.To)
}

// ready waits until the cluster is steady: three reachable voters, both app
// nodes healthy, an active holder that alone has the VIP, and the site
// served through it for a moment.
func (c *campaign) ready(ctx context.Context, within time.Duration) (localapi.Status, error) {
	deadline := time.Now().Add(within)
	last := "no status yet"
	for {
		st, err := labcluster.Status(ctx, c.lab, lab.WitnessName)
		if err != nil {
			last = err.Error()
		} else if last = notReady(st, c.obs.Current().Holders); last == "" {
			since := time.Now().Add(-steady)
			if servedSince(c.client.Results(), since) {
				return st, nil
			}
			last = "the site is not served steadily yet"
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("not settled within %v: %s", within, last)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return st, err
		}
	}
}

// notReady says why the cluster is not steady, or "".
func notReady(st localapi.Status, vipHolders []string) string {
	if len(st.Members) != 3 {
		return fmt.Sprintf("%d members, want 3", len(st.Members))
	}
	for _, m := range st.Members {
		if m.Suffrage != "voter" || !m.Reachable {
			return fmt.Sprintf("%s is not a reachable voter", m.Name)
		}
		if m.Role == "app" && !m.Healthy {
			return fmt.Sprintf("%s is unhealthy", m.Name)
		}
	}
	if !st.Holder.Active || st.Holder.Node == "" {
		return fmt.Sprintf("no active holder (holder %q)", st.Holder.Node)
	}
	if !slices.Equal(vipHolders, []string{st.Holder.Node}) {
		return fmt.Sprintf("holder is %s but the VIP is on %v", st.Holder.Node, vipHolders)
	}
	return ""
}

// servedSince reports whether requests started after since all succeeded,
// and there were some.
func servedSince(res []labprobe.Result, since time.Time) bool {
	n := 0
	for _, r := range slices.Backward(res) {
		if r.Start.Before(since) {
			break
		}
		if !r.OK {
			return false
		}
		n++
	}
	return n > 0
}

// inject starts a fault on node.
func (c *campaign) inject(ctx context.Context, f fault, node string) error {
	switch f.Kind {
	case kindHolderPower, kindStandbyPower, kindWitnessPower:
		return c.lab.Kill(ctx, node)
	case kindHolderPartition, kindStandbyPartition, kindWitnessPartition:
		return c.lab.Partition(ctx, node)
	case kindHolderHang:
		// The app stops answering but keeps its port: requests and health
		// checks time out, as with a deadlocked worker.
		_, err := c.sh(ctx, node, "systemctl kill -s SIGSTOP pysite")
		return err
	case kindHolderNetem:
		return c.lab.Netem(ctx, node, lab.Netem{Delay: f.Delay, Jitter: f.Delay / 4, Loss: f.Loss})
	}
	return fmt.Errorf("unknown fault %q", f.Kind)
}

// restore ends a fault on node.
func (c *campaign) restore(ctx context.Context, f fault, node string) error {
	switch f.Kind {
	case kindHolderPower, kindStandbyPower, kindWitnessPower:
		return c.lab.Start(ctx, node)
	case kindHolderPartition, kindStandbyPartition, kindWitnessPartition:
		return c.lab.Heal(ctx, node)
	case kindHolderHang:
		_, err := c.sh(ctx, node, "systemctl kill -s SIGCONT pysite")
		return err
	case kindHolderNetem:
		return c.lab.ClearNetem(ctx, node)
	}
	return fmt.Errorf("unknown fault %q", f.Kind)
}

// sh runs a shell script in a node (see labcluster.Sh).
func (c *campaign) sh(ctx context.Context, node, script string) (string, error) {
	return labcluster.Sh(ctx, c.lab, node, script)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
