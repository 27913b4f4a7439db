// Package linux holds an on-link virtual IP: it adds the address to an
// interface with netlink and announces it with gratuitous ARP (IPv4) or
// unsolicited neighbour advertisements (IPv6, RFC 4861 7.2.6).
//
// On acquire it sends a burst of announcements (for IPv4, gratuitous ARP
// requests and replies, since old kernels and some switches heed only one
// kind), repeats the burst after GARPRepeat, then refreshes every
// GARPRefresh until the IP is released, so a cache poisoned by a transient
// holder heals (keepalived#20, vip-manager#12).
package linux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/vip/drain"
	"github.com/tandem-ha/tandem/internal/vip/internal/netnsrun"
)

// Options configures a Provider.
type Options struct {
	// Interface carries the VIP, e.g. "eth1".
	Interface string
	// Prefix is the VIP with its prefix length, e.g. 10.0.0.100/24.
	Prefix netip.Prefix
	// GARPCount is how many ARP requests and how many replies (IPv4), or
	// neighbour advertisements (IPv6), one burst sends (default 5, as
	// keepalived).
	GARPCount int
	// GARPRepeat is when the second burst goes out (default 5s; negative:
	// no second burst, refreshes still run).
	GARPRepeat time.Duration
	// GARPRefresh is the period of later bursts while held (default 60s;
	// negative: never).
	GARPRefresh time.Duration
	// NetNSPath runs everything in the network namespace at this path (e.g.
	// /run/netns/x) instead of the caller's. Used by tests and the lab.
	NetNSPath string
	Logger    *slog.Logger
}

// Provider holds the VIP on one interface. Safe for concurrent use; Close
// stops the announcer and frees the netlink handle.
type Provider struct {
	o    Options
	ns   netns.NsHandle // -1 when running in the caller's namespace
	nl   *netlink.Handle
	addr *netlink.Addr

	life   context.Context // ends at Close
	finish context.CancelFunc

	mu       sync.Mutex
	stopGARP context.CancelFunc // non-nil while the announcer runs
	garpDone chan struct{}
	closed   bool
	drain    *drain.Rule
}

// New checks the options and opens a netlink handle; it changes nothing.
func New(o Options) (*Provider, error) {
	if o.Interface == "" {
		return nil, errors.New("linux vip: interface is empty; name the interface that carries the VIP")
	}
	if !o.Prefix.IsValid() {
		return nil, errors.New("linux vip: prefix is not set; give the VIP with its prefix length, e.g. 10.0.0.100/24")
	}
	if o.Prefix.Addr().Is4In6() {
		o.Prefix = netip.PrefixFrom(o.Prefix.Addr().Unmap(), o.Prefix.Bits()-96)
	}
	if o.Logger == nil {
		return nil, errors.New("linux vip: Logger is nil")
	}
	if o.GARPCount <= 0 {
		o.GARPCount = 5
	}
	if o.GARPRepeat == 0 {
		o.GARPRepeat = 5 * time.Second
	}
	if o.GARPRefresh == 0 {
		o.GARPRefresh = 60 * time.Second
	}
	p := &Provider{o: o, ns: -1}
	var err error
	if o.NetNSPath != "" {
		if p.ns, err = netns.GetFromPath(o.NetNSPath); err != nil {
			return nil, fmt.Errorf("linux vip: open netns %s: %w", o.NetNSPath, err)
		}
		p.nl, err = netlink.NewHandleAt(p.ns)
	} else {
		p.nl, err = netlink.NewHandle()
	}
	if err != nil {
		p.closeNS()
		return nil, fmt.Errorf("linux vip: netlink: %w", err)
	}
	if err := p.nl.SetSocketTimeout(5 * time.Second); err != nil {
		p.nl.Close()
		p.closeNS()
		return nil, fmt.Errorf("linux vip: netlink: %w", err)
	}
	a := o.Prefix.Addr()
	p.addr = &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(o.Prefix.Bits(), a.BitLen())}}
	if a.Is6() {
		// No duplicate address detection: the VIP must work at once, and the
		// old holder is gone by construction.
		p.addr.Flags = unix.IFA_F_NODAD
	}
	p.drain, err = drain.New(drain.Options{Addr: a, NetNSFd: int(p.ns), InNS: p.inNS, Logger: o.Logger.With("provider", "linux")})
	if err != nil {
		p.nl.Close()
		p.closeNS()
		return nil, fmt.Errorf("linux vip: %w", err)
	}
	p.life, p.finish = context.WithCancel(context.Background())
	return p, nil
}

func (p *Provider) closeNS() {
	if p.ns >= 0 {
		p.ns.Close()
	}
}

