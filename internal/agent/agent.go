// Package agent is tandem's composition root. It turns a validated
// configuration into running parts: the raft node, the failover node with
// its provider, health checks and hooks, the local API and the metrics
// endpoint. It is the only package that imports the concrete providers.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/files"
	"github.com/tandem-ha/tandem/internal/files/rsync"
	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/hooks"
	"github.com/tandem-ha/tandem/internal/liveness"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/ops"
	"github.com/tandem-ha/tandem/internal/pki"
)

// Agent is one running tandem node.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	metrics *metrics

	machine *state.Machine
	node    *cluster.Node
	mesh    *liveness.Mesh
	fo      *failover.Node
	checks  *health.Runner
	hooks   *hooks.Runner
	ops     *ops.Service
	deliver *delivery
	harden  *hardenWatch
	files   *files.Controller // nil without [[files]]
	guard   *guardParts
	// banKernel enforces the bans (see defaultBanKernel).
	banKernel banKernel
	filesTr   *rsync.Transport
}

// InitOptions says how to found a cluster and which join tokens to print.
type (
	InitOptions = cluster.FoundOptions
	TokenSpec   = cluster.TokenSpec
	IssuedToken = cluster.IssuedToken
)

// Initialized reports whether the node with this data directory has
// founded or joined a cluster.
func Initialized(dataDir string) bool { return cluster.Initialized(dataDir) }

// Init founds a cluster of one on this node: the CA, this node's
// certificate and a join token.
func Init(ctx context.Context, cfg *config.Config, log *slog.Logger, o InitOptions) ([]IssuedToken, error) {
	if cfg.Node.Role != config.RoleApp {
		return nil, errors.New("init must run on an app node: a witness holds no CA key; run 'tandem init' on an app node and 'tandem join --witness' here")
	}
	return cluster.Found(ctx, clusterOptions(cfg, log, nil, state.New()), o)
}

// Join asks the cluster at addr to admit this node with token.
func Join(ctx context.Context, cfg *config.Config, addr, token string) error {
	return cluster.JoinAndSave(ctx, cfg.Node.DataDir, addr, token, cluster.JoinRequest{
		Name: cfg.Node.Name, Role: cfg.Node.Role, Advertise: cfg.Cluster.Advertise, Priority: cfg.Failover.Priority,
	})
}

func timing(cfg *config.Config) cluster.Timing {
	hb := cfg.Failover.HeartbeatTimeout.D()
	// Followers learn of commits at once from the barrier cluster.Apply
	// sends, so raft's idle resends of the commit index can be rare.
	return cluster.Timing{HeartbeatTimeout: hb, ElectionTimeout: hb, LeaderLeaseTimeout: hb / 2, CommitTimeout: hb}
}

func clusterOptions(cfg *config.Config, log *slog.Logger, creds *pki.Node, m *state.Machine) cluster.Options {
	return cluster.Options{
		Name: cfg.Node.Name, Role: cfg.Node.Role, DataDir: cfg.Node.DataDir,
		Listen: cfg.Cluster.Listen, Advertise: cfg.Cluster.Advertise,
		TLS: creds, Machine: m, Logger: log.With("component", "cluster"),
		Timing: timing(cfg), JoinPolicy: failover.JoinRule(cfg.VIP.Provider == config.ProviderLinux), Priority: cfg.Failover.Priority,
		StreamProtocols: []string{liveness.ALPN, liveness.ALPNv1, rsync.ALPN}, PKIDir: cluster.PKIDir(cfg.Node.DataDir),
	}
}

// New builds an agent; nothing runs until Run.
func New(cfg *config.Config, log *slog.Logger, version string) *Agent {
	return &Agent{cfg: cfg, log: log, version: version, metrics: newMetrics(), machine: state.New(), banKernel: defaultBanKernel()}
}

