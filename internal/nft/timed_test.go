package nft

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tandem-ha/tandem/internal/testenv"
)

// inNetns runs fn on a thread inside the namespace open at fd.
func inNetns(t *testing.T, fd int, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(netns.NsHandle(fd)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("cannot return to the test's namespace: " + err.Error())
		}
	}()
	fn()
}

func TestTimedSet(t *testing.T) {
	ns := testenv.NewNetns(t, "to create a network namespace for nftables")
	c, err := Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	v4 := AddrSet{Table: "tandem_test", Name: "bans4", Timeout: true}
	v6 := AddrSet{Table: "tandem_test", Name: "bans6", IPv6: true, Timeout: true}
	for range 2 { // idempotent
		if err := c.EnsureDropSources("tandem_test", InputBefore("input"), v4, v6); err != nil {
			t.Fatal(err)
		}
	}
	short, long := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	six := netip.MustParseAddr("2001:db8::9")
	if err := c.ChangeTimed(v4, nil, []Element{{Addr: short, Timeout: 1500 * time.Millisecond}, {Addr: long, Timeout: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if err := c.ChangeTimed(v6, nil, []Element{{Addr: six, Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Timed(v4)
	if err != nil || len(got) != 2 || got[0].Addr != short || got[1].Addr != long {
		t.Fatalf("Timed = %+v, %v; want %v and %v", got, err, short, long)
	}
	if got[1].Timeout != time.Hour || got[1].Expires <= 59*time.Minute || got[1].Expires > time.Hour {
		t.Errorf("%v: timeout %v expires %v; want an hour, nearly all left", long, got[1].Timeout, got[1].Expires)
	}
	// Re-adding the chain and sets (an agent restart) keeps the elements.
	if err := c.EnsureDropSources("tandem_test", InputBefore("input"), v4, v6); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Timed(v6); err != nil || len(got) != 1 || got[0].Addr != six {
		t.Fatalf("after EnsureDropSources again: %+v, %v; want %v kept", got, err, six)
	}
	// A renewed timeout: removed and added in one transaction.
	if err := c.ChangeTimed(v4, []netip.Addr{long}, []Element{{Addr: long, Timeout: 2 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	// Removing an absent address changes nothing at all.
	err = c.ChangeTimed(v4, []netip.Addr{netip.MustParseAddr("203.0.113.1")}, []Element{{Addr: netip.MustParseAddr("203.0.113.2"), Timeout: time.Hour}})
	if err == nil {
		t.Error("removing an absent address succeeded")
	}
	// The kernel expires the short one by itself.
	time.Sleep(1700 * time.Millisecond)
	got, err = c.Timed(v4)
	if err != nil || len(got) != 1 || got[0].Addr != long || got[0].Timeout != 2*time.Hour {
		t.Fatalf("after 1.7 s: %+v, %v; want only %v with its renewed 2h", got, err, long)
	}
	for _, bad := range []Element{{Addr: six, Timeout: time.Hour}, {Addr: short}, {Addr: short, Timeout: 2 * MaxElementTimeout}} {
		if err := c.ChangeTimed(v4, nil, []Element{bad}); err == nil {
			t.Errorf("ChangeTimed(%+v) succeeded; want refused", bad)
		}
	}
	if err := c.ChangeTimed(AddrSet{Table: "t", Name: "plain"}, nil, nil); err == nil || !strings.Contains(err.Error(), "not a timeout set") {
		t.Errorf("ChangeTimed on a set without timeouts = %v", err)
	}
}

// TestDropSourcesDrops checks the chain in the kernel: a TCP connection
// from a banned source over loopback gets no answer, one from another
// address connects, and after the ban's timeout the banned one connects
// again.
func TestDropSourcesDrops(t *testing.T) {
	ns := testenv.NewNetns(t, "to create a network namespace for nftables")
	c, err := Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	v4 := AddrSet{Table: "tandem_guard_test", Name: "bans4", Timeout: true}
	if err := c.EnsureDropSources(v4.Table, InputBefore("input"), v4); err != nil {
		t.Fatal(err)
	}
	banned := netip.MustParseAddr("127.0.0.2")
	if err := c.ChangeTimed(v4, nil, []Element{{Addr: banned, Timeout: 2 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	inNetns(t, ns, func() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	dial := func(from string) error {
		var err error
		inNetns(t, ns, func() {
			d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			var conn net.Conn
			if conn, err = d.Dial("tcp4", ln.Addr().String()); err == nil {
				conn.Close()
			}
		})
		return err
	}
	if err := dial("127.0.0.3"); err != nil {
		t.Fatalf("dial from an address not banned: %v", err)
	}
	var ne net.Error
	if err := dial(banned.String()); err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial from the banned address = %v; want a timeout (dropped)", err)
	}
	time.Sleep(2 * time.Second)
	if err := dial(banned.String()); err != nil {
		t.Fatalf("dial after the ban's timeout: %v", err)
	}
}
