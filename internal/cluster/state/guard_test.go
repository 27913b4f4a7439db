package state

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"testing"
	"time"
)

var attacker = netip.MustParseAddr("203.0.113.7")

func jailBan(addr netip.Addr, by string, at time.Time) BanAddr {
	return BanAddr{Addr: addr, Jail: "sshd", Line: "Failed password for root from " + addr.String(), By: by, At: at,
		Bantime: 10 * time.Minute, Factor: 2, MaxBantime: time.Hour}
}

// TestBanCommands walks one address through bans, repeats and unbans in a
// table: each step is one command, its verdict and the ban after it.
func TestBanCommands(t *testing.T) {
	m := threeNodes(t)
	if err := mustApply(t, m, 4, AddMember{Member: Member{Name: "node1", Role: RoleApp, Address: "198.51.100.1:7946"}}); err != nil {
		t.Fatal(err)
	}
	manual := BanAddr{Addr: attacker, Jail: "manual", Reason: "seen in the web logs", By: "node2", At: t0.Add(3 * time.Hour), Bantime: 24 * time.Hour, Manual: true}
	steps := []struct {
		name      string
		cmd       Command
		wantErr   error
		banned    bool
		wantUntil time.Time // when banned
		offence   int
	}{
		{"first ban: the jail's bantime", jailBan(attacker, "node1", t0), nil, true, t0.Add(10 * time.Minute), 1},
		{"a second node decides the same: nothing changes", jailBan(attacker, "node2", t0.Add(time.Minute)), nil, true, t0.Add(10 * time.Minute), 1},
		{"unban before it expires", UnbanAddr{Addr: attacker, By: "node2", At: t0.Add(2 * time.Minute)}, nil, false, time.Time{}, 0},
		{"unban again", UnbanAddr{Addr: attacker, By: "node2", At: t0.Add(3 * time.Minute)}, ErrNotBanned, false, time.Time{}, 0},
		{"unban forgot the history: first offence again", jailBan(attacker, "node1", t0.Add(4*time.Minute)), nil, true, t0.Add(14 * time.Minute), 1},
		{"after expiry, the second offence doubles", jailBan(attacker, "node1", t0.Add(20*time.Minute)), nil, true, t0.Add(40 * time.Minute), 2},
		{"the third doubles again", jailBan(attacker, "node2", t0.Add(time.Hour)), nil, true, t0.Add(time.Hour + 40*time.Minute), 3},
		{"the fourth is capped at an hour", jailBan(attacker, "node1", t0.Add(2*time.Hour)), nil, true, t0.Add(3 * time.Hour), 4},
		{"an expired ban cannot be unbanned", UnbanAddr{Addr: attacker, By: "node1", At: t0.Add(3 * time.Hour)}, ErrNotBanned, false, time.Time{}, 0},
		{"an operator's ban replaces any and does not grow", manual, nil, true, t0.Add(27 * time.Hour), 5},
		{"the witness may not ban", jailBan(attacker, "witness", t0.Add(4*time.Hour)), ErrForbidden, true, t0.Add(27 * time.Hour), 5},
		{"nor a stranger", jailBan(attacker, "ghost", t0.Add(4*time.Hour)), ErrForbidden, true, t0.Add(27 * time.Hour), 5},
		{"nor unban", UnbanAddr{Addr: attacker, By: "witness", At: t0.Add(4 * time.Hour)}, ErrForbidden, true, t0.Add(27 * time.Hour), 5},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := mustApply(t, m, uint64(10+i), s.cmd); !errors.Is(err, s.wantErr) {
				t.Fatalf("Apply = %v; want %v", err, s.wantErr)
			}
			g := m.View().Guard()
			b, ok := g.Bans[attacker]
			now := s.cmd.(interface{ at() time.Time }).at()
			if ok && !b.Active(now) {
				ok = false
			}
			if ok != s.banned {
				t.Fatalf("banned = %v (%+v); want %v", ok, b, s.banned)
			}
			if ok && (!b.Until.Equal(s.wantUntil) || b.Offence != s.offence) {
				t.Errorf("ban until %v offence %d; want until %v offence %d", b.Until, b.Offence, s.wantUntil, s.offence)
			}
		})
	}
}

func (c BanAddr) at() time.Time   { return c.At }
func (c UnbanAddr) at() time.Time { return c.At }

