package agent

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tandem-ha/tandem/internal/failover"
)

// metrics holds the agent's Prometheus metrics on a registry of its own.
type metrics struct {
	reg            *prometheus.Registry
	checkDuration  *prometheus.HistogramVec
	providerCalls  *prometheus.HistogramVec
	providerErrors *prometheus.CounterVec
	hookRuns       *prometheus.CounterVec
}

// newMetrics registers the metrics of events the agent wires (probes,
// provider calls, hooks); the state's gauges come from ops' collector.
func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
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
	}
	m.reg.MustRegister(m.checkDuration, m.providerCalls, m.providerErrors, m.hookRuns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
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

// maxMetricsConns bounds the metrics server's open connections. A scraper
// needs one, but the server answers whoever reaches it, unauthenticated:
// without a bound, 3000 idle connections in the lab each held a
// descriptor, and the agent's memory grew by 25 MB for good, until the
// header timeout closed them (security review, finding 7).
const maxMetricsConns = 64

// capListener closes the connections it accepts beyond max open ones at
// once, rather than leaving them waiting for a slot.
type capListener struct {
	net.Listener
	slots chan struct{}
}

func newCapListener(ln net.Listener, max int) *capListener {
	return &capListener{Listener: ln, slots: make(chan struct{}, max)}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &slotConn{Conn: c, free: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

// slotConn gives its slot back when closed.
type slotConn struct {
	net.Conn
	once sync.Once
	free func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.free)
	return c.Conn.Close()
}