// Close stops the announcer and releases resources. It does not remove the
// address: call Release first to give the VIP up.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.stopLocked()
	p.mu.Unlock()
	p.finish()
	p.nl.Close()
	p.closeNS()
	return nil
}

func (p *Provider) link() (netlink.Link, error) {
	l, err := p.nl.LinkByName(p.o.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", p.o.Interface, err)
	}
	return l, nil
}

// Acquire adds the VIP to the interface (if missing) and makes sure the
// announcer runs. The first burst goes out before Acquire returns.
func (p *Provider) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acquire %s: %w", p.o.Prefix, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("acquire %s: provider is closed", p.o.Prefix)
	}
	l, err := p.link()
	if err != nil {
		return fmt.Errorf("acquire %s: %w", p.o.Prefix, err)
	}
	// A drain rule left by a crash mid-drain would turn every client away.
	p.drain.Clear()
	added := true
	if err := p.nl.AddrAdd(l, p.addr); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("acquire %s: add to %s: %w", p.o.Prefix, p.o.Interface, err)
		}
		added = false
	}
	if added || p.stopGARP == nil {
		p.o.Logger.Info("vip acquired", "provider", "linux", "vip", p.o.Prefix, "interface", p.o.Interface, "added", added)
		p.stopLocked()
		p.startLocked(l)
	}
	return nil
}

// Release stops the announcer and removes the VIP from the interface.
func (p *Provider) Release(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("release %s: %w", p.o.Prefix, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
	if p.closed {
		return fmt.Errorf("release %s: provider is closed", p.o.Prefix)
	}
	l, err := p.link()
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil // no interface, no address
		}
		return fmt.Errorf("release %s: %w", p.o.Prefix, err)
	}
	if err := p.nl.AddrDel(l, p.addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("release %s: remove from %s: %w", p.o.Prefix, p.o.Interface, err)
	}
	// Without the address no SYN is accepted here anyway; the drain rule
	// must not outlive the move and turn this node's clients away later.
	p.drain.Clear()
	return nil
}

// Held reports whether the VIP is configured on the interface.
func (p *Provider) Held(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.o.Prefix, err)
	}
	l, err := p.link()
	if err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.o.Prefix, err)
	}
	addrs, err := p.nl.AddrList(l, netlink.FAMILY_ALL)
	for try := 0; errors.Is(err, netlink.ErrDumpInterrupted) && try < 3; try++ {
		addrs, err = p.nl.AddrList(l, netlink.FAMILY_ALL)
	}
	if err != nil {
		return false, fmt.Errorf("holder of %s: list addresses on %s: %w", p.o.Prefix, p.o.Interface, err)
	}
	want := p.o.Prefix.Addr()
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == want {
			return true, nil
		}
	}
	return false, nil
}

// startLocked sends the first burst now and starts the repeat/refresh loop.
func (p *Provider) startLocked(l netlink.Link) {
	ctx, cancel := context.WithCancel(p.life)
	done := make(chan struct{})
	p.stopGARP, p.garpDone = cancel, done
	p.burst(l.Attrs())
	go func() {
		defer close(done)
		next := p.o.GARPRepeat
		if next <= 0 {
			next = p.o.GARPRefresh
		}
		for next > 0 {
			t := time.NewTimer(next)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			l, err := p.link()
			if err != nil {
				p.o.Logger.Error("announce vip", "vip", p.o.Prefix, "err", err)
			} else {
				p.burst(l.Attrs())
			}
			next = p.o.GARPRefresh
		}
	}()
}

// stopLocked stops the announcer and waits for it, so no frame for this VIP
// leaves after Release returns.
func (p *Provider) stopLocked() {
	if p.stopGARP == nil {
		return
	}
	p.stopGARP()
	<-p.garpDone
	p.stopGARP, p.garpDone = nil, nil
}

// burst sends one burst of announcements. Failures are logged, not
// returned: the address is configured either way, and peers still learn it
// on their next ARP request or neighbour solicitation.
func (p *Provider) burst(attrs *netlink.LinkAttrs) {
	if err := p.announce(attrs); err != nil {
		p.o.Logger.Error("announce vip", "vip", p.o.Prefix, "interface", p.o.Interface, "err", err)
		return
	}
	p.o.Logger.Debug("announcement burst sent", "vip", p.o.Prefix, "interface", p.o.Interface, "count", p.o.GARPCount)
}

