package ops

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/failover"
)

// Collector exports the cluster's state at scrape time, so an idle agent
// runs no loop to keep gauges fresh.
type Collector struct {
	s       *Service
	started time.Time

	info, raftState, raftContact, raftTerm *prometheus.Desc
	held, epoch, lease, checkUp            *prometheus.Desc
	undecodable                            *prometheus.Desc
	failures, penalised, penalisedUntil    *prometheus.Desc
	moveHeld, moveHeldUntil                *prometheus.Desc
	caRotation, caCertExpiry               *prometheus.Desc
	moves                                  *prometheus.CounterVec

	mu        sync.Mutex
	seenMoves uint64 // the highest move epoch counted
}

// Collector returns the Service's Prometheus collector.
func (s *Service) Collector() *Collector {
	return &Collector{
		s: s, started: s.o.Now(),
		info:           prometheus.NewDesc("tandem_node_info", "Always 1; labels carry the node's name, role and version.", []string{"node", "role", "version"}, nil),
		raftState:      prometheus.NewDesc("tandem_raft_state", "1 for this node's current raft state.", []string{"state"}, nil),
		raftContact:    prometheus.NewDesc("tandem_raft_last_contact_seconds", "Time since this node last heard from the raft leader (0 on the leader).", nil, nil),
		raftTerm:       prometheus.NewDesc("tandem_raft_term", "Current raft term.", nil, nil),
		held:           prometheus.NewDesc("tandem_vip_held", "1 when the floating IP is configured on this node.", nil, nil),
		epoch:          prometheus.NewDesc("tandem_holder_epoch", "Epoch of the committed holder (a fencing token).", nil, nil),
		lease:          prometheus.NewDesc("tandem_lease_valid", "1 when this node has a quorum lease.", nil, nil),
		undecodable:    prometheus.NewDesc("tandem_state_undecodable_entries", "Committed entries this node's tandem could not apply (it is older than the cluster's): above 0, upgrade it.", nil, nil),
		checkUp:        prometheus.NewDesc("tandem_health_check_up", "1 when a health check passes (after rise/fall).", []string{"check"}, nil),
		failures:       prometheus.NewDesc("tandem_node_failures", "Each app node's failures (moves away from it, unhealthy or lost) within the failure window.", []string{"node"}, nil),
		penalised:      prometheus.NewDesc("tandem_node_penalised", "1 when an app node is at or over the failure threshold and not chosen as a target.", []string{"node"}, nil),
		penalisedUntil: prometheus.NewDesc("tandem_node_penalised_until_seconds", "Unix time at which a penalised node's penalty lapses (0 when not penalised).", []string{"node"}, nil),
		moveHeld:       prometheus.NewDesc("tandem_move_held", "1 for the reason placement holds a move off an unhealthy holder back (cooloff, backoff, no_standby).", []string{"kind"}, nil),
		moveHeldUntil:  prometheus.NewDesc("tandem_move_held_until_seconds", "Unix time until which the held move waits (0 when none, or until a standby is healthy).", nil, nil),
		caRotation:     prometheus.NewDesc("tandem_ca_rotation_phase", "1 for the phase of the CA rotation in progress (trust, reissue); every phase 0 when none.", []string{"phase"}, nil),
		caCertExpiry:   prometheus.NewDesc("tandem_node_certificate_expiry_seconds", "Unix time at which this node's certificate expires (it renews itself a third of its life before).", nil, nil),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_moves_total", Help: "Moves of the floating IP committed while this agent ran, by reason.",
		}, []string{"reason"}),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.raftState, c.raftContact, c.raftTerm, c.held, c.epoch, c.lease, c.checkUp, c.undecodable,
		c.failures, c.penalised, c.penalisedUntil, c.moveHeld, c.moveHeldUntil, c.caRotation, c.caCertExpiry} {
		ch <- d
	}
	c.moves.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	o := c.s.o
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.info, 1, o.Node, o.Role, o.Version)
	rs := o.Cluster.RaftStats()
	for _, name := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
		gauge(c.raftState, b2f(rs.State == name), name)
	}
	contact := 0.0
	if !rs.LastContact.IsZero() {
		contact = o.Now().Sub(rs.LastContact).Seconds()
	}
	gauge(c.raftContact, contact)
	gauge(c.raftTerm, float64(rs.Term))
	st := o.Machine.View()
	gauge(c.epoch, float64(st.Holder.Epoch))
	undecodable, _ := o.Machine.Undecodable()
	gauge(c.undecodable, float64(undecodable))
	fs := o.Failover.Status()
	gauge(c.held, b2f(fs.Holding))
	gauge(c.lease, b2f(fs.LeaseValid))
	for _, ck := range fs.Local.Checks {
		gauge(c.checkUp, b2f(ck.Healthy), ck.Name)
	}
	now := o.Now()
	for node, f := range failover.NodeFailures(now, st, failover.EffectivePolicy(st, o.Policy)) {
		gauge(c.failures, float64(f.Count), node)
		gauge(c.penalised, b2f(f.Penalised), node)
		until := 0.0
		if f.Penalised {
			until = float64(f.Until.Unix())
		}
		gauge(c.penalisedUntil, until, node)
	}
	for _, kind := range []string{failover.HoldCooloff, failover.HoldBackoff, failover.HoldNoStandby} {
		gauge(c.moveHeld, b2f(fs.Held != nil && fs.Held.Kind == kind), kind)
	}
	heldUntil := 0.0
	if fs.Held != nil && !fs.Held.Until.IsZero() {
		heldUntil = float64(fs.Held.Until.Unix())
	}
	gauge(c.moveHeldUntil, heldUntil)
	for _, phase := range []string{state.PhaseTrust, state.PhaseReissue} {
		gauge(c.caRotation, b2f(st.Rotation != nil && st.Rotation.Phase == phase), phase)
	}
	if o.CA != nil {
		gauge(c.caCertExpiry, float64(o.CA.Credentials().Current().Leaf.NotAfter.Unix()))
	}
	c.mu.Lock()
	// Every node sees the same committed moves, so every agent's counter
	// agrees; moves replayed from the log at start-up are history.
	for _, mv := range st.Moves {
		if mv.Epoch > c.seenMoves && mv.DecidedAt.After(c.started) {
			c.moves.WithLabelValues(mv.Reason).Inc()
			c.seenMoves = mv.Epoch
		}
	}
	c.mu.Unlock()
	c.moves.Collect(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
