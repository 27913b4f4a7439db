package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/guard"
	"github.com/tandem-ha/tandem/internal/guard/bans"
	"github.com/tandem-ha/tandem/internal/guard/nftban"
	"github.com/tandem-ha/tandem/internal/ops"
)

// guardParts are guard's running pieces on this node: the ban controller
// (every node enforces; app nodes also propose) and its kernel sets.
type guardParts struct {
	bans   *bans.Controller
	engine *guard.Engine // nil where the guard is off (a witness, [guard] enabled = false)
	ops    *ops.Guard
}

// banKernel is the kernel side of the bans: nftables in this node's
// namespace (nftban). The agent's tests put a fake in its place, so they
// never touch the host's firewall.
type banKernel interface {
	bans.Enforcer
	ops.Kernel
}

func defaultBanKernel() banKernel { return nftban.New(-1) }

// buildGuard wires the ban controller to the cluster and the kernel.
func (a *Agent) buildGuard() (*guardParts, error) {
	kernel := a.banKernel
	obs, err := newGuardMetrics(a.metrics.reg, a.machine)
	if err != nil {
		return nil, err
	}
	ctrl := bans.New(bans.Options{
		Name: a.cfg.Node.Name, Cluster: a.node, Machine: a.machine, Enforcer: kernel, Observer: obs,
		Log: a.log.With("component", "guard"),
	})
	gp := &guardParts{bans: ctrl, ops: &ops.Guard{
		Node: a.cfg.Node.Name, Role: a.cfg.Node.Role, Machine: a.machine, Bans: ctrl, Kernel: kernel,
	}}
	ecfg := a.cfg.GuardEngine()
	ctrl.SetIgnore(ecfg.Ignore)
	if a.cfg.GuardEnabled() && a.cfg.Node.Role == config.RoleApp {
		if gp.engine, err = guard.New(ecfg, a.log.With("component", "guard")); err != nil {
			return nil, err
		}
		if err := a.metrics.reg.Register(jailCollector{gp.engine}); err != nil {
			return nil, err
		}
	}
	return gp, nil
}

func (a *Agent) runGuard(g *errgroup.Group, ctx context.Context) {
	g.Go(func() error { return a.guard.bans.Run(ctx) })
	if e := a.guard.engine; e != nil {
		g.Go(func() error { return e.Run(ctx, a.guard.bans.Decide) })
		g.Go(func() error { a.ignoreMembers(ctx, e); return nil })
	}
}

// ignoreMembers keeps the engine's ignore list equal to the members'
// addresses, so a member failing logins is never even decided on (the
// controller refuses it as well).
func (a *Agent) ignoreMembers(ctx context.Context, e *guard.Engine) {
	for {
		changed := a.machine.Changed(state.MembershipDomain)
		var prefixes []netip.Prefix
		s := a.machine.View()
		for _, name := range s.Names() {
			if ap, err := netip.ParseAddrPort(s.Members[name].Address); err == nil {
				prefixes = append(prefixes, netip.PrefixFrom(ap.Addr().Unmap(), ap.Addr().Unmap().BitLen()))
			}
		}
		e.SetIgnore(prefixes)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// guardMetrics is the ban controller's Observer.
type guardMetrics struct {
	decided *prometheus.CounterVec
	latency prometheus.Histogram
	syncs   *prometheus.HistogramVec
}

func newGuardMetrics(reg *prometheus.Registry, m *state.Machine) (*guardMetrics, error) {
	gm := &guardMetrics{
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_guard_decisions_total",
			Help: "Ban decisions taken on this node, by jail and outcome (banned, already, protected, dropped, error).",
		}, []string{"jail", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tandem_guard_enforce_latency_seconds",
			Help:    "Time from a ban's decision (on any node) to its element in this node's kernel set.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}),
		syncs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tandem_guard_sync_duration_seconds",
			Help:    "Duration of each reconciliation of the kernel's ban sets with the cluster's bans, by result.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1},
		}, []string{"result"}),
	}
	active := func(v6 bool) func() float64 {
		return func() float64 {
			n := 0
			for _, b := range m.View().Guard().ActiveBans(time.Now()) {
				if b.Addr.Is6() == v6 {
					n++
				}
			}
			return float64(n)
		}
	}
	for _, c := range []prometheus.Collector{gm.decided, gm.latency, gm.syncs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tandem_guard_active_bans", Help: "Bans in force on the cluster, by address family.",
			ConstLabels: prometheus.Labels{"family": "ipv4"}}, active(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tandem_guard_active_bans", Help: "Bans in force on the cluster, by address family.",
			ConstLabels: prometheus.Labels{"family": "ipv6"}}, active(true)),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return gm, nil
}

func (gm *guardMetrics) Decided(jail, result string) { gm.decided.WithLabelValues(jail, result).Inc() }
func (gm *guardMetrics) Enforced(d time.Duration)    { gm.latency.Observe(d.Seconds()) }
func (gm *guardMetrics) Synced(d time.Duration, err error) {
	gm.syncs.WithLabelValues(map[bool]string{true: "ok", false: "error"}[err == nil]).Observe(d.Seconds())
}

// jailCollector exports the engine's per-jail counters at scrape time.
type jailCollector struct{ e *guard.Engine }

var (
	jailLines     = prometheus.NewDesc("tandem_guard_lines_total", "Log lines read by each jail's sources.", []string{"jail"}, nil)
	jailMatches   = prometheus.NewDesc("tandem_guard_failures_total", "Failures each jail counted.", []string{"jail"}, nil)
	jailIgnored   = prometheus.NewDesc("tandem_guard_ignored_total", "Failures of ignored hosts (members, ignore list) or exempted lines.", []string{"jail"}, nil)
	jailDecisions = prometheus.NewDesc("tandem_guard_jail_decisions_total", "Bans each jail decided on this node.", []string{"jail"}, nil)
	jailTracked   = prometheus.NewDesc("tandem_guard_tracked_hosts", "Hosts with failures in each jail's window now.", []string{"jail"}, nil)
)

func (jailCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jailLines, jailMatches, jailIgnored, jailDecisions, jailTracked} {
		ch <- d
	}
}

func (c jailCollector) Collect(ch chan<- prometheus.Metric) {
	for _, j := range c.e.Counters() {
		ch <- prometheus.MustNewConstMetric(jailLines, prometheus.CounterValue, float64(j.Lines), j.Jail)
		ch <- prometheus.MustNewConstMetric(jailMatches, prometheus.CounterValue, float64(j.Matches), j.Jail)
		ch <- prometheus.MustNewConstMetric(jailIgnored, prometheus.CounterValue, float64(j.Ignored), j.Jail)
		ch <- prometheus.MustNewConstMetric(jailDecisions, prometheus.CounterValue, float64(j.Decisions), j.Jail)
		ch <- prometheus.MustNewConstMetric(jailTracked, prometheus.GaugeValue, float64(j.Tracked), j.Jail)
	}
}
