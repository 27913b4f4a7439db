package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/internal/cluster/state"
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
	Term() uint64
	TransferLeadership(ctx context.Context, to string) error
}

// Health reports the local checks.
type Health interface {
	Report() (healthy bool, unhealthyFor time.Duration, checks []CheckStatus)
}

// Events receives holder transitions, for hooks and primary units. Calls
// must return quickly; implementations queue the work and keep its order.
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
	Events        Events // may be nil
	Tr            Transport
	// Policy is this node's configured placement policy; the DC uses it
	// only until the app nodes publish the cluster's (state.SetPolicy).
	Policy state.Policy
	// Lease is how long a node keeps the IP without a majority's answers.
	Lease time.Duration
	// Margin is added to Lease before the DC declares a silent holder dead.
	Margin        time.Duration
	ProbeInterval time.Duration
	// DrainTimeout bounds how long a planned move waits for connections in
	// flight to finish (see Drainer); 0 releases at once.
	DrainTimeout time.Duration
	Logger       *slog.Logger
}

// Node runs the mesh, the DC loop and, on app nodes, the holder loop.
type Node struct {
	o    Options
	mesh *Mesh
	log  *slog.Logger
	kick chan struct{}
	ctrl chan struct{} // wakes the DC loop: a peer's health or holding changed

	mu          sync.Mutex
	view        LeaderView // the leader's view from the reply to our latest probe
	viewAt      time.Time  // when that probe was sent
	seenEpoch   uint64     // the newest epoch any leader view has named
	holding     bool
	heldEpoch   uint64
	lastErr     string
	lastTrans   time.Time
	held        *Hold // the move the DC holds back now; nil when none or not the DC
	releasedAt  map[uint64]time.Time
	started     time.Time
	everHealthy bool
	// After a failed acquire, wait before the next try (doubling, capped).
	retryAt time.Time
	backoff time.Duration
}

// New builds a Node.
func New(o Options) (*Node, error) {
	if o.Role == state.RoleApp && o.Provider == nil {
		return nil, errors.New("failover: app node needs a provider")
	}
	if o.Margin == 0 {
		o.Margin = 50 * time.Millisecond
	}
	n := &Node{o: o, log: o.Logger, kick: make(chan struct{}, 1), ctrl: make(chan struct{}, 1), releasedAt: map[uint64]time.Time{}, started: time.Now()}
	n.mesh = NewMesh(MeshOptions{
		Self: o.Name, Machine: o.Machine, Tr: o.Tr, Local: n.localReply,
		Leader: n.leaderView, OnLeader: n.onLeaderView, OnPeerChange: n.pokeController,
		Interval: o.ProbeInterval, Lease: o.Lease, Margin: o.Margin, Logger: o.Logger,
	})
	return n, nil
}

// Mesh returns the node's mesh, whose HandleProbe serves peers.
func (n *Node) Mesh() *Mesh { return n.mesh }

// Run runs every loop until ctx ends, then drops the IP.
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
	g.Go(func() error { return n.mesh.Run(ctx) })
	g.Go(func() error { return n.controllerLoop(ctx) })
	if n.o.Role == state.RoleApp {
		g.Go(func() error { return n.holderLoop(ctx) })
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

func (n *Node) localReply() ProbeReply {
	r := ProbeReply{Role: n.o.Role, Healthy: true}
	if n.o.Health != nil {
		var d time.Duration
		r.Healthy, d, r.Checks = n.o.Health.Report()
		r.UnhealthyForMs = d.Milliseconds()
	}
	if n.o.Role == state.RoleWitness {
		r.Healthy = false // a witness never serves
	}
	n.mu.Lock()
	r.Holding = n.holding
	if r.Healthy {
		n.everHealthy = true
	}
	r.Starting = n.o.Role == state.RoleApp && !r.Healthy && !n.everHealthy && time.Since(n.started) < StartupGrace
	n.mu.Unlock()
	r.Epoch = n.o.Machine.View().Holder.Epoch
	return r
}

func (n *Node) leaderView() *LeaderView {
	if !n.o.Cluster.IsLeader() {
		return nil
	}
	h := n.o.Machine.View().Holder
	n.mu.Lock()
	held := n.held
	n.mu.Unlock()
	return &LeaderView{Term: n.o.Cluster.Term(), Holder: h.Node, Epoch: h.Epoch, Active: h.Active, Held: held}
}

func (n *Node) onLeaderView(from string, v LeaderView, sent time.Time) {
	n.mu.Lock()
	if v.Epoch > n.seenEpoch {
		n.seenEpoch = v.Epoch
	}
	// Only a reply confirms, and only one to a newer request than the last.
	if !sent.IsZero() && sent.After(n.viewAt) {
		n.view, n.viewAt = v, sent
	}
	n.mu.Unlock()
	n.poke()
}

func (n *Node) poke()           { wake(n.kick) }
func (n *Node) pokeController() { wake(n.ctrl) }

// controllerLoop makes placement decisions while this node is the raft leader.
func (n *Node) controllerLoop(ctx context.Context) error {
	t := time.NewTicker(n.o.ProbeInterval / 2)
	defer t.Stop()
	var lastTransfer time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.o.Machine.Changed():
		case <-n.ctrl:
		}
		if !n.o.Cluster.IsLeader() {
			n.setHeld(nil)
			continue
		}
		now := time.Now()
		s := n.o.Machine.View()
		views := n.mesh.Views(now, s.Holder.Epoch)
		d := Decide(now, s, views, n.o.Policy)
		if d != nil && d.Cmd == nil {
			n.setHeld(d.Held)
			d = nil
		} else {
			n.setHeld(nil)
		}
		if d != nil {
			n.log.Info("placement decision", "reason", d.Reason, "command", d.Cmd.Type())
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := n.o.Cluster.Apply(actx, d.Cmd)
			cancel()
			if err != nil && !errors.Is(err, state.ErrStaleEpoch) {
				n.log.Warn("commit placement", "err", err)
			}
			if err == nil {
				n.mesh.Kick() // tell the new holder now, not at the next probe
			}
			continue
		}
		// Keep the DC off the holder: if the holder lost power while leading,
		// an election would add to the failover time.
		if s.Holder.Node == n.o.Name && now.Sub(lastTransfer) > time.Second {
			if to := n.transferTarget(s, views); to != "" {
				lastTransfer = now
				n.log.Info("moving raft leadership off the IP holder", "to", to)
				if err := n.o.Cluster.TransferLeadership(ctx, to); err != nil {
					// A node that just joined may not be a voter yet; retry soon.
					n.log.Info("leadership transfer failed; will retry", "to", to, "err", err)
				}
			}
		}
	}
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

