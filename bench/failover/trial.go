package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/labprobe"
)

// Systems and faults, as named in the output and the JSON file.
const (
	systemTandem     = "tandem"
	systemKeepalived = "keepalived"
	faultPowerLoss   = "power_loss"
	faultAppFailure  = "app_failure"
)

// The probes of every trial, as issue 3 specifies them.
const (
	observeEvery   = 5 * time.Millisecond
	requestEvery   = 10 * time.Millisecond
	requestTimeout = 250 * time.Millisecond
	// After the first success the trial keeps watching this long, so a
	// second holder appearing right after the takeover is still seen.
	settle = time.Second
	// readyTimeout bounds the wait for a system to recover after a trial.
	readyTimeout = 3 * time.Minute
)

// appNodes are the nodes that may hold the floating IP.
var appNodes = []string{"node1", "node2"}

// system is one failover system under test: it knows when the lab is ready
// for the next fault.
type system interface {
	Name() string
	// Ready waits until exactly one healthy node serves the VIP, every app
	// node is back and healthy, and at least the cool-off has passed since
	// lastMove. It returns the holder and a note for the progress line.
	Ready(ctx context.Context, lastMove time.Time) (holder, note string, err error)
}

// bench holds what every trial shares.
type bench struct {
	lab    *lab.Lab
	o      options
	out    io.Writer
	nsPath map[string]string // app node -> network namespace path
	vip    *vipView
}

func newBench(l *lab.Lab, o options, out io.Writer) (*bench, error) {
	paths := map[string]string{}
	for _, n := range appNodes {
		paths[n] = l.NetnsPath(n)
	}
	v, err := openVIPView(lab.FloatingIP, paths)
	if err != nil {
		return nil, err
	}
	return &bench{lab: l, o: o, out: out, nsPath: paths, vip: v}, nil
}

func (b *bench) close() { b.vip.close() }

// result is one trial's raw figures (the JSON file's "results").
type result struct {
	System         string    `json:"system"`
	Fault          string    `json:"fault"`
	Trial          int       `json:"trial"`
	At             time.Time `json:"at"`
	Node           string    `json:"node"`           // the holder the fault hit
	Note           string    `json:"note,omitempty"` // e.g. whether that node was tandem's controller
	OK             bool      `json:"ok"`
	OutageMs       float64   `json:"outage_ms"`                  // fault to end of the first successful request after it
	InjectMs       float64   `json:"inject_ms"`                  // how long injecting the fault took
	FirstFailureMs float64   `json:"first_failure_ms,omitempty"` // fault to the start of the first failed request
	ServedBy       string    `json:"served_by,omitempty"`
	FailedRequests int       `json:"failed_requests"`
	SplitBrain     int       `json:"split_brain_samples"`
	Samples        int       `json:"observer_samples"`
	Moves          int       `json:"moves"`
	RecoveryMs     float64   `json:"recovery_ms,omitempty"` // fault to ready for the next trial
	// After the takeover, while the fault is undone and the system settles:
	// failed requests, and instants the VIP went from a holder to nobody.
	LaterFailures int    `json:"later_failed_requests"`
	VIPDrops      int    `json:"later_vip_drops"`
	Error         string `json:"error,omitempty"`
	// Skipped trials never reached the fault (no steady service before
	// it); they are retried and left out of the figures.
	Skipped bool `json:"skipped,omitempty"`
	// HolderChanges is the observer's timeline: which nodes had the VIP,
	// from ms after the fault on.
	HolderChanges []holderChange `json:"holder_changes,omitempty"`
	// Journal holds tandem's log lines about the move from every node when
	// the trial was anomalous (a failure, a split brain, more than one move
	// or a later outage), for whoever investigates.
	Journal []string `json:"journal,omitempty"`
}

type holderChange struct {
	Ms      float64  `json:"ms"`
	Holders []string `json:"holders"`
}

func (r result) anomalous() bool {
	return !r.OK || r.SplitBrain > 0 || r.Moves != 1 || r.LaterFailures > 0 || r.VIPDrops > 0
}

func (r result) outage() time.Duration { return time.Duration(r.OutageMs * float64(time.Millisecond)) }

