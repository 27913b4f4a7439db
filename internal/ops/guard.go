package ops

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// Bans is the part of guard's ban controller the operations use.
type Bans interface {
	Ban(ctx context.Context, a netip.Addr, d time.Duration, reason string) (state.Ban, error)
	Unban(ctx context.Context, a netip.Addr) error
	Protected(a netip.Addr) (string, bool)
}

// Kernel lists the bans this node's kernel holds, with the time each has
// left.
type Kernel interface {
	Banned() (map[netip.Addr]time.Duration, error)
}

// DefaultManualBan is an operator's ban without --for.
const DefaultManualBan = 24 * time.Hour

// Guard carries out the operator's ban commands for the local API.
type Guard struct {
	Node, Role string
	Machine    *state.Machine
	Bans       Bans
	Kernel     Kernel // nil when this node enforces nothing
	Now        func() time.Time
}

func (g *Guard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Routes are the local API endpoints of the bans.
func (g *Guard) Routes() []localapi.Route {
	if g == nil {
		return nil
	}
	return []localapi.Route{
		{Pattern: "GET /v1/guard/bans", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.BanList, error) {
			return g.List(), nil
		})},
		{Pattern: "POST /v1/guard/ban", Handler: localapi.Endpoint(g.Ban)},
		{Pattern: "POST /v1/guard/unban", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.UnbanRequest) (localapi.Empty, error) {
			return localapi.Empty{}, g.Unban(ctx, r)
		})},
	}
}

// List returns the cluster's bans in force.
func (g *Guard) List() localapi.BanList {
	now := g.now()
	out := localapi.BanList{Bans: []localapi.BanInfo{}, GeneratedAt: now}
	var kernel map[netip.Addr]time.Duration
	if g.Kernel != nil {
		var err error
		if kernel, err = g.Kernel.Banned(); err != nil {
			out.KernelError = err.Error()
		}
	}
	for _, b := range g.Machine.View().Guard().ActiveBans(now) {
		_, held := kernel[b.Addr]
		why, _ := g.Bans.Protected(b.Addr)
		out.Bans = append(out.Bans, localapi.BanInfo{Addr: b.Addr.String(), Jail: b.Jail, Reason: b.Reason, Line: b.Line,
			By: b.By, At: b.At, Until: b.Until, Offence: b.Offence, Enforced: held, Protected: why})
	}
	return out
}

// Status is guard's part of 'tandem status'; nil when no ban is in force.
func (g *Guard) Status() *localapi.GuardStatus {
	if g == nil {
		return nil
	}
	bans := g.Machine.View().Guard().ActiveBans(g.now())
	st := &localapi.GuardStatus{Active: len(bans), Enforced: -1}
	for _, b := range bans {
		if b.Addr.Is4() {
			st.IPv4++
		} else {
			st.IPv6++
		}
	}
	if g.Kernel != nil {
		if k, err := g.Kernel.Banned(); err == nil {
			st.Enforced = len(k)
		}
	}
	return st
}

func (g *Guard) requireApp(what string) error {
	if g.Role != state.RoleApp {
		return fmt.Errorf("%s: %s is a %s, which only reports and votes; run this on an app node", what, g.Node, g.Role)
	}
	return nil
}

// parseBanAddr reads an operator's address.
func parseBanAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		if _, perr := netip.ParsePrefix(s); perr == nil {
			return netip.Addr{}, fmt.Errorf("%q is a network; guard bans single addresses: name one IP address", s)
		}
		return netip.Addr{}, fmt.Errorf("%q is not an IP address (want e.g. 203.0.113.7 or 2001:db8::7)", s)
	}
	a = a.Unmap()
	if err := state.ValidBanAddr(a); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

// Ban bans an address on every node.
func (g *Guard) Ban(ctx context.Context, r localapi.BanRequest) (localapi.BanInfo, error) {
	if err := g.requireApp("guard ban"); err != nil {
		return localapi.BanInfo{}, err
	}
	a, err := parseBanAddr(r.Addr)
	if err != nil {
		return localapi.BanInfo{}, err
	}
	d := DefaultManualBan
	if r.For != "" {
		if d, err = time.ParseDuration(r.For); err != nil || d <= 0 || d > state.MaxBantime {
			return localapi.BanInfo{}, fmt.Errorf("--for %q: want a positive duration up to %v, e.g. 30m or 48h", r.For, state.MaxBantime)
		}
	}
	if _, err := g.Bans.Ban(ctx, a, d, r.Reason); err != nil {
		return localapi.BanInfo{}, err
	}
	var b state.Ban
	err = waitApplied(ctx, g.Machine, func(s state.Snapshot) bool {
		var ok bool
		b, ok = s.Guard().Bans[a]
		return ok && b.Active(g.now())
	})
	if err != nil {
		return localapi.BanInfo{}, err
	}
	return localapi.BanInfo{Addr: a.String(), Jail: b.Jail, Reason: b.Reason, By: b.By, At: b.At, Until: b.Until, Offence: b.Offence}, nil
}

// Unban lifts an address's ban on every node.
func (g *Guard) Unban(ctx context.Context, r localapi.UnbanRequest) error {
	if err := g.requireApp("guard unban"); err != nil {
		return err
	}
	a, err := netip.ParseAddr(strings.TrimSpace(r.Addr))
	if err != nil {
		return fmt.Errorf("%q is not an IP address", r.Addr)
	}
	a = a.Unmap()
	if err := g.Bans.Unban(ctx, a); err != nil {
		if errors.Is(err, state.ErrNotBanned) {
			return fmt.Errorf("%s is not banned ('tandem guard bans' lists the bans)", a)
		}
		return err
	}
	return waitApplied(ctx, g.Machine, func(s state.Snapshot) bool {
		b, ok := s.Guard().Bans[a]
		return !ok || !b.Active(g.now())
	})
}

// waitApplied waits until this node's state satisfies ok.
func waitApplied(ctx context.Context, m *state.Machine, ok func(state.Snapshot) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for !ok(m.View()) {
		select {
		case <-ctx.Done():
			return errors.New("committed, but not yet applied on this node; check 'tandem guard bans'")
		case <-m.Changed(state.GuardDomain):
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
