// Package drain lets the TCP connections in flight to a local address finish
// before a planned move gives the address up: an nftables rule (in a table
// of its own, through internal/nft) drops new SYNs to it, so clients retry a second later and reach the new holder
// instead of being reset, and sock_diag counts the connections still open.
//
// The linux provider drains its VIP with a Rule. For cloud IPs, Wrap adds
// draining to any provider, given the local address the cloud delivers the
// IP's traffic to (a DigitalOcean anchor IP, an AWS private IP, a Hetzner
// floating IP configured on the interface).
package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/nft"
)

// Table is the nftables table (family inet) that holds the drain rule.
const Table = "tandem_vip_drain"

// TCP states that still carry data or the close handshake for a peer: the
// connection breaks if the address leaves now (see include/net/tcp_states.h).
var openTCPStates = []uint8{
	1,  // ESTABLISHED
	3,  // SYN_RECV
	4,  // FIN_WAIT1
	8,  // CLOSE_WAIT
	9,  // LAST_ACK
	11, // CLOSING
}

// Options configures a Rule.
type Options struct {
	// Addr is the local address whose connections are drained.
	Addr netip.Addr
	// NetNSFd, when >= 0, is an open network namespace to work in instead
	// of the caller's; InNS must then run a function inside it.
	NetNSFd int
	InNS    func(fn func() error) error
	Logger  *slog.Logger
}

// Rule drains one address. Safe for concurrent use.
type Rule struct {
	o  Options
	mu sync.Mutex
	// maybe is set while a rule may be installed: after StopNew, and from
	// the start, since a crash mid-drain can leave one. Clear goes to
	// nftables only then, keeping it off the acquire and release path.
	maybe bool
}

// New checks the options; it changes nothing.
func New(o Options) (*Rule, error) {
	if !o.Addr.IsValid() {
		return nil, errors.New("drain: no address")
	}
	o.Addr = o.Addr.Unmap()
	if o.Logger == nil {
		return nil, errors.New("drain: Logger is nil")
	}
	if o.NetNSFd >= 0 && o.InNS == nil {
		return nil, errors.New("drain: a namespace needs InNS")
	}
	if o.InNS == nil {
		o.InNS = func(fn func() error) error { return fn() }
	}
	return &Rule{o: o, maybe: true}, nil
}

// StopNew installs the rule: SYNs to the address are dropped; packets of
// established connections pass. Clear removes it.
func (r *Rule) StopNew(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drain %s: %w", r.o.Addr, err)
	}
	c, err := nft.Open(r.o.NetNSFd)
	if err != nil {
		return fmt.Errorf("drain %s: %w", r.o.Addr, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maybe = true // even a failed write may leave part of the table
	a := r.o.Addr
	if err := c.ReplaceChain(Table, nft.InputFilter("input"),
		nft.Rule(nft.Drop(), nft.MatchDaddr(a), nft.MatchNewTCP())); err != nil {
		return fmt.Errorf("drain %s: install the rule: %w", a, err)
	}
	r.o.Logger.Info("draining: new connections are turned away", "addr", a)
	return nil
}

// InFlight counts the TCP connections to the address that are still open.
func (r *Rule) InFlight(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	a := r.o.Addr
	family := uint8(unix.AF_INET)
	if a.Is6() {
		family = unix.AF_INET6
	}
	// sock_diag answers for the namespace its socket was opened in, so the
	// dump runs inside.
	var socks []*netlink.Socket
	err := r.o.InNS(func() error {
		var err error
		socks, err = netlink.SocketDiagTCP(family)
		for try := 0; errors.Is(err, netlink.ErrDumpInterrupted) && try < 3; try++ {
			socks, err = netlink.SocketDiagTCP(family)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("count connections to %s: %w", a, err)
	}
	n := 0
	for _, s := range socks {
		local, ok := netip.AddrFromSlice(s.ID.Source)
		if ok && local.Unmap() == a && slices.Contains(openTCPStates, s.State) {
			n++
		}
	}
	return n, nil
}

// Clear removes the rule if one may be installed. A failure is logged and
// retried at the next Clear.
func (r *Rule) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.maybe {
		return
	}
	if err := r.remove(); err != nil {
		r.o.Logger.Warn("could not check for a drain rule to remove", "addr", r.o.Addr, "table", Table, "err", err)
		return
	}
	r.maybe = false
}

// Installed reports whether the drain table exists.
func (r *Rule) Installed() (bool, error) {
	c, err := nft.Open(r.o.NetNSFd)
	if err != nil {
		return false, err
	}
	return c.HasTable(Table)
}

// remove deletes the drain table if it is there.
func (r *Rule) remove() error {
	c, err := nft.Open(r.o.NetNSFd)
	if err != nil {
		return err
	}
	return c.DeleteTable(Table)
}

// Provider is what Wrap adds draining to; it is failover's provider
// interface, declared here where it is used.
type Provider interface {
	Acquire(ctx context.Context) error
	Release(ctx context.Context) error
	Held(ctx context.Context) (bool, error)
}

// Wrapped is a provider that drains through a Rule before planned moves.
type Wrapped struct {
	Provider
	rule *Rule
}

// Wrap returns p with StopNew and InFlight from rule. Acquire and Release
// clear the rule, so it never outlives a move.
func Wrap(p Provider, rule *Rule) *Wrapped { return &Wrapped{Provider: p, rule: rule} }

// Acquire clears a drain rule left behind (a crash mid-drain would turn
// every client away), then acquires.
func (w *Wrapped) Acquire(ctx context.Context) error {
	w.rule.Clear()
	return w.Provider.Acquire(ctx)
}

// Release releases, then clears the rule: the IP's traffic goes elsewhere
// now, and the rule must not turn this node's clients away later.
func (w *Wrapped) Release(ctx context.Context) error {
	err := w.Provider.Release(ctx)
	w.rule.Clear()
	return err
}

// StopNew starts the drain.
func (w *Wrapped) StopNew(ctx context.Context) error { return w.rule.StopNew(ctx) }

// InFlight counts the connections still open to the drained address.
func (w *Wrapped) InFlight(ctx context.Context) (int, error) { return w.rule.InFlight(ctx) }