func (n *Node) transferTarget(s state.Snapshot, views map[string]NodeView) string {
	best := ""
	for _, name := range s.Voters() {
		if name == n.o.Name || !views[name].Reachable {
			continue
		}
		if s.Members[name].Role == state.RoleWitness {
			return name
		}
		if best == "" {
			best = name
		}
	}
	return best
}

// holderLoop configures or drops the IP to match committed state, the
// leader's confirmation and the lease.
func (n *Node) holderLoop(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	defer n.dropOnExit()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.kick:
		case <-n.o.Machine.Changed():
		}
		n.reconcile(ctx, time.Now())
	}
}

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
	if n.o.Events != nil {
		n.o.Events.Demote(epoch)
	}
}

func (n *Node) reconcile(ctx context.Context, now time.Time) {
	h := n.o.Machine.View().Holder
	lease := n.mesh.LeaseValid(now)
	n.mu.Lock()
	view, viewAt, holding, seen := n.view, n.viewAt, n.holding, n.seenEpoch
	n.mu.Unlock()
	if lv := n.leaderView(); lv != nil {
		view, viewAt = *lv, now // the leader confirms to itself
	}
	fresh := now.Sub(viewAt) < n.o.Lease
	confirmed := fresh && view.Holder == n.o.Name && view.Epoch == h.Epoch && view.Active
	// Our log lags behind a move we heard of: whatever it says, we are not
	// the holder of the newest epoch.
	contradicted := seen > h.Epoch
	mine := h.Node == n.o.Name && h.Active

	switch {
	case holding && (!mine || !lease || contradicted):
		reason := "holder moved"
		if !lease {
			reason = "lost quorum lease"
		}
		if lease && !contradicted && h.Drain && !h.Active && h.Previous == n.o.Name && h.Node != n.o.Name {
			n.drain(ctx, h.Epoch)
			if lease = n.mesh.LeaseValid(time.Now()); !lease {
				reason = "lost quorum lease" // while draining: a fault after all
			}
		}
		n.release(ctx, reason, !lease)
	case !holding && mine && lease && confirmed && !contradicted && !now.Before(n.retryAt):
		n.acquire(ctx, h.Epoch)
	case !holding && mine && !confirmed && !contradicted:
		// Ask the leader now rather than at the next interval.
		n.mesh.Kick()
	}
	// Confirm our release of an older epoch so a pending move activates now
	// rather than after our lease would have run out.
	if !holding && h.Previous == n.o.Name && h.Node != n.o.Name && !h.Active {
		n.confirmRelease(ctx, h.Epoch, now)
	}
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
	if n.o.Events != nil {
		n.o.Events.Promote(epoch)
	}
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
	if n.o.Events != nil {
		if fault {
			n.o.Events.Fault(epoch, reason)
		} else {
			n.o.Events.Demote(epoch)
		}
	}
	n.poke()
}

func (n *Node) confirmRelease(ctx context.Context, epoch uint64, now time.Time) {
	n.mu.Lock()
	last := n.releasedAt[epoch]
	if now.Sub(last) < 200*time.Millisecond {
		n.mu.Unlock()
		return
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
}

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
	Local        ProbeReply
	Peers        map[string]PeerStatus
	LeaderView   LeaderView
	LeaderViewAt time.Time
	// Held is the move the DC holds back, as the DC (this node or the
	// leader whose view is fresh) reports it; nil when none.
	Held *Hold
}

// Status returns the node's current view.
func (n *Node) Status() Status {
	now := time.Now()
	st := Status{LeaseValid: n.mesh.LeaseValid(now), Local: n.localReply(), Peers: n.mesh.PeerReplies(now)}
	st.Local.Node = n.o.Name
	n.mu.Lock()
	defer n.mu.Unlock()
	st.Holding, st.HeldEpoch, st.LastError, st.LastChange = n.holding, n.heldEpoch, n.lastErr, n.lastTrans
	st.LeaderView, st.LeaderViewAt = n.view, n.viewAt
	if n.o.Cluster.IsLeader() {
		st.Held = n.held
	} else if now.Sub(n.viewAt) < 2*time.Second {
		st.Held = n.view.Held
	}
	return st
}
