// Package hetzner moves a Hetzner Cloud floating IP with hcloud-go.
//
// Acquire assigns the IP through an action, polls the action until it
// succeeds, then confirms with a GET that this server holds the IP (Hetzner's
// metadata service has no floating-IP state). It retries while the IP is
// locked by another action and waits out 429s until RateLimit-Reset. Release
// is a no-op: the next holder's assign moves the IP, and an unassign here
// could undo it.
package hetzner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/metadata"

	"github.com/tandem-ha/tandem/internal/vip/internal/retry"
	"github.com/tandem-ha/tandem/internal/vip/internal/samehost"
)

// Options configures a Provider.
type Options struct {
	// Token is the Cloud API token (read from its file by the caller).
	Token string
	// FloatingIPID is the floating IP's id.
	FloatingIPID int64
	// ServerID is this server; 0 reads it from the metadata service.
	ServerID int64
	// Endpoint is the API base (default https://api.hetzner.cloud/v1).
	Endpoint string
	// MetadataEndpoint is the metadata base (default
	// http://169.254.169.254/hetzner/v1/metadata).
	MetadataEndpoint string
	// PollInterval is the wait between action and holder polls (default 1s:
	// every poll spends rate-limit budget, 3600/h).
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the backoff while locked or on server
	// errors (defaults 1s and 15s).
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient is used for API and metadata calls (default: 15s timeout).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Provider holds one floating IP for one server. Safe for concurrent use.
type Provider struct {
	o      Options
	api    *hcloud.Client
	md     *metadata.Client
	backof retry.Backoff

	mu     sync.Mutex
	server int64

	remaining atomic.Int64 // RateLimit-Remaining from the last response, -1 before one
}

// New checks the options and builds the client; it makes no requests.
func New(o Options) (*Provider, error) {
	if o.Token == "" {
		return nil, errors.New("hetzner vip: API token is empty; put a read/write Cloud API token in the token file")
	}
	if o.FloatingIPID <= 0 {
		return nil, fmt.Errorf("hetzner vip: floating IP id %d is not a positive number", o.FloatingIPID)
	}
	if o.ServerID < 0 {
		return nil, fmt.Errorf("hetzner vip: server id %d is negative", o.ServerID)
	}
	if o.Logger == nil {
		return nil, errors.New("hetzner vip: Logger is nil")
	}
	if o.Endpoint == "" {
		o.Endpoint = hcloud.Endpoint
	}
	if o.MetadataEndpoint == "" {
		o.MetadataEndpoint = metadata.Endpoint
	}
	o.PollInterval = retry.Or(o.PollInterval, time.Second)
	o.MinBackoff = retry.Or(o.MinBackoff, time.Second)
	o.MaxBackoff = retry.Or(o.MaxBackoff, 15*time.Second)
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	api := hcloud.NewClient(
		hcloud.WithToken(o.Token),
		hcloud.WithEndpoint(o.Endpoint),
		hcloud.WithHTTPClient(samehost.Client(hc)), // the token never follows a redirect elsewhere
		hcloud.WithApplication("tandem", ""),
		// We retry ourselves, honouring RateLimit-Reset.
		hcloud.WithRetryOpts(hcloud.RetryOpts{MaxRetries: 0}),
	)
	md := metadata.NewClient(metadata.WithEndpoint(o.MetadataEndpoint), metadata.WithHTTPClient(hc))
	p := &Provider{
		o: o, api: api, md: md, server: o.ServerID,
		backof: retry.Backoff{Min: o.MinBackoff, Max: o.MaxBackoff},
	}
	p.remaining.Store(-1)
	return p, nil
}

// Acquire assigns the floating IP to this server and returns once the API
// reports it as holder, or ctx ends.
func (p *Provider) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("assign floating IP %d: %w", p.o.FloatingIPID, err)
	}
	server, err := p.serverID(ctx)
	if err != nil {
		return fmt.Errorf("assign floating IP %d: %w", p.o.FloatingIPID, err)
	}
	holder, err := p.holder(ctx)
	if err != nil {
		return fmt.Errorf("assign floating IP %d: %w", p.o.FloatingIPID, err)
	}
	if holder == server {
		return nil
	}
	start := time.Now()
	action, err := p.assign(ctx, server)
	if err != nil {
		return fmt.Errorf("assign floating IP %d to server %d: %w", p.o.FloatingIPID, server, err)
	}
	if err := p.waitAction(ctx, action); err != nil {
		return fmt.Errorf("assign floating IP %d to server %d: %w", p.o.FloatingIPID, server, err)
	}
	stale := func(holder int64) string { return fmt.Sprintf("API still reports server %d", holder) }
	if err := retry.Await(ctx, p.o.PollInterval, server, p.holder, stale); err != nil {
		return fmt.Errorf("assign floating IP %d to server %d: %w", p.o.FloatingIPID, server, err)
	}
	p.o.Logger.Info("vip acquired", "provider", "hetzner", "floating_ip", p.o.FloatingIPID, "server", server, "took", time.Since(start))
	return nil
}

