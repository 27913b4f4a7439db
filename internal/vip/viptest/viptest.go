// Package viptest is the conformance suite every floating-IP provider passes.
//
// A provider package builds an Env (two provider instances for two nodes that
// share one IP, plus optional fault hooks on its backend) and calls Run. Cases
// whose hook is nil are skipped, so each backend tests what it can reproduce.
package viptest

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Provider is the seam under test; the failover controller declares the same
// method set on its side.
type Provider interface {
	Acquire(ctx context.Context) error
	Release(ctx context.Context) error
	Held(ctx context.Context) (bool, error)
}

// Env is one fresh backend with two nodes, A and B, sharing one IP.
type Env struct {
	A, B Provider

	// Exclusive is true when the backend itself keeps a single holder (cloud
	// IPs): B.Acquire takes the IP from A without A releasing it. When false
	// (on-link VIP, scripts), the suite releases A first, as the controller does.
	Exclusive bool

	// ReleaseDrops is true when Release makes Held false. Cloud providers keep
	// the IP on Release (the next Acquire reassigns it), so it is false there.
	ReleaseDrops bool

	// ThirdParty makes a node other than A and B hold the IP. Nil if unsupported.
	ThirdParty func(t *testing.T)

	// ActionDelay makes later assignments take d before they complete.
	// Nil if unsupported.
	ActionDelay func(t *testing.T, d time.Duration)

	// Pending makes the next n assignment attempts fail as "event pending" /
	// "locked" (HTTP 422). Nil if unsupported.
	Pending func(t *testing.T, n int)

	// RateLimit makes the next assignment attempt fail with a rate-limit
	// response whose headers say to wait d. Nil if unsupported.
	RateLimit func(t *testing.T, d time.Duration)

	// RateLimitHeaders is true when RateLimit's response carries a reset time
	// the provider must honour (the suite checks the wait is at least d).
	RateLimitHeaders bool

	// Assigns counts the assignments the backend has accepted, so the suite
	// can check that Acquire by the holder assigns nothing. Nil if the
	// backend cannot count them.
	Assigns func() int
}

// ExpectServed makes t fail at cleanup if served() is still zero: a fault
// hook (Pending, RateLimit) whose backend never answered with that fault
// tested nothing. what names the fault, as in "the fake served no 429".
func ExpectServed(t *testing.T, what string, served func() int) {
	t.Helper()
	t.Cleanup(func() {
		if served() == 0 {
			t.Errorf("the fake served no %s", what)
		}
	})
}

// Budget bounds every single call in the suite; fakes are local, so anything
// slower is a bug.
const Budget = 20 * time.Second

// Run runs the conformance cases; newEnv is called once per case.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, e Env)
	}{
		{"InitiallyNobody", testInitiallyNobody},
		{"AcquireMoves", testAcquireMoves},
		{"AcquireIdempotent", testAcquireIdempotent},
		{"ReleaseIdempotent", testReleaseIdempotent},
		{"AcquireHonoursCancel", testAcquireHonoursCancel},
		{"PendingThenSuccess", testPending},
		{"RateLimitThenSuccess", testRateLimit},
		{"SlowAction", testSlowAction},
		{"ThirdPartyTakenOver", testThirdParty},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if e.A == nil || e.B == nil {
				t.Fatal("Env must provide A and B")
			}
			if !e.Exclusive && !e.ReleaseDrops {
				t.Fatal("a non-exclusive backend must drop the IP on Release")
			}
			c.fn(t, e)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), Budget)
	t.Cleanup(cancel)
	return c
}

// want asserts who holds the IP, as each node sees it.
func want(t *testing.T, e Env, a, b bool) {
	t.Helper()
	ha, err := e.A.Held(ctx(t))
	if err != nil {
		t.Fatalf("A.Held: %v", err)
	}
	hb, err := e.B.Held(ctx(t))
	if err != nil {
		t.Fatalf("B.Held: %v", err)
	}
	if ha != a || hb != b {
		t.Fatalf("held: A=%v B=%v, want A=%v B=%v", ha, hb, a, b)
	}
}

func acquire(t *testing.T, name string, p Provider) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.Acquire(ctx(t)); err != nil {
		t.Fatalf("%s.Acquire: %v", name, err)
	}
	return time.Since(start)
}

