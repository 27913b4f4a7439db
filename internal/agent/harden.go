package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/harden"
	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/firewall"
	"github.com/tandem-ha/tandem/internal/harden/integrity"
	"github.com/tandem-ha/tandem/internal/harden/sshd"
	"github.com/tandem-ha/tandem/internal/harden/updates"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// HardenAreas builds the baseline areas the policy asks for, in audit
// order; members are the cluster's addresses the firewall lets reach the
// cluster port. The CLI and the agent's periodic audit share it.
func HardenAreas(cfg *config.Config, members []netip.Addr, run harden.Runner, log *slog.Logger) []harden.Area {
	var areas []harden.Area
	if cfg.Harden.FirewallEnabled() {
		areas = append(areas, firewall.New(FirewallOptions(cfg, members), run))
	}
	return append(areas,
		sshd.New(sshd.Options{Port: cfg.Harden.SSHPort, Run: run.Run, Log: log}),
		updates.New(updates.Options{Run: run.Run, Log: log}),
		integrity.New(integrity.Options{Run: run.Run, Log: log}),
	)
}

// FirewallOptions is the firewall's policy from the configuration.
func FirewallOptions(cfg *config.Config, members []netip.Addr) firewall.Options {
	h := cfg.Harden
	o := firewall.Options{
		SSHPort: h.SSHPort, AdminCIDRs: h.AdminPrefixes(), OpenPorts: h.OpenPorts,
		Members: members, JoinCIDRs: h.JoinPrefixes(), MetricsCIDRs: h.MetricsPrefixes(),
		MembersFile: cfg.Node.DataDir + "/harden/fw-members.nft",
	}
	if ap, err := netip.ParseAddrPort(cfg.Cluster.Listen); err == nil {
		o.ClusterPort = int(ap.Port())
	}
	o.MetricsPort = exposedPort(cfg.Metrics.Listen)
	return o
}

// exposedPort is listen's port when it listens beyond loopback, else 0.
func exposedPort(listen string) int {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || listen == "" {
		return 0
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() || host == "localhost" {
		return 0
	}
	p, _ := strconv.Atoi(port)
	return p
}

// MemberAddrs are the members' IP addresses (pending ones included: a
// joining node dials in as soon as its join commits).
func MemberAddrs(members map[string]state.Member) []netip.Addr {
	var out []netip.Addr
	for _, m := range members {
		if ap, err := netip.ParseAddrPort(m.Address); err == nil {
			out = append(out, ap.Addr().Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// hardenAuditEvery is how often the agent audits the baseline for the
// metric and 'tandem status'; the checks read a few commands' output.
const hardenAuditEvery = time.Hour

// hardenWatch keeps the firewall's members set current and the last
// audit's summary for status and metrics.
type hardenWatch struct {
	a      *Agent
	run    harden.Runner
	gauge  *prometheus.GaugeVec
	mu     sync.Mutex
	last   *localapi.HardenStatus
	audit  chan struct{}
	synced []netip.Addr
}

func newHardenWatch(a *Agent) *hardenWatch {
	w := &hardenWatch{a: a, run: harden.ExecRunner{}, audit: make(chan struct{}, 1),
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_harden_failing_checks",
			Help: "Baseline checks failing at the agent's last audit (hourly; 'tandem harden audit' shows them), by area.",
		}, []string{"area"})}
	a.metrics.reg.MustRegister(w.gauge)
	return w
}

// Status is the last audit's summary; nil before the first.
func (w *hardenWatch) Status() *localapi.HardenStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *hardenWatch) Run(ctx context.Context) error {
	log := w.a.log.With("component", "harden")
	fw := firewall.Members{File: w.a.cfg.Node.DataDir + "/harden/fw-members.nft", Run: w.run}
	first := time.NewTimer(30 * time.Second)
	defer first.Stop()
	tick := time.NewTicker(hardenAuditEvery)
	defer tick.Stop()
	for {
		changed := w.a.machine.Changed(state.MembershipDomain)
		members := MemberAddrs(w.a.machine.View().Members)
		if w.a.cfg.Harden.FirewallEnabled() && !slices.Equal(members, w.synced) {
			if err := fw.Sync(ctx, members); err != nil {
				log.Warn("firewall members set not updated", "err", err)
			} else {
				log.Info("firewall members set updated", "members", len(members))
				w.synced = members
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-first.C:
			w.runAudit(ctx, members)
		case <-tick.C:
			w.runAudit(ctx, members)
		}
	}
}

func (w *hardenWatch) runAudit(ctx context.Context, members []netip.Addr) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	w.record(harden.Audit(actx, HardenAreas(w.a.cfg, members, w.run, w.a.log.With("component", "harden")), w.a.cfg.Harden.Skip), time.Now())
}

// record publishes an audit's summary to the metric and to status.
func (w *hardenWatch) record(r harden.Report, at time.Time) {
	st := &localapi.HardenStatus{CheckedAt: at, Passed: r.Passed, Failed: r.Failed, Skipped: r.Skipped, Errors: r.Errors, FailedByArea: r.FailedByArea()}
	for _, f := range r.Findings {
		if f.Status == check.Fail || f.Status == check.Error {
			st.Failing = append(st.Failing, f.ID)
		}
	}
	for area, n := range st.FailedByArea {
		w.gauge.WithLabelValues(area).Set(float64(n))
	}
	w.mu.Lock()
	w.last = st
	w.mu.Unlock()
}
