package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/deploy"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/forge"
	"github.com/tandem-ha/tandem/internal/install"
	"github.com/tandem-ha/tandem/internal/ops"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// delivery is the agent's delivery wiring.
type delivery struct {
	driver *deploy.Driver
	local  *deploy.Local
	intake *deploy.Intake
	poller *deploy.Poller
	notify *deploy.Notifier
	ops    *ops.Delivery
}

type deployMetrics struct {
	deliveries *prometheus.CounterVec
	rollouts   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
}

func newDeployMetrics(reg *prometheus.Registry) *deployMetrics {
	m := &deployMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_deploy_deliveries_total", Help: "Webhook deliveries received by this node, by source and outcome.",
		}, []string{"source", "outcome"}),
		rollouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_deploy_rollouts_total", Help: "Rollouts this node drove to an end, by outcome.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_deploy_rollout_duration_seconds", Help: "Duration of the rollouts this node drove, by outcome.",
			Buckets: []float64{5, 10, 15, 20, 30, 45, 60, 120, 300, 600, 1800},
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.deliveries, m.rollouts, m.duration)
	return m
}

// delivered counts a webhook delivery by source and outcome.
func (m *deployMetrics) delivered(source, outcome string) {
	m.deliveries.WithLabelValues(source, outcome).Inc()
}

// finished counts a rollout this node drove to its end, and its duration.
func (m *deployMetrics) finished(r state.Rollout) {
	m.rollouts.WithLabelValues(r.Outcome).Inc()
	m.duration.WithLabelValues(r.Outcome).Observe(r.EndedAt.Sub(r.StartedAt).Seconds())
}

// buildDelivery wires delivery. The driver runs on every node, since any
// voter may lead; the rest only on app nodes with a [deploy] section.
func (a *Agent) buildDelivery(creds clusterCaller) (*delivery, error) {
	cfg, log := a.cfg, a.log.With("component", "deploy")
	m := newDeployMetrics(a.metrics.reg)
	d := &delivery{}
	d.driver = deploy.NewDriver(deploy.DriverOptions{
		Name: cfg.Node.Name, Cluster: clusterAdapter{a.node}, Machine: a.machine,
		Nodes: deploy.RemoteNodes{C: a.node}, Mover: mover{a.fo},
		Health:   a.nodeHealth,
		Logger:   log,
		OnFinish: m.finished,
	})
	d.ops = &ops.Delivery{Name: cfg.Node.Name, Cluster: clusterAdapter{a.node}, Machine: a.machine,
		Health: a.nodeHealth}
	dc := cfg.Deploy
	if cfg.Node.Role != config.RoleApp || !dc.Enabled() {
		return d, nil
	}
	store, err := artifact.OpenStore(filepath.Join(cfg.Node.DataDir, "releases"))
	if err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	keys, err := parseKeys(dc.SigningKeys)
	if err != nil {
		return nil, err
	}
	arch, err := dpkgArch()
	if err != nil {
		return nil, err
	}
	policy := artifact.Policy{MaxSize: dc.MaxSize, Packages: dc.Packages, Arch: arch, Keys: keys}
	sources, fetchers, err := deploySources(dc, policy.MaxSize)
	if err != nil {
		return nil, err
	}
	run := sandboxEscape(log)
	d.local = deploy.NewLocal(deploy.LocalOptions{
		Name: cfg.Node.Name, Cluster: clusterAdapter{a.node}, Machine: a.machine, Store: store, Policy: policy,
		Fetcher:   fetcher{sources: fetchers, maxSize: policy.MaxSize},
		Installer: installer{apt: &install.Apt{Log: log, Run: run}, gater: install.Gater{Log: log}},
		Hooks:     hookRunner{run: run}, Peers: creds,
		HealthURL: healthURL(cfg), PreHook: dc.PreHook, PostHook: dc.PostHook, Keep: dc.Keep,
		Publish: state.DeployPolicy{Packages: dc.Packages, Soak: dc.Soak.D(), GateTimeout: dc.GateTimeout.D(),
			Auto: dc.Auto, PreHook: dc.PreHook != "", PostHook: dc.PostHook != "", HookTimeout: dc.HookTimeout.D(),
			Notify: len(dc.NotifyURLs) > 0},
		Logger: log,
	})
	d.ops.Local = d.local
	d.ops.StoreDir = store.Dir()
	d.intake = deploy.NewIntake(deploy.IntakeOptions{
		Name: cfg.Node.Name, Cluster: clusterAdapter{a.node}, Machine: a.machine, Sources: sources, Logger: log,
		OnDelivery: m.delivered,
	})
	if err := d.intake.Check(); err != nil {
		return nil, err
	}
	d.poller = &deploy.Poller{Intake: d.intake, Machine: a.machine, Interval: dc.PollInterval.D(), Logger: log,
		Poll: func(ctx context.Context, source string) ([]webhook.Delivery, error) {
			f, ok := fetchers[source]
			if !ok {
				return nil, fmt.Errorf("no source %q", source)
			}
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			return f.Poll(pctx, 1)
		}}
	if len(dc.NotifyURLs) > 0 {
		b, err := os.ReadFile(dc.NotifySecretFile)
		if err != nil {
			return nil, fmt.Errorf("deploy.notify_secret_file: %w", err)
		}
		key, err := deploy.ParseNotifySecret(b)
		if err != nil {
			return nil, fmt.Errorf("deploy.notify_secret_file %s: %w", dc.NotifySecretFile, err)
		}
		d.notify = &deploy.Notifier{Name: cfg.Node.Name, Machine: a.machine, URLs: dc.NotifyURLs, Key: key, Logger: log}
	}
	for pattern, h := range d.local.Handlers(callerAdapter{a.node}) {
		a.node.Handle(pattern, h)
	}
	return d, nil
}

