package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/liveness"
)

// Provider moves the floating IP; implementations live in internal/vip.
type Provider interface {
	Acquire(ctx context.Context) error
	Release(ctx context.Context) error
	Held(ctx context.Context) (bool, error)
}

// Cluster is the part of the raft node the controller uses.
type Cluster interface {
	Apply(ctx context.Context, c state.Command) error
	IsLeader() bool
	// Leader names the raft leader this node follows ("" while unknown).
	Leader() (name, addr string)
	Term() uint64
	TransferLeadership(ctx context.Context, to string) error
	// LeadershipChanged returns a channel closed at the next change of
	// leadership, so a node that does not lead need not poll.
	LeadershipChanged() <-chan struct{}
}

// Health reports the local checks; *health.Runner implements it.
type Health interface {
	Snapshot() health.Report
}

// Events receives holder transitions, for hooks, primary units and any
// other subscriber (see Node.Subscribe). Calls must return quickly;
// implementations queue the work and keep its order.
type Events interface {
	Promote(epoch uint64)
	Demote(epoch uint64)
	Fault(epoch uint64, reason string)
}

// Drainer is implemented by providers that can let the connections in
// flight to the IP finish before a planned move releases it. New
// connections are turned away silently (their SYNs dropped, so clients
// retry in a second and reach the new holder); Release undoes StopNew, and
// Acquire must accept connections again.
type Drainer interface {
	StopNew(ctx context.Context) error
	// InFlight counts the TCP connections to the IP that are still open.
	InFlight(ctx context.Context) (int, error)
}

// Flusher is implemented by capabilities whose data must reach the next
// holder before a planned move releases the IP (file replication). Flush
// returns once node to has everything this node had when it was called,
// or with an error when ctx ends first.
type Flusher interface {
	Flush(ctx context.Context, to string) error
}

// Options configures a Node.
type Options struct {
	Name     string
	Role     string // state.RoleApp or state.RoleWitness
	Machine  *state.Machine
	Cluster  Cluster
	Provider Provider // nil on witnesses
	Health   Health   // nil: always healthy (witness)
	// HealthChanged receives a value whenever this node's health verdict
	// may have changed; nil when there is nothing to watch.
	HealthChanged <-chan struct{}
	Events        Events // may be nil; Subscribe adds more
	// Mesh is the liveness mesh, which the caller runs. Its lease is how
	// long a node keeps the IP without a majority's answers, and a silent
	// holder is declared dead after the lease plus its margin. The node
	// contributes FactNode and FactLeader to it.
	Mesh *liveness.Mesh
	// Policy is this node's configured placement policy; the DC uses it
	// only until the app nodes publish the cluster's (state.SetPolicy).
	Policy state.Policy
	// PublishPolicy makes Policy the cluster's (app nodes; see publishPolicy).
	PublishPolicy bool
	// DrainTimeout bounds how long a planned move waits for connections in
	// flight to finish (see Drainer); 0 releases at once.
	DrainTimeout time.Duration
	// Flushers run after the drain of a planned move and before the
	// release, each for at most FlushTimeout (default 30s).
	Flushers     []Flusher
	FlushTimeout time.Duration
	Logger       *slog.Logger
}

// Node runs the DC loop and, on app nodes, the holder loop, on the facts
// the liveness mesh carries.
type Node struct {
	o    Options
	mesh *liveness.Mesh
	log  *slog.Logger
	kick chan struct{}
	ctrl chan struct{} // wakes the DC loop: a peer's health or holding changed
	// waiting is set while this node should acquire but cannot yet (no
	// lease, or no confirmation), so every answer wakes the holder loop.
	waiting atomic.Bool
	events  []Events

	mu          sync.Mutex
	view        LeaderView // the leader's view from its answer to our latest message
	viewAt      time.Time  // when that message was sent
	seenEpoch   uint64     // the newest epoch any leader view has named
	holding     bool
	heldEpoch   uint64
	holdBack    string // why the holder named by the state does not configure the IP
	lastErr     string
	lastTrans   time.Time
	held        *Hold // the move the DC holds back now; nil when none or not the DC
	releasedAt  map[uint64]time.Time
	answered    map[string]time.Time // when each peer's latest answer arrived (DC)
	short       bool                 // the DC's last decision came with a round's answer missing
	started     time.Time
	everHealthy bool
	// After a failed acquire, wait before the next try (doubling, capped).
	retryAt time.Time
	backoff time.Duration
	// lastKick is when the holder loop last asked the leader for a view.
	lastKick time.Time
	// contradictedAt is when the holder loop first saw the leader announce
	// an epoch its log had not applied while it held the IP.
	contradictedAt time.Time
}