func TestBanRefusals(t *testing.T) {
	m := threeNodes(t)
	if err := mustApply(t, m, 4, AddMember{Member: Member{Name: "node2", Role: RoleApp, Address: "198.51.100.2:7946"}}); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*BanAddr)) BanAddr {
		c := jailBan(attacker, "node1", t0)
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cmd  BanAddr
		want error
	}{
		{"a member's address", mod(func(c *BanAddr) { c.Addr = netip.MustParseAddr("198.51.100.2") }), ErrMemberAddress},
		{"no address", mod(func(c *BanAddr) { c.Addr = netip.Addr{} }), ErrInvalid},
		{"loopback", mod(func(c *BanAddr) { c.Addr = netip.MustParseAddr("127.0.0.1") }), ErrInvalid},
		{"unspecified", mod(func(c *BanAddr) { c.Addr = netip.MustParseAddr("::") }), ErrInvalid},
		{"IPv4-mapped", mod(func(c *BanAddr) { c.Addr = netip.MustParseAddr("::ffff:203.0.113.7") }), ErrInvalid},
		{"multicast", mod(func(c *BanAddr) { c.Addr = netip.MustParseAddr("ff02::1") }), ErrInvalid},
		{"no jail", mod(func(c *BanAddr) { c.Jail = "" }), ErrInvalid},
		{"a jail with spaces", mod(func(c *BanAddr) { c.Jail = "ssh d" }), ErrInvalid},
		{"a long line", mod(func(c *BanAddr) { c.Line = string(make([]byte, 513)) }), ErrInvalid},
		{"no bantime", mod(func(c *BanAddr) { c.Bantime = 0 }), ErrInvalid},
		{"a bantime of years", mod(func(c *BanAddr) { c.Bantime = 10 * MaxBantime }), ErrInvalid},
		{"a factor below one", mod(func(c *BanAddr) { c.Factor = 0.5 }), ErrInvalid},
		{"no time", mod(func(c *BanAddr) { c.At = time.Time{} }), ErrInvalid},
		{"the control: a valid ban", mod(func(*BanAddr) {}), nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := m.View().Guard()
			err := mustApply(t, m, uint64(10+i), tt.cmd)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Apply = %v; want %v", err, tt.want)
			}
			if err != nil && m.View().Guard() != before {
				t.Error("a refused ban changed the state")
			}
		})
	}
}

