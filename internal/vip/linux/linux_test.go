package linux

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/vip/viptest"
)

var (
	vip   = netip.MustParsePrefix("10.77.0.100/24")
	vipV6 = netip.MustParsePrefix("fd77::100/64")
)

// ip and netnsPair are the shared helpers of viptest.
var (
	ip        = viptest.IP
	netnsPair = viptest.NetnsPair
)

func newProvider(t *testing.T, nsPath, ifname string, o Options) *Provider {
	t.Helper()
	o.Interface, o.NetNSPath = ifname, nsPath
	if !o.Prefix.IsValid() {
		o.Prefix = vip
	}
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestConformance(t *testing.T) {
	viptest.Run(t, func(t *testing.T) viptest.Env {
		a, b := netnsPair(t)
		o := Options{GARPCount: 2, GARPRepeat: 50 * time.Millisecond, GARPRefresh: 200 * time.Millisecond}
		return viptest.Env{
			A:            newProvider(t, a, "va", o),
			B:            newProvider(t, b, "vb", o),
			ReleaseDrops: true,
		}
	})
}

func TestConformanceIPv6(t *testing.T) {
	viptest.Run(t, func(t *testing.T) viptest.Env {
		a, b := netnsPair(t)
		o := Options{Prefix: vipV6, GARPCount: 2, GARPRepeat: 50 * time.Millisecond, GARPRefresh: 200 * time.Millisecond}
		return viptest.Env{
			A:            newProvider(t, a, "va", o),
			B:            newProvider(t, b, "vb", o),
			ReleaseDrops: true,
		}
	})
}

type garpSeen struct {
	at  time.Time
	op  arp.Operation
	src net.HardwareAddr
	pkt *arp.Packet
	dst net.HardwareAddr
}

// captureFrames reads frames of protocol proto on the peer's interface
// until stop is closed, and returns those keep accepts.
func captureFrames[T any](t *testing.T, peer *Provider, proto int, stop <-chan struct{}, keep func([]byte) (T, bool)) <-chan []T {
	t.Helper()
	l, err := peer.link()
	if err != nil {
		t.Fatal(err)
	}
	attrs := l.Attrs()
	var conn *packet.Conn
	if err := peer.inNS(func() error {
		var err error
		conn, err = packet.Listen(&net.Interface{Index: attrs.Index, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr}, packet.Raw, proto, nil)
		return err
	}); err != nil {
		t.Fatalf("capture socket: %v", err)
	}
	out := make(chan []T, 1)
	go func() {
		defer conn.Close()
		var seen []T
		buf := make([]byte, 1500)
		for {
			select {
			case <-stop:
				out <- seen
				return
			default:
			}
			_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				continue
			}
			if v, ok := keep(buf[:n]); ok {
				seen = append(seen, v)
			}
		}
	}()
	return out
}

// capture reads ARP frames announcing the VIP on the peer until stop is
// closed.
func capture(t *testing.T, peer *Provider, stop <-chan struct{}) <-chan []garpSeen {
	return captureFrames(t, peer, unix.ETH_P_ARP, stop, func(b []byte) (garpSeen, bool) {
		var f ethernet.Frame
		if f.UnmarshalBinary(b) != nil || f.EtherType != ethernet.EtherTypeARP {
			return garpSeen{}, false
		}
		var pk arp.Packet
		if pk.UnmarshalBinary(f.Payload) != nil || pk.SenderIP != vip.Addr() {
			return garpSeen{}, false
		}
		return garpSeen{at: time.Now(), op: pk.Operation, src: f.Source, pkt: &pk, dst: f.Destination}, true
	})
}

