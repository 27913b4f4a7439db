// Package ops is the cluster operations layer: it assembles `tandem status`
// from the replicated state, raft and the failover node, and carries out
// the operator's cluster commands (join tokens, maintenance, switchover,
// leave, remove). It contributes its endpoints to the local API as routes;
// it decides nothing about placement, which stays with failover.
package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/pki"
)

// Cluster is the part of the raft node the operations use.
type Cluster interface {
	Apply(ctx context.Context, cmd state.Command) error
	RaftStats() cluster.Stats
	Servers(ctx context.Context) ([]cluster.Server, error)
	CreateToken(ctx context.Context, ttl time.Duration, uses int, role string) (pki.Token, error)
	Leave(ctx context.Context) error
	RemoveServer(ctx context.Context, name string) error
}

// Failover is the part of the failover node the operations use.
type Failover interface {
	Status() failover.Status
	Switchover(ctx context.Context, to string, timeout time.Duration) (failover.Move, error)
	HandOff(ctx context.Context, timeout time.Duration) (failover.Move, bool, error)
}

// Options configures a Service.
type Options struct {
	Node, Role, Version string
	VIPAddress          string
	VIPProvider         string
	Machine             *state.Machine
	Cluster             Cluster
	Failover            Failover
	// CA, when set, serves the CA status and rotation.
	CA CA
	// Policy is this node's configured placement policy, which counts
	// failures until the cluster's is published.
	Policy state.Policy
	// Files reports file replication; nil without it.
	Files *Files
	// Harden returns the last baseline audit's summary; nil without one.
	Harden func() *localapi.HardenStatus
	// Guard reports the bans; nil without a ban controller.
	Guard *Guard
	Now   func() time.Time // time.Now when nil
}

// Service carries out cluster operations for the local API.
type Service struct {
	o Options
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{o: o}
}

// Routes are the local API endpoints of the cluster operations.
func (s *Service) Routes() []localapi.Route {
	return append(s.caRoutes(), []localapi.Route{
		{Pattern: "GET /v1/status", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.Status, error) {
			return s.Status(ctx), nil
		})},
		{Pattern: "POST /v1/tokens", Handler: localapi.Endpoint(s.CreateToken)},
		{Pattern: "GET /v1/tokens", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.TokenList, error) {
			return s.ListTokens(), nil
		})},
		{Pattern: "POST /v1/tokens/revoke", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.RevokeRequest) (localapi.Empty, error) {
			return localapi.Empty{}, s.RevokeToken(ctx, r.ID)
		})},
		{Pattern: "POST /v1/mode", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.ModeRequest) (localapi.Empty, error) {
			return localapi.Empty{}, s.SetMode(ctx, r.Mode)
		})},
		{Pattern: "POST /v1/switchover", Handler: localapi.Endpoint(s.Switchover)},
		{Pattern: "POST /v1/leave", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.Empty, error) {
			return localapi.Empty{}, s.Leave(ctx)
		})},
		{Pattern: "POST /v1/remove", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.RemoveRequest) (localapi.Empty, error) {
			return localapi.Empty{}, s.Remove(ctx, r.Node)
		})},
		{Pattern: "POST /v1/reset", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.ResetRequest) (localapi.Empty, error) {
			return localapi.Empty{}, s.ResetFailures(ctx, r.Node)
		})},
	}...)
}

// peerFresh is how old a peer's last probe reply may be for status to call
// it reachable.
const peerFresh = 2 * time.Second