// series runs o.trials trials of one fault against one system. It stops
// early only when the system does not become ready again.
func (b *bench) series(ctx context.Context, sys system, fault string) ([]result, error) {
	fmt.Fprintf(b.out, "\n%s, %s: %d trials\n", sys.Name(), strings.ReplaceAll(fault, "_", " "), b.o.trials)
	var out []result
	var lastMove time.Time
	skips := 0
	for i := 1; i <= b.o.trials; i++ {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		rctx, cancel := context.WithTimeout(ctx, readyTimeout)
		holder, note, err := sys.Ready(rctx, lastMove)
		cancel()
		if err != nil {
			return out, fmt.Errorf("not ready before trial %d: %w", i, err)
		}
		r, recovered := b.trial(ctx, sys, fault, i, holder, note)
		if ctx.Err() != nil {
			return out, ctx.Err() // interrupted: this trial says nothing about the system
		}
		out = append(out, r)
		b.progress(r)
		if r.Skipped {
			if skips++; skips > 3 {
				return out, fmt.Errorf("trial %d: %s (skipped 3 times)", i, r.Error)
			}
			i-- // the fault never happened: run this trial again
			continue
		}
		if r.OK {
			lastMove = r.At.Add(r.outage())
		} else {
			lastMove = time.Now()
		}
		if !recovered {
			return out, fmt.Errorf("trial %d: %s", i, r.Error)
		}
	}
	return out, nil
}

func (b *bench) progress(r result) {
	fault := strings.ReplaceAll(r.Fault, "_", " ")
	what := "power cut on"
	if r.Fault == faultAppFailure {
		what = "app stopped on"
	}
	node := r.Node
	if r.Note != "" {
		node += " (" + r.Note + ")"
	}
	if r.Skipped {
		fmt.Fprintf(b.out, "  %-10s %-11s %2d/%d  skipped, will retry: %s\n", r.System, fault, r.Trial, b.o.trials, r.Error)
		return
	}
	if !r.OK {
		fmt.Fprintf(b.out, "  %-10s %-11s %2d/%d  %s %-14s FAILED: %s; split-brain %d\n",
			r.System, fault, r.Trial, b.o.trials, what, node, r.Error, r.SplitBrain)
		return
	}
	later := ""
	if r.LaterFailures > 0 || r.VIPDrops > 0 {
		later = fmt.Sprintf("; AFTER the takeover %d failed requests, VIP dropped %d times", r.LaterFailures, r.VIPDrops)
	}
	fmt.Fprintf(b.out, "  %-10s %-11s %2d/%d  %s %-14s -> %s serves after %6.3fs; %3d failed requests; split-brain %d; moves %d; ready again after %.1fs%s\n",
		r.System, fault, r.Trial, b.o.trials, what, node, r.ServedBy, r.outage().Seconds(),
		r.FailedRequests, r.SplitBrain, r.Moves, r.RecoveryMs/1000, later)
}

