package retry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFromHeaders(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		name string
		h    map[string]string
		want time.Duration
		ok   bool
	}{
		{"none", nil, 0, false},
		{"retry-after seconds", map[string]string{"Retry-After": "3"}, 3 * time.Second, true},
		{"retry-after date", map[string]string{"Retry-After": now.Add(7 * time.Second).UTC().Format(http.TimeFormat)}, 7 * time.Second, true},
		{"retry-after wins", map[string]string{"Retry-After": "2", "RateLimit-Reset": strconv.FormatInt(now.Unix()+9, 10)}, 2 * time.Second, true},
		{"reset unix", map[string]string{"RateLimit-Reset": strconv.FormatInt(now.Unix()+4, 10)}, 4 * time.Second, true},
		{"reset delta", map[string]string{"RateLimit-Reset": "5"}, 5 * time.Second, true},
		{"reset in past", map[string]string{"RateLimit-Reset": strconv.FormatInt(now.Unix()-4, 10)}, 0, true},
		{"reset huge", map[string]string{"RateLimit-Reset": "99999999999999"}, MaxWait, true},
		{"retry-after huge", map[string]string{"Retry-After": "9223372036854775807"}, MaxWait, true},
		{"garbage", map[string]string{"RateLimit-Reset": "soon"}, 0, false},
		{"negative", map[string]string{"Retry-After": "-1", "RateLimit-Reset": "-5"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.h {
				h.Set(k, v)
			}
			got, ok := FromHeaders(h, now)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("FromHeaders = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for attempt, hi := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		hi *= time.Millisecond
		for range 50 {
			d := b.Delay(attempt)
			if d < hi/2 || d > hi {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, hi/2, hi)
			}
		}
	}
	if d := b.Delay(1 << 20); d > time.Second {
		t.Fatalf("Delay(huge) = %v, want capped at 1s", d)
	}
}

func TestSleepCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep = %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep ignored cancellation")
	}
}

func FuzzFromHeaders(f *testing.F) {
	f.Add("3", "")
	f.Add("", "1800000000")
	f.Add("Wed, 21 Oct 2015 07:28:00 GMT", "x")
	f.Fuzz(func(t *testing.T, retryAfter, reset string) {
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		h.Set("RateLimit-Reset", reset)
		d, ok := FromHeaders(h, time.Unix(1_800_000_000, 0))
		if d < 0 || d > MaxWait {
			t.Fatalf("wait %v out of [0, %v]", d, MaxWait)
		}
		if !ok && d != 0 {
			t.Fatalf("not ok but wait %v", d)
		}
	})
}

func TestRateWait(t *testing.T) {
	b := Backoff{Min: 400 * time.Millisecond, Max: 2 * time.Second}
	reset := func(d time.Duration) http.Header {
		h := http.Header{}
		h.Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(d).Unix(), 10))
		return h
	}
	for _, tc := range []struct {
		name   string
		h      http.Header
		lo, hi time.Duration
	}{
		// Unix-time resets have one-second resolution.
		{"reset ahead", reset(3 * time.Second), 2 * time.Second, 3 * time.Second},
		{"reset passed: floor of Min/4", reset(-10 * time.Second), 100 * time.Millisecond, 100 * time.Millisecond},
		{"retry-after", http.Header{"Retry-After": {"1"}}, time.Second, time.Second},
		{"no headers: backoff", http.Header{}, 200 * time.Millisecond, 400 * time.Millisecond},
		{"no response: backoff", nil, 200 * time.Millisecond, 400 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := b.RateWait(tc.h, 0); d < tc.lo || d > tc.hi {
				t.Fatalf("RateWait = %v, want within [%v, %v]", d, tc.lo, tc.hi)
			}
		})
	}
}

func TestOr(t *testing.T) {
	for _, tc := range []struct{ d, def, want time.Duration }{
		{0, time.Second, time.Second},
		{-time.Millisecond, time.Second, time.Second},
		{20 * time.Millisecond, time.Second, 20 * time.Millisecond},
	} {
		if got := Or(tc.d, tc.def); got != tc.want {
			t.Errorf("Or(%v, %v) = %v, want %v", tc.d, tc.def, got, tc.want)
		}
	}
}

func TestAwait(t *testing.T) {
	stale := func(h int) string { return "still " + strconv.Itoa(h) }
	t.Run("reported after polls", func(t *testing.T) {
		calls := 0
		holder := func(context.Context) (int, error) { calls++; return min(calls, 3), nil }
		if err := Await(t.Context(), time.Millisecond, 3, holder, stale); err != nil || calls != 3 {
			t.Fatalf("Await = %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("holder error", func(t *testing.T) {
		boom := errors.New("boom")
		holder := func(context.Context) (int, error) { return 0, boom }
		if err := Await(t.Context(), time.Millisecond, 3, holder, stale); !errors.Is(err, boom) || err.Error() != "confirm: boom" {
			t.Fatalf("Await = %v, want confirm: boom", err)
		}
	})
	t.Run("ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		holder := func(context.Context) (int, error) { return 7, nil }
		err := Await(ctx, 10*time.Millisecond, 3, holder, stale)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "still 7: ") {
			t.Fatalf("Await = %v, want still 7: deadline exceeded", err)
		}
	})
}
