// Package digitalocean moves a DigitalOcean reserved IP with godo.
//
// Acquire assigns the IP through an action, polls the action until it
// completes, then waits until the metadata service (free, local) or the API
// shows this droplet as the holder. It backs off on a 422 "pending event" and
// on 429, honouring the RateLimit-Reset / Retry-After headers. Release is a
// no-op: an unassign could race with the next holder's assign, and the next
// Acquire moves the IP anyway.
package digitalocean

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"

	"github.com/tandem-ha/tandem/internal/vip/internal/retry"
	"github.com/tandem-ha/tandem/internal/vip/internal/samehost"
)

// Options configures a Provider.
type Options struct {
	// Token is the API token (read from its file by the caller).
	Token string
	// IP is the reserved IP.
	IP netip.Addr
	// DropletID is this droplet; 0 reads it from the metadata service.
	DropletID int
	// BaseURL is the API base (default https://api.digitalocean.com/).
	BaseURL string
	// MetadataURL is the metadata service base (default http://169.254.169.254).
	MetadataURL string
	// HeldFromAPI makes Held ask the API (GET /v2/reserved_ips/{ip}) instead
	// of the metadata service. The API costs rate-limit budget.
	HeldFromAPI bool
	// PollInterval is the wait between action and holder polls (default 500ms).
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the backoff after a pending-event 422 or
	// a server error (defaults 1s and 15s).
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient is used for API and metadata calls (default: 15s timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Provider holds one reserved IP for one droplet. Safe for concurrent use.
type Provider struct {
	o      Options
	api    *godo.Client
	hc     *http.Client
	ip     string
	backof retry.Backoff

	mu      sync.Mutex
	droplet int
}

// New checks the options and builds the client; it makes no requests.
func New(o Options) (*Provider, error) {
	if o.Token == "" {
		return nil, errors.New("digitalocean vip: API token is empty; put a token with write scope in the token file")
	}
	if !o.IP.Is4() {
		return nil, fmt.Errorf("digitalocean vip: reserved IP %q is not an IPv4 address", o.IP)
	}
	if o.DropletID < 0 {
		return nil, fmt.Errorf("digitalocean vip: droplet id %d is negative", o.DropletID)
	}
	if o.Logger == nil {
		return nil, errors.New("digitalocean vip: Logger is nil")
	}
	if o.BaseURL == "" {
		o.BaseURL = "https://api.digitalocean.com/"
	}
	if !strings.HasSuffix(o.BaseURL, "/") {
		o.BaseURL += "/"
	}
	if o.MetadataURL == "" {
		o.MetadataURL = "http://169.254.169.254"
	}
	o.MetadataURL = strings.TrimSuffix(o.MetadataURL, "/")
	o.PollInterval = retry.Or(o.PollInterval, 500*time.Millisecond)
	o.MinBackoff = retry.Or(o.MinBackoff, time.Second)
	o.MaxBackoff = retry.Or(o.MaxBackoff, 15*time.Second)
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	base, err := url.Parse(o.BaseURL)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("digitalocean vip: API base URL %q: want https://host/", o.BaseURL)
	}
	// The token goes to the API host only, never along a redirect.
	authed := samehost.Client(hc)
	authed.Transport = bearer{token: o.Token, host: base.Host, next: hc.Transport}
	api, err := godo.New(authed, godo.SetBaseURL(o.BaseURL), godo.SetUserAgent("tandem"))
	if err != nil {
		return nil, fmt.Errorf("digitalocean vip: %w", err)
	}
	return &Provider{
		o: o, api: api, hc: hc, ip: o.IP.String(), droplet: o.DropletID,
		backof: retry.Backoff{Min: o.MinBackoff, Max: o.MaxBackoff},
	}, nil
}

type bearer struct {
	token string
	host  string // the API's host: the only one that gets the token
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.URL.Host == b.host {
		r.Header.Set("Authorization", "Bearer "+b.token)
	} else {
		r.Header.Del("Authorization")
	}
	next := b.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(r)
}

// Acquire assigns the IP to this droplet and returns once the assignment is
// confirmed, or ctx ends.
func (p *Provider) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("assign %s: %w", p.ip, err)
	}
	droplet, err := p.dropletID(ctx)
	if err != nil {
		return fmt.Errorf("assign %s: %w", p.ip, err)
	}
	if held, err := p.Held(ctx); err == nil && held {
		return nil
	}
	start := time.Now()
	action, err := p.assign(ctx, droplet)
	if err != nil {
		return fmt.Errorf("assign %s to droplet %d: %w", p.ip, droplet, err)
	}
	if action != nil {
		if err := p.waitAction(ctx, action); err != nil {
			return fmt.Errorf("assign %s to droplet %d: %w", p.ip, droplet, err)
		}
	}
	stale := func(bool) string { return fmt.Sprintf("droplet %d is not yet reported as holder", droplet) }
	if err := retry.Await(ctx, p.o.PollInterval, true, p.Held, stale); err != nil {
		return fmt.Errorf("assign %s to droplet %d: %w", p.ip, droplet, err)
	}
	p.o.Logger.Info("vip acquired", "provider", "digitalocean", "ip", p.ip, "droplet", droplet, "took", time.Since(start))
	return nil
}