// trial injects one fault on holder and measures the outage the client
// sees, then undoes the fault and waits for the system to be ready again
// while the observer still watches for two holders. recovered is false when
// the lab could not be put back, which ends the series.
func (b *bench) trial(ctx context.Context, sys system, fault string, n int, holder, note string) (r result, recovered bool) {
	r = result{System: sys.Name(), Fault: fault, Trial: n, Node: holder, Note: note}
	tctx, stop := context.WithCancel(ctx)
	defer stop()

	obs := labprobe.NewObserver(lab.FloatingIP, b.nsPath, observeEvery)
	obsDone := make(chan error, 1)
	go func() { obsDone <- obs.Run(tctx) }()
	defer func() {
		stop()
		if err := <-obsDone; err != nil && r.Error == "" {
			r.OK, r.Error = false, err.Error()
		}
		rep := obs.Report()
		r.SplitBrain, r.Samples, r.Moves = len(rep.SplitBrain), rep.Samples, rep.Moves()
		for _, c := range rep.Changes {
			if r.At.IsZero() {
				break // no fault: no timeline
			}
			r.HolderChanges = append(r.HolderChanges, holderChange{Ms: math.Round(ms(c.At.Sub(r.At))*10) / 10, Holders: c.Holders})
		}
		if !r.Skipped && r.anomalous() && sys.Name() == systemTandem && ctx.Err() == nil {
			r.Journal = b.journal(ctx, r.At)
		}
		if r.SplitBrain > 0 && r.Error == "" {
			s := rep.SplitBrain[0]
			r.Note = strings.TrimPrefix(r.Note+fmt.Sprintf("; first split-brain sample %s after the fault: %v",
				s.At.Sub(r.At).Round(time.Millisecond), s.Holders), "; ")
		}
	}()

	client, err := labprobe.NewClient(b.lab.NetnsPath(lab.ClientName), labcluster.VIPURL+"healthz", requestEvery, requestTimeout)
	if err != nil {
		r.Error = err.Error()
		return r, false
	}
	cctx, stopClient := context.WithCancel(tctx)
	clientDone := make(chan struct{})
	go func() { defer close(clientDone); _ = client.Run(cctx) }()
	defer func() { stopClient(); <-clientDone }()

	// Baseline: the client is served and exactly the expected node holds
	// the VIP before anything breaks.
	t0 := time.Now()
	if err := waitFor(tctx, 5*time.Second, func() bool {
		_, ok := labprobe.Outage(client.Results(), t0)
		cur := obs.Current().Holders
		return ok && time.Since(t0) >= 300*time.Millisecond && len(cur) == 1 && cur[0] == holder
	}); err != nil {
		r.Skipped = true
		r.Error = fmt.Sprintf("baseline: no steady service from %s before the fault (holders %v)", holder, obs.Current().Holders)
		return r, true
	}

	// Both systems run on fixed timers (keepalived's adverts and script
	// every 1 s, tandem's checks and probes), and the trials' own rhythm
	// would otherwise hit them at the same phase every time.
	if b.o.jitter > 0 {
		if err := sleep(tctx, rand.N(b.o.jitter)); err != nil {
			r.Skipped, r.Error = true, err.Error()
			return r, true
		}
	}
	r.At = time.Now()
	if err := b.inject(tctx, fault, holder); err != nil {
		r.Error = err.Error()
		return r, false
	}
	r.InjectMs = ms(time.Since(r.At))
	var outage time.Duration
	var first labprobe.Result
	err = waitFor(tctx, b.o.trialTimeout, func() bool {
		var ok bool
		first, ok = firstServed(client.Results(), r.At, holder)
		return ok
	})
	if err != nil {
		r.Error = fmt.Sprintf("no successful request within %v of the fault (holders now %v)", b.o.trialTimeout, obs.Current().Holders)
	} else {
		r.OK = true
		outage = first.End.Sub(r.At)
		r.OutageMs = ms(outage)
		r.ServedBy = nodeOf(first)
		res := client.Results()
		r.FailedRequests = labprobe.Failures(res, r.At, first.Start)
		if f, ok := firstFailure(res, r.At); ok {
			r.FirstFailureMs = ms(f.Start.Sub(r.At))
		}
		_ = sleep(tctx, settle)
	}

	// The client and the observer keep going while the fault is undone:
	// the service must not suffer from the node or app coming back.
	if err := b.restore(tctx, fault, holder); err != nil {
		r.OK, r.Error = false, err.Error()
		return r, false
	}
	rctx, cancel := context.WithTimeout(tctx, readyTimeout)
	defer cancel()
	last := r.At
	if r.OK {
		last = r.At.Add(outage)
	}
	_, _, rerr := sys.Ready(rctx, last)
	stopClient()
	<-clientDone
	if r.OK {
		r.LaterFailures = labprobe.Failures(client.Results(), first.End, time.Now())
		r.VIPDrops = drops(obs.Report().Changes, first.Start)
	}
	if rerr != nil {
		r.OK, r.Error = false, fmt.Sprintf("did not recover after the trial: %v", rerr)
		return r, false
	}
	r.RecoveryMs = ms(time.Since(r.At))
	return r, true
}

// drops counts the times after t that no node had the VIP: after the
// takeover, each is an outage of its own.
func drops(changes []labprobe.Sample, t time.Time) int {
	n := 0
	for _, c := range changes {
		if c.At.After(t) && len(c.Holders) == 0 {
			n++
		}
	}
	return n
}