// Status assembles this node's view of the cluster.
func (s *Service) Status(ctx context.Context) localapi.Status {
	now := s.o.Now()
	st := s.o.Machine.View()
	rs := s.o.Cluster.RaftStats()
	fs := s.o.Failover.Status()
	out := localapi.Status{
		Node: s.o.Node, Role: s.o.Role, Version: s.o.Version, Mode: st.Mode,
		Raft: localapi.RaftStatus{State: rs.State, Leader: rs.Leader, Term: rs.Term,
			CommitIndex: rs.CommitIndex, AppliedIndex: rs.AppliedIndex},
		Holder:      localapi.HolderStatus{Node: st.Holder.Node, Epoch: st.Holder.Epoch, Active: st.Holder.Active, Since: st.Holder.Since},
		VIP:         localapi.VIPStatus{Address: s.o.VIPAddress, Provider: s.o.VIPProvider, HeldHere: fs.Holding},
		LeaseValid:  fs.LeaseValid,
		LastError:   fs.LastError,
		HoldingBack: fs.HoldBack,
		GeneratedAt: now,
	}
	if !rs.LastContact.IsZero() {
		out.Raft.LastContactMs = now.Sub(rs.LastContact).Milliseconds()
	}
	suffrage := map[string]string{}
	if servers, err := s.o.Cluster.Servers(ctx); err == nil {
		for _, sv := range servers {
			suffrage[sv.Name] = sv.Suffrage
		}
	}
	var warnings []string
	if n, typ := s.o.Machine.Undecodable(); n > 0 {
		warnings = append(warnings, fmt.Sprintf("this node could not apply %d committed entries (last: %s); its state differs from the cluster's: upgrade it", n, typ))
	}
	for _, name := range st.Names() {
		mem := s.member(st.Members[name], suffrage[name], fs)
		if mem.StateLevel < s.o.Machine.Level() {
			warnings = append(warnings, fmt.Sprintf("%s runs state level %d (this node %d): upgrade %s", name, mem.StateLevel, s.o.Machine.Level(), name))
		}
		out.Members = append(out.Members, mem)
	}
	if r := st.Rotation; r != nil {
		w := fmt.Sprintf("a CA rotation is in progress (phase %s", r.Phase)
		if waiting := st.Waiting(st.Membership); len(waiting) > 0 {
			w += ", waiting for " + strings.Join(waiting, ", ")
		}
		warnings = append(warnings, w+"): see 'tandem ca status'")
	}
	out.StateWarning = strings.Join(warnings, "; ")
	out.Delivery = deliveryStatus(st.Deploy())
	out.Files = s.o.Files.Status()
	if s.o.Harden != nil {
		out.Harden = s.o.Harden()
	}
	out.Guard = s.o.Guard.Status()
	addFailures(&out, now, st, s.o.Policy, fs.Held)
	for _, mv := range st.Moves[max(0, len(st.Moves)-10):] {
		out.Moves = append(out.Moves, toFailover(mv))
	}
	for _, mv := range slices.Backward(st.Moves) {
		if mv.From != "" {
			f := toFailover(mv)
			out.LastFailover = &f
			break
		}
	}
	return out
}

func (s *Service) member(m state.Member, suffrage string, fs failover.Status) localapi.Member {
	mem := localapi.Member{Name: m.Name, Role: m.Role, Address: m.Address, Suffrage: suffrage,
		Priority: m.Priority, StateLevel: max(m.Level, state.BaseLevel)}
	if m.Pending {
		// Not counted yet, whatever raft says: raft makes it a voter a
		// moment before the state marks it one.
		mem.Suffrage = "pending"
	}
	reply := fs.Local
	switch p, ok := fs.Peers[m.Name]; {
	case m.Name == s.o.Node:
		mem.Reachable = true
	case ok:
		reply = p.Reply
		mem.AgeMs = p.Age.Milliseconds()
		mem.Reachable = p.Age < peerFresh
	}
	if mem.Reachable {
		mem.Healthy, mem.Holding = reply.Healthy, reply.Holding
		for _, c := range reply.Checks {
			mem.Checks = append(mem.Checks, localapi.Check{Name: c.Name, Type: c.Type, Healthy: c.Healthy, Output: c.Summary()})
		}
	}
	return mem
}

// addFailures adds each app node's failure count and penalty, which every
// node computes alike from the replicated state, and the move the DC holds
// back, if any.
func addFailures(st *localapi.Status, now time.Time, s state.Snapshot, p state.Policy, held *failover.Hold) {
	fails := failover.NodeFailures(now, s, failover.EffectivePolicy(s, p))
	for i, m := range st.Members {
		f, ok := fails[m.Name]
		if !ok {
			continue
		}
		st.Members[i].Failures, st.Members[i].Penalised = f.Count, f.Penalised
		if f.Penalised {
			st.Members[i].PenalisedUntil = &f.Until
		}
	}
	if held != nil {
		st.HeldMove = &localapi.HeldMove{From: held.From, To: held.To, Kind: held.Kind, Reason: held.Reason}
		if !held.Until.IsZero() {
			st.HeldMove.Until = &held.Until
		}
	}
}

