package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/debversion"
)

// Cluster is what the driver needs of the raft node.
type Cluster interface {
	Apply(ctx context.Context, cmd state.Command) error
	IsLeader() bool
	LeadershipChanged() <-chan struct{}
}

// Machine is the replicated state, read-only.
type Machine interface {
	View() state.Snapshot
	Changed(domain string) <-chan struct{}
}

// Nodes runs a rollout's steps on the app nodes (over the cluster's mTLS).
type Nodes interface {
	Fetch(ctx context.Context, node string, req FetchRequest) (FetchResult, error)
	Install(ctx context.Context, node string, req InstallRequest) (InstallResult, error)
	Hook(ctx context.Context, node string, req HookRequest) error
}

// Mover moves the floating IP as a planned move (drain first).
type Mover interface {
	Switchover(ctx context.Context, to string, timeout time.Duration) error
}

// NodeHealth is the DC's view of one node.
type NodeHealth struct {
	Reachable bool
	Healthy   bool
}

// FetchRequest asks an app node to fetch, verify and store a delivery's
// release. The node reads the delivery from its committed state, never
// from the request.
type FetchRequest struct {
	Rollout string `json:"rollout"`
}

// FetchResult is the verified release a fetch found.
type FetchResult struct {
	Package   string `json:"package"`
	Version   string `json:"version"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Signature string `json:"signature,omitempty"`
}

// InstallRequest asks an app node to install a release from its store
// (copying it from one of From first) and gate it.
type InstallRequest struct {
	Rollout   string   `json:"rollout"`
	Package   string   `json:"package"`
	Version   string   `json:"version"`
	Digest    string   `json:"digest"`
	Signature string   `json:"signature,omitempty"`
	From      []string `json:"from,omitempty"`
	Rollback  bool     `json:"rollback,omitempty"`
}

// InstallResult is what a node reports after a gated install.
type InstallResult struct {
	Version string        `json:"version"`
	Took    time.Duration `json:"took"`
}

// HookRequest asks an app node to run a release hook.
type HookRequest struct {
	Rollout string `json:"rollout"`
	Hook    string `json:"hook"` // "pre" or "post"
	Package string `json:"package"`
	Version string `json:"version"`
}

// DriverOptions configures a Driver.
type DriverOptions struct {
	Name    string
	Cluster Cluster
	Machine Machine
	Nodes   Nodes
	Mover   Mover
	// Health returns the DC's current view of every member.
	Health func(now time.Time) map[string]NodeHealth
	Now    func() time.Time
	Logger *slog.Logger
	// OnFinish is called when this driver ends a rollout (metrics).
	OnFinish func(r state.Rollout)
	// Retry is how long the driver waits before retrying after a
	// commit fails (default 1s).
	Retry time.Duration
	// MoveTimeout bounds a planned move (default 1m).
	MoveTimeout time.Duration
}

// Driver runs rollouts on the raft leader: it starts the newest queued
// delivery when the cluster may deploy, and drives the rollout in
// progress step by step, journaling each in the replicated state before
// and after it runs, so a new leader takes over where it stopped.
type Driver struct {
	o   DriverOptions
	log *slog.Logger
	// waiting records since when the driver waits for an unreachable
	// node before installing on it.
	waiting map[string]time.Time
}

// errWaiting is a step the driver retries later: a node it must install
// on is unreachable, for less than the gate timeout so far.
var errWaiting = errors.New("waiting for a node to come back")

// NewDriver returns a driver; nothing runs until Run.
func NewDriver(o DriverOptions) *Driver {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Retry == 0 {
		o.Retry = time.Second
	}
	if o.MoveTimeout == 0 {
		o.MoveTimeout = time.Minute
	}
	return &Driver{o: o, log: o.Logger, waiting: map[string]time.Time{}}
}

// Run drives rollouts while this node leads, until ctx ends.
func (d *Driver) Run(ctx context.Context) error {
	for {
		leaderCh := d.o.Cluster.LeadershipChanged()
		changed := d.o.Machine.Changed(state.DeployDomain)
		var wait time.Duration
		if d.o.Cluster.IsLeader() {
			wait = d.step(ctx)
		} else {
			wait = time.Hour
		}
		if ctx.Err() != nil {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-leaderCh:
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// step does one unit of work and says how long to wait before the next
// unless the state changes first.
func (d *Driver) step(ctx context.Context) time.Duration {
	s := d.o.Machine.View()
	dep := s.Deploy()
	if r := dep.Rollout; r != nil {
		if err := d.drive(ctx, r); err != nil {
			if errors.Is(err, errWaiting) {
				return d.o.Retry
			}
			if ctx.Err() == nil {
				d.log.Warn("rollout interrupted; retrying", "rollout", r.ID, "err", err)
			}
			return d.o.Retry
		}
		return 0
	}
	next, ok := dep.NextQueued()
	if !ok {
		return time.Hour
	}
	if why := d.holdBack(s, next); why != "" {
		d.log.Debug("deploy held back", "delivery", next.ID, "reason", why)
		return 2 * time.Second
	}
	r := state.Rollout{ID: next.ID, Force: next.Force, Phase: state.PhaseFetch, Driver: d.o.Name, StartedAt: d.o.Now()}
	if err := d.apply(ctx, state.StartRollout{Rollout: r}); err != nil {
		d.log.Warn("start rollout", "delivery", next.ID, "err", err)
		return d.o.Retry
	}
	d.log.Info("rollout started", "delivery", next.ID, "source", next.Source, "ref", next.Ref, "commit", next.Commit)
	return 0
}

// HoldBack says why the queued delivery may not start now ("" when it may):
// the lock, maintenance mode, auto deploys being off, or a degraded
// cluster. A forced delivery skips all but a missing policy.
func HoldBack(now time.Time, s state.Snapshot, next state.Delivery, health map[string]NodeHealth) string {
	dep := s.Deploy()
	if dep.Policy == nil {
		return "no app node has published a [deploy] policy yet"
	}
	if next.Force {
		return ""
	}
	switch {
	case dep.Lock != nil:
		return fmt.Sprintf("deploys are locked by %s: %q ('tandem deploy unlock')", dep.Lock.By, dep.Lock.Message)
	case s.Mode == state.ModeMaintenance:
		return "the cluster is in maintenance mode ('tandem mode auto')"
	case !dep.Policy.Auto && !next.Manual:
		return "automatic deploys are off (deploy.auto = false); run 'tandem deploy' to deploy"
	}
	for _, name := range AppNodes(s) {
		h := health[name]
		if !h.Reachable {
			return fmt.Sprintf("%s is unreachable: a degraded cluster does not deploy (--force overrides)", name)
		}
		if !h.Healthy {
			return fmt.Sprintf("%s is unhealthy: a degraded cluster does not deploy (--force overrides)", name)
		}
	}
	return ""
}

func (d *Driver) holdBack(s state.Snapshot, next state.Delivery) string {
	return HoldBack(d.o.Now(), s, next, d.o.Health(d.o.Now()))
}

// AppNodes lists the app members that are voters, by name.
func AppNodes(s state.Snapshot) []string {
	var out []string
	for _, name := range s.Names() {
		if m := s.Members[name]; m.Role == state.RoleApp && !m.Pending {
			out = append(out, name)
		}
	}
	return out
}

func (d *Driver) apply(ctx context.Context, cmd state.Command) error {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return d.o.Cluster.Apply(actx, cmd)
}

// journal commits a step's start, runs it, and commits its end.
func (d *Driver) journal(ctx context.Context, r *state.Rollout, action, node, detail string, run func(ctx context.Context) (string, error)) error {
	n := len(r.Steps) + 1
	if last, ok := r.LastStep(); ok {
		n = last.N + 1
	}
	st := state.Step{N: n, Action: action, Node: node, State: state.StepStarted, Detail: detail, At: d.o.Now()}
	if err := d.apply(ctx, state.RolloutStep{ID: r.ID, Driver: d.o.Name, Step: &st}); err != nil {
		return errJournal{err}
	}
	d.log.Info("rollout step", "rollout", r.ID, "step", n, "action", action, "node", node, "detail", detail)
	out, err := run(ctx)
	st.EndedAt = d.o.Now()
	st.State = state.StepDone
	if out != "" {
		st.Detail = out
	}
	if err != nil {
		st.State, st.Detail = state.StepFailed, clip(err.Error(), 1500)
	}
	if cerr := d.apply(ctx, state.RolloutStep{ID: r.ID, Driver: d.o.Name, Step: &st}); cerr != nil {
		return errJournal{cerr}
	}
	return err
}

// releaseFault reports whether err is a node's refusal of the release
// (its install, gate or hook failed: the node answered 422), as opposed
// to the node being unreachable or the driver losing its connection. Only
// the release's own faults mark it bad.
func releaseFault(err error) bool {
	var se interface{ HTTPStatus() int }
	return errors.As(err, &se) && se.HTTPStatus() == http.StatusUnprocessableEntity
}

// errJournal is a failed commit: the driver stops (it may have lost
// leadership) and whoever leads next resumes from the journal.
type errJournal struct{ err error }

func (e errJournal) Error() string { return "journal: " + e.err.Error() }
func (e errJournal) Unwrap() error { return e.err }

// drive runs the rollout in progress until it ends or this node cannot
// commit. Every decision is derived again from the committed state, so
// resuming after a crash needs no memory of what was running.
func (d *Driver) drive(ctx context.Context, r *state.Rollout) error {
	if r.Driver != d.o.Name {
		d.log.Info("taking over the rollout", "rollout", r.ID, "from", r.Driver, "phase", r.Phase)
		take := state.RolloutStep{ID: r.ID, Driver: d.o.Name, TakeOver: true}
		if last, ok := r.LastStep(); ok && last.State == state.StepStarted {
			// The previous driver stopped mid-step; the state says what
			// the step achieved, and the next decision starts from there.
			last.State, last.EndedAt = state.StepInterrupted, d.o.Now()
			last.Detail = strings.TrimSpace(last.Detail + "; " + r.Driver + " stopped driving; " + d.o.Name + " went on from the state")
			take.Step = &last
		}
		if err := d.apply(ctx, take); err != nil {
			return err
		}
	}
	for {
		s := d.o.Machine.View()
		r = s.Deploy().Rollout
		if r == nil {
			return nil
		}
		if !d.o.Cluster.IsLeader() {
			return errors.New("lost leadership")
		}
		var err error
		switch r.Phase {
		case state.PhaseFetch:
			err = d.fetch(ctx, s, r)
		case state.PhaseForward, state.PhaseRollback:
			err = d.reconcile(ctx, s, r)
		default:
			err = d.finish(ctx, r, state.DeliveryFailed, "unknown phase "+r.Phase, false)
		}
		if err != nil {
			var je errJournal
			if errors.As(err, &je) || errors.Is(err, errWaiting) || ctx.Err() != nil {
				return err
			}
			if r.Phase == state.PhaseRollback {
				return d.finish(ctx, r, state.DeliveryFailed, fmt.Sprintf("%s; rollback failed: %v", r.Failure, err), blameRelease(r))
			}
			if err := d.rollback(ctx, s, r, err); err != nil {
				return err
			}
		}
	}
}

// fetch has an app node fetch and verify the release, then fixes the
// rollout's targets.
func (d *Driver) fetch(ctx context.Context, s state.Snapshot, r *state.Rollout) error {
	dep := s.Deploy()
	del, _ := dep.Delivery(r.ID)
	node := d.fetcher(s, del)
	if node == "" {
		return d.finish(ctx, r, state.DeliveryFailed, "no reachable app node to fetch the release", false)
	}
	var res FetchResult
	err := d.journal(ctx, r, "fetch", node, del.Source+" "+del.Ref+" "+short(del.Commit), func(ctx context.Context) (string, error) {
		fctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		defer cancel()
		var err error
		res, err = d.o.Nodes.Fetch(fctx, node, FetchRequest{Rollout: r.ID})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s sha256:%s (%d bytes)", res.Package, res.Version, short(res.Digest), res.Size), nil
	})
	if err != nil {
		var je errJournal
		if errors.As(err, &je) {
			return err
		}
		return d.finish(ctx, r, state.DeliveryFailed, "fetch: "+err.Error(), false)
	}
	if why, ok := dep.Bad[res.Digest]; ok && !r.Force {
		return d.finish(ctx, r, state.DeliveryFailed, "this release failed before ("+why+"); deploy it with --force to try again", false)
	}
	prev := map[string]state.Release{}
	targets := map[string]state.Release{}
	want := state.Release{Package: res.Package, Version: res.Version, Digest: res.Digest}
	same := true
	for _, name := range AppNodes(s) {
		cur, _ := dep.Running(name, res.Package)
		prev[name] = cur
		targets[name] = want
		if cur.Version != res.Version {
			same = false
		}
		if cur.Version != "" && !r.Force {
			if c, err := debversion.Compare(res.Version, cur.Version); err == nil && c < 0 {
				return d.finish(ctx, r, state.DeliveryFailed,
					fmt.Sprintf("%s %s is older than %s on %s; deploy it with --force or use 'tandem rollback'", res.Package, res.Version, cur.Version, name), false)
			}
		}
	}
	if err := d.apply(ctx, state.RolloutStep{ID: r.ID, Driver: d.o.Name, Package: res.Package, Version: res.Version,
		Digest: res.Digest, Signature: res.Signature, Previous: prev, Targets: targets, Phase: state.PhaseForward}); err != nil {
		return errJournal{err}
	}
	if same && !r.Force {
		r2 := d.o.Machine.View().Deploy().Rollout
		if r2 != nil {
			return d.finish(ctx, r2, state.DeliveryDeployed, "every node already runs "+res.Version, false)
		}
	}
	return nil
}

// fetcher picks the node that fetches: the one that received the
// delivery, else any reachable app node.
func (d *Driver) fetcher(s state.Snapshot, del state.Delivery) string {
	health := d.o.Health(d.o.Now())
	if m, ok := s.Members[del.ReceivedBy]; ok && m.Role == state.RoleApp && health[del.ReceivedBy].Reachable {
		return del.ReceivedBy
	}
	for _, name := range AppNodes(s) {
		if health[name].Reachable {
			return name
		}
	}
	return ""
}

// onTarget reports whether node runs its target release.
func onTarget(dep *state.Deploy, r *state.Rollout, node string) bool {
	t, ok := r.Targets[node]
	if !ok || t.Version == "" {
		return true // nothing to do (a rollback to a release the node never had)
	}
	cur, _ := dep.Running(node, t.Package)
	return cur.Version == t.Version && (t.Digest == "" || cur.Digest == "" || cur.Digest == t.Digest)
}

// hookDone reports whether the journal has a finished hook step.
func hookDone(r *state.Rollout, hook string) bool {
	return slices.ContainsFunc(r.Steps, func(st state.Step) bool {
		return st.Action == "hook_"+hook && st.State == state.StepDone
	})
}

// reconcile takes one step towards every node running its target: the
// nodes that do not hold the IP first, then a planned move of the IP to a
// node on its target, then the former holder. Hooks run once: pre on the
// first upgraded node before the IP moves, post at the end.
func (d *Driver) reconcile(ctx context.Context, s state.Snapshot, r *state.Rollout) error {
	dep := s.Deploy()
	pol := dep.Policy
	if pol == nil {
		pol = &state.DeployPolicy{}
	}
	holder := s.Holder.Node
	nodes := AppNodes(s)
	var pending, done []string
	for _, n := range nodes {
		if onTarget(dep, r, n) {
			if _, touched := r.Targets[n]; touched {
				done = append(done, n)
			}
		} else {
			pending = append(pending, n)
		}
	}
	forward := r.Phase == state.PhaseForward
	// Non-holders first, in name order.
	sort.SliceStable(pending, func(i, j int) bool { return pending[j] == holder && pending[i] != holder })
	if len(pending) > 0 && pending[0] != holder {
		n := pending[0]
		if forward && pol.PreHook && len(done) > 0 && !hookDone(r, "pre") && s.Holder.Node != "" && !slices.Contains(done, holder) {
			return d.hook(ctx, r, done[0], "pre")
		}
		return d.install(ctx, s, r, n)
	}
	if len(pending) > 0 {
		// Only the holder is left: move the IP to a node on its target.
		if forward && pol.PreHook && len(done) > 0 && !hookDone(r, "pre") {
			return d.hook(ctx, r, done[0], "pre")
		}
		health := d.o.Health(d.o.Now())
		var to string
		for _, n := range done {
			if health[n].Healthy && health[n].Reachable {
				to = n
				break
			}
		}
		if to == "" {
			if len(nodes) == 1 {
				// A single app node: nothing to move to; install in place.
				return d.install(ctx, s, r, holder)
			}
			return fmt.Errorf("no healthy node on %s to move the IP to before upgrading %s", r.Targets[holder].Version, holder)
		}
		return d.journal(ctx, r, "move", to, "planned move of the IP from "+holder, func(ctx context.Context) (string, error) {
			return "", d.o.Mover.Switchover(ctx, to, d.o.MoveTimeout)
		})
	}
	if forward && pol.PostHook && !hookDone(r, "post") {
		target := holder
		if target == "" && len(done) > 0 {
			target = done[0]
		}
		return d.hook(ctx, r, target, "post")
	}
	if forward {
		return d.finish(ctx, r, state.DeliveryDeployed, fmt.Sprintf("%s %s on %s", r.Package, r.Version, strings.Join(nodes, ", ")), false)
	}
	return d.finish(ctx, r, state.DeliveryRolledBack, r.Failure, blameRelease(r))
}

// blameRelease reports whether the rollout failed because of the release
// (see releaseFault): only then is it kept from being deployed again.
func blameRelease(r *state.Rollout) bool {
	return !strings.HasPrefix(r.Failure, "not the release's fault: ")
}

func (d *Driver) install(ctx context.Context, s state.Snapshot, r *state.Rollout, node string) error {
	t := r.Targets[node]
	dep := s.Deploy()
	// A node that is down may be rebooting: wait for it up to the gate
	// timeout before the install is tried (and fails).
	if h := d.o.Health(d.o.Now()); !h[node].Reachable {
		since, ok := d.waiting[node]
		if !ok {
			since = d.o.Now()
			d.waiting[node] = since
			d.log.Warn("waiting for an unreachable node before installing on it", "rollout", r.ID, "node", node)
		}
		if d.o.Now().Sub(since) < d.gateTimeout(dep) {
			return errWaiting
		}
	}
	// Peers that have the release: those already on it, and the fetcher.
	var from []string
	for _, n := range AppNodes(s) {
		if cur, _ := dep.Running(n, t.Package); n != node && cur.Digest == t.Digest && t.Digest != "" {
			from = append(from, n)
		}
	}
	for _, st := range r.Steps {
		if st.Action == "fetch" && st.State == state.StepDone && st.Node != node && !slices.Contains(from, st.Node) {
			from = append(from, st.Node)
		}
	}
	cur, _ := dep.Running(node, t.Package)
	del, _ := dep.Delivery(r.ID)
	req := InstallRequest{Rollout: r.ID, Package: t.Package, Version: t.Version, Digest: t.Digest, From: from,
		Rollback: r.Phase == state.PhaseRollback || del.Source == SourceRollback}
	if t.Digest == r.Digest {
		req.Signature = r.Signature
	}
	action := "install"
	if req.Rollback {
		action = "rollback"
	}
	err := d.journal(ctx, r, action, node, fmt.Sprintf("%s %s -> %s", t.Package, orNone(cur.Version), t.Version), func(ctx context.Context) (string, error) {
		// The node bounds its own install; this bounds a lost connection.
		budget := 15 * time.Minute
		if p := dep.Policy; p != nil {
			budget += p.GateTimeout + p.Soak
		}
		ictx, cancel := context.WithTimeout(ctx, budget)
		defer cancel()
		res, err := d.o.Nodes.Install(ictx, node, req)
		if err != nil {
			return "", err
		}
		// The node reported what it installed before answering; a step
		// that succeeds without the node reaching its target would be
		// repeated forever.
		if now := d.o.Machine.View().Deploy(); !onTarget(now, r, node) {
			got, _ := now.Running(node, t.Package)
			return "", fmt.Errorf("%s answered that %s %s is installed, but it reports %s (sha256:%s), not sha256:%s",
				node, t.Package, t.Version, orNone(got.Version), short(got.Digest), short(t.Digest))
		}
		return fmt.Sprintf("%s %s healthy after %s", t.Package, res.Version, res.Took.Round(time.Millisecond)), nil
	})
	var je errJournal
	if err == nil || errors.As(err, &je) || releaseFault(err) || ctx.Err() != nil {
		delete(d.waiting, node)
		return err
	}
	// The node did not answer for itself (unreachable, restarting, not
	// yet aware of this leader): try again until the gate timeout.
	since, ok := d.waiting[node]
	if !ok {
		since = d.o.Now()
		d.waiting[node] = since
	}
	if d.o.Now().Sub(since) < d.gateTimeout(dep) {
		d.log.Warn("install could not reach the node; retrying", "rollout", r.ID, "node", node, "err", err)
		return errWaiting
	}
	delete(d.waiting, node)
	return err
}

func (d *Driver) gateTimeout(dep *state.Deploy) time.Duration {
	if dep.Policy != nil && dep.Policy.GateTimeout > 0 {
		return dep.Policy.GateTimeout
	}
	return time.Minute
}

func (d *Driver) hook(ctx context.Context, r *state.Rollout, node, hook string) error {
	return d.journal(ctx, r, "hook_"+hook, node, "", func(ctx context.Context) (string, error) {
		return "", d.o.Nodes.Hook(ctx, node, HookRequest{Rollout: r.ID, Hook: hook, Package: r.Package, Version: r.Version})
	})
}

// rollback switches the rollout to putting every node back on the release
// it had, after cause failed it.
func (d *Driver) rollback(ctx context.Context, s state.Snapshot, r *state.Rollout, cause error) error {
	failure := cause.Error()
	if last, ok := r.LastStep(); ok && last.State == state.StepFailed {
		failure = fmt.Sprintf("%s on %s failed: %s", last.Action, last.Node, last.Detail)
	}
	d.log.Warn("rollout failed; rolling back", "rollout", r.ID, "failure", failure)
	targets := map[string]state.Release{}
	for n, prev := range r.Previous {
		if prev.Version != "" {
			targets[n] = prev
		}
	}
	if !releaseFault(cause) {
		failure = "not the release's fault: " + failure
	}
	if err := d.apply(ctx, state.RolloutStep{ID: r.ID, Driver: d.o.Name, Phase: state.PhaseRollback, Targets: targets, Failure: failure}); err != nil {
		return errJournal{err}
	}
	return nil
}

func (d *Driver) finish(ctx context.Context, r *state.Rollout, outcome, reason string, markBad bool) error {
	if err := d.apply(ctx, state.FinishRollout{ID: r.ID, Driver: d.o.Name, Outcome: outcome, Reason: reason, MarkBad: markBad, At: d.o.Now()}); err != nil {
		return errJournal{err}
	}
	d.log.Info("rollout finished", "rollout", r.ID, "outcome", outcome, "reason", reason)
	if d.o.OnFinish != nil {
		fin := *r
		fin.Outcome, fin.Reason, fin.EndedAt = outcome, reason, d.o.Now()
		d.o.OnFinish(fin)
	}
	return nil
}

// clip bounds a step's detail kept in the replicated state.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + " …"
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func orNone(v string) string {
	if v == "" {
		return "(none)"
	}
	return v
}