// Run runs the agent until ctx ends. On a node that has not been initialised
// or joined yet it waits for that first.
func (a *Agent) Run(ctx context.Context) error {
	for _, w := range a.cfg.Warnings {
		a.log.Warn("configuration", "warning", w.Error())
	}
	if err := cluster.WaitInitialized(ctx, a.cfg.Node.DataDir, a.log); err != nil {
		return err
	}
	creds, err := pki.Load(cluster.PKIDir(a.cfg.Node.DataDir))
	if err != nil {
		return fmt.Errorf("load certificates: %w", err)
	}
	marker, err := cluster.ReadMarker(a.cfg.Node.DataDir)
	if err != nil {
		return err
	}
	opts := clusterOptions(a.cfg, a.log, creds, a.machine)
	opts.JoinedPeers = marker.Peers
	opts.JoinedKeys = marker.Keys
	node, err := cluster.New(ctx, opts)
	if err != nil {
		return err
	}
	a.node = node
	if err := a.build(ctx, creds); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(sctx)
		return err
	}
	if a.deliver, err = a.buildDelivery(node); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(sctx)
		return err
	}
	a.harden = newHardenWatch(a)
	if a.guard, err = a.buildGuard(); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = node.Shutdown(sctx)
		return fmt.Errorf("guard: %w", err)
	}
	a.ops = ops.New(ops.Options{
		Node: a.cfg.Node.Name, Role: a.cfg.Node.Role, Version: a.version,
		VIPAddress: a.cfg.VIP.Address, VIPProvider: a.cfg.VIP.Provider,
		Machine: a.machine, Cluster: a.node, Failover: a.fo, Policy: policyOf(a.cfg), CA: a.node, Files: a.filesOps(),
		Harden: a.harden.Status,
		Guard:  a.guard.ops,
	})
	if err := a.metrics.reg.Register(a.ops.Collector()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	// Hooks outlive the failover node so that its last demote still runs.
	hooksCtx, stopHooks := context.WithCancel(context.WithoutCancel(ctx))
	hooksDone := make(chan error, 1)
	if a.hooks != nil {
		go func() { hooksDone <- a.hooks.Run(hooksCtx) }()
	} else {
		hooksDone <- nil
	}

	// Components run on their own context so that, on shutdown, a holder can
	// hand the IP to a standby before its loops stop.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	go func() {
		select {
		case <-ctx.Done():
			a.handOff()
			stopRun()
		case <-runCtx.Done():
		}
	}()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return a.mesh.Run(gctx) })
	g.Go(func() error { return a.fo.Run(gctx) })
	a.runDelivery(g, gctx)
	g.Go(func() error { return a.harden.Run(gctx) })
	a.runGuard(g, gctx)
	if a.files != nil {
		g.Go(func() error { return a.files.Run(gctx) })
		g.Go(func() error { return a.filesTr.Listen(gctx) })
	}
	if a.checks != nil {
		g.Go(func() error { return a.checks.Run(gctx) })
	}
	g.Go(func() error {
		return localapi.Serve(gctx, a.cfg.Cluster.Socket, a.routes(), a.log.With("component", "localapi"))
	})
	if a.cfg.Metrics.Listen != "" {
		g.Go(func() error { return a.serveMetrics(gctx) })
	}
	a.log.Info("agent running", "node", a.cfg.Node.Name, "role", a.cfg.Node.Role, "listen", a.cfg.Cluster.Listen, "version", a.version)
	err = g.Wait()

	stopHooks()
	<-hooksDone
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := node.Shutdown(sctx); serr != nil {
		a.log.Warn("raft shutdown", "err", serr)
	}
	return err
}

// routes collects the local API endpoints each capability contributes.
func (a *Agent) routes() []localapi.Route {
	return slices.Concat(a.ops.Routes(), a.deliver.ops.Routes(), a.filesOps().Routes(), a.guard.ops.Routes(), ops.DebugRoutes())
}

// policyOf is the placement policy in a node's configuration.
func policyOf(cfg *config.Config) state.Policy {
	f := cfg.Failover
	return state.Policy{Preempt: f.Preempt, Cooloff: f.Cooloff.D(),
		FailureThreshold: f.FailureThreshold, FailureWindow: f.FailureWindow.D()}
}

// handOff moves the IP to a healthy standby when this holder stops, so a
// planned restart costs no failover. It gives up after a few seconds; the
// lease then takes over.
func (a *Agent) handOff() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mv, moved, err := a.fo.HandOff(ctx, 3*time.Second)
	switch {
	case err != nil:
		a.log.Warn("could not hand the IP over before stopping", "err", err)
	case moved:
		a.log.Info("handed the IP over before stopping", "to", mv.To, "took_ms", mv.Took.Milliseconds())
	}
}