func TestGratuitousARP(t *testing.T) {
	a, b := netnsPair(t)
	pa := newProvider(t, a, "va", Options{GARPCount: 3, GARPRepeat: 300 * time.Millisecond, GARPRefresh: 400 * time.Millisecond})
	pb := newProvider(t, b, "vb", Options{})
	la, err := pa.link()
	if err != nil {
		t.Fatal(err)
	}
	macA := la.Attrs().HardwareAddr

	stop := make(chan struct{})
	got := capture(t, pb, stop)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := pa.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if held, err := pa.Held(t.Context()); err != nil || !held {
		t.Fatalf("Held after Acquire = %v, %v", held, err)
	}
	// The address must really be on va, as the kernel sees it.
	if out := ip(t, "-n", strings.TrimPrefix(a, "/run/netns/"), "-4", "addr", "show", "dev", "va"); !strings.Contains(out, "10.77.0.100/24") {
		t.Fatalf("VIP not on va:\n%s", out)
	}
	time.Sleep(1300 * time.Millisecond) // bursts at ~0, 0.3, 0.7, 1.1 s
	if err := pa.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	time.Sleep(600 * time.Millisecond) // a refresh would be due at ~1.5 s
	close(stop)
	seen := <-got

	var req, rep, after int
	for _, s := range seen {
		if !bytes.Equal(s.src, macA) || !bytes.Equal(s.pkt.SenderHardwareAddr, macA) {
			t.Fatalf("GARP from %v (sender hw %v), want %v", s.src, s.pkt.SenderHardwareAddr, macA)
		}
		if !bytes.Equal(s.dst, ethernet.Broadcast) || s.pkt.TargetIP != vip.Addr() {
			t.Fatalf("GARP to %v for %v, want broadcast for %v", s.dst, s.pkt.TargetIP, vip.Addr())
		}
		if s.at.After(released.Add(20 * time.Millisecond)) {
			after++
		}
		switch s.op {
		case arp.OperationRequest:
			req++
		case arp.OperationReply:
			rep++
		}
	}
	// Three or four bursts of 3 requests + 3 replies.
	if req < 9 || rep < 9 {
		t.Fatalf("saw %d requests and %d replies in 1.3 s, want >= 9 each (burst, repeat, refresh)", req, rep)
	}
	if req > 15 || rep > 15 {
		t.Fatalf("saw %d requests and %d replies, want no more than 5 bursts' worth", req, rep)
	}
	if after > 0 {
		t.Fatalf("%d GARPs after Release; the announcer must stop", after)
	}
	if first := seen[0].at.Sub(start); first > 200*time.Millisecond {
		t.Fatalf("first GARP %v after Acquire began", first)
	}
	if held, err := pa.Held(t.Context()); err != nil || held {
		t.Fatalf("Held after Release = %v, %v", held, err)
	}
}

