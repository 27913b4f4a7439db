// Package agent is tandem's composition root. It turns a validated
// configuration into running parts: the raft node, the failover node with
// its provider, health checks and hooks, the local API and the metrics
// endpoint. It is the only package that imports the concrete providers.
package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/hooks"
	"github.com/tandem-ha/tandem/internal/localapi"
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
	fo      *failover.Node
	checks  *health.Runner
	hooks   *hooks.Runner
}

// markerFile records that this node was initialised or joined; the agent
// waits for it so that a package install can start the service before the
// operator runs 'tandem init' or 'tandem join'.
const markerFile = "cluster.json"

type marker struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Created  time.Time `json:"created"`
	Founder  bool      `json:"founder"`
	JoinedAt string    `json:"joined_via,omitempty"`
}

func pkiDir(cfg *config.Config) string { return filepath.Join(cfg.Node.DataDir, "pki") }

// Initialized reports whether this node has been initialised or has joined.
func Initialized(cfg *config.Config) bool {
	_, err := os.Stat(filepath.Join(cfg.Node.DataDir, markerFile))
	return err == nil
}

func writeMarker(cfg *config.Config, m marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFileAtomic(filepath.Join(cfg.Node.DataDir, markerFile), append(b, '\n'), 0o600)
}

func timing(cfg *config.Config) cluster.Timing {
	hb := cfg.Failover.HeartbeatTimeout.D()
	return cluster.Timing{HeartbeatTimeout: hb, ElectionTimeout: hb, LeaderLeaseTimeout: hb / 2, CommitTimeout: 20 * time.Millisecond}
}

// joinPolicy refuses a cluster of exactly two voters that are both app nodes
// when the IP is on-link: with two voters neither side of a partition has a
// majority, and there is no provider to arbitrate.
func joinPolicy(cfg *config.Config) func([]state.Member, state.Member) error {
	return func(current []state.Member, joining state.Member) error {
		if cfg.VIP.Provider != config.ProviderLinux {
			return nil
		}
		all := append(append([]state.Member(nil), current...), joining)
		apps := 0
		for _, m := range all {
			if m.Role == state.RoleApp {
				apps++
			}
		}
		if len(all) == 2 && apps == 2 {
			return errors.New("a cluster of two app nodes and no witness has no fault tolerance, and an on-link VIP " +
				"has no provider to break ties; join a witness first ('tandem join --witness' on a small third machine), then this node")
		}
		return nil
	}
}

func ips(advertise string) []netip.Addr {
	if ap, err := netip.ParseAddrPort(advertise); err == nil {
		return []netip.Addr{ap.Addr()}
	}
	return nil
}

// InitOptions configures Init.
type InitOptions struct {
	TokenTTL  time.Duration
	TokenUses int // 0: unlimited until expiry
}

// Init creates the cluster CA and this node's certificate, bootstraps a
// cluster of one and returns a join token.
func Init(ctx context.Context, cfg *config.Config, log *slog.Logger, o InitOptions) (pki.Token, error) {
	if Initialized(cfg) {
		return pki.Token{}, fmt.Errorf("%s is already part of a cluster (%s exists); to start over, stop the agent and remove %s",
			cfg.Node.Name, filepath.Join(cfg.Node.DataDir, markerFile), cfg.Node.DataDir)
	}
	if cfg.Node.Role != config.RoleApp {
		return pki.Token{}, errors.New("init must run on an app node: a witness holds no CA key; run 'tandem init' on an app node and 'tandem join --witness' here")
	}
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	creds, err := ca.Issue(cfg.Node.Name, ips(cfg.Cluster.Advertise), now)
	if err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	if err := os.MkdirAll(cfg.Node.DataDir, 0o700); err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	if err := creds.Save(pkiDir(cfg)); err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	node, err := cluster.New(ctx, clusterOptions(cfg, log, creds, state.New()))
	if err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	tok, err := bootstrap(ctx, node, o)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := node.Shutdown(sctx); err == nil && serr != nil {
		err = fmt.Errorf("init: stop raft: %w", serr)
	}
	if err != nil {
		return pki.Token{}, err
	}
	// The marker comes last: a waiting agent starts as soon as it appears,
	// and must find the raft store closed.
	if err := writeMarker(cfg, marker{Name: cfg.Node.Name, Role: cfg.Node.Role, Created: now, Founder: true}); err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	return tok, nil
}

