// Package retry holds the waiting rules the cloud providers share: exponential
// backoff with jitter, context-bound sleeps, reading how long a rate-limited
// API asks us to wait from its response headers, and defaulting unset
// intervals.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxWait caps any wait taken from a response header, so a bogus header cannot
// park the provider for hours; the caller's ctx bounds it further.
const MaxWait = 5 * time.Minute

// Backoff is exponential backoff with full jitter between Min and Max.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry number attempt (0-based).
func (b Backoff) Delay(attempt int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi < lo {
		hi = lo
	}
	d := lo
	for range min(attempt, 30) {
		d *= 2
		if d >= hi {
			d = hi
			break
		}
	}
	// Jitter within [d/2, d] so two nodes retrying together drift apart.
	return d/2 + rand.N(d/2+1)
}

// RateWait is the wait before retry number attempt after a rate-limited
// response with headers h (nil when there was no response): what the headers
// ask for, but at least Min/4 so a reset that has just passed does not turn
// into a burst of requests; the backoff when the headers say nothing.
func (b Backoff) RateWait(h http.Header, attempt int) time.Duration {
	if d, ok := FromHeaders(h, time.Now()); ok {
		return max(d, b.Min/4)
	}
	return b.Delay(attempt)
}

// Or returns d, or def when d is not positive: an option left at zero (or
// set negative) takes its default.
func Or(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Await polls holder every interval until it reports want: a cloud API shows
// an assignment some time after accepting it, and Acquire returns only once
// the move is confirmed. An error from holder comes back as "confirm: ...";
// when ctx ends first, the error says stale(the holder last reported).
func Await[H comparable](ctx context.Context, every time.Duration, want H, holder func(context.Context) (H, error), stale func(H) string) error {
	for {
		got, err := holder(ctx)
		if err != nil {
			return fmt.Errorf("confirm: %w", err)
		}
		if got == want {
			return nil
		}
		if err := Sleep(ctx, every); err != nil {
			return fmt.Errorf("%s: %w", stale(got), err)
		}
	}
}

// Sleep waits d or until ctx ends, whichever is first.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// FromHeaders returns how long a rate-limited response asks the client to
// wait, from Retry-After (seconds or HTTP date) or RateLimit-Reset (a Unix
// time, as DigitalOcean and Hetzner send it, or a delta in seconds as the IETF
// draft has it). ok is false when neither header gives a usable answer.
func FromHeaders(h http.Header, now time.Time) (wait time.Duration, ok bool) {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil && secs >= 0 {
			return clamp(time.Duration(min(secs, int64(MaxWait/time.Second)+1)) * time.Second), true
		}
		if t, err := http.ParseTime(v); err == nil {
			return clamp(t.Sub(now)), true
		}
	}
	if v := strings.TrimSpace(h.Get("RateLimit-Reset")); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, false
		}
		// Values this small cannot be a Unix time of this century: a delta.
		if n < 1_000_000_000 {
			return clamp(time.Duration(min(n, int64(MaxWait/time.Second)+1)) * time.Second), true
		}
		return clamp(time.Unix(n, 0).Sub(now)), true
	}
	return 0, false
}

func clamp(d time.Duration) time.Duration {
	return max(0, min(d, MaxWait))
}