// New builds a Node.
func New(o Options) (*Node, error) {
	if o.Role == state.RoleApp && o.Provider == nil {
		return nil, errors.New("failover: app node needs a provider")
	}
	if o.Mesh == nil {
		return nil, errors.New("failover: Options need the liveness Mesh")
	}
	n := &Node{o: o, mesh: o.Mesh, log: o.Logger, kick: make(chan struct{}, 1), ctrl: make(chan struct{}, 1),
		releasedAt: map[uint64]time.Time{}, answered: map[string]time.Time{}, started: time.Now()}
	if o.Events != nil {
		n.events = append(n.events, o.Events)
	}
	err := errors.Join(
		n.mesh.Contribute(liveness.Source{Name: FactNode, Value: func() []byte {
			f := n.localFacts(true)
			return appendFacts(nil, &f)
		}}),
		n.mesh.Contribute(liveness.Source{Name: FactLeader, Value: func() []byte {
			if v := n.leaderView(); v != nil {
				return appendLeaderView(nil, v)
			}
			return nil
		}}),
		n.mesh.Contribute(liveness.Source{Name: FactHeld, Value: n.heldFact}),
	)
	if err != nil {
		return nil, fmt.Errorf("failover: %w", err)
	}
	n.mesh.Subscribe(n.onUpdate)
	return n, nil
}

// Subscribe adds a receiver of holder transitions; call it before Run.
func (n *Node) Subscribe(e Events) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, e)
}

// emit calls fn for every subscriber, in subscription order.
func (n *Node) emit(fn func(Events)) {
	n.mu.Lock()
	subs := n.events
	n.mu.Unlock()
	for _, e := range subs {
		fn(e)
	}
}

// Run runs every loop until ctx ends, then drops the IP. The mesh runs
// separately (its owner runs it).
func (n *Node) Run(ctx context.Context) error {
	if n.o.Role == state.RoleApp {
		// An address left from before a crash is not ours until confirmed.
		if held, err := n.o.Provider.Held(ctx); err == nil && held {
			n.log.Info("dropping a floating IP left from a previous run")
			if err := n.o.Provider.Release(ctx); err != nil {
				n.log.Error("release stale IP", "err", err)
			}
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.controllerLoop(ctx) })
	if n.o.Role == state.RoleApp {
		g.Go(func() error { return n.holderLoop(ctx) })
	}
	if n.o.PublishPolicy {
		g.Go(func() error { n.publishPolicy(ctx); return nil })
	}
	if n.o.HealthChanged != nil {
		g.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-n.o.HealthChanged:
					n.mesh.Announce()
				}
			}
		})
	}
	return g.Wait()
}

// localFacts is this node's NodeFacts, with its checks when withChecks.
func (n *Node) localFacts(withChecks bool) NodeFacts {
	r := NodeFacts{Node: n.o.Name, Role: n.o.Role, Healthy: true}
	if n.o.Health != nil {
		rep := n.o.Health.Snapshot()
		r.Healthy = rep.Healthy
		r.UnhealthyForMs = rep.UnhealthyFor(time.Now()).Milliseconds()
		if withChecks {
			r.Checks = rep.Checks
		}
	}
	if n.o.Role == state.RoleWitness {
		r.Healthy = false // a witness never serves
	}
	n.mu.Lock()
	r.Holding = n.holding
	if r.Healthy {
		n.everHealthy = true
	}
	r.Starting = n.o.Role == state.RoleApp && !r.Healthy && !n.everHealthy && time.Since(n.started) < liveness.StartupGrace
	n.mu.Unlock()
	r.Epoch = n.o.Machine.View().Holder.Epoch
	return r
}