// clusterCaller is the cluster node's peer calls.
type clusterCaller interface {
	deploy.Peers
}

type callerAdapter struct{ n *cluster.Node }

func (c callerAdapter) PeerName(r *http.Request) string { return cluster.PeerName(r) }
func (c callerAdapter) Leader() (string, string)        { return c.n.Leader() }

type mover struct{ fo *failover.Node }

func (m mover) Switchover(ctx context.Context, to string, timeout time.Duration) error {
	_, err := m.fo.Switchover(ctx, to, timeout)
	return err
}

func parseKeys(in []string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for i, s := range in {
		k, err := artifact.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("deploy.signing_keys[%d]: %w", i, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// dpkgArch is this machine's Debian architecture.
func dpkgArch() (string, error) {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return "", fmt.Errorf("deploy: dpkg --print-architecture: %w (delivery needs dpkg: is this Debian?)", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// deploySources reads the sources' API tokens and builds their intakes
// and fetchers; "cli" is the generic fetcher of 'tandem deploy URL'.
func deploySources(dc config.Deploy, maxSize int64) ([]deploy.Source, map[string]forge.Source, error) {
	var sources []deploy.Source
	fetchers := map[string]forge.Source{"cli": {Kind: webhook.Generic, MaxSize: maxSize}}
	for _, s := range dc.Sources {
		kind, err := webhook.ParseSource(s.Type)
		if err != nil {
			return nil, nil, fmt.Errorf("deploy.source %s: %w", s.Name, err)
		}
		rules := webhook.Rules{Branches: s.Branches, Tags: s.Tags, Job: s.Job, Project: s.Project}
		if err := rules.Validate(); err != nil {
			return nil, nil, fmt.Errorf("deploy.source %s: %w", s.Name, err)
		}
		sources = append(sources, deploy.Source{Name: s.Name, Kind: kind, Rules: rules, SecretFile: s.SecretFile})
		f := forge.Source{Kind: kind, APIURL: s.APIURL, Project: s.Project, Rules: rules, MaxSize: maxSize}
		if s.APITokenFile != "" {
			b, err := os.ReadFile(s.APITokenFile)
			if err != nil {
				return nil, nil, fmt.Errorf("deploy.source %s: api_token_file: %w", s.Name, err)
			}
			f.Token = strings.TrimSpace(string(b))
		}
		fetchers[s.Name] = f
	}
	return sources, fetchers, nil
}

// healthURL is where the gate asks: deploy.health_url, else the first http
// check's scheme and host with the package's health path.
func healthURL(cfg *config.Config) func(path string) string {
	return func(path string) string {
		if cfg.Deploy.HealthURL != "" {
			return cfg.Deploy.HealthURL
		}
		for _, h := range cfg.Health {
			if h.Type == "http" {
				if u, err := url.Parse(h.Target); err == nil {
					u.Path, u.RawQuery = path, ""
					return u.String()
				}
			}
		}
		return "http://127.0.0.1:8000" + path
	}
}

// fetcher fetches a delivery through its source's forge API.
type fetcher struct {
	sources map[string]forge.Source
	maxSize int64
}

func (f fetcher) Fetch(ctx context.Context, del state.Delivery, dir string) (string, artifact.Expect, error) {
	src, ok := f.sources[del.Source]
	if !ok {
		return "", artifact.Expect{}, fmt.Errorf("delivery %s came from source %q, which this node's configuration lacks", del.ID, del.Source)
	}
	hint, err := deploy.ParseHint(del)
	if err != nil {
		return "", artifact.Expect{}, err
	}
	b, err := src.Fetch(ctx, hint, dir)
	if err != nil {
		return "", artifact.Expect{}, err
	}
	return b.DebPath, b.Expect, nil
}

// installer joins apt and the gate.
type installer struct {
	apt   *install.Apt
	gater install.Gater
}

func (i installer) Install(ctx context.Context, path string) error { return i.apt.Install(ctx, path) }
func (i installer) Installed(ctx context.Context, pkg string) (string, error) {
	return i.apt.Installed(ctx, pkg)
}
func (i installer) AppInfo(pkg string) (string, string, error) { return install.AppInfo(pkg) }
func (i installer) Gate(ctx context.Context, g deploy.Gate) error {
	return i.gater.Gate(ctx, install.GateSpec{Unit: g.Unit, HealthURL: g.HealthURL, Version: g.Version,
		Since: g.Since, Soak: g.Soak, Timeout: g.Timeout})
}

// hookRunner runs release hooks like installs: outside the sandbox.
type hookRunner struct{ run install.RunFunc }

func (h hookRunner) RunHook(ctx context.Context, command string, env []string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := h.run(ctx, env, "/bin/sh", "-c", command)
	return string(out), err
}

// sandboxEscape runs the commands that change the host (apt-get, hooks)
// as transient systemd units when the agent runs under systemd: its own
// unit's sandbox (read-only /usr and /etc) would make them fail. Read-only
// commands run directly.
func sandboxEscape(log interface{ Debug(string, ...any) }) install.RunFunc {
	underSystemd := os.Getenv("INVOCATION_ID") != ""
	return func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
		if !underSystemd || (name != "apt-get" && name != "/bin/sh") {
			return install.Exec(ctx, env, name, args...)
		}
		argv := []string{"--wait", "--pipe", "--collect", "--quiet", "--service-type=exec",
			"--description=tandem release install", "-p", "TimeoutStopSec=10min"}
		for _, e := range env {
			argv = append(argv, "--setenv="+e)
		}
		argv = append(argv, "--", name)
		argv = append(argv, args...)
		log.Debug("running outside the sandbox", "command", name)
		out, err := install.Exec(ctx, nil, "systemd-run", argv...)
		if err != nil && errors.Is(err, exec.ErrNotFound) {
			return out, fmt.Errorf("systemd-run is needed to install releases from the sandboxed agent: %w", err)
		}
		return out, err
	}
}

// runDelivery starts delivery's loops on g.
func (a *Agent) runDelivery(g *errgroup.Group, ctx context.Context) {
	d := a.deliver
	g.Go(func() error { return d.driver.Run(ctx) })
	if d.local == nil {
		return
	}
	g.Go(func() error { return d.local.Run(ctx) })
	g.Go(func() error { return d.poller.Run(ctx) })
	if d.notify != nil {
		g.Go(func() error { return d.notify.Run(ctx) })
	}
	if dc := a.cfg.Deploy; dc.Listen != "" {
		g.Go(func() error { return d.intake.Serve(ctx, dc.Listen, dc.TLSCert, dc.TLSKey) })
	}
}

// nodeHealth is the DC's view of every member, as delivery reads it.
func (a *Agent) nodeHealth(now time.Time) map[string]deploy.NodeHealth {
	views := a.fo.Views(now, a.machine.View().Holder.Epoch)
	out := make(map[string]deploy.NodeHealth, len(views))
	for n, v := range views {
		out[n] = deploy.NodeHealth{Reachable: v.Reachable && !v.Dead, Healthy: v.Healthy}
	}
	return out
}
