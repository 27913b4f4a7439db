package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// The agent is the local API's backend.
var _ localapi.Backend = (*Agent)(nil)

// Status implements localapi.Backend.
func (a *Agent) Status(ctx context.Context) (localapi.Status, error) {
	now := time.Now()
	s := a.machine.View()
	rs := a.node.RaftStats()
	fs := a.fo.Status()
	st := localapi.Status{
		Node: a.cfg.Node.Name, Role: a.cfg.Node.Role, Version: a.version, Mode: s.Mode,
		Raft: localapi.RaftStatus{State: rs.State, Leader: rs.Leader, Term: rs.Term,
			CommitIndex: rs.CommitIndex, AppliedIndex: rs.AppliedIndex},
		Holder:      localapi.HolderStatus{Node: s.Holder.Node, Epoch: s.Holder.Epoch, Active: s.Holder.Active, Since: s.Holder.Since},
		VIP:         localapi.VIPStatus{Address: a.cfg.VIP.Address, Provider: a.cfg.VIP.Provider, HeldHere: fs.Holding},
		LeaseValid:  fs.LeaseValid,
		LastError:   fs.LastError,
		GeneratedAt: now,
	}
	if !rs.LastContact.IsZero() {
		st.Raft.LastContactMs = now.Sub(rs.LastContact).Milliseconds()
	}
	suffrage := map[string]string{}
	if servers, err := a.node.Servers(ctx); err == nil {
		for _, sv := range servers {
			suffrage[sv.Name] = sv.Suffrage
		}
	}
	for _, name := range s.Names() {
		m := s.Members[name]
		mem := localapi.Member{Name: name, Role: m.Role, Address: m.Address, Suffrage: suffrage[name]}
		if m.Pending {
			// Not counted yet, whatever raft says: raft makes it a voter a
			// moment before the state marks it one.
			mem.Suffrage = "pending"
		}
		var reply = fs.Local
		if name == a.cfg.Node.Name {
			mem.Reachable = true
		} else if p, ok := fs.Peers[name]; ok {
			reply = p.Reply
			mem.AgeMs = p.Age.Milliseconds()
			mem.Reachable = p.Age < 2*time.Second
		} else {
			reply = fs.Local
			reply.Checks = nil
		}
		if mem.Reachable {
			mem.Healthy, mem.Holding = reply.Healthy, reply.Holding
			for _, c := range reply.Checks {
				mem.Checks = append(mem.Checks, localapi.Check{Name: c.Name, Type: c.Type, Healthy: c.Healthy, Output: c.Output})
			}
		}
		st.Members = append(st.Members, mem)
	}
	addFailures(&st, now, s, a.cfg, fs.Held)
	for _, mv := range s.Moves[max(0, len(s.Moves)-10):] {
		st.Moves = append(st.Moves, toFailover(mv))
	}
	for _, mv := range slices.Backward(s.Moves) {
		if mv.From != "" {
			f := toFailover(mv)
			st.LastFailover = &f
			break
		}
	}
	return st, nil
}

