// Package fakeapi is plumbing the local cloud-API fakes (dofake, hcloudfake,
// ec2fake) share: the gate every request passes first (credentials, then the
// rate limit), the rate-limit window they close on demand with the
// RateLimit-* headers that go with it, and asynchronous actions that move an
// IP once their delay has passed.
package fakeapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Window is a fake API's rate limit: open, or closed until a time. It is not
// safe for concurrent use; the fakes guard it with their own mutex.
type Window struct {
	// Limit is what RateLimit-Limit says; an open window reports Limit-1
	// requests remaining.
	Limit int
	// Reset is how far ahead RateLimit-Reset lies while the window is open.
	Reset time.Duration

	closedTill time.Time
}

// CloseFor refuses every request from now until d has passed.
func (w *Window) CloseFor(now time.Time, d time.Duration) { w.closedTill = now.Add(d) }

// Open reports whether a request at now is admitted, without headers (EC2
// sends none).
func (w *Window) Open(now time.Time) bool { return !now.Before(w.closedTill) }

// Admit sets the RateLimit-Limit, -Remaining and -Reset headers on h for a
// request at now and reports whether the request may go on; when it may not,
// the caller answers 429.
func (w *Window) Admit(h http.Header, now time.Time) bool {
	h.Set("RateLimit-Limit", strconv.Itoa(w.Limit))
	if !w.Open(now) {
		// RateLimit-Reset is a Unix time in whole seconds; round up so a
		// client that honours it never comes back early.
		reset := w.closedTill.Unix()
		if w.closedTill.Nanosecond() > 0 {
			reset++
		}
		h.Set("RateLimit-Remaining", "0")
		h.Set("RateLimit-Reset", strconv.FormatInt(reset, 10))
		return false
	}
	h.Set("RateLimit-Remaining", strconv.Itoa(w.Limit-1))
	h.Set("RateLimit-Reset", strconv.FormatInt(now.Add(w.Reset).Unix(), 10))
	return true
}

// Action is an asynchronous change of an IP's holder, as the cloud APIs run
// them: in progress from Started until Done, then Settle makes Holder (zero
// for an unassign) the IP's holder.
type Action[IP, H comparable] struct {
	ID            int64
	IP            IP
	Holder        H
	Kind          string // the API's name for it, e.g. "assign_ip"
	Started, Done time.Time
	Finished      bool
}

// Actions are a fake's actions by id. Not safe for concurrent use; the fakes
// guard them with their own mutex.
type Actions[IP, H comparable] struct {
	byID map[int64]*Action[IP, H]
	next int64
}

// NewActions returns an empty set whose first action gets id first.
func NewActions[IP, H comparable](first int64) *Actions[IP, H] {
	return &Actions[IP, H]{byID: map[int64]*Action[IP, H]{}, next: first}
}

// Start records an action begun at now that completes after delay. It does
// not settle: call Settle to finish an action with no delay at once.
func (as *Actions[IP, H]) Start(ip IP, holder H, kind string, now time.Time, delay time.Duration) *Action[IP, H] {
	a := &Action[IP, H]{ID: as.next, IP: ip, Holder: holder, Kind: kind, Started: now, Done: now.Add(delay)}
	as.next++
	as.byID[a.ID] = a
	return a
}

// Get returns the action with id.
func (as *Actions[IP, H]) Get(id int64) (*Action[IP, H], bool) {
	a, ok := as.byID[id]
	return a, ok
}

// Busy reports whether an action on ip is still in progress.
func (as *Actions[IP, H]) Busy(ip IP) bool {
	for _, a := range as.byID {
		if a.IP == ip && !a.Finished {
			return true
		}
	}
	return false
}

// Settle finishes the actions whose time has come by now, calling set with
// each one's IP and new holder.
func (as *Actions[IP, H]) Settle(now time.Time, set func(ip IP, holder H)) {
	for _, a := range as.byID {
		if a.Finished || now.Before(a.Done) {
			continue
		}
		a.Finished = true
		set(a.IP, a.Holder)
	}
}

// Gate is what every request to a fake passes before its handler: it is
// counted, its credentials are checked, then the rate limit. Refusals are
// answered in the cloud's own error format. Not safe for concurrent use; the
// fakes hold their own mutex around Pass and the handler.
type Gate struct {
	// Authorized reports whether the request carries the fake's credentials.
	Authorized func(r *http.Request) bool
	// Limit is the rate limit; with RateLimitHeaders every answer carries
	// the RateLimit-* headers (DigitalOcean, Hetzner; EC2 sends none).
	Limit            Window
	RateLimitHeaders bool
	// Unauthorized and Limited write the cloud's answers to a request
	// without valid credentials and to one over the rate limit.
	Unauthorized, Limited func(w http.ResponseWriter)

	// Requests counts every request; RateLimited those refused by Limit.
	Requests, RateLimited int
}

// Pass reports whether the request at now may reach the handler; when it may
// not, Pass has answered it.
func (g *Gate) Pass(w http.ResponseWriter, r *http.Request, now time.Time) bool {
	g.Requests++
	if !g.Authorized(r) {
		g.Unauthorized(w)
		return false
	}
	open := g.Limit.Open(now)
	if g.RateLimitHeaders {
		open = g.Limit.Admit(w.Header(), now)
	}
	if !open {
		g.RateLimited++
		g.Limited(w)
		return false
	}
	return true
}

// Bearer accepts requests with "Authorization: Bearer token".
func Bearer(token string) func(r *http.Request) bool {
	return func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token }
}

// SigV4Key accepts AWS Signature Version 4 requests signed with accessKey;
// the signature itself is the SDK's business.
func SigV4Key(accessKey string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		return strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential="+accessKey+"/")
	}
}
