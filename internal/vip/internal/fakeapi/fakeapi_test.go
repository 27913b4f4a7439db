package fakeapi

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	now := time.Unix(1_800_000_000, 250_000_000)
	w := Window{Limit: 3600, Reset: time.Second}
	for _, tc := range []struct {
		name      string
		closeFor  time.Duration
		at        time.Time
		admit     bool
		remaining string
		reset     int64
	}{
		{"open", 0, now, true, "3599", now.Add(time.Second).Unix()},
		// A reset inside a second rounds up, never early.
		{"closed", 1200 * time.Millisecond, now, false, "0", now.Unix() + 2},
		{"closed on a whole second", 750 * time.Millisecond, now, false, "0", now.Unix() + 1},
		{"reopened at the reset", time.Second, now.Add(time.Second), true, "3599", now.Add(2 * time.Second).Unix()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.CloseFor(now, tc.closeFor)
			h := http.Header{}
			if got := w.Admit(h, tc.at); got != tc.admit {
				t.Fatalf("Admit = %v, want %v", got, tc.admit)
			}
			if h.Get("RateLimit-Limit") != "3600" || h.Get("RateLimit-Remaining") != tc.remaining || h.Get("RateLimit-Reset") != strconv.FormatInt(tc.reset, 10) {
				t.Fatalf("headers = %v, want remaining %s reset %d", h, tc.remaining, tc.reset)
			}
		})
	}
}

func TestActions(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	holder := map[string]int{}
	set := func(ip string, h int) { holder[ip] = h }
	as := NewActions[string, int](1000)

	a := as.Start("192.0.2.1", 7, "assign_ip", now, time.Second)
	if a.ID != 1000 || a.Finished || !as.Busy("192.0.2.1") || as.Busy("192.0.2.2") {
		t.Fatalf("new action %+v; busy must be true for its IP only", a)
	}
	if got, ok := as.Get(1000); !ok || got != a {
		t.Fatalf("Get(1000) = %+v, %v", got, ok)
	}
	if _, ok := as.Get(1001); ok {
		t.Fatal("Get of an unknown id succeeded")
	}
	as.Settle(now.Add(999*time.Millisecond), set)
	if a.Finished || holder["192.0.2.1"] != 0 {
		t.Fatalf("settled before Done: %+v, holder %v", a, holder)
	}
	as.Settle(now.Add(time.Second), set)
	if !a.Finished || holder["192.0.2.1"] != 7 || as.Busy("192.0.2.1") {
		t.Fatalf("not settled at Done: %+v, holder %v", a, holder)
	}
	// A finished action is not applied again: a later direct change stays.
	holder["192.0.2.1"] = 9
	as.Settle(now.Add(time.Hour), set)
	if holder["192.0.2.1"] != 9 {
		t.Fatalf("finished action applied again: holder %v", holder)
	}
	// An unassign (zero holder) with no delay completes at the next Settle.
	u := as.Start("192.0.2.1", 0, "unassign_ip", now, 0)
	if u.ID != 1001 {
		t.Fatalf("second action id = %d, want 1001", u.ID)
	}
	as.Settle(now, set)
	if !u.Finished || holder["192.0.2.1"] != 0 {
		t.Fatalf("unassign: %+v, holder %v", u, holder)
	}
}

func TestGate(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	newGate := func(headers bool) *Gate {
		return &Gate{
			Authorized:       Bearer("tok"),
			Limit:            Window{Limit: 10, Reset: time.Second},
			RateLimitHeaders: headers,
			Unauthorized:     func(w http.ResponseWriter) { w.WriteHeader(http.StatusUnauthorized) },
			Limited:          func(w http.ResponseWriter) { w.WriteHeader(http.StatusTooManyRequests) },
		}
	}
	tests := []struct {
		name     string
		headers  bool
		auth     string
		closed   bool
		pass     bool
		code     int
		limitHdr string
		limited  int
	}{
		{"authorized", true, "Bearer tok", false, true, http.StatusOK, "10", 0},
		{"wrong token", true, "Bearer nope", false, false, http.StatusUnauthorized, "", 0},
		{"no token while limited: auth first", true, "", true, false, http.StatusUnauthorized, "", 0},
		{"rate limited", true, "Bearer tok", true, false, http.StatusTooManyRequests, "10", 1},
		{"rate limited, no headers", false, "Bearer tok", true, false, http.StatusTooManyRequests, "", 1},
		{"open, no headers", false, "Bearer tok", false, true, http.StatusOK, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(tt.headers)
			if tt.closed {
				g.Limit.CloseFor(now, time.Minute)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			w := httptest.NewRecorder()
			if got := g.Pass(w, r, now); got != tt.pass {
				t.Fatalf("Pass = %v, want %v", got, tt.pass)
			}
			if w.Code != tt.code || w.Header().Get("RateLimit-Limit") != tt.limitHdr {
				t.Errorf("answer %d with RateLimit-Limit %q, want %d and %q", w.Code, w.Header().Get("RateLimit-Limit"), tt.code, tt.limitHdr)
			}
			if g.Requests != 1 || g.RateLimited != tt.limited {
				t.Errorf("counted %d requests, %d rate-limited; want 1, %d", g.Requests, g.RateLimited, tt.limited)
			}
		})
	}
}

func TestSigV4Key(t *testing.T) {
	ok := SigV4Key("AKID")
	for auth, want := range map[string]bool{
		"AWS4-HMAC-SHA256 Credential=AKID/20260101/eu-west-1/ec2/aws4_request, Signature=x": true,
		"AWS4-HMAC-SHA256 Credential=OTHER/20260101/eu-west-1/ec2/aws4_request":             false,
		"AWS4-HMAC-SHA256 Credential=AKIDX/20260101":                                        false,
		"": false,
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", auth)
		if got := ok(r); got != want {
			t.Errorf("SigV4Key(AKID)(%q) = %v, want %v", auth, got, want)
		}
	}
}