func (n *Node) leaderView() *LeaderView {
	if !n.o.Cluster.IsLeader() {
		return nil
	}
	h := n.o.Machine.View().Holder
	return &LeaderView{Term: n.o.Cluster.Term(), Holder: h.Node, Epoch: h.Epoch, Active: h.Active}
}

func (n *Node) onLeaderView(from string, v LeaderView, sent time.Time) {
	// Only the leader this node follows speaks for the committed holder.
	// Any other member's view, whatever epoch it claims, is ignored: an
	// epoch taken from it would make the holder drop the IP for good
	// (security review, finding 2).
	if leader, _ := n.o.Cluster.Leader(); from == "" || from != leader || v.Term < n.o.Cluster.Term() {
		return
	}
	n.mu.Lock()
	news := v.Epoch > n.seenEpoch
	if news {
		n.seenEpoch = v.Epoch
	}
	// Only an answer confirms, and only one to a newer message than the last.
	if !sent.IsZero() && sent.After(n.viewAt) {
		news = news || n.view != v
		n.view, n.viewAt = v, sent
	}
	n.mu.Unlock()
	// The holder loop cares about a view that says something new, or any
	// view while it waits to acquire (a repeated one may be fresh again).
	if news || n.waiting.Load() {
		n.poke()
	}
}

func (n *Node) poke()           { wake(n.kick) }
func (n *Node) pokeController() { wake(n.ctrl) }

// wake signals a loop waiting on ch (capacity 1) without blocking: a signal
// already pending covers this one.
func wake(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// controllerLoop makes placement decisions while this node is the raft
// leader; otherwise it sleeps until leadership changes. While it leads it
// decides once the answers of a probe round are in from every other member
// (onUpdate pokes it), in the same wakeup as the answers, at once when a
// peer's health or holding changes, and on every change of the state. Only
// a round that misses an answer (a peer is down, and a silent holder
// becomes provably dead with time alone) needs its timer: it fires a tenth
// of an interval after the round, on the wall-clock grid the mesh's rounds
// use, and until a round is complete again every answer later than that
// wakes it too.
func (n *Node) controllerLoop(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	var lastTransfer time.Time
	for {
		// The channel before the check: a change after it closes it.
		changed := n.o.Cluster.LeadershipChanged()
		if n.o.Cluster.IsLeader() {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			case <-n.o.Machine.Changed(state.FailoverDomain):
			case <-n.o.Machine.Changed(state.MembershipDomain):
			case <-n.ctrl:
			case <-changed:
			}
		} else {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			}
		}
		if !n.o.Cluster.IsLeader() {
			n.setHeld(nil)
			continue
		}
		now := time.Now()
		s := n.o.Machine.View()
		views := n.Views(now, s.Holder.Epoch)
		d := Decide(now, s, views, n.o.Policy)
		var held *Hold
		if d != nil && d.Cmd == nil {
			held = d.Held
			d = nil
		}
		n.setHeld(held)
		t.Reset(n.nextCheck(now))
		if d != nil {
			n.log.Info("placement decision", "reason", d.Reason, "command", d.Cmd.Type())
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := n.o.Cluster.Apply(actx, d.Cmd)
			cancel()
			if err != nil && !errors.Is(err, state.ErrStaleEpoch) {
				n.log.Warn("commit placement", "err", err)
			}
			if err == nil {
				n.mesh.Kick() // tell the new holder now, not at the next round
			}
			continue
		}
		// Keep the DC off the holder: if the holder lost power while leading,
		// an election would add to the failover time. Keep it on a witness
		// when there is one: leading (raft's heartbeats, the decisions) is
		// an agent's largest idle cost, and a witness runs no app or checks.
		if now.Sub(lastTransfer) > time.Second {
			if to, why := n.transferTarget(s, views); to != "" {
				lastTransfer = now
				n.log.Info("moving raft leadership", "to", to, "why", why)
				if err := n.o.Cluster.TransferLeadership(ctx, to); err != nil {
					// A node that just joined may not be a voter yet; retry soon.
					n.log.Info("leadership transfer failed; will retry", "to", to, "err", err)
				}
			}
		}
	}
}

