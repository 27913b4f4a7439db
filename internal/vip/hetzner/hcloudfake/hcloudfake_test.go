package hcloudfake

import (
	"net/http"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
)

// The fake speaks hcloud-go's dialect, including the list endpoint its
// action waiter polls.
func TestWithHcloud(t *testing.T) {
	f := New("tok", map[int64]string{1: "198.51.100.1"})
	t.Cleanup(f.Close)
	c := hcloud.NewClient(hcloud.WithToken("tok"), hcloud.WithEndpoint(f.URL),
		hcloud.WithRetryOpts(hcloud.RetryOpts{MaxRetries: 0}), hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(20 * time.Millisecond)}))
	ctx := t.Context()
	f.SetActionDelay(150 * time.Millisecond)
	a, _, err := c.FloatingIP.Assign(ctx, &hcloud.FloatingIP{ID: 1}, &hcloud.Server{ID: 5})
	if err != nil || a.Status != hcloud.ActionStatusRunning || a.Command != "assign_floating_ip" {
		t.Fatalf("Assign = %+v, %v", a, err)
	}
	if _, _, err := c.FloatingIP.Assign(ctx, &hcloud.FloatingIP{ID: 1}, &hcloud.Server{ID: 6}); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("concurrent Assign = %v, want locked", err)
	}
	if err := c.Action.WaitFor(ctx, a); err != nil {
		t.Fatalf("WaitFor = %v", err)
	}
	fip, _, err := c.FloatingIP.GetByID(ctx, 1)
	if err != nil || fip.Server == nil || fip.Server.ID != 5 || fip.IP.String() != "198.51.100.1" {
		t.Fatalf("GetByID = %+v, %v", fip, err)
	}
	f.RateLimit(time.Second)
	_, resp, err := c.FloatingIP.GetByID(ctx, 1)
	if !hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) || resp.StatusCode != http.StatusTooManyRequests ||
		resp.Meta.Ratelimit.Remaining != 0 || !resp.Meta.Ratelimit.Reset.After(time.Now()) {
		t.Fatalf("rate-limited GetByID = %v, meta %+v", err, resp.Meta.Ratelimit)
	}
}