// build creates the failover node and what it needs.
func (a *Agent) build(ctx context.Context, creds *pki.Node) error {
	cfg, log := a.cfg, a.log
	var err error
	var mesh *liveness.Mesh
	var prov failover.Provider
	var fhealth failover.Health
	var events failover.Events
	var healthChanged <-chan struct{}
	if cfg.Node.Role == config.RoleApp {
		p, err := newProvider(ctx, cfg, log.With("component", "vip"))
		if err != nil {
			return err
		}
		prov = instrument(p, a.metrics)
		checks, err := health.New(healthSpecs(cfg), log.With("component", "health"), health.Options{
			OnResult: func(name string, ok bool, d time.Duration) {
				a.metrics.checkDuration.WithLabelValues(name, map[bool]string{true: "pass", false: "fail"}[ok]).Observe(d.Seconds())
			},
		})
		if err != nil {
			return fmt.Errorf("health checks: %w", err)
		}
		a.checks = checks
		fhealth = checks
		healthChanged = checks.Changes()
		units, err := hooks.NewUnits(cfg.Hooks.PrimaryUnits, log.With("component", "units"), hooks.UnitsOptions{})
		if err != nil {
			return fmt.Errorf("primary units: %w", err)
		}
		hr, err := hooks.New(log.With("component", "hooks"), hooks.Options{
			Node: cfg.Node.Name, VIP: cfg.VIP.Address,
			Promote: cfg.Hooks.Promote, Demote: cfg.Hooks.Demote, Fault: cfg.Hooks.Fault,
			Timeout: cfg.Hooks.Timeout.D(), Units: units,
			OnResult: func(ev hooks.Event, err error, d time.Duration) {
				a.metrics.hookRuns.WithLabelValues(string(ev), map[bool]string{true: "ok", false: "error"}[err == nil]).Inc()
			},
		})
		if err != nil {
			return fmt.Errorf("hooks: %w", err)
		}
		a.hooks = hr
		events = hr
	}
	var flushers []failover.Flusher
	if a.files, a.filesTr, err = a.buildFiles(creds); err != nil {
		return err
	} else if a.files != nil {
		flushers = append(flushers, a.files)
	}
	lease := cfg.Failover.Lease.D()
	mesh, err = liveness.New(liveness.Options{
		Self: cfg.Node.Name, Machine: a.machine, Tr: &liveness.StreamTransport{TLS: creds.ClientConfig(), Verify: a.node.VerifyPeerAt},
		Interval: cfg.Failover.ProbeInterval.D(), Lease: lease, Margin: max(lease/10, 50*time.Millisecond),
		Logger: log.With("component", "liveness"),
	})
	if err != nil {
		return err
	}
	fo, err := failover.New(failover.Options{
		Name: cfg.Node.Name, Role: cfg.Node.Role, Machine: a.machine,
		Cluster: clusterAdapter{a.node}, Provider: prov, Health: fhealth, HealthChanged: healthChanged, Events: events,
		Mesh: mesh, PublishPolicy: cfg.Node.Role == config.RoleApp,
		Policy:       policyOf(cfg),
		DrainTimeout: cfg.Failover.DrainTimeout.D(),
		Flushers:     flushers,
		Logger:       log.With("component", "failover"),
	})
	if err != nil {
		return err
	}
	a.mesh, a.fo = mesh, fo
	if a.files != nil {
		fo.Subscribe(a.files) // who may send changes when the IP is configured or released
		if err := mesh.Contribute(liveness.Source{Name: files.FactName, Value: a.files.Fact}); err != nil {
			return err
		}
	}
	a.node.HandleConn(liveness.ALPN, mesh.ServeConn)
	a.node.HandleConn(liveness.ALPNv1, mesh.ServeConnV1)
	return nil
}

func healthSpecs(cfg *config.Config) []health.Check {
	out := make([]health.Check, 0, len(cfg.Health))
	for _, h := range cfg.Health {
		out = append(out, health.Check{
			Name: h.Name, Type: h.Type, Target: h.Target, Status: h.Status, Body: h.Body,
			JSONPath: h.JSONPath, JSONWant: h.JSONWant, Command: h.Command, Unit: h.Unit,
			Interval: h.Interval.D(), Timeout: h.Timeout.D(), Rise: h.Rise, Fall: h.Fall,
		})
	}
	return out
}

type clusterAdapter struct{ n *cluster.Node }

func (c clusterAdapter) Apply(ctx context.Context, cmd state.Command) error {
	return c.n.Apply(ctx, cmd)
}
func (c clusterAdapter) IsLeader() bool           { return c.n.IsLeader() }
func (c clusterAdapter) Term() uint64             { return c.n.Term() }
func (c clusterAdapter) Leader() (string, string) { return c.n.Leader() }
func (c clusterAdapter) TransferLeadership(ctx context.Context, to string) error {
	return c.n.TransferLeadership(ctx, to)
}
func (c clusterAdapter) LeadershipChanged() <-chan struct{} { return c.n.LeadershipChanged() }

func (a *Agent) serveMetrics(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	// Timeouts close idle and slow clients, and the listener takes only
	// maxMetricsConns at a time, so unauthenticated connections cannot pile
	// up (security review, finding 7).
	srv := &http.Server{Addr: a.cfg.Metrics.Listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	ln, err := net.Listen("tcp", a.cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics: %w (set metrics.listen to a free port, or \"\" to disable)", err)
	}
	if err := srv.Serve(newCapListener(ln, maxMetricsConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