// nextCheck is how long the DC's timer waits: until a tenth of an interval
// after the next round if this one's answers are all in (they will poke it
// first), else after this one; until then every answer later in the
// round than the timer pokes it.
func (n *Node) nextCheck(now time.Time) time.Duration {
	every := n.mesh.Interval()
	late := every / 10
	at := now
	complete := n.roundComplete(now)
	n.mu.Lock()
	n.short = !complete
	n.mu.Unlock()
	if complete {
		at = now.Add(every / 2)
	}
	next := at.Add(-late).Truncate(every).Add(every + late)
	return next.Sub(now)
}

// roundComplete reports whether every other member has answered within
// half an interval, that is in this round even if the clocks differ by a
// few milliseconds.
func (n *Node) roundComplete(now time.Time) bool {
	since := now.Add(-n.mesh.Interval() / 2)
	members := n.o.Machine.View().Members
	n.mu.Lock()
	defer n.mu.Unlock()
	for name := range members {
		if name != n.o.Name && n.answered[name].Before(since) {
			return false
		}
	}
	return true
}

// setHeld records the move the DC holds back, logging when it changes.
func (n *Node) setHeld(h *Hold) {
	n.mu.Lock()
	prev := n.held
	n.held = h
	n.mu.Unlock()
	switch {
	case h != nil && (prev == nil || prev.Kind != h.Kind || prev.To != h.To || !prev.Until.Equal(h.Until)):
		n.log.Warn("placement holds a move back", "from", h.From, "to", h.To, "kind", h.Kind, "until", h.Until, "reason", h.Reason)
	case h == nil && prev != nil:
		n.log.Info("placement no longer holds a move back", "from", prev.From)
	}
}

// transferTarget is the voter this DC should hand raft leadership to, and
// why: off the IP holder, to a reachable witness if there is one, else to
// any reachable voter; from an app node that does not hold the IP, only to
// a reachable witness. "" when leadership should stay.
func (n *Node) transferTarget(s state.Snapshot, views map[string]NodeView) (string, string) {
	holder := s.Holder.Node == n.o.Name
	if !holder && n.o.Role == state.RoleWitness {
		return "", ""
	}
	best := ""
	for _, name := range s.Voters() {
		if name == n.o.Name || !views[name].Reachable {
			continue
		}
		if s.Members[name].Role == state.RoleWitness {
			if holder {
				return name, "off the IP holder"
			}
			return name, "onto the witness, which runs no app"
		}
		if best == "" {
			best = name
		}
	}
	if !holder {
		return "", ""
	}
	return best, "off the IP holder"
}

// holderLoop configures or drops the IP to match committed state, the
// leader's confirmation and the lease. It runs when something it depends
// on changes and at the instant reconcile asks for (the lease's expiry, a
// retry), and at least every idleCheck as a backstop.
func (n *Node) holderLoop(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	defer n.dropOnExit()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.kick:
		case <-n.o.Machine.Changed(state.FailoverDomain):
		}
		now := time.Now()
		next := n.reconcile(ctx, now)
		if next.IsZero() || next.Sub(now) > idleCheck {
			next = now.Add(idleCheck)
		}
		t.Reset(max(time.Until(next), 0))
	}
}

// logCatchUp bounds how long a holder whose log lags behind a newer epoch
// waits for it before releasing (see reconcile).
const logCatchUp = 150 * time.Millisecond