func bootstrap(ctx context.Context, node *cluster.Node, o InitOptions) (pki.Token, error) {
	if err := node.Bootstrap(ctx); err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	uses := o.TokenUses
	if uses == 0 {
		uses = -1
	}
	tok, err := node.CreateToken(ctx, o.TokenTTL, uses)
	if err != nil {
		return pki.Token{}, fmt.Errorf("init: %w", err)
	}
	return tok, nil
}

// Join asks the cluster at addr to admit this node with token.
func Join(ctx context.Context, cfg *config.Config, log *slog.Logger, addr, token string) error {
	if Initialized(cfg) {
		return fmt.Errorf("%s is already part of a cluster (%s exists); run 'tandem leave' first, or remove %s to start over",
			cfg.Node.Name, filepath.Join(cfg.Node.DataDir, markerFile), cfg.Node.DataDir)
	}
	res, err := cluster.Join(ctx, addr, token, cluster.JoinRequest{
		Name: cfg.Node.Name, Role: cfg.Node.Role, Advertise: cfg.Cluster.Advertise, IPs: ips(cfg.Cluster.Advertise),
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Node.DataDir, 0o700); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := res.Credentials.Save(pkiDir(cfg)); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	return writeMarker(cfg, marker{Name: cfg.Node.Name, Role: cfg.Node.Role, Created: time.Now(), JoinedAt: addr})
}

func clusterOptions(cfg *config.Config, log *slog.Logger, creds *pki.Node, m *state.Machine) cluster.Options {
	return cluster.Options{
		Name: cfg.Node.Name, Role: cfg.Node.Role, DataDir: cfg.Node.DataDir,
		Listen: cfg.Cluster.Listen, Advertise: cfg.Cluster.Advertise,
		TLS: creds, Machine: m, Logger: log.With("component", "cluster"),
		Timing: timing(cfg), JoinPolicy: joinPolicy(cfg),
	}
}

// New builds an agent; nothing runs until Run.
func New(cfg *config.Config, log *slog.Logger, version string) *Agent {
	return &Agent{cfg: cfg, log: log, version: version, metrics: newMetrics(), machine: state.New()}
}

// Run runs the agent until ctx ends. On a node that has not been initialised
// or joined yet it waits for that first.
func (a *Agent) Run(ctx context.Context) error {
	for _, w := range a.cfg.Warnings {
		a.log.Warn("configuration", "warning", w.Error())
	}
	if err := a.waitInitialized(ctx); err != nil {
		return err
	}
	creds, err := pki.Load(pkiDir(a.cfg))
	if err != nil {
		return fmt.Errorf("load certificates: %w", err)
	}
	node, err := cluster.New(ctx, clusterOptions(a.cfg, a.log, creds, a.machine))
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
	a.metrics.info.WithLabelValues(a.cfg.Node.Name, a.cfg.Node.Role, a.version).Set(1)

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
	g.Go(func() error { return a.fo.Run(gctx) })
	if a.checks != nil {
		g.Go(func() error { return a.checks.Run(gctx) })
	}
	g.Go(func() error {
		return localapi.Serve(gctx, a.cfg.Cluster.Socket, a, a.log.With("component", "localapi"))
	})
	if a.cfg.Metrics.Listen != "" {
		g.Go(func() error { return a.serveMetrics(gctx) })
	}
	g.Go(func() error { return a.observe(gctx) })
	if a.cfg.Node.Role == config.RoleApp {
		g.Go(func() error { a.publishPolicy(gctx); return nil })
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

// policyOf is the placement policy in a node's configuration.
func policyOf(cfg *config.Config) state.Policy {
	f := cfg.Failover
	return state.Policy{Preempt: f.Preempt, Cooloff: f.Cooloff.D(),
		FailureThreshold: f.FailureThreshold, FailureWindow: f.FailureWindow.D()}
}

// publishPolicy makes this app node's placement policy the cluster's, so the
// designated controller applies it even when it is the witness.
func (a *Agent) publishPolicy(ctx context.Context) {
	want := policyOf(a.cfg)
	for {
		cur := a.machine.View().Policy
		if cur != nil && *cur == want {
			return
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.node.Apply(actx, state.SetPolicy{Policy: want})
		cancel()
		if err == nil {
			if cur != nil {
				a.log.Warn("this node's [failover] policy differed from the cluster's; published this one (keep tandem.toml alike on all app nodes)",
					"was", *cur, "now", want)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// handOff moves the IP to a healthy standby when this holder stops, so a
// planned restart costs no failover. It gives up after a few seconds; the
// lease then takes over.
func (a *Agent) handOff() {
	if a.machine.View().Holder.Node != a.cfg.Node.Name {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := a.Switchover(ctx, localapi.SwitchoverRequest{Timeout: 3 * time.Second})
	if err != nil {
		a.log.Warn("could not hand the IP over before stopping", "err", err)
		return
	}
	a.log.Info("handed the IP over before stopping", "to", r.To, "took_ms", r.TookMs)
}

func (a *Agent) waitInitialized(ctx context.Context) error {
	if Initialized(a.cfg) {
		return nil
	}
	a.log.Warn("this node is not part of a cluster yet: run 'tandem init' on the first node, or 'tandem join' here; waiting")
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for !Initialized(a.cfg) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// build creates the failover node and what it needs.
func (a *Agent) build(ctx context.Context, creds *pki.Node) error {
	cfg, log := a.cfg, a.log
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
		fhealth = healthAdapter{checks}
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
	lease := cfg.Failover.Lease.D()
	fo, err := failover.New(failover.Options{
		Name: cfg.Node.Name, Role: cfg.Node.Role, Machine: a.machine,
		Cluster: clusterAdapter{a.node}, Provider: prov, Health: fhealth, HealthChanged: healthChanged, Events: events,
		Tr:     failover.HTTPTransport{Client: meshClient(creds)},
		Policy: policyOf(cfg),
		Lease:  lease, Margin: max(lease/10, 50*time.Millisecond), ProbeInterval: cfg.Failover.ProbeInterval.D(),
		DrainTimeout: cfg.Failover.DrainTimeout.D(),
		Logger:       log.With("component", "failover"),
	})
	if err != nil {
		return err
	}
	a.fo = fo
	a.node.Handle(failover.ProbePath, fo.Mesh().Handler())
	return nil
}

// meshClient speaks HTTP/1.1 over a small pool of connections per peer, so
// one lost segment stalls one probe, not all of them (as one multiplexed
// HTTP/2 connection would).
func meshClient(creds *pki.Node) *http.Client {
	tc := creds.ClientConfig().Clone()
	tc.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 5 * time.Second}).DialContext,
	}
	return &http.Client{Transport: tr}
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

type healthAdapter struct{ r *health.Runner }

func (h healthAdapter) Report() (bool, time.Duration, []failover.CheckStatus) {
	rep := h.r.Snapshot()
	out := make([]failover.CheckStatus, 0, len(rep.Checks))
	for _, c := range rep.Checks {
		text := c.Output
		if c.Error != "" {
			text = strings.TrimSpace(c.Error + " " + c.Output)
		}
		if len(text) > 256 {
			text = text[:256]
		}
		out = append(out, failover.CheckStatus{Name: c.Name, Type: c.Type, Healthy: c.Healthy, Output: text})
	}
	return rep.Healthy, rep.UnhealthyFor(time.Now()), out
}

type clusterAdapter struct{ n *cluster.Node }

func (c clusterAdapter) Apply(ctx context.Context, cmd state.Command) error {
	return c.n.Apply(ctx, cmd)
}
func (c clusterAdapter) IsLeader() bool { return c.n.IsLeader() }
func (c clusterAdapter) Term() uint64   { return c.n.RaftStats().Term }
func (c clusterAdapter) TransferLeadership(ctx context.Context, to string) error {
	return c.n.TransferLeadership(ctx, to)
}

func (a *Agent) serveMetrics(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Addr: a.cfg.Metrics.Listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w (set metrics.listen to a free port, or \"\" to disable)", err)
	}
	return nil
}

// observe refreshes gauges from the state and the failover node.
func (a *Agent) observe(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.machine.Changed():
		}
		s := a.machine.View()
		a.metrics.observeMoves(s)
		a.metrics.holderEpoch.Set(float64(s.Holder.Epoch))
		st := a.fo.Status()
		a.metrics.observeFailures(time.Now(), s, policyOf(a.cfg), st.Held)
		a.metrics.isHolder.Set(b2f(st.Holding))
		a.metrics.leaseValid.Set(b2f(st.LeaseValid))
		rs := a.node.RaftStats()
		a.metrics.raftTerm.Set(float64(rs.Term))
		for _, name := range []string{"Follower", "Candidate", "Leader", "Shutdown"} {
			a.metrics.raftState.WithLabelValues(name).Set(b2f(rs.State == name))
		}
		if !rs.LastContact.IsZero() {
			a.metrics.raftContact.Set(time.Since(rs.LastContact).Seconds())
		} else {
			a.metrics.raftContact.Set(0)
		}
		if a.checks != nil {
			for _, c := range a.checks.Snapshot().Checks {
				a.metrics.checkUp.WithLabelValues(c.Name).Set(b2f(c.Healthy))
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
