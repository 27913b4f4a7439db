package bans

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/guard"
)

// single is a one-node cluster: Apply applies to its own machine.
type single struct {
	m       *state.Machine
	mu      sync.Mutex
	idx     uint64
	applied atomic.Int32
	delay   time.Duration
}

func newSingle(t *testing.T) *single {
	s := &single{m: state.New()}
	for _, m := range []state.Member{
		{Name: "node1", Role: state.RoleApp, Address: "192.0.2.1:7946"},
		{Name: "node2", Role: state.RoleApp, Address: "192.0.2.2:7946"},
	} {
		if err := s.Apply(context.Background(), state.AddMember{Member: m}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *single) Apply(_ context.Context, cmd state.Command) error {
	time.Sleep(s.delay)
	b, err := state.Encode(cmd)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idx++
	s.applied.Add(1)
	return s.m.Apply(s.idx, b)
}

type kernel struct {
	mu    sync.Mutex
	bans  map[netip.Addr]time.Duration
	calls int
}

func (k *kernel) Enforce(_ context.Context, b map[netip.Addr]time.Duration) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.bans = maps.Clone(b)
	k.calls++
	return nil
}

func (k *kernel) snapshot() (map[netip.Addr]time.Duration, int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.bans), k.calls
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type counter struct {
	mu sync.Mutex
	by map[string]int
}

func (c *counter) Decided(jail, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by == nil {
		c.by = map[string]int{}
	}
	c.by[jail+"/"+result]++
}
func (c *counter) Enforced(time.Duration)      {}
func (c *counter) Synced(time.Duration, error) {}
func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[k]
}

func start(t *testing.T, o Options) (*Controller, context.CancelFunc) {
	t.Helper()
	o.Log = quiet()
	ctrl := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctrl, cancel
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func decision(a string) guard.Decision {
	return guard.Decision{Addr: netip.MustParseAddr(a), Jail: "sshd", Failures: 5, Bantime: time.Hour, At: time.Now()}
}

// TestProtectedAddresses: a member's address and an ignored network are
// refused at proposal, and a committed ban naming one (as a buggy or
// hostile node would commit) is kept out of the kernel.
func TestProtectedAddresses(t *testing.T) {
	cl, k, obs := newSingle(t), &kernel{}, &counter{}
	ctrl, _ := start(t, Options{Name: "node1", Cluster: cl, Machine: cl.m, Enforcer: k, Observer: obs})
	ctrl.SetIgnore([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")})

	for _, a := range []string{"192.0.2.2", "198.51.100.9", "::ffff:192.0.2.1"} {
		if _, err := ctrl.Ban(context.Background(), netip.MustParseAddr(a), time.Hour, "test"); !errors.Is(err, ErrProtected) {
			t.Errorf("Ban(%s) = %v; want ErrProtected", a, err)
		}
		ctrl.Decide(decision(a))
	}
	waitFor(t, "three protected decisions", func() bool { return obs.get("sshd/protected") == 3 })

	// Committed behind the controller's back: an ignored address (the
	// state cannot know the ignore list), and a ban of an address that
	// becomes a member's afterwards.
	for _, a := range []string{"198.51.100.7", "203.0.113.50", "203.0.113.51"} {
		cmd := state.BanAddr{Addr: netip.MustParseAddr(a), Jail: "sshd", By: "node2", At: time.Now(), Bantime: time.Hour}
		if err := cl.Apply(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Apply(context.Background(), state.AddMember{Member: state.Member{Name: "node3", Role: state.RoleApp, Address: "203.0.113.51:7946"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the kernel to hold only the unprotected ban", func() bool {
		b, _ := k.snapshot()
		_, ok := b[netip.MustParseAddr("203.0.113.50")]
		return ok && len(b) == 1
	})
}

// TestBurstProposesOnceAndCoalesces: a burst of decisions on one attacker
// is committed once, and a burst of bans costs far fewer kernel syncs than
// bans.
func TestBurstProposesOnceAndCoalesces(t *testing.T) {
	cl, k, obs := newSingle(t), &kernel{}, &counter{}
	cl.delay = 2 * time.Millisecond
	ctrl, _ := start(t, Options{Name: "node1", Cluster: cl, Machine: cl.m, Enforcer: k, Observer: obs})
	before := cl.applied.Load()
	for range 50 {
		ctrl.Decide(decision("203.0.113.7"))
	}
	waitFor(t, "50 decisions handled", func() bool { return obs.get("sshd/banned")+obs.get("sshd/already") == 50 })
	if n := cl.applied.Load() - before; n != 1 {
		t.Errorf("50 decisions on one address committed %d bans; want 1", n)
	}
	_, syncs0 := k.snapshot()
	for i := range 200 {
		ctrl.Decide(decision(netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 10)}).String()))
	}
	waitFor(t, "201 bans in the kernel", func() bool { b, _ := k.snapshot(); return len(b) == 201 })
	_, syncs := k.snapshot()
	t.Logf("200 bans took %d kernel syncs", syncs-syncs0)
	if syncs-syncs0 >= 200 {
		t.Errorf("200 bans took %d kernel syncs; want them coalesced", syncs-syncs0)
	}
}

// TestWithoutEnforcerAndQueueFull: a node without an enforcer still
// proposes; a full queue drops (and counts) rather than blocking the
// engine.
func TestQueueFullDrops(t *testing.T) {
	cl, obs := newSingle(t), &counter{}
	ctrl := New(Options{Name: "node1", Cluster: cl, Machine: cl.m, Observer: obs, Log: quiet()})
	// Not running: the queue fills.
	done := make(chan struct{})
	go func() {
		for range queueSize + 10 {
			ctrl.Decide(decision("203.0.113.7"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Decide blocked on a full queue")
	}
	if got := obs.get("sshd/dropped"); got != 10 {
		t.Errorf("dropped = %d; want 10", got)
	}
}

// TestExpiryAndRemainingTime: the kernel gets each ban's time left, and an
// expired ban leaves at the next sync.
func TestExpiryAndRemainingTime(t *testing.T) {
	cl, k := newSingle(t), &kernel{}
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	ctrl, _ := start(t, Options{Name: "node1", Cluster: cl, Machine: cl.m, Enforcer: k, Resync: 10 * time.Millisecond,
		Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	a := netip.MustParseAddr("2001:db8::7")
	if _, err := ctrl.Ban(context.Background(), a, 10*time.Minute, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ban in the kernel", func() bool { b, _ := k.snapshot(); return b[a] == 10*time.Minute })
	clock.Store(now.Add(4 * time.Minute).UnixNano())
	waitFor(t, "the time left to shrink", func() bool { b, _ := k.snapshot(); return b[a] == 6*time.Minute })
	clock.Store(now.Add(11 * time.Minute).UnixNano())
	waitFor(t, "the expired ban to leave", func() bool { b, _ := k.snapshot(); _, ok := b[a]; return !ok })
	if err := ctrl.Unban(context.Background(), a); !errors.Is(err, state.ErrNotBanned) {
		t.Errorf("Unban of an expired ban = %v; want ErrNotBanned", err)
	}
}

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"aé", 2, "a"}, {"éé", 3, "é"}} {
		if got := truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q; want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
