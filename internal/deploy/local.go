package deploy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Fetcher downloads a delivery's release from where it was built, asking
// the forge's API again (the webhook is only a hint). It leaves the .deb in
// dir and returns its path and what the pipeline published beside it.
type Fetcher interface {
	Fetch(ctx context.Context, d state.Delivery, dir string) (path string, want artifact.Expect, err error)
}

// Installer is the OS side of one node's install.
type Installer interface {
	Install(ctx context.Context, debPath string) error
	Installed(ctx context.Context, pkg string) (version string, err error)
	Gate(ctx context.Context, g Gate) error
	// AppInfo reads what 'tandem package' recorded of an installed
	// package: its unit and health path.
	AppInfo(pkg string) (unit, healthPath string, err error)
}

// Gate is the health gate of one install.
type Gate struct {
	Unit      string
	HealthURL string
	Version   string
	Since     time.Time
	Soak      time.Duration
	Timeout   time.Duration
}

// HookRunner runs a release hook command outside the agent's sandbox.
type HookRunner interface {
	RunHook(ctx context.Context, command string, env []string, timeout time.Duration) (output string, err error)
}

// Peers opens a stream from another member's endpoint.
type Peers interface {
	Open(ctx context.Context, peer, path string) (io.ReadCloser, error)
}

// LocalOptions configures a node's side of delivery.
type LocalOptions struct {
	Name      string
	Cluster   Cluster
	Machine   Machine
	Store     *artifact.Store
	Policy    artifact.Policy
	Fetcher   Fetcher
	Installer Installer
	Hooks     HookRunner
	Peers     Peers
	// HealthURL builds the gate's URL from the package's health path.
	HealthURL func(healthPath string) string
	PreHook   string
	PostHook  string
	Publish   state.DeployPolicy
	Keep      int
	Logger    *slog.Logger
	Now       func() time.Time
}

// Local is an app node's side of delivery: it fetches, stores, serves
// and installs releases when the driver asks, and reports what it runs.
type Local struct {
	o   LocalOptions
	log *slog.Logger

	mu   sync.Mutex
	jobs map[string]*job // in-flight installs by digest
	// byVersion caches the store's digests by "package version".
	byVersion map[string]string
}

type job struct {
	done chan struct{}
	res  InstallResult
	err  error
}

// NewLocal returns a node's delivery service.
func NewLocal(o LocalOptions) *Local {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Local{o: o, log: o.Logger, jobs: map[string]*job{}, byVersion: map[string]string{}}
}

