package digitalocean

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/digitalocean/dofake"
	"github.com/tandem-ha/tandem/internal/vip/viptest"
)

const (
	token = "dop_v1_test"
	vip   = "203.0.113.10"
)

func newProvider(t *testing.T, f *dofake.Server, droplet int, fromAPI bool, dropletInOptions bool) *Provider {
	t.Helper()
	o := Options{
		Token: token, IP: netip.MustParseAddr(vip),
		BaseURL: f.URL, MetadataURL: f.MetadataURL(droplet),
		HeldFromAPI:  fromAPI,
		PollInterval: 20 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if dropletInOptions {
		o.DropletID = droplet
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func env(fromAPI bool) func(t *testing.T) viptest.Env {
	return func(t *testing.T) viptest.Env {
		f := dofake.New(token, vip)
		t.Cleanup(f.Close)
		return viptest.Env{
			// A learns its droplet id from metadata, B from options.
			A: newProvider(t, f, 101, fromAPI, false), B: newProvider(t, f, 102, fromAPI, true),
			Exclusive:   true,
			ThirdParty:  func(t *testing.T) { f.SetHolder(vip, 999) },
			ActionDelay: func(t *testing.T, d time.Duration) { f.SetActionDelay(d) },
			Pending: func(t *testing.T, n int) {
				f.FailPending(n)
				viptest.ExpectServed(t, "pending-event 422", func() int { return f.Stats().Pending })
			},
			RateLimit: func(t *testing.T, d time.Duration) {
				f.RateLimit(d)
				viptest.ExpectServed(t, "429", func() int { return f.Stats().RateLimited })
			},
			RateLimitHeaders: true,
			Assigns:          func() int { return f.Stats().Assigns },
		}
	}
}

func TestConformanceMetadata(t *testing.T) { viptest.Run(t, env(false)) }
func TestConformanceAPI(t *testing.T)      { viptest.Run(t, env(true)) }

// A rate-limited client must sleep until the reset, not hammer the API.
func TestRateLimitDoesNotHammer(t *testing.T) {
	f := dofake.New(token, vip)
	t.Cleanup(f.Close)
	p := newProvider(t, f, 101, false, true)
	f.RateLimit(1200 * time.Millisecond)
	if err := p.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := p.RateLimitRemaining(); n != 4999 {
		t.Fatalf("RateLimitRemaining = %d, want 4999 from the last response", n)
	}
	if n := f.Stats().RateLimited; n < 1 || n > 2 {
		t.Fatalf("provider got %d 429s; want 1 or 2: one to learn the reset, then wait for it", n)
	}
}

// The API answers 422 when the droplet already has the IP; that is success.
func TestAlreadyAssignedToUs(t *testing.T) {
	f := dofake.New(token, vip)
	t.Cleanup(f.Close)
	p := newProvider(t, f, 101, false, true)
	if _, err := p.assign(t.Context(), 101); err != nil {
		t.Fatal(err)
	}
	action, err := p.assign(t.Context(), 101)
	if err != nil || action != nil {
		t.Fatalf("second assign = %v, %v; want nil, nil (already ours)", action, err)
	}
	if f.Stats().Assigns != 1 {
		t.Fatalf("assigns = %d, want 1", f.Stats().Assigns)
	}
}

// A droplet that holds a different reserved IP cannot take this one.
func TestDropletHoldsAnotherIP(t *testing.T) {
	f := dofake.New(token, vip, "203.0.113.99")
	t.Cleanup(f.Close)
	f.SetHolder("203.0.113.99", 101)
	p := newProvider(t, f, 101, false, true)
	err := p.Acquire(t.Context())
	if err == nil || !strings.Contains(err.Error(), "another reserved IP") {
		t.Fatalf("Acquire = %v, want an error naming the other reserved IP", err)
	}
}

func TestBadToken(t *testing.T) {
	f := dofake.New(token, vip)
	t.Cleanup(f.Close)
	p, err := New(Options{Token: "wrong", IP: netip.MustParseAddr(vip), DropletID: 1, BaseURL: f.URL,
		MetadataURL: f.MetadataURL(1), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Acquire(t.Context()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Acquire with a bad token = %v, want a 401 error", err)
	}
}

func TestNewRejects(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ip := netip.MustParseAddr(vip)
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no token", Options{IP: ip, Logger: log}, "token is empty"},
		{"ipv6", Options{Token: "x", IP: netip.MustParseAddr("2001:db8::1"), Logger: log}, "not an IPv4"},
		{"no ip", Options{Token: "x", Logger: log}, "not an IPv4"},
		{"no logger", Options{Token: "x", IP: ip}, "Logger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseMetadata(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
		err  bool
	}{{"true", true, false}, {"false\n", false, false}, {"", false, false}, {"yes", false, true}} {
		got, err := ParseActive(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseActive(%q) = %v, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{{"12345\n", 12345, false}, {"0", 0, true}, {"-3", 0, true}, {"abc", 0, true}, {"", 0, true}} {
		got, err := ParseDropletID(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseDropletID(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{"true", "false", "123", " 42\n", "x", "10.19.0.5\n", "::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if on, err := ParseActive(s); err == nil && on != (strings.TrimSpace(s) == "true") {
			t.Fatalf("ParseActive(%q) = %v", s, on)
		}
		if id, err := ParseDropletID(s); err == nil && id <= 0 {
			t.Fatalf("ParseDropletID(%q) = %d", s, id)
		}
		if a, err := ParseAnchorIP(s); err == nil && (!a.Is4() || a.IsUnspecified()) {
			t.Fatalf("ParseAnchorIP(%q) = %v", s, a)
		}
	})
}

func TestAnchorIP(t *testing.T) {
	f := dofake.New(token, vip)
	t.Cleanup(f.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(Options{Token: token, IP: netip.MustParseAddr(vip), BaseURL: f.URL, MetadataURL: f.MetadataURL(3), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.AnchorIP(t.Context())
	if err != nil || got.String() != dofake.AnchorIP(3) {
		t.Fatalf("AnchorIP = %v, %v; want %s", got, err, dofake.AnchorIP(3))
	}
	off, err := New(Options{Token: token, IP: netip.MustParseAddr(vip), BaseURL: f.URL, MetadataURL: f.URL + "/nowhere", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := off.AnchorIP(t.Context()); err == nil || !strings.Contains(err.Error(), "anchor IP") {
		t.Fatalf("AnchorIP off a droplet = %v; want an error naming the anchor IP", err)
	}
	for in, ok := range map[string]bool{"10.19.0.5\n": true, "0.0.0.0": false, "2001:db8::1": false, "": false, "<html>": false} {
		if _, err := ParseAnchorIP(in); (err == nil) != ok {
			t.Errorf("ParseAnchorIP(%q) error = %v; want ok=%v", in, err, ok)
		}
	}
}

func TestNoDropletIDOffDroplet(t *testing.T) {
	f := dofake.New(token, vip)
	t.Cleanup(f.Close)
	p, err := New(Options{Token: token, IP: netip.MustParseAddr(vip), BaseURL: f.URL,
		MetadataURL: f.URL + "/nowhere", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Acquire(t.Context()); err == nil || !strings.Contains(err.Error(), "set the droplet id") {
		t.Fatalf("Acquire = %v, want a hint to set the droplet id", err)
	}
}

// Metadata that only knows the old floating_ip name still works.
func TestFloatingIPMetadataFallback(t *testing.T) {
	f := dofake.New(token, vip)
	t.Cleanup(f.Close)
	f.SetHolder(vip, 101)
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "reserved_ip") {
			http.NotFound(w, r)
			return
		}
		resp, err := http.Get(f.MetadataURL(101) + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(old.Close)
	p, err := New(Options{Token: token, IP: netip.MustParseAddr(vip), DropletID: 101, BaseURL: f.URL,
		MetadataURL: old.URL, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if held, err := p.Held(t.Context()); err != nil || !held {
		t.Fatalf("Held = %v, %v; want true from floating_ip metadata", held, err)
	}
}

// TestTokenStaysOnAPIHost: an API answer that redirects elsewhere must not
// take the token with it (security review, finding 11).
func TestTokenStaysOnAPIHost(t *testing.T) {
	var leaked []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			leaked = append(leaked, a)
		}
		http.Error(w, "nothing here", http.StatusNotFound)
	}))
	defer elsewhere.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer api.Close()
	p, err := New(Options{Token: token, IP: netip.MustParseAddr(vip), DropletID: 1, BaseURL: api.URL, HeldFromAPI: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := p.Held(ctx); err == nil {
		t.Error("Held through a cross-host redirect succeeded")
	}
	if len(leaked) > 0 {
		t.Errorf("the other host received the token: %q", leaked)
	}
}