// ResetFailures clears an app node's failure count, so it is no longer
// penalised.
func (s *Service) ResetFailures(ctx context.Context, name string) error {
	if err := s.requireApp("reset"); err != nil {
		return err
	}
	m, ok := s.o.Machine.View().Members[name]
	switch {
	case !ok:
		return fmt.Errorf("reset: %q is not a member (see 'tandem status')", name)
	case m.Role != state.RoleApp:
		return fmt.Errorf("reset: %q is a witness; only app nodes have failure counts", name)
	}
	at := s.o.Now()
	if err := s.o.Cluster.Apply(ctx, state.ResetFailures{Node: name, At: at}); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	return s.waitApplied(ctx, func(st state.Snapshot) bool { return !st.FailureResets[name].Before(at) }, state.FailoverDomain)
}

func toFailover(mv state.Move) localapi.Failover {
	return localapi.Failover{Epoch: mv.Epoch, From: mv.From, To: mv.To, Reason: mv.Reason,
		At: mv.DecidedAt, DurationMs: mv.Duration().Milliseconds()}
}

// requireApp refuses operator commands on a witness: it reports and
// votes, nothing more.
func (s *Service) requireApp(what string) error {
	if s.o.Role != state.RoleApp {
		return fmt.Errorf("%s: %s is a %s, which only reports and votes; run this on an app node", what, s.o.Node, s.o.Role)
	}
	return nil
}

// CreateToken creates a join token for one role.
func (s *Service) CreateToken(ctx context.Context, r localapi.TokenRequest) (localapi.TokenReply, error) {
	if err := s.requireApp("token"); err != nil {
		return localapi.TokenReply{}, err
	}
	if r.TTL <= 0 {
		return localapi.TokenReply{}, errors.New("token: the lifetime must be positive, e.g. --ttl 24h")
	}
	if r.Uses < 0 {
		return localapi.TokenReply{}, errors.New("token: uses must be 0 (unlimited) or more")
	}
	if r.Role != state.RoleApp && r.Role != state.RoleWitness {
		return localapi.TokenReply{}, fmt.Errorf("token: role %q: want %q or %q (the role of the node that will join)", r.Role, state.RoleApp, state.RoleWitness)
	}
	uses := r.Uses
	if uses == 0 {
		uses = -1
	}
	tok, err := s.o.Cluster.CreateToken(ctx, r.TTL, uses, r.Role)
	if err != nil {
		return localapi.TokenReply{}, err
	}
	return localapi.TokenReply{Token: tok.String(), ID: tok.ID, Role: r.Role, Expires: s.o.Now().Add(r.TTL), Uses: r.Uses}, nil
}

