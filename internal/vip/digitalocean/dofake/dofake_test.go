package dofake

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/digitalocean/godo"
)

type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}

// The fake speaks godo's dialect: paths, envelopes, action lifecycle.
func TestWithGodo(t *testing.T) {
	const ip = "203.0.113.5"
	f := New("tok", ip)
	t.Cleanup(f.Close)
	c, err := godo.New(&http.Client{Transport: bearer("tok")}, godo.SetBaseURL(f.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	f.SetActionDelay(200 * time.Millisecond)

	a, _, err := c.ReservedIPActions.Assign(ctx, ip, 7)
	if err != nil || a.Status != godo.ActionInProgress || a.Type != "assign_ip" {
		t.Fatalf("Assign = %+v, %v", a, err)
	}
	// A second action while the first runs: 422 pending event.
	_, resp, err := c.ReservedIPActions.Assign(ctx, ip, 8)
	var er *godo.ErrorResponse
	if !errors.As(err, &er) || resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("concurrent Assign = %v, want 422", err)
	}
	if rip, _, err := c.ReservedIPs.Get(ctx, ip); err != nil || rip.Droplet != nil || !rip.Locked {
		t.Fatalf("Get during action = %+v, %v; want unassigned and locked", rip, err)
	}
	time.Sleep(250 * time.Millisecond)
	if got, _, err := c.Actions.Get(ctx, a.ID); err != nil || got.Status != godo.ActionCompleted {
		t.Fatalf("Actions.Get = %+v, %v", got, err)
	}
	if got, _, err := c.ReservedIPActions.Get(ctx, ip, a.ID); err != nil || got.Status != godo.ActionCompleted {
		t.Fatalf("ReservedIPActions.Get = %+v, %v", got, err)
	}
	if rip, _, err := c.ReservedIPs.Get(ctx, ip); err != nil || rip.Droplet == nil || rip.Droplet.ID != 7 {
		t.Fatalf("Get after action = %+v, %v; want droplet 7", rip, err)
	}

	// Metadata, as droplet 7 sees it.
	for path, want := range map[string]string{
		"/metadata/v1/id": "7", "/metadata/v1/reserved_ip/ipv4/active": "true",
		"/metadata/v1/floating_ip/ipv4/ip_address": ip,
	} {
		resp, err := http.Get(f.MetadataURL(7) + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("%s = %q, want %q", path, b, want)
		}
	}

	// 429 carries the reset, and rate-limit state reaches godo's Rate.
	f.RateLimit(time.Second)
	_, resp, err = c.ReservedIPs.Get(ctx, ip)
	if err == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Rate.Remaining != 0 || resp.Rate.Reset.Before(time.Now()) {
		t.Fatalf("rate-limited Get = %v, rate %+v", err, resp.Rate)
	}
}

// Unknown IPs and actions are 404s with DigitalOcean's error body.
func TestNotFound(t *testing.T) {
	f := New("tok", "203.0.113.5")
	t.Cleanup(f.Close)
	c, err := godo.New(&http.Client{Transport: bearer("tok")}, godo.SetBaseURL(f.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	check := func(what string, resp *godo.Response, err error) {
		t.Helper()
		var er *godo.ErrorResponse
		if !errors.As(err, &er) || resp == nil || resp.StatusCode != http.StatusNotFound || er.Message != "The resource you were accessing could not be found." {
			t.Errorf("%s = %v, want a 404 not_found", what, err)
		}
	}
	_, resp, err := c.ReservedIPs.Get(ctx, "203.0.113.6")
	check("Get of an unknown IP", resp, err)
	_, resp, err = c.ReservedIPActions.Assign(ctx, "203.0.113.6", 7)
	check("Assign of an unknown IP", resp, err)
	_, resp, err = c.Actions.Get(ctx, 999)
	check("Get of an unknown action", resp, err)
	if f.Stats().Assigns != 0 {
		t.Errorf("assigns = %d, want 0", f.Stats().Assigns)
	}
}
