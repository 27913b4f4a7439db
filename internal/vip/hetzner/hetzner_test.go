package hetzner

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/hetzner/hcloudfake"
	"github.com/tandem-ha/tandem/internal/vip/viptest"
)

const (
	token = "hcloud-test-token"
	fipID = 4711
)

func newProvider(t *testing.T, f *hcloudfake.Server, server int64, serverInOptions bool) *Provider {
	t.Helper()
	o := Options{
		Token: token, FloatingIPID: fipID,
		Endpoint: f.URL, MetadataEndpoint: f.MetadataURL(server),
		PollInterval: 20 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if serverInOptions {
		o.ServerID = server
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFake(t *testing.T) *hcloudfake.Server {
	f := hcloudfake.New(token, map[int64]string{fipID: "198.51.100.7"})
	t.Cleanup(f.Close)
	return f
}

func TestConformance(t *testing.T) {
	viptest.Run(t, func(t *testing.T) viptest.Env {
		f := newFake(t)
		return viptest.Env{
			// A learns its server id from metadata, B from options.
			A: newProvider(t, f, 11, false), B: newProvider(t, f, 12, true),
			Exclusive:   true,
			ThirdParty:  func(t *testing.T) { f.SetHolder(fipID, 99) },
			ActionDelay: func(t *testing.T, d time.Duration) { f.SetActionDelay(d) },
			Pending: func(t *testing.T, n int) {
				f.FailLocked(n)
				viptest.ExpectServed(t, "locked error", func() int { return f.Stats().Locked })
			},
			RateLimit: func(t *testing.T, d time.Duration) {
				f.RateLimit(d)
				viptest.ExpectServed(t, "429", func() int { return f.Stats().RateLimited })
			},
			RateLimitHeaders: true,
			Assigns:          func() int { return f.Stats().Assigns },
		}
	})
}

func TestRateLimitDoesNotHammer(t *testing.T) {
	f := newFake(t)
	p := newProvider(t, f, 11, true)
	if n := p.RateLimitRemaining(); n != -1 {
		t.Fatalf("RateLimitRemaining before any call = %d, want -1", n)
	}
	f.RateLimit(1200 * time.Millisecond)
	if err := p.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := p.RateLimitRemaining(); n != 3599 {
		t.Fatalf("RateLimitRemaining = %d, want 3599 from the last response", n)
	}
	if n := f.Stats().RateLimited; n < 1 || n > 2 {
		t.Fatalf("provider got %d 429s; want 1 or 2: one to learn the reset, then wait for it", n)
	}
}

func TestErrors(t *testing.T) {
	f := newFake(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"bad token", Options{Token: "nope", FloatingIPID: fipID, ServerID: 1, Endpoint: f.URL, Logger: log}, "unauthorized"},
		{"unknown ip", Options{Token: token, FloatingIPID: 1, ServerID: 1, Endpoint: f.URL, Logger: log}, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Acquire(t.Context()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Acquire = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no token", Options{FloatingIPID: 1, Logger: log}, "token is empty"},
		{"no ip id", Options{Token: "x", Logger: log}, "floating IP id"},
		{"negative server", Options{Token: "x", FloatingIPID: 1, ServerID: -1, Logger: log}, "negative"},
		{"no logger", Options{Token: "x", FloatingIPID: 1}, "Logger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}