// TestBanLimitAndPruning fills the cluster to its ban limit: one more is
// refused with a clear error until a ban expires, which the next command's
// time prunes.
func TestBanLimitAndPruning(t *testing.T) {
	defer func(a, h int) { activeBanLimit, historyLimit = a, h }(activeBanLimit, historyLimit)
	activeBanLimit, historyLimit = 5, 7
	m := threeNodes(t)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}) }
	for i := range 5 {
		c := jailBan(addr(i+1), "node1", t0.Add(time.Duration(i)*time.Minute))
		if err := mustApply(t, m, uint64(10+i), c); err != nil {
			t.Fatal(err)
		}
	}
	err := mustApply(t, m, 20, jailBan(addr(9), "node1", t0.Add(5*time.Minute)))
	if !errors.Is(err, ErrBanLimit) {
		t.Fatalf("ban beyond the limit = %v; want ErrBanLimit", err)
	}
	// The first ban (t0, 10 min) has expired at t0+10m: pruned, room for one.
	if err := mustApply(t, m, 21, jailBan(addr(9), "node1", t0.Add(10*time.Minute))); err != nil {
		t.Fatalf("ban after one expired = %v", err)
	}
	g := m.View().Guard()
	if _, ok := g.Bans[addr(1)]; ok || len(g.Bans) != 5 {
		t.Errorf("bans = %d (first still there: %v); want 5 without the expired one", len(g.Bans), ok)
	}
	// History beyond its bound drops the oldest unbanned records.
	for i := 10; i < 14; i++ {
		if err := mustApply(t, m, uint64(30+i), jailBan(addr(i), "node1", t0.Add(time.Hour+time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	g = m.View().Guard()
	if len(g.History) > 7 {
		t.Errorf("history holds %d records; want at most 7", len(g.History))
	}
	for a := range g.Bans {
		if _, ok := g.History[a]; !ok {
			t.Errorf("active ban %v lost its history", a)
		}
	}
	// Records older than HistoryKeep go with the next command.
	late := t0.Add(HistoryKeep + 3*time.Hour)
	if err := mustApply(t, m, 50, jailBan(addr(99), "node1", late)); err != nil {
		t.Fatal(err)
	}
	g = m.View().Guard()
	if len(g.History) != 1 || len(g.Bans) != 1 {
		t.Errorf("after %v: %d history records, %d bans; want 1 and 1", HistoryKeep, len(g.History), len(g.Bans))
	}
}

func TestGrownBantime(t *testing.T) {
	tests := []struct {
		base, limit time.Duration
		factor      float64
		prior       int
		want        time.Duration
	}{
		{time.Minute, 0, 2, 5, time.Minute}, // no cap: no growth
		{time.Minute, time.Hour, 2, 0, time.Minute},
		{time.Minute, time.Hour, 2, 3, 8 * time.Minute},
		{time.Minute, time.Hour, 2, 1000, time.Hour},
		{time.Minute, time.Hour, 1, 1000, time.Minute},
		{10 * time.Minute, time.Hour, 1.5, 2, 22*time.Minute + 30*time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt), func(t *testing.T) {
			if got := grownBantime(tt.base, tt.factor, tt.limit, tt.prior); got != tt.want {
				t.Errorf("grownBantime = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestGuardAuthorize(t *testing.T) {
	app, witness := Member{Name: "node1", Role: RoleApp}, Member{Name: "witness", Role: RoleWitness}
	tests := []struct {
		name   string
		cmd    Command
		caller Member
		ok     bool
	}{
		{"own ban", jailBan(attacker, "node1", t0), app, true},
		{"a ban in another's name", jailBan(attacker, "node2", t0), app, false},
		{"a witness's ban in its own name", jailBan(attacker, "witness", t0), witness, false},
		{"own unban", UnbanAddr{Addr: attacker, By: "node1", At: t0}, app, true},
		{"a witness's unban", UnbanAddr{Addr: attacker, By: "witness", At: t0}, witness, false},
	}
	m := New()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := Encode(tt.cmd)
			err := m.Authorize(tt.caller, b)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrForbidden)) {
				t.Errorf("Authorize = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestGuardSnapshotRoundTrip: bans and history survive Save and Restore
// (invariant I4), byte for byte.
func TestGuardSnapshotRoundTrip(t *testing.T) {
	m := threeNodes(t)
	for i, a := range []string{"203.0.113.7", "2001:db8::7"} {
		if err := mustApply(t, m, uint64(10+i), jailBan(netip.MustParseAddr(a), "node1", t0)); err != nil {
			t.Fatal(err)
		}
	}
	saved, err := m.Save()
	if err != nil {
		t.Fatal(err)
	}
	again := New()
	if err := again.Restore(saved); err != nil {
		t.Fatal(err)
	}
	g := again.View().Guard()
	if len(g.ActiveBans(t0)) != 2 || g.History[netip.MustParseAddr("2001:db8::7")].Count != 1 {
		t.Errorf("restored guard = %+v", g)
	}
	if b, _ := again.Save(); string(b) != string(saved) {
		t.Errorf("round trip differs:\n%s\n%s", saved, b)
	}
}

// FuzzBanCommand applies arbitrary ban and unban entries, as a hostile
// member could commit them: Apply never panics, a refused entry changes
// nothing, and what is accepted keeps the domain's rules (no member's
// address, a valid address, a ban that ends after it starts and within
// MaxBantime).
func FuzzBanCommand(f *testing.F) {
	for _, c := range []Command{
		jailBan(attacker, "node1", t0),
		BanAddr{Addr: netip.MustParseAddr("2001:db8::1"), Jail: "manual", By: "node2", At: t0, Bantime: time.Hour, Manual: true},
		UnbanAddr{Addr: attacker, By: "node1", At: t0},
		jailBan(netip.MustParseAddr("198.51.100.1"), "node1", t0),
	} {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"ban_addr","data":{"addr":"::ffff:1.2.3.4","by":"node1","bantime":-1}}`))
	f.Add([]byte(`{"type":"ban_addr","data":{"addr":"203.0.113.9","jail":"x","by":"node1","at":"2026-11-25T12:00:00Z","bantime":1,"factor":1e308,"max_bantime":9e18}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := threeNodes(t)
		if err := mustApply(t, m, 4, AddMember{Member: Member{Name: "node1", Role: RoleApp, Address: "198.51.100.1:7946"}}); err != nil {
			t.Fatal(err)
		}
		if err := m.Apply(5, mustEncodeBytes(t, jailBan(attacker, "node1", t0))); err != nil {
			t.Fatal(err)
		}
		before, _ := m.Save()
		err := m.Apply(6, data)
		after, _ := m.Save()
		if err != nil {
			// Only the index may move.
			if string(stripIndex(before)) != string(stripIndex(after)) {
				t.Fatalf("a refused entry (%v) changed the state", err)
			}
			return
		}
		g := m.View().Guard()
		if len(g.Bans) > activeBanLimit {
			t.Fatalf("%d bans; the limit is %d", len(g.Bans), activeBanLimit)
		}
		for a, b := range g.Bans {
			if ValidBanAddr(a) != nil || a != b.Addr {
				t.Fatalf("ban of an invalid address %v (%v)", a, b.Addr)
			}
			if _, ok := m.View().MemberHolding(a); ok {
				t.Fatalf("ban of a member's address %v", a)
			}
			if !b.Until.After(b.At) || b.Until.Sub(b.At) > MaxBantime {
				t.Fatalf("ban %+v: until must be after at, within %v", b, MaxBantime)
			}
		}
	})
}

func mustEncodeBytes(t *testing.T, c Command) []byte {
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stripIndex removes the snapshot's index, which a rejected entry moves.
func stripIndex(b []byte) []byte {
	return regexp.MustCompile(`"index":\d+,`).ReplaceAll(b, nil)
}
