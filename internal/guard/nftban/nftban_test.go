package nftban

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestEnforceReconciles: bans are added with their time left, lifted ones
// removed, changed ones renewed; a new Enforcer (an agent restart) finds
// the kernel's bans in place and changes nothing it need not.
func TestEnforceReconciles(t *testing.T) {
	ns := testenv.NewNetns(t, "to create a network namespace for nftables")
	ctx := context.Background()
	a, b, c6 := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("2001:db8::7")
	e := New(ns)
	if err := e.Enforce(ctx, map[netip.Addr]time.Duration{a: time.Hour, b: 2 * time.Second, c6: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	check := func(e *Enforcer, want map[netip.Addr]time.Duration) {
		t.Helper()
		got, err := e.Banned()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("kernel bans = %v; want %v", got, want)
		}
		for addr, left := range want {
			if d, ok := got[addr]; !ok || d > left || d < left-Tolerance {
				t.Errorf("%v: %v left (present %v); want about %v", addr, d, ok, left)
			}
		}
	}
	check(e, map[netip.Addr]time.Duration{a: time.Hour, b: 2 * time.Second, c6: 10 * time.Minute})

	// The agent restarts: a new Enforcer sees the same bans; the state
	// now lifts c6 and renews a.
	restarted := New(ns)
	check(restarted, map[netip.Addr]time.Duration{a: time.Hour, b: 2 * time.Second, c6: 10 * time.Minute})
	if err := restarted.Enforce(ctx, map[netip.Addr]time.Duration{a: 3 * time.Hour, b: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	check(restarted, map[netip.Addr]time.Duration{a: 3 * time.Hour, b: 2 * time.Second})

	// The kernel expires b by itself, with no tandem involved.
	time.Sleep(2500 * time.Millisecond)
	check(restarted, map[netip.Addr]time.Duration{a: 3*time.Hour - 2500*time.Millisecond})

	// The table deleted by hand is rebuilt at the next sync.
	if err := restarted.conn.DeleteTable(Table); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Enforce(ctx, map[netip.Addr]time.Duration{a: time.Hour}); err != nil {
		t.Fatalf("sync after the table was deleted: %v", err)
	}
	check(restarted, map[netip.Addr]time.Duration{a: time.Hour})
}
