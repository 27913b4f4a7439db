package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/deploy"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// Delivery carries out the operator's delivery commands for the local API.
type Delivery struct {
	Name     string
	Cluster  deploy.Cluster
	Machine  deploy.Machine
	Health   func(now time.Time) map[string]deploy.NodeHealth
	Local    *deploy.Local // nil on a witness or without [deploy]
	StoreDir string
}

// Routes are the local API endpoints of delivery.
func (o *Delivery) Routes() []localapi.Route {
	return []localapi.Route{
		{Pattern: "POST /v1/deploy", Handler: localapi.Endpoint(o.Deploy)},
		{Pattern: "POST /v1/rollback", Handler: localapi.Endpoint(o.Rollback)},
		{Pattern: "GET /v1/deploy/state", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (*state.Deploy, error) {
			return o.Machine.View().Deploy(), nil
		})},
		{Pattern: "POST /v1/deploy/lock", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.LockRequest) (localapi.Empty, error) {
			var l *state.Lock
			if r.Lock {
				if strings.TrimSpace(r.Message) == "" {
					return localapi.Empty{}, errors.New("say why deploys are locked: --message \"...\"")
				}
				l = &state.Lock{Message: r.Message, By: o.Name, At: time.Now()}
			}
			return localapi.Empty{}, o.apply(ctx, state.SetDeployLock{Lock: l})
		})},
		{Pattern: "GET /v1/deploy/plan", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.Plan, error) {
			return o.Plan(), nil
		})},
	}
}

func (o *Delivery) apply(ctx context.Context, cmd state.Command) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return o.Cluster.Apply(ctx, cmd)
}

// Deploy queues an operator's release: a file the CLI copied into the
// store's directory, or a URL with its SHA-256.
func (o *Delivery) Deploy(ctx context.Context, r localapi.DeployRequest) (localapi.DeployReply, error) {
	if o.Local == nil {
		return localapi.DeployReply{}, errors.New("run 'tandem deploy' on an app node with a [deploy] section")
	}
	now := time.Now()
	del := state.Delivery{ID: deploy.NewID(), Source: "cli", Force: r.Force, Manual: true, ReceivedBy: o.Name, ReceivedAt: now}
	switch {
	case r.File != "":
		path := filepath.Clean(r.File)
		if filepath.Dir(path) != filepath.Clean(o.StoreDir) || !strings.HasPrefix(filepath.Base(path), ".incoming-") {
			return localapi.DeployReply{}, fmt.Errorf("%s is not an incoming release file", path)
		}
		f, err := os.Open(path)
		if err != nil {
			return localapi.DeployReply{}, err
		}
		res, err := o.Local.StoreFile(f)
		f.Close()
		os.Remove(path)
		if err != nil {
			return localapi.DeployReply{}, err
		}
		del.Kind, del.Digest, del.Package, del.Version = deploy.KindFile, res.Digest, res.Package, res.Version
		del.Keys = []string{"cli/sha256/" + res.Digest + "/" + del.ID}
		if r.Signature != "" {
			del.Hint = []byte(fmt.Sprintf(`{"signature":%q}`, r.Signature))
		}
	case r.URL != "":
		if len(r.SHA256) != 64 {
			return localapi.DeployReply{}, errors.New("a URL needs --sha256 with the .deb's 64-digit SHA-256")
		}
		d := webhook.Delivery{Source: webhook.Generic, ID: del.ID, Event: webhook.EventRelease,
			Release: &webhook.Release{URL: r.URL, SHA256: strings.ToLower(r.SHA256)}}
		hint, err := json.Marshal(d)
		if err != nil {
			return localapi.DeployReply{}, err
		}
		del.Kind, del.Hint = string(webhook.Generic), hint
		del.Keys = []string{"cli/url/" + del.ID}
	default:
		return localapi.DeployReply{}, errors.New("name a .deb file or a URL to deploy")
	}
	id, err := deploy.CommitDelivery(ctx, o.Cluster, del)
	if err != nil {
		return localapi.DeployReply{}, fmt.Errorf("queue the release: %w", err)
	}
	return localapi.DeployReply{Delivery: id, Package: del.Package, Version: del.Version}, nil
}

