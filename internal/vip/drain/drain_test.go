package drain_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tandem-ha/tandem/internal/vip/drain"
	"github.com/tandem-ha/tandem/internal/vip/internal/netnsrun"
	"github.com/tandem-ha/tandem/internal/vip/viptest"
)

// cloudIP stands in for a cloud provider: the IP moves by API call, and
// this node only sees its traffic arrive at a local address.
type cloudIP struct{ held atomic.Bool }

func (c *cloudIP) Acquire(context.Context) error      { c.held.Store(true); return nil }
func (c *cloudIP) Release(context.Context) error      { c.held.Store(false); return nil }
func (c *cloudIP) Held(context.Context) (bool, error) { return c.held.Load(), nil }

func openNS(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func newRule(t *testing.T, ns netns.NsHandle, addr netip.Addr) *drain.Rule {
	t.Helper()
	r, err := drain.New(drain.Options{
		Addr: addr, NetNSFd: int(ns), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		InNS: func(fn func() error) error { return netnsrun.Do(ns, fn) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func installed(t *testing.T, r *drain.Rule) bool {
	t.Helper()
	ok, err := r.Installed()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestWrappedCloudProvider: while draining, new connections to the local
// address get no answer (their SYNs are dropped, so clients retry later
// rather than fail), established ones keep working and are counted until
// they close, and Release and Acquire remove the rule.
func TestWrappedCloudProvider(t *testing.T) {
	pathA, pathB := viptest.NetnsPair(t)
	nsA, nsB := openNS(t, pathA), openNS(t, pathB)
	local := netip.MustParseAddr("10.77.0.1") // va's address: where the cloud delivers
	rule := newRule(t, nsA, local)
	cloud := &cloudIP{}
	p := drain.Wrap(cloud, rule)
	ctx := t.Context()
	if err := p.Acquire(ctx); err != nil || !cloud.held.Load() {
		t.Fatalf("Acquire = %v, held %v", err, cloud.held.Load())
	}
	addr := net.JoinHostPort(local.String(), "9000")

	var ln net.Listener
	if err := netnsrun.Do(nsA, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
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
		err := netnsrun.Do(nsB, func() (err error) { c, err = net.DialTimeout("tcp", addr, timeout); return err })
		return c, err
	}
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err
	}
	old, err := dial(time.Second)
	if err != nil {
		t.Fatalf("dial before draining: %v", err)
	}
	if err := echo(old); err != nil {
		t.Fatalf("echo before draining: %v", err)
	}
	if n, err := p.InFlight(ctx); err != nil || n != 1 {
		t.Fatalf("InFlight with one connection = %d, %v; want 1", n, err)
	}

	if err := p.StopNew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.StopNew(ctx); err != nil {
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
		n, err := p.InFlight(ctx)
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

	if err := p.Release(ctx); err != nil || cloud.held.Load() {
		t.Fatalf("Release = %v, held %v", err, cloud.held.Load())
	}
	if installed(t, rule) {
		t.Fatal("the drain table outlived Release")
	}
	// A rule left by a crash mid-drain is removed by the next Acquire, also
	// in a new process (a new Rule).
	if err := p.StopNew(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := drain.Wrap(cloud, newRule(t, nsA, local))
	if err := restarted.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if installed(t, rule) {
		t.Fatal("Acquire left an earlier process's drain table in place")
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

func TestNewRejects(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    drain.Options
	}{
		{"no address", drain.Options{NetNSFd: -1, Logger: log}},
		{"no logger", drain.Options{Addr: netip.MustParseAddr("10.0.0.1"), NetNSFd: -1}},
		{"namespace without InNS", drain.Options{Addr: netip.MustParseAddr("10.0.0.1"), NetNSFd: 3, Logger: log}},
	} {
		if _, err := drain.New(tc.o); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, tc.o)
		}
	}
}
