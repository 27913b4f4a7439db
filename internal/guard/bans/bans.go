// Package bans turns guard's decisions into bans the whole cluster
// enforces: a decision on any app node is committed through the cluster
// (forwarded to the raft leader), and every node keeps its kernel's ban
// sets equal to the committed bans, each element with the time its ban has
// left, so the kernel expires it on time even when tandem is down.
//
// A cluster member's address and an ignored network are never banned:
// the controller refuses them when proposing, the state refuses members'
// addresses when applying, and the enforcement leaves both out of the
// kernel whatever the state says, so a ban committed by a buggy or hostile
// node still cannot cut the cluster apart.
package bans

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/guard"
)

// Cluster commits state commands, forwarding them to the leader.
type Cluster interface {
	Apply(ctx context.Context, cmd state.Command) error
}

// Machine is the replicated state, read-only.
type Machine interface {
	View() state.Snapshot
	Changed(domain string) <-chan struct{}
}

// Enforcer is the kernel's side: Enforce makes the ban sets hold exactly
// bans, each address for the time given (what its ban has left).
type Enforcer interface {
	Enforce(ctx context.Context, bans map[netip.Addr]time.Duration) error
}

// Observer hears what the controller does, for metrics. Every method may
// be called from several goroutines.
type Observer interface {
	// Decided counts a jail's decision and what became of it: "banned",
	// "already" (banned before), "protected" (a member or an ignored
	// address), "dropped" (the queue was full) or "error".
	Decided(jail, result string)
	// Enforced reports one ban reaching this node's kernel, latency after
	// its decision.
	Enforced(latency time.Duration)
	// Synced reports a kernel sync and its outcome.
	Synced(took time.Duration, err error)
}

// ErrProtected is a ban refused because the address must never be
// banned: a member's, or in an ignored network.
var ErrProtected = errors.New("address is protected from bans")

// Options configure a Controller.
type Options struct {
	Name     string // this node
	Cluster  Cluster
	Machine  Machine
	Enforcer Enforcer // nil: this node proposes but enforces nothing
	Observer Observer // nil: none
	Log      *slog.Logger
	Now      func() time.Time // default time.Now
	// Resync is how often the kernel is compared with the state even
	// without a change (someone flushed a set by hand); default 30 s.
	Resync time.Duration
	// Workers propose decisions concurrently; default 8.
	Workers int
}

// Controller proposes and enforces bans.
type Controller struct {
	o      Options
	queue  chan guard.Decision
	poke   chan struct{}
	mu     sync.Mutex
	ignore []netip.Prefix
	// inFlight holds the addresses being proposed, so a burst of
	// decisions on one attacker proposes it once.
	inFlight map[netip.Addr]bool
	// seen holds, per address, the At of the ban last handed to the
	// kernel, so each ban's latency is reported once.
	seen map[netip.Addr]time.Time
}

// queueSize bounds the decisions waiting to be proposed; beyond it they
// are dropped (and counted): the engine must never block on the cluster.
const queueSize = 4096

// New returns a Controller; Run starts it.
func New(o Options) *Controller {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 8
	}
	return &Controller{o: o, queue: make(chan guard.Decision, queueSize), poke: make(chan struct{}, 1),
		inFlight: map[netip.Addr]bool{}, seen: map[netip.Addr]time.Time{}}
}

// SetIgnore replaces the networks that are never banned (admin CIDRs and
// the like), and re-enforces without them.
func (c *Controller) SetIgnore(prefixes []netip.Prefix) {
	c.mu.Lock()
	c.ignore = slices.Clone(prefixes)
	c.mu.Unlock()
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// Protected says why a must never be banned: it is a member's recorded
// address or lies in an ignored network.
func (c *Controller) Protected(a netip.Addr) (string, bool) {
	return c.protected(c.o.Machine.View().Membership, a.Unmap())
}

func (c *Controller) protected(m state.Membership, a netip.Addr) (string, bool) {
	if name, ok := m.MemberHolding(a); ok {
		return fmt.Sprintf("%s is the address of cluster member %s", a, name), true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.ignore {
		if p.Contains(a) {
			return fmt.Sprintf("%s is in the ignored network %s", a, p), true
		}
	}
	return "", false
}

// Decide queues a jail's decision to be proposed; it never blocks. It
// fits guard.Engine.Run's decide callback.
func (c *Controller) Decide(d guard.Decision) {
	select {
	case c.queue <- d:
	default:
		c.observeDecided(d.Jail, "dropped")
		c.o.Log.Warn("guard: ban queue full; decision dropped (the jail decides again at the next failure)", "addr", d.Addr, "jail", d.Jail)
	}
}

// Ban commits an operator's ban of a for d, replacing any ban in force.
func (c *Controller) Ban(ctx context.Context, a netip.Addr, d time.Duration, reason string) (state.Ban, error) {
	a = a.Unmap()
	if why, ok := c.Protected(a); ok {
		return state.Ban{}, fmt.Errorf("%w: %s; a member or an ignored address is never banned", ErrProtected, why)
	}
	cmd := state.BanAddr{Addr: a, Jail: "manual", Reason: reason, By: c.o.Name, At: c.o.Now(), Bantime: d, Manual: true}
	if err := c.o.Cluster.Apply(ctx, cmd); err != nil {
		return state.Ban{}, fmt.Errorf("ban %s: %w", a, err)
	}
	return c.o.Machine.View().Guard().Bans[a], nil
}

// Unban lifts a's ban on every node.
func (c *Controller) Unban(ctx context.Context, a netip.Addr) error {
	a = a.Unmap()
	if err := c.o.Cluster.Apply(ctx, state.UnbanAddr{Addr: a, By: c.o.Name, At: c.o.Now()}); err != nil {
		return fmt.Errorf("unban %s: %w", a, err)
	}
	return nil
}

// Run proposes queued decisions and keeps the kernel in step with the
// committed bans until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range c.o.Workers {
		wg.Go(func() { c.propose(ctx) })
	}
	defer wg.Wait()
	if c.o.Enforcer == nil {
		<-ctx.Done()
		return nil
	}
	resync := time.NewTicker(c.o.Resync)
	defer resync.Stop()
	failing := false
	backoff := 100 * time.Millisecond
	for {
		// Take the notification before reading, so a commit during the
		// sync wakes the next round: a burst costs one more sync, not one
		// per ban.
		changed := c.o.Machine.Changed(state.GuardDomain)
		members := c.o.Machine.Changed(state.MembershipDomain)
		err := c.sync(ctx)
		var retry <-chan time.Time
		if err != nil {
			if !failing {
				c.o.Log.Error("guard: cannot bring the kernel's ban sets in line with the cluster's bans; retrying", "err", err)
			}
			failing = true
			backoff = min(2*backoff, 5*time.Second)
			retry = time.After(backoff)
		} else {
			if failing {
				c.o.Log.Info("guard: the kernel's ban sets are in line again")
			}
			failing, backoff = false, 100*time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-members:
		case <-c.poke:
		case <-resync.C:
		case <-retry:
		}
	}
}