// addFailures adds each app node's failure count and penalty, which every
// node computes alike from the replicated state, and the move the DC holds
// back, if any.
func addFailures(st *localapi.Status, now time.Time, s state.Snapshot, cfg *config.Config, held *failover.Hold) {
	fails := failover.NodeFailures(now, s, failover.EffectivePolicy(s, policyOf(cfg)))
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

// ResetFailures implements localapi.Backend: clear an app node's failure
// count, so it is no longer penalised.
func (a *Agent) ResetFailures(ctx context.Context, name string) error {
	m, ok := a.machine.View().Members[name]
	switch {
	case !ok:
		return fmt.Errorf("reset: %q is not a member (see 'tandem status')", name)
	case m.Role != state.RoleApp:
		return fmt.Errorf("reset: %q is a witness; only app nodes have failure counts", name)
	}
	at := time.Now()
	if err := a.node.Apply(ctx, state.ResetFailures{Node: name, At: at}); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	return a.waitApplied(ctx, func(s state.Snapshot) bool { return !s.FailureResets[name].Before(at) })
}

func toFailover(mv state.Move) localapi.Failover {
	return localapi.Failover{Epoch: mv.Epoch, From: mv.From, To: mv.To, Reason: mv.Reason,
		At: mv.DecidedAt, DurationMs: mv.Duration().Milliseconds()}
}

// CreateToken implements localapi.Backend.
func (a *Agent) CreateToken(ctx context.Context, r localapi.TokenRequest) (localapi.TokenReply, error) {
	uses := r.Uses
	if uses == 0 {
		uses = -1
	}
	tok, err := a.node.CreateToken(ctx, r.TTL, uses)
	if err != nil {
		return localapi.TokenReply{}, err
	}
	return localapi.TokenReply{Token: tok.String(), Expires: time.Now().Add(r.TTL), Uses: r.Uses}, nil
}

// SetMode implements localapi.Backend.
func (a *Agent) SetMode(ctx context.Context, mode string) error {
	if err := a.node.Apply(ctx, state.SetMode{Mode: mode}); err != nil {
		return err
	}
	return a.waitApplied(ctx, func(s state.Snapshot) bool { return s.Mode == mode })
}

// waitApplied waits until this node's state satisfies ok, so that a command
// that returns has also taken effect in what 'tandem status' shows here.
func (a *Agent) waitApplied(ctx context.Context, ok func(state.Snapshot) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for !ok(a.machine.View()) {
		select {
		case <-ctx.Done():
			return errors.New("committed, but not yet applied on this node; check 'tandem status'")
		case <-a.machine.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Switchover implements localapi.Backend: wait for the target to be
// healthy, commit a pending move, and wait until the new holder is active.
func (a *Agent) Switchover(ctx context.Context, r localapi.SwitchoverRequest) (localapi.SwitchoverReply, error) {
	start := time.Now()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s := a.machine.View()
	from := s.Holder.Node
	to := r.To
	if to != "" {
		m, ok := s.Members[to]
		switch {
		case !ok:
			return localapi.SwitchoverReply{}, fmt.Errorf("switchover: %q is not a member (see 'tandem status')", to)
		case m.Role != state.RoleApp:
			return localapi.SwitchoverReply{}, fmt.Errorf("switchover: %q is a witness and cannot hold the IP", to)
		case to == from:
			return localapi.SwitchoverReply{}, fmt.Errorf("switchover: %q already holds the IP", to)
		}
	}
	// Wait until the target (or any standby) is reachable and healthy.
	for {
		views := a.fo.Mesh().Views(time.Now(), s.Holder.Epoch)
		if to == "" {
			for _, name := range s.Apps() {
				if name != from && views[name].Reachable && views[name].Healthy {
					to = name
					break
				}
			}
		}
		if to != "" && views[to].Reachable && views[to].Healthy {
			break
		}
		select {
		case <-ctx.Done():
			if to == "" {
				return localapi.SwitchoverReply{}, errors.New("switchover: no healthy standby to move to; check 'tandem status'")
			}
			return localapi.SwitchoverReply{}, fmt.Errorf("switchover: %s did not become healthy within %v", to, timeout)
		case <-time.After(50 * time.Millisecond):
		}
		s = a.machine.View()
	}
	s = a.machine.View()
	err := a.node.Apply(ctx, state.SetHolder{Node: to, PrevEpoch: s.Holder.Epoch, Active: s.Holder.Node == "",
		Reason: "switchover", FaultAt: time.Now(), At: time.Now(), Drain: true})
	if err != nil {
		if errors.Is(err, state.ErrStaleEpoch) {
			return localapi.SwitchoverReply{}, errors.New("switchover: the holder changed meanwhile; check 'tandem status' and retry")
		}
		return localapi.SwitchoverReply{}, fmt.Errorf("switchover: %w", err)
	}
	epoch := s.Holder.Epoch + 1
	for {
		v := a.machine.View().Holder
		if v.Epoch > epoch {
			return localapi.SwitchoverReply{}, fmt.Errorf("switchover: superseded by epoch %d (holder %s)", v.Epoch, v.Node)
		}
		if v.Epoch == epoch && v.Active {
			return localapi.SwitchoverReply{From: from, To: to, Epoch: epoch, TookMs: time.Since(start).Milliseconds()}, nil
		}
		select {
		case <-ctx.Done():
			return localapi.SwitchoverReply{}, fmt.Errorf("switchover: committed epoch %d but %s has not released the IP yet", epoch, from)
		case <-a.machine.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Leave implements localapi.Backend: hand the IP over first, then leave.
func (a *Agent) Leave(ctx context.Context) error {
	if a.machine.View().Holder.Node == a.cfg.Node.Name {
		if _, err := a.Switchover(ctx, localapi.SwitchoverRequest{Timeout: 30 * time.Second}); err != nil {
			return fmt.Errorf("leave: this node holds the IP and it could not be handed over: %w", err)
		}
	}
	return a.node.Leave(ctx)
}

// Remove implements localapi.Backend.
func (a *Agent) Remove(ctx context.Context, name string) error {
	if name == a.cfg.Node.Name {
		return errors.New("remove: that is this node; use 'tandem leave'")
	}
	if _, ok := a.machine.View().Members[name]; !ok {
		return fmt.Errorf("remove: %q is not a member (see 'tandem status')", name)
	}
	return a.node.RemoveServer(ctx, name)
}