// ListTokens lists the join tokens, oldest first; never their secrets.
func (s *Service) ListTokens() localapi.TokenList {
	now := s.o.Now()
	out := localapi.TokenList{Tokens: []localapi.TokenInfo{}}
	for _, t := range s.o.Machine.View().Tokens {
		out.Tokens = append(out.Tokens, localapi.TokenInfo{ID: t.ID, Role: t.Role, UsesLeft: t.UsesLeft,
			Expires: t.Expires, Created: t.Created, Expired: !now.Before(t.Expires)})
	}
	slices.SortFunc(out.Tokens, func(a, b localapi.TokenInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// RevokeToken deletes a join token.
func (s *Service) RevokeToken(ctx context.Context, id string) error {
	if err := s.requireApp("token revoke"); err != nil {
		return err
	}
	if _, ok := s.o.Machine.View().Tokens[id]; !ok {
		return fmt.Errorf("token revoke: no token %q (see 'tandem token list')", id)
	}
	if err := s.o.Cluster.Apply(ctx, state.RevokeToken{ID: id}); err != nil {
		return fmt.Errorf("token revoke: %w", err)
	}
	return s.waitApplied(ctx, func(st state.Snapshot) bool { _, ok := st.Tokens[id]; return !ok }, state.MembershipDomain)
}

// SetMode switches between automatic placement and maintenance, and
// returns once this node has applied it.
func (s *Service) SetMode(ctx context.Context, mode string) error {
	if err := s.requireApp("maintenance"); err != nil {
		return err
	}
	if mode != state.ModeAuto && mode != state.ModeMaintenance {
		return fmt.Errorf("mode %q: want %q or %q", mode, state.ModeAuto, state.ModeMaintenance)
	}
	if err := s.o.Cluster.Apply(ctx, state.SetMode{Mode: mode}); err != nil {
		return err
	}
	return s.waitApplied(ctx, func(st state.Snapshot) bool { return st.Mode == mode }, state.FailoverDomain)
}

// waitApplied waits until this node's state satisfies ok, so that a command
// that returns has also taken effect in what 'tandem status' shows here.
func (s *Service) waitApplied(ctx context.Context, ok func(state.Snapshot) bool, domain string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for !ok(s.o.Machine.View()) {
		select {
		case <-ctx.Done():
			return errors.New("committed, but not yet applied on this node; check 'tandem status'")
		case <-s.o.Machine.Changed(domain):
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Switchover asks failover for a planned move.
func (s *Service) Switchover(ctx context.Context, r localapi.SwitchoverRequest) (localapi.SwitchoverReply, error) {
	if err := s.requireApp("switchover"); err != nil {
		return localapi.SwitchoverReply{}, err
	}
	mv, err := s.o.Failover.Switchover(ctx, r.To, r.Timeout)
	if err != nil {
		return localapi.SwitchoverReply{}, err
	}
	return localapi.SwitchoverReply{From: mv.From, To: mv.To, Epoch: mv.Epoch, TookMs: mv.Took.Milliseconds()}, nil
}

// Leave hands the IP over if this node holds it, then leaves the cluster.
func (s *Service) Leave(ctx context.Context) error {
	if _, _, err := s.o.Failover.HandOff(ctx, 30*time.Second); err != nil {
		return fmt.Errorf("leave: this node holds the IP and it could not be handed over: %w", err)
	}
	return s.o.Cluster.Leave(ctx)
}

// Remove removes another member.
func (s *Service) Remove(ctx context.Context, name string) error {
	if err := s.requireApp("remove"); err != nil {
		return err
	}
	if name == s.o.Node {
		return errors.New("remove: that is this node; use 'tandem leave'")
	}
	if _, ok := s.o.Machine.View().Members[name]; !ok {
		return fmt.Errorf("remove: %q is not a member (see 'tandem status')", name)
	}
	return s.o.Cluster.RemoveServer(ctx, name)
}

// deliveryStatus summarises the delivery state for 'tandem status'.
func deliveryStatus(dep *state.Deploy) *localapi.DeliveryStatus {
	if len(dep.Installed) == 0 && len(dep.Deliveries) == 0 {
		return nil
	}
	ds := &localapi.DeliveryStatus{Installed: map[string]map[string]localapi.ReleaseStatus{}}
	for node, rels := range dep.Installed {
		m := map[string]localapi.ReleaseStatus{}
		for p, r := range rels {
			m[p] = localapi.ReleaseStatus{Version: r.Version, SHA256: r.Digest}
		}
		ds.Installed[node] = m
	}
	for _, d := range dep.Deliveries {
		if d.Status == state.DeliveryQueued {
			ds.Queued++
		}
	}
	if dep.Lock != nil {
		ds.Locked = dep.Lock.Message
	}
	if r := dep.Rollout; r != nil {
		rs := &localapi.RolloutStatus{Delivery: r.ID, Package: r.Package, Version: r.Version, Phase: r.Phase, Driver: r.Driver, Started: r.StartedAt}
		if st, ok := r.LastStep(); ok {
			rs.Step = fmt.Sprintf("#%d %s %s %s", st.N, st.Action, st.Node, st.State)
		}
		ds.Rollout = rs
	}
	if n := len(dep.History); n > 0 {
		ds.LastOutcome, ds.LastReason = dep.History[n-1].Outcome, dep.History[n-1].Reason
	}
	return ds
}
