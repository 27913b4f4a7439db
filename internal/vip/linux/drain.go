package linux

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DrainTable is the nftables table (family inet) that turns new TCP
// connections to the VIP away while a planned move drains: it drops their
// SYNs, so clients retry after a second and reach the new holder instead of
// being reset.
const DrainTable = "tandem_vip_drain"

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

func (p *Provider) nft() (*nftables.Conn, error) {
	if p.ns >= 0 {
		return nftables.New(nftables.WithNetNSFd(int(p.ns)))
	}
	return nftables.New()
}

// StopNew installs the drain rule: SYNs to the VIP are dropped; packets of
// established connections pass. Release and Acquire remove it.
func (p *Provider) StopNew(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("drain %s: %w", p.o.Prefix, err)
	}
	c, err := p.nft()
	if err != nil {
		return fmt.Errorf("drain %s: nftables: %w", p.o.Prefix, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drainMaybe = true // even a failed flush may leave part of the table
	a := p.o.Prefix.Addr()
	nfproto, daddrOffset := byte(unix.NFPROTO_IPV4), uint32(16)
	if a.Is6() {
		nfproto, daddrOffset = unix.NFPROTO_IPV6, 24
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: DrainTable})
	ch := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	c.FlushChain(ch)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOffset, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		// tcp flags & (syn|ack) == syn: a new connection's first segment.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("drain %s: install the nftables rule: %w", p.o.Prefix, err)
	}
	p.o.Logger.Info("vip draining: new connections are turned away", "provider", "linux", "vip", p.o.Prefix)
	return nil
}

// InFlight counts the TCP connections to the VIP that are still open.
func (p *Provider) InFlight(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	a := p.o.Prefix.Addr()
	family := uint8(unix.AF_INET)
	if a.Is6() {
		family = unix.AF_INET6
	}
	// The netlink handle has no sock_diag socket in the provider's
	// namespace (it would open one in the caller's), so dump from inside.
	var socks []*netlink.Socket
	err := p.inNS(func() error {
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

// clearDrainLocked removes the drain rule if one may be installed; p.mu is
// held. A failure is logged and retried at the next Acquire or Release.
func (p *Provider) clearDrainLocked() {
	if !p.drainMaybe {
		return
	}
	if err := p.removeDrain(); err != nil {
		p.o.Logger.Warn("could not check for a drain rule to remove", "vip", p.o.Prefix, "table", DrainTable, "err", err)
		return
	}
	p.drainMaybe = false
}

// removeDrain deletes the drain table if it is there.
func (p *Provider) removeDrain() error {
	c, err := p.nft()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == DrainTable {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("nftables: remove %s: %w", DrainTable, err)
			}
		}
	}
	return nil
}
