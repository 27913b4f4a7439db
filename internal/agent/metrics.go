package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/failover"
)

// metrics holds the agent's Prometheus metrics on a registry of its own.
type metrics struct {
	reg            *prometheus.Registry
	info           *prometheus.GaugeVec
	raftState      *prometheus.GaugeVec
	raftContact    prometheus.Gauge
	raftTerm       prometheus.Gauge
	isHolder       prometheus.Gauge
	holderEpoch    prometheus.Gauge
	leaseValid     prometheus.Gauge
	moves          *prometheus.CounterVec
	checkUp        *prometheus.GaugeVec
	checkDuration  *prometheus.HistogramVec
	providerCalls  *prometheus.HistogramVec
	providerErrors *prometheus.CounterVec
	hookRuns       *prometheus.CounterVec
	failures       *prometheus.GaugeVec
	penalised      *prometheus.GaugeVec
	penalisedUntil *prometheus.GaugeVec
	moveHeld       *prometheus.GaugeVec
	moveHeldUntil  prometheus.Gauge
	seenMoves      uint64 // highest move epoch counted
	started        time.Time
}

func newMetrics() *metrics {
	m := &metrics{
		reg:     prometheus.NewRegistry(),
		started: time.Now(),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_node_info", Help: "Always 1; labels carry the node's name, role and version.",
		}, []string{"node", "role", "version"}),
		raftState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_raft_state", Help: "1 for this node's current raft state.",
		}, []string{"state"}),
		raftContact: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_raft_last_contact_seconds", Help: "Time since this node last heard from the raft leader (0 on the leader).",
		}),
		raftTerm: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_raft_term", Help: "Current raft term.",
		}),
		isHolder: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_vip_held", Help: "1 when the floating IP is configured on this node.",
		}),
		holderEpoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_holder_epoch", Help: "Epoch of the committed holder (a fencing token).",
		}),
		leaseValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_lease_valid", Help: "1 when this node has a quorum lease.",
		}),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_moves_total", Help: "Moves of the floating IP committed while this agent ran, by reason.",
		}, []string{"reason"}),
		checkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_health_check_up", Help: "1 when a health check passes (after rise/fall).",
		}, []string{"check"}),
		checkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_health_check_duration_seconds", Help: "Duration of each health probe.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 5},
		}, []string{"check", "result"}),
		providerCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_provider_call_duration_seconds", Help: "Latency of floating-IP provider calls.",
			Buckets: []float64{.001, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"op"}),
		providerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_provider_errors_total", Help: "Failed floating-IP provider calls.",
		}, []string{"op"}),
		hookRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_hook_runs_total", Help: "Hook runs by event and result.",
		}, []string{"event", "result"}),
		failures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_node_failures", Help: "Each app node's failures (moves away from it, unhealthy or lost) within the failure window.",
		}, []string{"node"}),
		penalised: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_node_penalised", Help: "1 when an app node is at or over the failure threshold and not chosen as a target.",
		}, []string{"node"}),
		penalisedUntil: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_node_penalised_until_seconds", Help: "Unix time at which a penalised node's penalty lapses (0 when not penalised).",
		}, []string{"node"}),
		moveHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_move_held", Help: "1 for the reason placement holds a move off an unhealthy holder back (cooloff, backoff, no_standby).",
		}, []string{"kind"}),
		moveHeldUntil: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tandem_move_held_until_seconds", Help: "Unix time until which the held move waits (0 when none, or until a standby is healthy).",
		}),
	}
	m.reg.MustRegister(m.info, m.raftState, m.raftContact, m.raftTerm, m.isHolder, m.holderEpoch,
		m.leaseValid, m.moves, m.checkUp, m.checkDuration, m.providerCalls, m.providerErrors, m.hookRuns,
		m.failures, m.penalised, m.penalisedUntil, m.moveHeld, m.moveHeldUntil,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeMoves counts moves decided since the agent started. Every node
// sees the same committed moves, so every agent's counter agrees; moves
// replayed from the log at start-up are history, not counted.
func (m *metrics) observeMoves(s state.Snapshot) {
	for _, mv := range s.Moves {
		if mv.Epoch > m.seenMoves && mv.DecidedAt.After(m.started) {
			m.moves.WithLabelValues(mv.Reason).Inc()
			m.seenMoves = mv.Epoch
		}
	}
}

// observeFailures sets the failure and hold gauges; every node computes
// the counts alike from the replicated state, and learns the hold from the
// DC.
func (m *metrics) observeFailures(now time.Time, s state.Snapshot, p state.Policy, held *failover.Hold) {
	m.failures.Reset()
	m.penalised.Reset()
	m.penalisedUntil.Reset()
	for node, f := range failover.NodeFailures(now, s, failover.EffectivePolicy(s, p)) {
		m.failures.WithLabelValues(node).Set(float64(f.Count))
		m.penalised.WithLabelValues(node).Set(b2f(f.Penalised))
		until := 0.0
		if f.Penalised {
			until = float64(f.Until.Unix())
		}
		m.penalisedUntil.WithLabelValues(node).Set(until)
	}
	for _, kind := range []string{failover.HoldCooloff, failover.HoldBackoff, failover.HoldNoStandby} {
		m.moveHeld.WithLabelValues(kind).Set(b2f(held != nil && held.Kind == kind))
	}
	until := 0.0
	if held != nil && !held.Until.IsZero() {
		until = float64(held.Until.Unix())
	}
	m.moveHeldUntil.Set(until)
}

// instrument wraps a floating-IP provider with latency and error metrics,
// keeping the optional abilities (failover.Drainer) it has.
func instrument(p failover.Provider, m *metrics) failover.Provider {
	ip := instrumentedProvider{p: p, m: m}
	if d, ok := p.(failover.Drainer); ok {
		return instrumentedDrainer{instrumentedProvider: ip, d: d}
	}
	return ip
}

// instrumentedDrainer is an instrumentedProvider whose provider can drain.
type instrumentedDrainer struct {
	instrumentedProvider
	d failover.Drainer
}

func (ip instrumentedDrainer) StopNew(ctx context.Context) error {
	start := time.Now()
	err := ip.d.StopNew(ctx)
	ip.observe("stop_new", start, err)
	return err
}

func (ip instrumentedDrainer) InFlight(ctx context.Context) (int, error) { return ip.d.InFlight(ctx) }

// instrumentedProvider wraps a floating-IP provider with latency and error metrics.
type instrumentedProvider struct {
	p interface {
		Acquire(ctx context.Context) error
		Release(ctx context.Context) error
		Held(ctx context.Context) (bool, error)
	}
	m *metrics
}

func (ip instrumentedProvider) observe(op string, start time.Time, err error) {
	ip.m.providerCalls.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		ip.m.providerErrors.WithLabelValues(op).Inc()
	}
}

func (ip instrumentedProvider) Acquire(ctx context.Context) error {
	start := time.Now()
	err := ip.p.Acquire(ctx)
	ip.observe("acquire", start, err)
	return err
}

func (ip instrumentedProvider) Release(ctx context.Context) error {
	start := time.Now()
	err := ip.p.Release(ctx)
	ip.observe("release", start, err)
	return err
}

func (ip instrumentedProvider) Held(ctx context.Context) (bool, error) {
	start := time.Now()
	held, err := ip.p.Held(ctx)
	ip.observe("held", start, err)
	return held, err
}