// sync hands the kernel the bans in force now, less protected addresses.
func (c *Controller) sync(ctx context.Context) error {
	start := c.o.Now()
	s := c.o.Machine.View()
	want := map[netip.Addr]time.Duration{}
	var fresh []state.Ban
	for _, b := range s.Guard().ActiveBans(start) {
		if why, ok := c.protected(s.Membership, b.Addr); ok {
			c.o.Log.Warn("guard: a committed ban names a protected address; not enforced", "addr", b.Addr, "why", why, "by", b.By)
			continue
		}
		want[b.Addr] = b.Until.Sub(start)
		if !c.seen[b.Addr].Equal(b.At) {
			fresh = append(fresh, b)
		}
	}
	err := c.o.Enforcer.Enforce(ctx, want)
	end := c.o.Now()
	if c.o.Observer != nil {
		c.o.Observer.Synced(end.Sub(start), err)
	}
	if err != nil {
		return err
	}
	for _, b := range fresh {
		c.seen[b.Addr] = b.At
		if c.o.Observer != nil {
			c.o.Observer.Enforced(end.Sub(b.At))
		}
		c.o.Log.Info("guard: ban enforced", "addr", b.Addr, "jail", b.Jail, "by", b.By, "until", b.Until, "offence", b.Offence,
			"latency_ms", end.Sub(b.At).Milliseconds())
	}
	maps.DeleteFunc(c.seen, func(a netip.Addr, _ time.Time) bool { _, ok := want[a]; return !ok })
	return nil
}

// propose commits queued decisions until ctx ends.
func (c *Controller) propose(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-c.queue:
			c.decide(ctx, d)
		}
	}
}

func (c *Controller) decide(ctx context.Context, d guard.Decision) {
	a := d.Addr.Unmap()
	if why, ok := c.Protected(a); ok {
		c.observeDecided(d.Jail, "protected")
		c.o.Log.Warn("guard: a jail decided to ban a protected address; refused", "addr", a, "jail", d.Jail, "why", why)
		return
	}
	now := c.o.Now()
	if b, ok := c.o.Machine.View().Guard().Bans[a]; ok && b.Active(now) {
		c.observeDecided(d.Jail, "already")
		return
	}
	c.mu.Lock()
	busy := c.inFlight[a]
	c.inFlight[a] = true
	c.mu.Unlock()
	if busy {
		c.observeDecided(d.Jail, "already")
		return
	}
	defer func() {
		c.mu.Lock()
		delete(c.inFlight, a)
		c.mu.Unlock()
	}()
	at := d.At
	if at.IsZero() {
		at = now
	}
	cmd := state.BanAddr{Addr: a, Jail: d.Jail, Line: truncate(d.Line, 512), By: c.o.Name, At: at,
		Bantime: d.Bantime, Factor: d.Factor, MaxBantime: d.MaxBantime}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.o.Cluster.Apply(ctx, cmd); err != nil {
		c.observeDecided(d.Jail, "error")
		c.o.Log.Error("guard: cannot commit a ban", "addr", a, "jail", d.Jail, "err", err)
		return
	}
	c.observeDecided(d.Jail, "banned")
	c.o.Log.Info("guard: ban committed", "addr", a, "jail", d.Jail, "failures", d.Failures)
}

func (c *Controller) observeDecided(jail, result string) {
	if c.o.Observer != nil {
		c.o.Observer.Decided(jail, result)
	}
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