// A peer whose ARP cache points the VIP at a third machine (a former holder)
// must be corrected by the announcements.
func TestPeerCacheTakenOver(t *testing.T) {
	a, b := netnsPair(t)
	nsB := strings.TrimPrefix(b, "/run/netns/")
	const stale = "02:00:00:00:00:99"
	ip(t, "-n", nsB, "neigh", "replace", vip.Addr().String(), "lladdr", stale, "dev", "vb", "nud", "stale")
	pa := newProvider(t, a, "va", Options{GARPCount: 2, GARPRepeat: 200 * time.Millisecond, GARPRefresh: 300 * time.Millisecond})
	la, err := pa.link()
	if err != nil {
		t.Fatal(err)
	}
	if err := pa.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := la.Attrs().HardwareAddr.String()
	deadline := time.Now().Add(3 * time.Second)
	for {
		out := ip(t, "-n", nsB, "neigh", "show", vip.Addr().String(), "dev", "vb")
		if strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer's neighbour entry still %q, want lladdr %s", strings.TrimSpace(out), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The IPv6 counterpart: unsolicited neighbour advertisements with the
// Override flag must move a peer's neighbour entry to the new holder. The
// kernel checks hop limit, checksum and flags, so this also proves the
// frames well formed.
func TestPeerNeighbourEntryTakenOver(t *testing.T) {
	a, b := netnsPair(t)
	nsB := strings.TrimPrefix(b, "/run/netns/")
	const stale = "02:00:00:00:00:99"
	ip(t, "-n", nsB, "-6", "neigh", "replace", vipV6.Addr().String(), "lladdr", stale, "dev", "vb", "nud", "stale")
	pa := newProvider(t, a, "va", Options{Prefix: vipV6, GARPCount: 2, GARPRepeat: 200 * time.Millisecond, GARPRefresh: 300 * time.Millisecond})
	pb := newProvider(t, b, "vb", Options{Prefix: vipV6})
	la, err := pa.link()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	got := captureNA(t, pb, stop)
	time.Sleep(50 * time.Millisecond)
	if err := pa.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if out := ip(t, "-n", strings.TrimPrefix(a, "/run/netns/"), "-6", "addr", "show", "dev", "va"); !strings.Contains(out, vipV6.String()) {
		t.Fatalf("VIP not on va:\n%s", out)
	}
	want := la.Attrs().HardwareAddr.String()
	deadline := time.Now().Add(3 * time.Second)
	for {
		out := ip(t, "-n", nsB, "-6", "neigh", "show", vipV6.Addr().String(), "dev", "vb")
		if strings.Contains(out, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer's neighbour entry still %q, want lladdr %s", strings.TrimSpace(out), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := pa.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(stop)
	seen := <-got
	if len(seen) < 2 {
		t.Fatalf("saw %d advertisements for %s, want a burst of 2", len(seen), vipV6.Addr())
	}
	for _, na := range seen {
		if !na.Override || na.Solicited || na.Router {
			t.Fatalf("advertisement flags O=%v S=%v R=%v, want override only", na.Override, na.Solicited, na.Router)
		}
	}
}

// captureNA reads neighbour advertisements for the IPv6 VIP on the peer
// until stop is closed.
func captureNA(t *testing.T, peer *Provider, stop <-chan struct{}) <-chan []*ndp.NeighborAdvertisement {
	return captureFrames(t, peer, unix.ETH_P_IPV6, stop, func(b []byte) (*ndp.NeighborAdvertisement, bool) {
		na, ok := parseNA(b)
		return na, ok && na.TargetAddress == vipV6.Addr()
	})
}

// parseNA returns the neighbour advertisement in an Ethernet frame.
func parseNA(frame []byte) (*ndp.NeighborAdvertisement, bool) {
	var f ethernet.Frame
	if f.UnmarshalBinary(frame) != nil || f.EtherType != ethernet.EtherTypeIPv6 || len(f.Payload) < 40 || f.Payload[6] != 58 {
		return nil, false
	}
	m, err := ndp.ParseMessage(f.Payload[40:])
	if err != nil {
		return nil, false
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	return na, ok
}

func TestNAFrame(t *testing.T) {
	hw := net.HardwareAddr{0x02, 1, 2, 3, 4, 5}
	target := vipV6.Addr()
	for _, router := range []bool{false, true} {
		frame, err := NAFrame(hw, target, router)
		if err != nil {
			t.Fatal(err)
		}
		var f ethernet.Frame
		if err := f.UnmarshalBinary(frame); err != nil {
			t.Fatal(err)
		}
		if f.Destination.String() != "33:33:00:00:00:01" || !bytes.Equal(f.Source, hw) || f.EtherType != ethernet.EtherTypeIPv6 {
			t.Fatalf("ethernet header %v -> %v type %v", f.Source, f.Destination, f.EtherType)
		}
		h := f.Payload
		if len(h) < 40 || h[0]>>4 != 6 || h[6] != 58 || h[7] != 255 {
			t.Fatalf("IPv6 header % x: want version 6, ICMPv6, hop limit 255", h[:min(len(h), 40)])
		}
		if plen := int(h[4])<<8 | int(h[5]); plen != len(h)-40 {
			t.Fatalf("payload length %d, want %d", plen, len(h)-40)
		}
		src, _ := netip.AddrFromSlice(h[8:24])
		dst, _ := netip.AddrFromSlice(h[24:40])
		if src != target || dst != netip.MustParseAddr("ff02::1") {
			t.Fatalf("IPv6 %v -> %v, want %v -> ff02::1", src, dst, target)
		}
		// The checksum over the pseudo-header and the message sums to all ones.
		if sum := onesSum(h[8:40], []byte{0, 0, byte(len(h[40:]) >> 8), byte(len(h[40:])), 0, 0, 0, 58}, h[40:]); sum != 0xffff {
			t.Fatalf("ICMPv6 checksum does not verify (sum %#x)", sum)
		}
		na, ok := parseNA(frame)
		if !ok {
			t.Fatal("frame is not a neighbour advertisement")
		}
		if na.TargetAddress != target || !na.Override || na.Solicited || na.Router != router {
			t.Fatalf("advertisement %+v, want target %v, override, router=%v", na, target, router)
		}
		if len(na.Options) != 1 {
			t.Fatalf("options %v, want the target link-layer address", na.Options)
		}
		lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
		if !ok || lla.Direction != ndp.Target || !bytes.Equal(lla.Addr, hw) {
			t.Fatalf("option %+v, want target link-layer address %v", na.Options[0], hw)
		}
	}
	for _, bad := range []string{"10.0.0.1", "::ffff:10.0.0.1"} {
		if _, err := NAFrame(hw, netip.MustParseAddr(bad), false); err == nil {
			t.Fatalf("NAFrame accepted %s", bad)
		}
	}
}

// onesSum is the Internet checksum's one's-complement sum of the parts.
func onesSum(parts ...[]byte) uint16 {
	var sum uint32
	for _, p := range parts {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func TestAcquireMissingInterface(t *testing.T) {
	a, _ := netnsPair(t)
	p := newProvider(t, a, "nope0", Options{})
	err := p.Acquire(t.Context())
	if err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Fatalf("Acquire on a missing interface = %v, want an error naming it", err)
	}
	if err := p.Release(t.Context()); err != nil {
		t.Fatalf("Release on a missing interface = %v, want nil", err)
	}
}

func TestCloseStopsAnnouncer(t *testing.T) {
	a, _ := netnsPair(t)
	p := newProvider(t, a, "va", Options{GARPRepeat: 10 * time.Millisecond, GARPRefresh: 10 * time.Millisecond})
	if err := p.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := p.garpDone
	p.Close()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("announcer still running after Close")
	}
	if err := p.Acquire(t.Context()); err == nil {
		t.Fatal("Acquire after Close succeeded")
	}
}

func TestGARPFrames(t *testing.T) {
	hw := net.HardwareAddr{0x02, 1, 2, 3, 4, 5}
	frames, err := GARPFrames(hw, vip.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 {
		t.Fatalf("%d frames, want request and reply", len(frames))
	}
	for i, want := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		var f ethernet.Frame
		if err := f.UnmarshalBinary(frames[i]); err != nil {
			t.Fatal(err)
		}
		var pk arp.Packet
		if err := pk.UnmarshalBinary(f.Payload); err != nil {
			t.Fatal(err)
		}
		if pk.Operation != want || pk.SenderIP != vip.Addr() || pk.TargetIP != vip.Addr() || !bytes.Equal(pk.SenderHardwareAddr, hw) {
			t.Fatalf("frame %d: %+v", i, pk)
		}
	}
	if _, err := GARPFrames(hw, netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Fatal("GARPFrames accepted IPv6")
	}
}

func TestNewRejects(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no interface", Options{Prefix: vip, Logger: log}, "interface is empty"},
		{"no prefix", Options{Interface: "eth0", Logger: log}, "prefix is not set"},
		{"no logger", Options{Interface: "eth0", Prefix: vip}, "Logger"},
		{"bad netns", Options{Interface: "eth0", Prefix: vip, Logger: log, NetNSPath: "/nonexistent/ns"}, "open netns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
			if tc.name == "bad netns" && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("New = %v, want ErrNotExist", err)
			}
		})
	}
}