// Rollback queues a forced deploy of an earlier release that some node
// still stores: version, or by default the release the last rollout
// replaced.
func (o *Delivery) Rollback(ctx context.Context, r localapi.DeployRequest) (localapi.DeployReply, error) {
	s := o.Machine.View()
	dep := s.Deploy()
	target, holder := rollbackTarget(dep, r.Version)
	if target.Digest == "" {
		if r.Version != "" {
			return localapi.DeployReply{}, fmt.Errorf("no node stores release %s; 'tandem releases' lists what can be rolled back to", r.Version)
		}
		return localapi.DeployReply{}, errors.New("there is no earlier release to roll back to ('tandem releases')")
	}
	del := state.Delivery{ID: deploy.NewID(), Source: deploy.SourceRollback, Kind: deploy.KindFile, Force: true, Manual: true, ReceivedBy: holder,
		ReceivedAt: time.Now(), Package: target.Package, Version: target.Version, Digest: target.Digest}
	del.Keys = []string{"cli/rollback/" + del.ID}
	id, err := deploy.CommitDelivery(ctx, o.Cluster, del)
	if err != nil {
		return localapi.DeployReply{}, fmt.Errorf("queue the rollback: %w", err)
	}
	return localapi.DeployReply{Delivery: id, Package: target.Package, Version: target.Version}, nil
}

// rollbackTarget finds the release to roll back to and a node that stores
// it. Without a version, it is the release the newest successful rollout
// replaced.
func rollbackTarget(dep *state.Deploy, version string) (state.Release, string) {
	stores := func(rel state.Release) string {
		for _, name := range slices.Sorted(maps.Keys(dep.Installed)) {
			for _, r := range dep.Installed[name] {
				if r.Digest == rel.Digest {
					return name
				}
			}
		}
		return ""
	}
	var candidates []struct {
		rel  state.Release
		node string
	}
	for _, r := range slices.Backward(dep.History) {
		for _, node := range slices.Sorted(maps.Keys(r.Previous)) {
			p := r.Previous[node]
			if p.Digest != "" {
				candidates = append(candidates, struct {
					rel  state.Release
					node string
				}{p, node})
			}
		}
		if r.Digest != "" {
			n := stores(state.Release{Digest: r.Digest})
			if n == "" {
				for _, st := range r.Steps {
					if st.Action == "fetch" && st.State == state.StepDone {
						n = st.Node
					}
				}
			}
			candidates = append(candidates, struct {
				rel  state.Release
				node string
			}{state.Release{Package: r.Package, Version: r.Version, Digest: r.Digest}, n})
		}
	}
	for _, c := range candidates {
		if version != "" && c.rel.Version == version && c.node != "" {
			return c.rel, c.node
		}
	}
	if version != "" {
		return state.Release{}, ""
	}
	// Default: what the newest deployed rollout replaced.
	for _, r := range slices.Backward(dep.History) {
		if r.Outcome != state.DeliveryDeployed {
			continue
		}
		for _, node := range slices.Sorted(maps.Keys(r.Previous)) {
			if p := r.Previous[node]; p.Digest != "" && p.Version != r.Version {
				return p, node
			}
		}
	}
	return state.Release{}, ""
}

// localapi.Plan says what the driver would do now, changing nothing.
func (o *Delivery) Plan() localapi.Plan {
	s := o.Machine.View()
	dep := s.Deploy()
	p := localapi.Plan{Running: dep.Rollout, Holder: s.Holder.Node}
	for _, d := range dep.Deliveries {
		if d.Status == state.DeliveryQueued {
			p.Queued++
		}
	}
	if next, ok := dep.NextQueued(); ok {
		p.Next = &next
		if dep.Rollout == nil {
			p.HeldBack = deploy.HoldBack(time.Now(), s, next, o.Health(time.Now()))
		}
	}
	for _, n := range deploy.AppNodes(s) {
		if n != s.Holder.Node {
			p.Order = append(p.Order, n)
		}
	}
	if s.Holder.Node != "" {
		p.Order = append(p.Order, s.Holder.Node)
	}
	return p
}