func (p *Provider) assign(ctx context.Context, server int64) (*hcloud.Action, error) {
	for attempt := 0; ; attempt++ {
		action, resp, err := p.api.FloatingIP.Assign(ctx, &hcloud.FloatingIP{ID: p.o.FloatingIPID}, &hcloud.Server{ID: server})
		p.note(resp)
		if err == nil {
			return action, nil
		}
		wait, ok := p.retryable(ctx, resp, err, attempt, hcloud.ErrorCodeLocked, hcloud.ErrorCodeConflict)
		if !ok {
			return nil, err
		}
		p.o.Logger.Warn("vip assign refused, retrying", "provider", "hetzner", "floating_ip", p.o.FloatingIPID, "err", err, "wait", wait)
		if err := retry.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func (p *Provider) waitAction(ctx context.Context, a *hcloud.Action) error {
	for attempt := 0; ; {
		switch a.Status {
		case hcloud.ActionStatusSuccess:
			return nil
		case hcloud.ActionStatusError:
			return fmt.Errorf("action %d: %w", a.ID, a.Error())
		}
		if err := retry.Sleep(ctx, p.o.PollInterval); err != nil {
			return fmt.Errorf("action %d still %s: %w", a.ID, a.Status, err)
		}
		next, resp, err := p.api.Action.GetByID(ctx, a.ID)
		p.note(resp)
		if err != nil {
			wait, ok := p.retryable(ctx, resp, err, attempt)
			if !ok {
				return fmt.Errorf("poll action %d: %w", a.ID, err)
			}
			attempt++
			if err := retry.Sleep(ctx, wait); err != nil {
				return fmt.Errorf("poll action %d: %w", a.ID, err)
			}
			continue
		}
		if next == nil {
			return fmt.Errorf("poll action %d: not found", a.ID)
		}
		a = next
	}
}

// retryable says whether err is worth another try and how long to wait:
// 429 (until RateLimit-Reset), 5xx and the listed API error codes.
func (p *Provider) retryable(ctx context.Context, resp *hcloud.Response, err error, attempt int, codes ...hcloud.ErrorCode) (time.Duration, bool) {
	if ctx.Err() != nil {
		return 0, false
	}
	if hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) || statusOf(resp) == http.StatusTooManyRequests {
		var h http.Header
		if resp != nil && resp.Response != nil {
			h = resp.Header
		}
		return p.backof.RateWait(h, attempt), true
	}
	for _, c := range codes {
		if hcloud.IsError(err, c) {
			return p.backof.Delay(attempt), true
		}
	}
	if s := statusOf(resp); s >= 500 || s == 0 {
		return p.backof.Delay(attempt), true
	}
	return 0, false
}

// note records the rate-limit budget a response reports.
func (p *Provider) note(resp *hcloud.Response) {
	if resp != nil && resp.Response != nil && resp.Header.Get("RateLimit-Remaining") != "" {
		p.remaining.Store(int64(resp.Meta.Ratelimit.Remaining))
	}
}

// RateLimitRemaining is the number of API requests left, as the last API
// response said (Hetzner refills one per second up to 3600); -1 before any
// API call.
func (p *Provider) RateLimitRemaining() int { return int(p.remaining.Load()) }

func statusOf(resp *hcloud.Response) int {
	if resp == nil || resp.Response == nil {
		return 0
	}
	return resp.StatusCode
}

// Release does nothing; see the package comment.
func (p *Provider) Release(ctx context.Context) error {
	return nil
}

// Held asks the API whether this server holds the floating IP.
func (p *Provider) Held(ctx context.Context) (bool, error) {
	server, err := p.serverID(ctx)
	if err != nil {
		return false, fmt.Errorf("holder of floating IP %d: %w", p.o.FloatingIPID, err)
	}
	holder, err := p.holder(ctx)
	if err != nil {
		return false, fmt.Errorf("holder of floating IP %d: %w", p.o.FloatingIPID, err)
	}
	return holder == server, nil
}

// holder returns the server the API reports, 0 for none.
func (p *Provider) holder(ctx context.Context) (int64, error) {
	for attempt := 0; ; attempt++ {
		f, resp, err := p.api.FloatingIP.GetByID(ctx, p.o.FloatingIPID)
		p.note(resp)
		if err == nil {
			if f == nil {
				return 0, fmt.Errorf("floating IP %d not found; check the id and the token's project", p.o.FloatingIPID)
			}
			if f.Server == nil {
				return 0, nil
			}
			return f.Server.ID, nil
		}
		wait, ok := p.retryable(ctx, resp, err, attempt)
		if !ok {
			return 0, fmt.Errorf("get floating IP: %w", err)
		}
		if err := retry.Sleep(ctx, wait); err != nil {
			return 0, fmt.Errorf("get floating IP: %w", err)
		}
	}
}

func (p *Provider) serverID(ctx context.Context) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.server != 0 {
		return p.server, nil
	}
	id, err := p.md.InstanceIDWithContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("server id from metadata: %w (set the server id in the config when not on a Hetzner Cloud server)", err)
	}
	if id <= 0 {
		return 0, fmt.Errorf("server id from metadata: %s is not positive", strconv.FormatInt(id, 10))
	}
	p.server = id
	return id, nil
}

// Close releases nothing and exists so every provider is an io.Closer.
func (p *Provider) Close() error { return nil }