func release(t *testing.T, name string, p Provider) {
	t.Helper()
	if err := p.Release(ctx(t)); err != nil {
		t.Fatalf("%s.Release: %v", name, err)
	}
}

// moveToB hands the IP from A to B the way the backend requires.
func moveToB(t *testing.T, e Env) {
	t.Helper()
	if !e.Exclusive {
		release(t, "A", e.A)
	}
	acquire(t, "B", e.B)
}

func testInitiallyNobody(t *testing.T, e Env) {
	want(t, e, false, false)
	acquire(t, "A", e.A)
	want(t, e, true, false)
}

func testAcquireMoves(t *testing.T, e Env) {
	acquire(t, "A", e.A)
	moveToB(t, e)
	want(t, e, false, true)
	// And back again: a move is not a one-off.
	if !e.Exclusive {
		release(t, "B", e.B)
	}
	acquire(t, "A", e.A)
	want(t, e, true, false)
}

func testAcquireIdempotent(t *testing.T, e Env) {
	for i := range 3 {
		acquire(t, "A", e.A)
		if i == 0 {
			want(t, e, true, false)
		}
	}
	want(t, e, true, false)
	// The holder's Acquire is a check, not another assignment.
	if e.Assigns != nil {
		if n := e.Assigns(); n != 1 {
			t.Fatalf("assignments after three Acquires by the holder = %d, want 1", n)
		}
	}
}

func testReleaseIdempotent(t *testing.T, e Env) {
	// Release by a node that never held the IP is a no-op.
	release(t, "B", e.B)
	want(t, e, false, false)
	acquire(t, "A", e.A)
	release(t, "A", e.A)
	release(t, "A", e.A)
	release(t, "B", e.B)
	want(t, e, !e.ReleaseDrops, false)
	// The IP can be taken again after release.
	acquire(t, "B", e.B)
	want(t, e, false, true)
}

func testAcquireHonoursCancel(t *testing.T, e Env) {
	// An already-cancelled context fails at once and changes nothing.
	c, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.A.Acquire(c); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire(cancelled) = %v, want context.Canceled", err)
	}
	want(t, e, false, false)

	// A deadline that ends while the assignment is still in flight.
	if e.ActionDelay == nil && e.Pending == nil {
		return
	}
	if e.ActionDelay != nil {
		e.ActionDelay(t, time.Hour)
	} else {
		e.Pending(t, 1<<30)
	}
	c, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.A.Acquire(c)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with a stuck backend = %v, want context.DeadlineExceeded", err)
	}
	if took > 5*time.Second {
		t.Fatalf("Acquire returned %v after its deadline of 300ms", took)
	}
}

func testPending(t *testing.T, e Env) {
	if e.Pending == nil {
		t.Skip("backend cannot reproduce a pending event")
	}
	acquire(t, "A", e.A)
	e.Pending(t, 2)
	if !e.Exclusive {
		release(t, "A", e.A)
	}
	acquire(t, "B", e.B)
	want(t, e, false, true)
}

func testRateLimit(t *testing.T, e Env) {
	if e.RateLimit == nil {
		t.Skip("backend cannot reproduce rate limiting")
	}
	const wait = 1500 * time.Millisecond
	e.RateLimit(t, wait)
	took := acquire(t, "A", e.A)
	want(t, e, true, false)
	if e.RateLimitHeaders {
		// Reset headers have one-second resolution, so allow up to a second
		// early and a few seconds late.
		if took < wait-time.Second {
			t.Fatalf("Acquire took %v; it must wait for the rate-limit reset (%v)", took, wait)
		}
		if took > wait+4*time.Second {
			t.Fatalf("Acquire took %v; rate-limit reset was %v", took, wait)
		}
	}
}

func testSlowAction(t *testing.T, e Env) {
	if e.ActionDelay == nil {
		t.Skip("backend cannot slow actions down")
	}
	const d = 700 * time.Millisecond
	e.ActionDelay(t, d)
	took := acquire(t, "A", e.A)
	// Acquire returns only once the move is confirmed.
	if took < d {
		t.Fatalf("Acquire returned after %v, before the %v action completed", took, d)
	}
	want(t, e, true, false)
}

func testThirdParty(t *testing.T, e Env) {
	if e.ThirdParty == nil {
		t.Skip("backend cannot simulate a third holder")
	}
	e.ThirdParty(t)
	want(t, e, false, false)
	acquire(t, "A", e.A)
	want(t, e, true, false)
}