// assign posts the assign action until it is accepted. A nil action with nil
// error means the API says the droplet already holds the IP.
func (p *Provider) assign(ctx context.Context, droplet int) (*godo.Action, error) {
	for attempt := 0; ; attempt++ {
		action, resp, err := p.api.ReservedIPActions.Assign(ctx, p.ip, droplet)
		if err == nil {
			return action, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var er *godo.ErrorResponse
		status := statusOf(resp)
		msg := ""
		if errors.As(err, &er) {
			msg = strings.ToLower(er.Message)
		}
		var wait time.Duration
		switch {
		case status == http.StatusTooManyRequests:
			wait = p.rateWait(resp, attempt)
		case status == http.StatusUnprocessableEntity && strings.Contains(msg, "pending"):
			wait = p.backof.Delay(attempt)
		case status == http.StatusUnprocessableEntity && strings.Contains(msg, "already"):
			// DigitalOcean answers 422 when the droplet already has a reserved
			// IP, even this one: success only if the API says it is ours.
			holder, gerr := p.apiHolder(ctx)
			if gerr != nil {
				return nil, fmt.Errorf("%w (and checking the holder failed: %v)", err, gerr)
			}
			if holder == droplet {
				return nil, nil
			}
			return nil, fmt.Errorf("%w: the droplet holds another reserved IP; unassign it first", err)
		case status >= 500 || resp == nil:
			wait = p.backof.Delay(attempt)
		default:
			return nil, err
		}
		p.o.Logger.Warn("vip assign refused, retrying", "provider", "digitalocean", "ip", p.ip, "status", status, "err", err, "wait", wait)
		if err := retry.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// waitAction polls the action until it completes.
func (p *Provider) waitAction(ctx context.Context, a *godo.Action) error {
	for attempt := 0; ; {
		switch a.Status {
		case godo.ActionCompleted:
			return nil
		case "errored":
			return fmt.Errorf("action %d errored", a.ID)
		}
		if err := retry.Sleep(ctx, p.o.PollInterval); err != nil {
			return fmt.Errorf("action %d still %s: %w", a.ID, a.Status, err)
		}
		var next *godo.Action
		err := p.call(ctx, &attempt, func() (*godo.Response, error) {
			var resp *godo.Response
			var err error
			next, resp, err = p.api.ReservedIPActions.Get(ctx, p.ip, a.ID)
			return resp, err
		})
		if err != nil {
			return fmt.Errorf("poll action %d: %w", a.ID, err)
		}
		a = next
	}
}

// call runs one API request, retrying on 429 and 5xx.
func (p *Provider) call(ctx context.Context, attempt *int, do func() (*godo.Response, error)) error {
	for {
		resp, err := do()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		status := statusOf(resp)
		var wait time.Duration
		switch {
		case status == http.StatusTooManyRequests:
			wait = p.rateWait(resp, *attempt)
		case status >= 500 || resp == nil:
			wait = p.backof.Delay(*attempt)
		default:
			return err
		}
		*attempt++
		p.o.Logger.Warn("vip api call failed, retrying", "provider", "digitalocean", "status", status, "err", err, "wait", wait)
		if err := retry.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (p *Provider) rateWait(resp *godo.Response, attempt int) time.Duration {
	var h http.Header
	if resp != nil && resp.Response != nil {
		h = resp.Header
	}
	return p.backof.RateWait(h, attempt)
}

func statusOf(resp *godo.Response) int {
	if resp == nil || resp.Response == nil {
		return 0
	}
	return resp.StatusCode
}

// Release does nothing: the next holder's assign moves the IP, and an
// unassign here could undo an assignment that already happened.
func (p *Provider) Release(ctx context.Context) error {
	return nil
}

// Held reports whether this droplet holds the IP now.
func (p *Provider) Held(ctx context.Context) (bool, error) {
	if p.o.HeldFromAPI {
		droplet, err := p.dropletID(ctx)
		if err != nil {
			return false, fmt.Errorf("holder of %s: %w", p.ip, err)
		}
		holder, err := p.apiHolder(ctx)
		if err != nil {
			return false, fmt.Errorf("holder of %s: %w", p.ip, err)
		}
		return holder == droplet, nil
	}
	// reserved_ip is the current name; older metadata only has floating_ip.
	held, err := p.metadataHeld(ctx, "reserved_ip")
	var nf notFound
	if errors.As(err, &nf) {
		held, err = p.metadataHeld(ctx, "floating_ip")
	}
	if err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.ip, err)
	}
	return held, nil
}

func (p *Provider) metadataHeld(ctx context.Context, kind string) (bool, error) {
	active, err := p.metadata(ctx, "/metadata/v1/"+kind+"/ipv4/active")
	if err != nil {
		return false, err
	}
	on, err := ParseActive(active)
	if err != nil || !on {
		return false, err
	}
	addr, err := p.metadata(ctx, "/metadata/v1/"+kind+"/ipv4/ip_address")
	if err != nil {
		return false, err
	}
	got, err := netip.ParseAddr(strings.TrimSpace(addr))
	if err != nil {
		return false, fmt.Errorf("metadata %s ip_address %q: %w", kind, truncate(addr), err)
	}
	return got == p.o.IP, nil
}

// notFound is a 404 from the metadata service.
type notFound string

func (n notFound) Error() string { return "metadata " + string(n) + ": 404 Not Found" }

// apiHolder returns the droplet the API reports as holder, 0 if none.
func (p *Provider) apiHolder(ctx context.Context) (int, error) {
	var rip *godo.ReservedIP
	attempt := 0
	err := p.call(ctx, &attempt, func() (*godo.Response, error) {
		var resp *godo.Response
		var err error
		rip, resp, err = p.api.ReservedIPs.Get(ctx, p.ip)
		return resp, err
	})
	if err != nil {
		return 0, fmt.Errorf("get reserved ip: %w", err)
	}
	if rip == nil || rip.Droplet == nil {
		return 0, nil
	}
	return rip.Droplet.ID, nil
}

func (p *Provider) dropletID(ctx context.Context) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.droplet != 0 {
		return p.droplet, nil
	}
	s, err := p.metadata(ctx, "/metadata/v1/id")
	if err != nil {
		return 0, fmt.Errorf("droplet id: %w (set the droplet id in the config when not running on a droplet)", err)
	}
	id, err := ParseDropletID(s)
	if err != nil {
		return 0, err
	}
	p.droplet = id
	return id, nil
}

// AnchorIP returns this droplet's anchor IP, read from the metadata
// service: the local address a reserved IP's traffic arrives at, and so
// the one to drain before a planned move.
func (p *Provider) AnchorIP(ctx context.Context) (netip.Addr, error) {
	s, err := p.metadata(ctx, "/metadata/v1/interfaces/public/0/anchor_ipv4/address")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("anchor IP: %w", err)
	}
	return ParseAnchorIP(s)
}

// ParseAnchorIP reads the metadata service's anchor_ipv4/address answer.
func ParseAnchorIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("metadata anchor_ipv4 address: unexpected %q, want an IPv4 address", truncate(s))
	}
	return a, nil
}

// metadata GETs one metadata path and returns its body (at most 4 KiB).
func (p *Provider) metadata(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.o.MetadataURL+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("metadata %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return "", fmt.Errorf("metadata %s: %w", path, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return "", notFound(path)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metadata %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// ParseActive reads the metadata service's reserved_ip/ipv4/active answer.
func ParseActive(s string) (bool, error) {
	switch strings.TrimSpace(s) {
	case "true":
		return true, nil
	case "false", "":
		return false, nil
	}
	return false, fmt.Errorf("metadata reserved_ip active: unexpected %q, want true or false", truncate(s))
}

// ParseDropletID reads the metadata service's /metadata/v1/id answer.
func ParseDropletID(s string) (int, error) {
	id, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("metadata droplet id: unexpected %q, want a positive integer", truncate(s))
	}
	return id, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// RateLimitRemaining is the number of API requests left in the current
// window, as the last API response said; -1 before any API call.
func (p *Provider) RateLimitRemaining() int {
	r := p.api.GetRate()
	if r.Limit == 0 {
		return -1
	}
	return r.Remaining
}

// Close releases nothing and exists so every provider is an io.Closer.
func (p *Provider) Close() error { return nil }
