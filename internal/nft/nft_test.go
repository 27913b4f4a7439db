package nft

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestRuleExpressions(t *testing.T) {
	tests := []struct {
		addr    string
		nfproto byte
		offset  uint32
		length  uint32
	}{
		{"10.0.0.1", 2, 16, 4},        // NFPROTO_IPV4, daddr at 16
		{"::ffff:10.0.0.1", 2, 16, 4}, // mapped addresses are IPv4
		{"2001:db8::1", 10, 24, 16},   // NFPROTO_IPV6, daddr at 24
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			r := Rule(Drop(), MatchDaddr(netip.MustParseAddr(tt.addr)), MatchNewTCP())
			if len(r) != 10 {
				t.Fatalf("rule has %d expressions, want 10", len(r))
			}
			if c := r[1].(*expr.Cmp); c.Data[0] != tt.nfproto {
				t.Errorf("nfproto = %d, want %d", c.Data[0], tt.nfproto)
			}
			if p := r[2].(*expr.Payload); p.Offset != tt.offset || p.Len != tt.length {
				t.Errorf("daddr payload at %d len %d, want %d len %d", p.Offset, p.Len, tt.offset, tt.length)
			}
			if v, ok := r[9].(*expr.Verdict); !ok || v.Kind != expr.VerdictDrop {
				t.Errorf("last expression = %#v, want drop", r[9])
			}
		})
	}
}

func TestTableLifecycle(t *testing.T) {
	ns := testenv.NewNetns(t, "to create a network namespace for nftables")
	c, err := Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	const table = "tandem_test"
	if ok, err := c.HasTable(table); err != nil || ok {
		t.Fatalf("HasTable before = %v, %v; want false", ok, err)
	}
	rule := Rule(Drop(), MatchDaddr(netip.MustParseAddr("192.0.2.1")), MatchNewTCP())
	// Replacing twice leaves one rule: the chain is rewritten, not appended to.
	for range 2 {
		if err := c.ReplaceChain(table, InputFilter("input"), rule); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := c.c.GetRules(&nftables.Table{Family: nftables.TableFamilyINet, Name: table}, &nftables.Chain{Name: "input"})
	if err != nil || len(rules) != 1 {
		t.Fatalf("chain holds %d rules (%v), want 1", len(rules), err)
	}
	if ok, err := c.HasTable(table); err != nil || !ok {
		t.Fatalf("HasTable after ReplaceChain = %v, %v; want true", ok, err)
	}
	for range 2 { // deleting is idempotent
		if err := c.DeleteTable(table); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := c.HasTable(table); err != nil || ok {
		t.Fatalf("HasTable after DeleteTable = %v, %v; want false", ok, err)
	}
}

func TestAddrSet(t *testing.T) {
	ns := testenv.NewNetns(t, "to create a network namespace for nftables")
	c, err := Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	v4 := AddrSet{Table: "tandem_test", Name: "bans4"}
	v6 := AddrSet{Table: "tandem_test", Name: "bans6", IPv6: true}
	for _, s := range []AddrSet{v4, v6, v4} { // EnsureSet twice keeps the set
		if err := c.EnsureSet(s); err != nil {
			t.Fatal(err)
		}
	}
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	if err := c.AddAddrs(v4, b, a); err != nil {
		t.Fatal(err)
	}
	if err := c.AddAddrs(v6, netip.MustParseAddr("2001:db8::9")); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureSet(v4); err != nil { // keeps the elements
		t.Fatal(err)
	}
	got, err := c.Addrs(v4)
	if err != nil || !slices.Equal(got, []netip.Addr{a, b}) {
		t.Fatalf("Addrs = %v, %v; want [%v %v]", got, err, a, b)
	}
	if err := c.DeleteAddrs(v4, a); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Addrs(v4); err != nil || !slices.Equal(got, []netip.Addr{b}) {
		t.Fatalf("Addrs after delete = %v, %v; want [%v]", got, err, b)
	}
	// A family mismatch is refused before nftables sees it.
	if err := c.AddAddrs(v4, netip.MustParseAddr("2001:db8::1")); err == nil || !strings.Contains(err.Error(), "not an IPv4 address") {
		t.Errorf("adding an IPv6 address to an IPv4 set: %v", err)
	}
	if err := c.DeleteTable(v4.Table); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Addrs(v4); err == nil {
		t.Error("Addrs of a deleted table succeeded")
	}
}
