package linux

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestDrain: while draining, new connections to the VIP get no answer (their
// SYNs are dropped, so clients retry later rather than fail), established
// ones keep working and are counted until they close, and Release and
// Acquire remove the rule.
func TestDrain(t *testing.T) {
	a, b := netnsPair(t)
	pa := newProvider(t, a, "va", Options{GARPCount: 1})
	pb := newProvider(t, b, "vb", Options{GARPCount: 1})
	ctx := t.Context()
	if err := pa.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(vip.Addr().String(), "9000")

	// An echo server in A, on the VIP.
	var ln net.Listener
	if err := pa.inNS(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	dial := func(timeout time.Duration) (net.Conn, error) {
		var c net.Conn
		err := pb.inNS(func() (err error) { c, err = net.DialTimeout("tcp", addr, timeout); return err })
		return c, err
	}
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err := io.ReadFull(c, buf)
		return err
	}
	old, err := dial(time.Second)
	if err != nil {
		t.Fatalf("dial before draining: %v", err)
	}
	if err := echo(old); err != nil {
		t.Fatalf("echo before draining: %v", err)
	}
	if n, err := pa.InFlight(ctx); err != nil || n != 1 {
		t.Fatalf("InFlight with one connection = %d, %v; want 1", n, err)
	}

	if err := pa.StopNew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pa.StopNew(ctx); err != nil {
		t.Fatalf("StopNew twice: %v", err)
	}
	if c, err := dial(300 * time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted while draining")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("a new connection while draining failed with %v; want a timeout (SYN dropped), not a refusal", err)
	}
	if err := echo(old); err != nil {
		t.Fatalf("an established connection broke while draining: %v", err)
	}
	old.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, err := pa.InFlight(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("InFlight = %d two seconds after the only connection closed", n)
		}
		time.Sleep(10 * time.Millisecond)
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
	// A rule left by a crash is removed by the next Acquire.
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
	c, err := dial(time.Second)
	if err != nil {
		t.Fatalf("dial after Acquire: %v", err)
	}
	defer c.Close()
	if err := echo(c); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("echo after Acquire: %v", err)
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