// journal returns tandem's log lines about placement, the VIP and raft from
// shortly before t on, from every node that runs.
func (b *bench) journal(ctx context.Context, t time.Time) []string {
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var out []string
	for _, n := range append([]string{lab.WitnessName}, appNodes...) {
		text, err := b.sh(jctx, n, fmt.Sprintf(
			"journalctl -u tandem.service --since @%d -o short-precise --no-pager | grep -E 'placement decision|floating IP|lease|election|leadership|health check is' || true",
			t.Add(-2*time.Second).Unix()))
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", n, err))
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			if line != "" {
				out = append(out, line)
			}
		}
	}
	return out
}

// firstServed returns the first successful request started after the fault
// at t that a node other than the faulted one answered. Injecting a fault
// takes time (systemctl stop waits for gunicorn to exit; a kill is confirmed
// and the node's network scrubbed), and requests the faulted node still
// answers meanwhile are not the end of the outage. This is labprobe.Outage
// with that filter; the outage is measured from t, so the injection's own
// latency counts against the system under test.
func firstServed(res []labprobe.Result, t time.Time, faulted string) (labprobe.Result, bool) {
	for _, x := range res {
		if x.OK && x.Start.After(t) && nodeOf(x) != faulted {
			return x, true
		}
	}
	return labprobe.Result{}, false
}

// firstFailure returns the first failed request started after t: about when
// the client first noticed the fault.
func firstFailure(res []labprobe.Result, t time.Time) (labprobe.Result, bool) {
	for _, x := range res {
		if !x.OK && x.Start.After(t) {
			return x, true
		}
	}
	return labprobe.Result{}, false
}

// nodeOf names the node that answered a request (the example site's
// /healthz reports "node"), or "?".
func nodeOf(x labprobe.Result) string {
	for _, n := range appNodes {
		if strings.Contains(x.Body, fmt.Sprintf(`"node":%q`, n)) || strings.Contains(x.Body, fmt.Sprintf(`"node": %q`, n)) {
			return n
		}
	}
	return "?"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// inject causes the fault on node. The time of the fault is taken before
// the call, so the command's own latency counts against the system.
func (b *bench) inject(ctx context.Context, fault, node string) error {
	switch fault {
	case faultPowerLoss:
		if err := b.lab.Kill(ctx, node); err != nil {
			return fmt.Errorf("kill %s: %w", node, err)
		}
		return nil
	case faultAppFailure:
		_, err := b.sh(ctx, node, "systemctl stop pysite")
		return err
	}
	return fmt.Errorf("unknown fault %q", fault)
}

// restore undoes the fault: the node boots again, or the app starts again.
func (b *bench) restore(ctx context.Context, fault, node string) error {
	switch fault {
	case faultPowerLoss:
		if err := b.lab.Start(ctx, node); err != nil {
			return fmt.Errorf("start %s again: %w", node, err)
		}
		return nil
	case faultAppFailure:
		_, err := b.sh(ctx, node, "systemctl start pysite")
		return err
	}
	return fmt.Errorf("unknown fault %q", fault)
}

// sh runs a shell script in a node (see labcluster.Sh).
func (b *bench) sh(ctx context.Context, node, script string) (string, error) {
	return labcluster.Sh(ctx, b.lab, node, script)
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// vipView reads which app nodes have the floating IP, through netlink in
// each node's network namespace (which outlives a killed node).
type vipView struct {
	vip     netip.Addr
	names   []string
	handles map[string]*netlink.Handle
}

func openVIPView(vip netip.Addr, paths map[string]string) (*vipView, error) {
	v := &vipView{vip: vip, handles: map[string]*netlink.Handle{}}
	for name, p := range paths {
		ns, err := netns.GetFromPath(p)
		if err != nil {
			v.close()
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			v.close()
			return nil, fmt.Errorf("netlink in %s: %w", p, err)
		}
		v.handles[name] = h
		v.names = append(v.names, name)
	}
	slices.Sort(v.names)
	return v, nil
}

// holders returns the nodes with the VIP configured, sorted.
func (v *vipView) holders() []string {
	var out []string
	for _, n := range v.names {
		addrs, err := v.handles[n].AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == v.vip {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

func (v *vipView) close() {
	for _, h := range v.handles {
		h.Close()
	}
}