// Run publishes the delivery policy and this node's installed releases,
// and keeps them current, until ctx ends.
func (l *Local) Run(ctx context.Context) error {
	for {
		changed := l.o.Machine.Changed(state.DeployDomain)
		err := l.publish(ctx)
		wait := time.Minute
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.log.Debug("publish delivery state", "err", err)
			wait = 2 * time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (l *Local) publish(ctx context.Context) error {
	dep := l.o.Machine.View().Deploy()
	if dep.Policy == nil || !equalPolicy(*dep.Policy, l.o.Publish) {
		if err := l.apply(ctx, state.SetDeployPolicy{Policy: l.o.Publish}); err != nil {
			return err
		}
	}
	return l.report(ctx)
}

func equalPolicy(a, b state.DeployPolicy) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// report commits this node's installed releases when they differ from
// the state's.
func (l *Local) report(ctx context.Context) error {
	now := map[string]state.Release{}
	for _, pkg := range l.o.Publish.Packages {
		v, err := l.o.Installer.Installed(ctx, pkg)
		if err != nil {
			return fmt.Errorf("installed version of %s: %w", pkg, err)
		}
		if v == "" {
			continue
		}
		now[pkg] = state.Release{Package: pkg, Version: v, Digest: l.digestOf(pkg, v)}
	}
	cur := l.o.Machine.View().Deploy().Installed[l.o.Name]
	if cur != nil && maps.Equal(cur, now) {
		return nil
	}
	return l.apply(ctx, state.SetInstalled{Node: l.o.Name, Releases: now})
}

// digestOf finds the stored .deb of pkg at version ("" when none).
func (l *Local) digestOf(pkg, version string) string {
	key := pkg + " " + version
	l.mu.Lock()
	d, ok := l.byVersion[key]
	l.mu.Unlock()
	if ok {
		if _, err := os.Stat(l.o.Store.Path(d)); err == nil {
			return d
		}
	}
	entries, err := l.o.Store.List()
	if err != nil {
		return ""
	}
	for _, e := range entries {
		f, err := l.o.Store.Open(e.SHA256)
		if err != nil {
			continue
		}
		c, err := artifact.ReadControl(f)
		f.Close()
		if err != nil {
			continue
		}
		l.mu.Lock()
		l.byVersion[c.Package+" "+c.Version] = e.SHA256
		l.mu.Unlock()
		if c.Package == pkg && c.Version == version {
			return e.SHA256
		}
	}
	return ""
}

func (l *Local) apply(ctx context.Context, cmd state.Command) error {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return l.o.Cluster.Apply(actx, cmd)
}

// waitDelivery returns a rollout's delivery, waiting briefly for this
// node to apply the commit that created it.
func (l *Local) waitDelivery(ctx context.Context, id string) (state.Delivery, error) {
	var del state.Delivery
	if !await(ctx, 5*time.Second, func() bool {
		var ok bool
		del, ok = l.o.Machine.View().Deploy().Delivery(id)
		return ok
	}) {
		if err := ctx.Err(); err != nil {
			return state.Delivery{}, err
		}
		return state.Delivery{}, fmt.Errorf("delivery %s is not in this node's state", id)
	}
	return del, nil
}

// Fetch fetches, verifies and stores a delivery's release.
func (l *Local) Fetch(ctx context.Context, req FetchRequest) (FetchResult, error) {
	del, err := l.waitDelivery(ctx, req.Rollout)
	if err != nil {
		return FetchResult{}, err
	}
	if del.Kind == KindFile {
		// 'tandem deploy FILE' (or a rollback) stored it here already.
		want := artifact.Expect{SHA256: del.Digest}
		var hint struct {
			Signature string `json:"signature"`
		}
		if len(del.Hint) > 0 && json.Unmarshal(del.Hint, &hint) == nil && hint.Signature != "" {
			sig, err := base64.StdEncoding.DecodeString(hint.Signature)
			if err != nil {
				return FetchResult{}, fmt.Errorf("release signature is not base64: %w", err)
			}
			want.Signature = sig
		}
		if _, err := os.Stat(l.o.Store.Path(del.Digest)); err != nil {
			return FetchResult{}, fmt.Errorf("release sha256:%s is no longer in %s's store", short(del.Digest), l.o.Name)
		}
		if del.Source == SourceRollback && want.Signature == nil {
			// A rollback target was verified when it was first deployed.
			pol := l.o.Policy
			pol.Keys = nil
			rel, err := pol.VerifyFile(l.o.Store.Path(del.Digest), want)
			if err != nil {
				return FetchResult{}, err
			}
			return l.result(rel, nil), nil
		}
		return l.verifyStored(del.Digest, want)
	}
	dir, err := os.MkdirTemp(l.o.Store.Dir(), ".fetch-")
	if err != nil {
		return FetchResult{}, fmt.Errorf("fetch: %w", err)
	}
	defer os.RemoveAll(dir)
	path, want, err := l.o.Fetcher.Fetch(ctx, del, dir)
	if err != nil {
		return FetchResult{}, err
	}
	rel, err := l.o.Policy.VerifyFile(path, want)
	if err != nil {
		return FetchResult{}, fmt.Errorf("verify %s: %w", filepath.Base(path), err)
	}
	f, err := os.Open(path)
	if err != nil {
		return FetchResult{}, err
	}
	defer f.Close()
	if _, err := l.o.Store.Put(f, l.o.Policy.MaxSize, rel.SHA256); err != nil {
		return FetchResult{}, fmt.Errorf("store release: %w", err)
	}
	return l.result(rel, want.Signature), nil
}

func (l *Local) result(rel artifact.Release, sig []byte) FetchResult {
	res := FetchResult{Package: rel.Control.Package, Version: rel.Control.Version, Digest: rel.SHA256, Size: rel.Size}
	if len(sig) > 0 {
		res.Signature = base64.StdEncoding.EncodeToString(sig)
	}
	l.mu.Lock()
	l.byVersion[res.Package+" "+res.Version] = res.Digest
	l.mu.Unlock()
	return res
}

// verifyStored checks a release already in the store against the policy.
func (l *Local) verifyStored(digest string, want artifact.Expect) (FetchResult, error) {
	rel, err := l.o.Policy.VerifyFile(l.o.Store.Path(digest), want)
	if err != nil {
		return FetchResult{}, fmt.Errorf("verify stored release %s: %w", short(digest), err)
	}
	return l.result(rel, want.Signature), nil
}

// Install makes sure the release is in the store (copying it from a
// peer), installs it, gates it and reports. A second request for the same
// release while one runs waits for that one: a new driver re-issuing a
// step never installs twice, and a driver that dies mid-install does not
// interrupt dpkg.
func (l *Local) Install(ctx context.Context, req InstallRequest) (InstallResult, error) {
	l.mu.Lock()
	j, ok := l.jobs[req.Digest]
	if !ok {
		j = &job{done: make(chan struct{})}
		l.jobs[req.Digest] = j
		go func() {
			// Detached from the request: dpkg must not be interrupted.
			j.res, j.err = l.install(context.WithoutCancel(ctx), req)
			l.mu.Lock()
			delete(l.jobs, req.Digest)
			l.mu.Unlock()
			close(j.done)
		}()
	}
	l.mu.Unlock()
	select {
	case <-j.done:
		return j.res, j.err
	case <-ctx.Done():
		return InstallResult{}, ctx.Err()
	}
}

func (l *Local) install(ctx context.Context, req InstallRequest) (InstallResult, error) {
	start := l.o.Now()
	pol := l.o.Machine.View().Deploy().Policy
	if pol == nil {
		return InstallResult{}, errors.New("no delivery policy in the state yet")
	}
	ctx, cancel := context.WithTimeout(ctx, pol.GateTimeout+pol.Soak+10*time.Minute)
	defer cancel()
	want := artifact.Expect{SHA256: req.Digest}
	if req.Signature != "" {
		sig, err := base64.StdEncoding.DecodeString(req.Signature)
		if err != nil {
			return InstallResult{}, fmt.Errorf("release signature is not base64: %w", err)
		}
		want.Signature = sig
	}
	if _, err := os.Stat(l.o.Store.Path(req.Digest)); err != nil {
		if err := l.pull(ctx, req); err != nil {
			return InstallResult{}, err
		}
	}
	pinned := l.o.Policy
	if req.Rollback && !l.ranBefore(req.Digest) {
		return InstallResult{}, fmt.Errorf("release sha256:%s was never installed in this cluster: a rollback installs only a release some node ran", short(req.Digest))
	}
	if req.Rollback {
		// A rollback target was verified when it was deployed; it may
		// predate the pinned keys.
		pinned.Keys = nil
	}
	rel, err := pinned.VerifyFile(l.o.Store.Path(req.Digest), want)
	if err != nil {
		return InstallResult{}, fmt.Errorf("verify release before installing: %w", err)
	}
	if rel.Control.Package != req.Package || rel.Control.Version != req.Version {
		return InstallResult{}, fmt.Errorf("stored release is %s %s, the rollout wants %s %s", rel.Control.Package, rel.Control.Version, req.Package, req.Version)
	}
	cur, err := l.o.Installer.Installed(ctx, req.Package)
	if err != nil {
		return InstallResult{}, err
	}
	since := l.o.Now()
	installedDigest := l.digestOf(req.Package, cur)
	if cur != req.Version || (installedDigest != "" && installedDigest != req.Digest) {
		l.log.Info("installing release", "package", req.Package, "from", orNone(cur), "to", req.Version, "rollback", req.Rollback)
		err := l.o.Installer.Install(ctx, l.o.Store.Path(req.Digest))
		if err == nil {
			// Several builds may carry one version: remember which one runs.
			l.mu.Lock()
			l.byVersion[req.Package+" "+req.Version] = req.Digest
			l.mu.Unlock()
		}
		// Report what is installed now, whatever happened.
		if rerr := l.report(ctx); rerr != nil {
			l.log.Warn("report installed releases", "err", rerr)
		}
		if err != nil {
			return InstallResult{}, fmt.Errorf("install %s %s: %w", req.Package, req.Version, err)
		}
	} else {
		since = time.Time{} // already installed: gate what runs
		if err := l.report(ctx); err != nil {
			l.log.Warn("report installed releases", "err", err)
		}
	}
	unit, path, err := l.o.Installer.AppInfo(req.Package)
	if err != nil {
		return InstallResult{}, err
	}
	g := Gate{Unit: unit, Version: req.Version, Since: since, Soak: pol.Soak, Timeout: pol.GateTimeout}
	if path != "" && l.o.HealthURL != nil {
		g.HealthURL = l.o.HealthURL(path)
	}
	if err := l.o.Installer.Gate(ctx, g); err != nil {
		return InstallResult{}, fmt.Errorf("health gate of %s %s: %w", req.Package, req.Version, err)
	}
	l.prune()
	return InstallResult{Version: req.Version, Took: l.o.Now().Sub(start)}, nil
}

// ranBefore reports whether the state records some node running the
// release, now or before a rollout: only such a release is installed
// without its signature (a rollback).
func (l *Local) ranBefore(digest string) bool {
	dep := l.o.Machine.View().Deploy()
	for _, rels := range dep.Installed {
		for _, r := range rels {
			if r.Digest == digest {
				return true
			}
		}
	}
	rollouts := append([]*state.Rollout{dep.Rollout}, dep.History...)
	for _, r := range rollouts {
		if r == nil {
			continue
		}
		for _, p := range r.Previous {
			if p.Digest == digest {
				return true
			}
		}
		if r.Outcome == state.DeliveryDeployed && r.Digest == digest {
			return true
		}
	}
	return false
}

// pull copies a release from the first peer that has it.
func (l *Local) pull(ctx context.Context, req InstallRequest) error {
	var errs []error
	for _, peer := range req.From {
		if peer == l.o.Name {
			continue
		}
		rc, err := l.o.Peers.Open(ctx, peer, "/v1/deploy/artifact/"+req.Digest)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, err = l.o.Store.Put(rc, l.o.Policy.MaxSize, req.Digest)
		rc.Close()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", peer, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("release sha256:%s is not in this node's store and no peer was named to copy it from", short(req.Digest))
	}
	return fmt.Errorf("copy release sha256:%s: %w", short(req.Digest), errors.Join(errs...))
}

// prune keeps the newest releases plus those some node runs or a
// rollout needs.
func (l *Local) prune() {
	dep := l.o.Machine.View().Deploy()
	var pinned []string
	for _, rels := range dep.Installed {
		for _, r := range rels {
			pinned = append(pinned, r.Digest)
		}
	}
	if r := dep.Rollout; r != nil {
		pinned = append(pinned, r.Digest)
		for _, p := range r.Previous {
			pinned = append(pinned, p.Digest)
		}
	}
	removed, err := l.o.Store.Prune(l.o.Keep, pinned, l.o.Now())
	if err != nil {
		l.log.Warn("prune releases", "err", err)
	}
	if len(removed) > 0 {
		l.log.Info("pruned old releases", "count", len(removed))
	}
}

// Hook runs a release hook on this node.
func (l *Local) Hook(ctx context.Context, req HookRequest) error {
	cmd := l.o.PreHook
	if req.Hook == "post" {
		cmd = l.o.PostHook
	} else if req.Hook != "pre" {
		return fmt.Errorf("unknown hook %q", req.Hook)
	}
	if cmd == "" {
		return nil
	}
	pol := l.o.Machine.View().Deploy().Policy
	timeout := 10 * time.Minute
	if pol != nil && pol.HookTimeout > 0 {
		timeout = pol.HookTimeout
	}
	env := []string{"TANDEM_HOOK=" + req.Hook, "TANDEM_PACKAGE=" + req.Package, "TANDEM_VERSION=" + req.Version,
		"TANDEM_ROLLOUT=" + req.Rollout, "TANDEM_NODE=" + l.o.Name}
	out, err := l.o.Hooks.RunHook(ctx, cmd, env, timeout)
	if err != nil {
		return fmt.Errorf("%s hook %q: %w; output: %s", req.Hook, cmd, err, tail(out, 2000))
	}
	return nil
}

// Artifact opens a stored release for a peer.
func (l *Local) Artifact(digest string) (*os.File, error) {
	if !isDigest(digest) {
		return nil, fmt.Errorf("%q is not a SHA-256 digest", digest)
	}
	return l.o.Store.Open(digest)
}

// StoreFile verifies and stores a .deb an operator hands over ('tandem
// deploy FILE'), returning the release.
func (l *Local) StoreFile(r io.Reader) (FetchResult, error) {
	digest, err := l.o.Store.Put(r, l.o.Policy.MaxSize, "")
	if err != nil {
		return FetchResult{}, err
	}
	res, err := l.verifyStored(digest, artifact.Expect{SHA256: digest})
	if err != nil {
		_ = os.Remove(l.o.Store.Path(digest))
		return FetchResult{}, err
	}
	return res, nil
}

func isDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