// announce sends GARPCount gratuitous ARP requests and as many replies for
// an IPv4 VIP, or GARPCount unsolicited neighbour advertisements for IPv6.
func (p *Provider) announce(attrs *netlink.LinkAttrs) error {
	ifi := &net.Interface{Index: attrs.Index, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr, MTU: attrs.MTU}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s has no Ethernet address", ifi.Name)
	}
	a := p.o.Prefix.Addr()
	proto := unix.ETH_P_ARP
	if a.Is6() {
		proto = unix.ETH_P_IPV6
	}
	// One trip into the namespace: the socket, and for IPv6 the forwarding
	// sysctl, which only reads right from inside.
	var (
		conn   *packet.Conn
		router bool
	)
	err := p.inNS(func() error {
		if a.Is6() {
			router = forwarding(ifi.Name)
		}
		var err error
		conn, err = packet.Listen(ifi, packet.Raw, proto, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("open packet socket on %s: %w", ifi.Name, err)
	}
	var frames [][]byte
	if a.Is4() {
		frames, err = GARPFrames(ifi.HardwareAddr, a)
	} else {
		var f []byte
		f, err = NAFrame(ifi.HardwareAddr, a, router)
		frames = [][]byte{f}
	}
	if err != nil {
		conn.Close()
		return err
	}
	defer conn.Close()
	// The frames carry their own destination; the socket needs one too.
	dst := &packet.Addr{HardwareAddr: net.HardwareAddr(frames[0][:6])}
	for range p.o.GARPCount {
		for _, f := range frames {
			if _, err := conn.WriteTo(f, dst); err != nil {
				return fmt.Errorf("send on %s: %w", ifi.Name, err)
			}
		}
	}
	return nil
}

// forwarding reports whether IPv6 forwarding is on for ifname in the calling
// thread's namespace: a router must keep the Router flag in its
// advertisements, or hosts drop it from their default router lists.
func forwarding(ifname string) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + ifname + "/forwarding")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// GARPFrames builds the two broadcast Ethernet frames that announce ip at hw:
// a gratuitous request (target hardware zero) and a gratuitous reply.
func GARPFrames(hw net.HardwareAddr, ip netip.Addr) ([][]byte, error) {
	var out [][]byte
	for _, op := range []struct {
		op  arp.Operation
		thw net.HardwareAddr
	}{
		{arp.OperationRequest, ethernet.Broadcast},
		{arp.OperationReply, ethernet.Broadcast},
	} {
		thw := op.thw
		if op.op == arp.OperationRequest {
			thw = net.HardwareAddr{0, 0, 0, 0, 0, 0}
		}
		pk, err := arp.NewPacket(op.op, hw, ip, thw, ip)
		if err != nil {
			return nil, fmt.Errorf("build ARP %v: %w", op.op, err)
		}
		pb, err := pk.MarshalBinary()
		if err != nil {
			return nil, err
		}
		fb, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: hw, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out, fb)
	}
	return out, nil
}

// allNodes is ff02::1 and its Ethernet multicast address (RFC 2464).
var (
	allNodes    = netip.MustParseAddr("ff02::1")
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}
)

// NAFrame builds the Ethernet frame of an unsolicited neighbour
// advertisement for ip at hw (RFC 4861 7.2.6): from ip to all nodes, hop
// limit 255, Override set so caches that point elsewhere are updated,
// Solicited clear, Router as given, with hw as the target link-layer
// address. keepalived sends the same.
func NAFrame(hw net.HardwareAddr, ip netip.Addr, router bool) ([]byte, error) {
	if !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("neighbour advertisement for %s: not an IPv6 address", ip)
	}
	na := &ndp.NeighborAdvertisement{
		Router:        router,
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: hw}},
	}
	icmp, err := ndp.MarshalMessageChecksum(na, ip, allNodes)
	if err != nil {
		return nil, fmt.Errorf("build neighbour advertisement: %w", err)
	}
	pkt := make([]byte, 40, 40+len(icmp))
	pkt[0] = 6 << 4 // version; traffic class and flow label zero
	binary.BigEndian.PutUint16(pkt[4:6], uint16(len(icmp)))
	pkt[6] = 58  // next header: ICMPv6
	pkt[7] = 255 // hop limit: receivers drop ND messages with any other
	src, dst := ip.As16(), allNodes.As16()
	copy(pkt[8:24], src[:])
	copy(pkt[24:40], dst[:])
	pkt = append(pkt, icmp...)
	return (&ethernet.Frame{Destination: allNodesMAC, Source: hw, EtherType: ethernet.EtherTypeIPv6, Payload: pkt}).MarshalBinary()
}

// inNS runs fn in the provider's namespace (see netnsrun.Do).
func (p *Provider) inNS(fn func() error) error { return netnsrun.Do(p.ns, fn) }