// idleCheck bounds the holder loop's sleep when nothing is due: only a
// backstop, since every change it acts on wakes it and reconcile asks for
// the instants that depend on time alone (the lease's expiry, a retry). An
// idle process's wakeups, not the work done in them, are most of its CPU.
const idleCheck = time.Second

// kickEvery bounds how often the holder loop asks the leader for its view
// while waiting for a confirmation.
const kickEvery = 10 * time.Millisecond

func (n *Node) dropOnExit() {
	n.mu.Lock()
	holding, epoch := n.holding, n.heldEpoch
	n.mu.Unlock()
	if !holding {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.o.Provider.Release(ctx); err != nil {
		n.log.Error("release on shutdown", "err", err)
	}
	n.mu.Lock()
	n.holding = false
	n.mu.Unlock()
	n.emit(func(e Events) { e.Demote(epoch) })
}

// reconcile acts on the current facts and returns when it must run next
// at the latest (zero: nothing is due).
func (n *Node) reconcile(ctx context.Context, now time.Time) time.Time {
	h := n.o.Machine.View().Holder
	expiry, leaseOK := n.mesh.LeaseExpiry()
	lease := leaseOK && (expiry.IsZero() || now.Before(expiry))
	n.mu.Lock()
	view, viewAt, holding, seen := n.view, n.viewAt, n.holding, n.seenEpoch
	n.mu.Unlock()
	if lv := n.leaderView(); lv != nil {
		view, viewAt = *lv, now // the leader confirms to itself
	}
	fresh := now.Sub(viewAt) < n.mesh.Lease()
	confirmed := fresh && view.Holder == n.o.Name && view.Epoch == h.Epoch && view.Active
	// Our log lags behind a move we heard of: whatever it says, we are not
	// the holder of the newest epoch.
	contradicted := seen > h.Epoch
	mine := h.Node == n.o.Name && h.Active
	n.waiting.Store(!holding && mine)

	n.setHoldBack(holdBackReason(mine, holding, lease, confirmed, contradicted, h.Epoch, seen, now.Before(n.retryAt)))

	var next time.Time
	// The leader announced a newer epoch than this node's log holds: it
	// may be a planned move, which this node must see to drain first.
	// While the lease holds, nobody else may act on the IP before this
	// node confirms its release, so it waits briefly for its log.
	waitLog := holding && lease && contradicted && mine && n.o.DrainTimeout > 0
	if waitLog && n.contradictedAt.IsZero() {
		n.contradictedAt = now
	}
	if !waitLog || now.Sub(n.contradictedAt) >= logCatchUp {
		n.contradictedAt = time.Time{}
		waitLog = false
	}
	switch {
	case waitLog:
		next = n.contradictedAt.Add(logCatchUp)
	case holding && (!mine || !lease || contradicted):
		reason := "holder moved"
		if !lease {
			reason = "lost quorum lease"
		}
		if lease && !contradicted && h.Drain && !h.Active && h.Previous == n.o.Name && h.Node != n.o.Name {
			n.drain(ctx, h.Epoch)
			n.flush(ctx, h.Node, h.Epoch)
			if lease = n.mesh.LeaseValid(time.Now()); !lease {
				reason = "lost quorum lease" // while draining: a fault after all
			}
		}
		n.release(ctx, reason, !lease)
	case holding:
		next = expiry // drop the IP the moment the lease runs out
	case mine && lease && confirmed && !contradicted && now.Before(n.retryAt):
		next = n.retryAt
	case mine && lease && confirmed && !contradicted:
		n.acquire(ctx, h.Epoch)
		if !n.retryAt.IsZero() {
			next = n.retryAt
		}
	case mine && !confirmed && !contradicted:
		// Ask the leader now rather than at its next probe round, though
		// not more often than kickEvery: its answer wakes this loop.
		if now.Sub(n.lastKick) >= kickEvery {
			n.lastKick = now
			n.mesh.Kick()
		}
		next = n.lastKick.Add(kickEvery)
	}
	// A node that holds the IP when reconcile ends (it may have just
	// acquired it) must wake when its lease runs out, whatever else is due:
	// nothing else wakes a holder cut off from every peer.
	n.mu.Lock()
	holdingNow := n.holding
	n.mu.Unlock()
	if holdingNow && !expiry.IsZero() && (next.IsZero() || expiry.Before(next)) {
		next = expiry
	}
	// Confirm our release of an older epoch so a pending move activates now
	// rather than after our lease would have run out.
	if !holding && h.Previous == n.o.Name && h.Node != n.o.Name && !h.Active {
		if at := n.confirmRelease(ctx, h.Epoch, now); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// holdBackReason says why a node the state names as holder does not
// configure the IP ("" when it does, or is not the holder).
func holdBackReason(mine, holding, lease, confirmed, contradicted bool, epoch, seen uint64, retrying bool) string {
	switch {
	case !mine || holding:
		return ""
	case !lease:
		return "no quorum lease: this node hears from too few voters"
	case contradicted:
		return fmt.Sprintf("the raft leader announced epoch %d, newer than the %d this node has applied", seen, epoch)
	case !confirmed:
		return fmt.Sprintf("waiting for the raft leader to confirm epoch %d", epoch)
	case retrying:
		return "the last attempt to configure the IP failed; retrying (see last_error)"
	}
	return ""
}

func (n *Node) setHoldBack(why string) {
	n.mu.Lock()
	n.holdBack = why
	n.mu.Unlock()
}

// drain lets the connections in flight to the IP finish before a planned
// move releases it, for at most DrainTimeout. It stops early when the lease
// is lost (the IP must go now) or the move is superseded.
func (n *Node) drain(ctx context.Context, epoch uint64) {
	d, ok := n.o.Provider.(Drainer)
	if !ok || n.o.DrainTimeout <= 0 {
		return
	}
	start := time.Now()
	if err := d.StopNew(ctx); err != nil {
		n.log.Warn("drain: could not stop new connections; releasing at once", "err", err)
		return
	}
	var left int
	for {
		var err error
		if left, err = d.InFlight(ctx); err != nil {
			n.log.Warn("drain: could not count connections; releasing now", "err", err)
			return
		}
		if left == 0 || time.Since(start) >= n.o.DrainTimeout || ctx.Err() != nil ||
			!n.mesh.LeaseValid(time.Now()) || n.o.Machine.View().Holder.Epoch != epoch {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if left > 0 {
		n.log.Warn("drain: releasing with connections still open", "open", left, "after", time.Since(start).Round(time.Millisecond))
		return
	}
	n.log.Info("drained connections before the planned move", "took", time.Since(start).Round(time.Millisecond))
}

// flush lets the Flushers catch the planned move's target up after the
// drain, before the release. It gives up at FlushTimeout, or at once when
// the lease is lost or the move is superseded: the IP must go then.
func (n *Node) flush(ctx context.Context, to string, epoch uint64) {
	if len(n.o.Flushers) == 0 {
		return
	}
	timeout := n.o.FlushTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		for fctx.Err() == nil {
			if !n.mesh.LeaseValid(time.Now()) || n.o.Machine.View().Holder.Epoch != epoch {
				cancel()
				return
			}
			select {
			case <-fctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	for _, f := range n.o.Flushers {
		if err := f.Flush(fctx, to); err != nil {
			n.log.Warn("planned move: could not flush to the next holder before releasing; it catches up afterwards, and what it lacks would be quarantined on this node, not lost",
				"to", to, "err", err, "after", time.Since(start).Round(time.Millisecond))
		}
	}
}

// Held reports whether this node has the floating IP configured, and in
// which epoch.
func (n *Node) Held() (bool, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.holding, n.heldEpoch
}

func (n *Node) acquire(ctx context.Context, epoch uint64) {
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := n.o.Provider.Acquire(actx); err != nil {
		n.setErr(fmt.Errorf("acquire: %w", err))
		n.backoff = min(max(2*n.backoff, 100*time.Millisecond), 5*time.Second)
		n.retryAt = time.Now().Add(n.backoff)
		n.log.Error("acquire floating IP", "epoch", epoch, "err", err, "retry_in", n.backoff)
		return
	}
	n.backoff, n.retryAt = 0, time.Time{}
	n.mu.Lock()
	n.holding, n.heldEpoch, n.lastTrans, n.lastErr = true, epoch, time.Now(), ""
	n.mu.Unlock()
	n.log.Info("floating IP acquired", "epoch", epoch, "took", time.Since(start))
	n.emit(func(e Events) { e.Promote(epoch) })
}

func (n *Node) release(ctx context.Context, reason string, fault bool) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.o.Provider.Release(rctx); err != nil {
		// Keep trying: never report released while the address may remain.
		n.setErr(fmt.Errorf("release: %w", err))
		n.log.Error("release floating IP", "reason", reason, "err", err)
		return
	}
	n.mu.Lock()
	epoch := n.heldEpoch
	n.holding, n.lastTrans = false, time.Now()
	n.mu.Unlock()
	n.log.Info("floating IP released", "reason", reason, "epoch", epoch)
	if fault {
		n.emit(func(e Events) { e.Fault(epoch, reason) })
	} else {
		n.emit(func(e Events) { e.Demote(epoch) })
	}
	n.poke()
}

// confirmRelease commits our release of epoch, at most every
// confirmEvery; it returns when to try again.
func (n *Node) confirmRelease(ctx context.Context, epoch uint64, now time.Time) time.Time {
	n.mu.Lock()
	last := n.releasedAt[epoch]
	if now.Sub(last) < confirmEvery {
		n.mu.Unlock()
		return last.Add(confirmEvery)
	}
	n.releasedAt[epoch] = now
	n.mu.Unlock()
	go func() {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := n.o.Cluster.Apply(cctx, state.Released{Node: n.o.Name, Epoch: epoch, At: time.Now()}); err != nil {
			n.log.Debug("confirm release", "epoch", epoch, "err", err)
		}
	}()
	return now.Add(confirmEvery)
}

// confirmEvery spaces the confirmations of a release.
const confirmEvery = 200 * time.Millisecond

func (n *Node) setErr(err error) {
	n.mu.Lock()
	n.lastErr = err.Error()
	n.mu.Unlock()
}

// Status is this node's view, for `tandem status`.
type Status struct {
	Holding      bool
	HeldEpoch    uint64
	LeaseValid   bool
	LastError    string
	LastChange   time.Time
	Local        NodeFacts
	Peers        map[string]PeerStatus
	LeaderView   LeaderView
	LeaderViewAt time.Time
	// HoldBack says why this node, the committed holder, does not
	// configure the IP ("" when it does or is not the holder).
	HoldBack string
	// Held is the move the DC holds back, as the DC (this node or the
	// leader whose view is fresh) reports it; nil when none.
	Held *Hold
}

// Status returns the node's current view.
func (n *Node) Status() Status {
	now := time.Now()
	st := Status{LeaseValid: n.mesh.LeaseValid(now), Local: n.localFacts(true), Peers: map[string]PeerStatus{}}
	for name := range n.mesh.Peers() {
		if f, at, ok := n.peerFacts(name, true); ok {
			st.Peers[name] = PeerStatus{Reply: f, Age: now.Sub(at)}
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	st.Holding, st.HeldEpoch, st.LastError, st.LastChange = n.holding, n.heldEpoch, n.lastErr, n.lastTrans
	st.LeaderView, st.LeaderViewAt = n.view, n.viewAt
	st.HoldBack = n.holdBack
	st.Held = n.held
	if !n.o.Cluster.IsLeader() {
		st.Held = n.leaderHeld(now)
	}
	return st
}
