package linux

import (
	"net"
	"testing"
	"time"
)

// TestDrain: the provider drains its VIP (the connection-level behaviour is
// tested in package drain): StopNew turns new connections to the VIP away,
// and Release, Acquire and a new process's Acquire remove the rule.
func TestDrain(t *testing.T) {
	a, b := netnsPair(t)
	pa := newProvider(t, a, "va", Options{GARPCount: 1})
	pb := newProvider(t, b, "vb", Options{GARPCount: 1})
	ctx := t.Context()
	if err := pa.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(vip.Addr().String(), "9000")
	var ln net.Listener
	if err := pa.inNS(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := func() error {
		return pb.inNS(func() error {
			c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	if err := dial(); err != nil {
		t.Fatalf("dial before draining: %v", err)
	}
	if err := pa.StopNew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dial(); err == nil {
		t.Fatal("a new connection to the VIP was accepted while draining")
	}
	if !hasDrainTable(t, pa) {
		t.Fatal("no drain table while draining")
	}
	if err := pa.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if hasDrainTable(t, pa) {
		t.Fatal("the drain table outlived Release")
	}
	if err := pa.StopNew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pa.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if hasDrainTable(t, pa) {
		t.Fatal("Acquire left a drain table in place")
	}
	// The same when the rule was left by another process (a crash).
	if err := pa.StopNew(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := newProvider(t, a, "va", Options{GARPCount: 1})
	if err := restarted.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if hasDrainTable(t, restarted) {
		t.Fatal("a new provider's Acquire left an earlier process's drain table in place")
	}
	if err := dial(); err != nil {
		t.Fatalf("dial after Acquire: %v", err)
	}
}

func hasDrainTable(t *testing.T, p *Provider) bool {
	t.Helper()
	ok, err := p.drain.Installed()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
