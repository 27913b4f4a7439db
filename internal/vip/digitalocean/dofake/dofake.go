// Package dofake is a local stand-in for the DigitalOcean reserved-IP API and
// the droplet metadata service, written from the API reference and matched to
// the paths and JSON shapes godo uses.
//
// It serves:
//
//	GET  /v2/reserved_ips/{ip}                    the IP and its droplet
//	POST /v2/reserved_ips/{ip}/actions            {"type":"assign","droplet_id":N} | {"type":"unassign"}
//	GET  /v2/reserved_ips/{ip}/actions/{id}       an action
//	GET  /v2/actions/{id}                         an action
//	GET  /droplets/{droplet}/metadata/v1/...      that droplet's metadata: id,
//	     reserved_ip/ipv4/{active,ip_address}, floating_ip/ipv4/{active,ip_address}
//	     and interfaces/public/0/anchor_ipv4/address
//
// Faults it reproduces: actions that stay in-progress for a while
// (SetActionDelay); 422 "already has a pending event" while an action on the
// IP runs and on demand (FailPending); 429 with RateLimit-* headers until the
// reset time passes (RateLimit); another droplet holding the IP (SetHolder);
// and the 422 DigitalOcean returns when a droplet already has the IP.
package dofake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/internal/fakeapi"
)

// Server is the fake API. All methods are safe for concurrent use.
type Server struct {
	URL   string
	Token string

	srv *httptest.Server

	mu      sync.Mutex
	holder  map[string]int                // ip -> droplet, 0 = unassigned
	actions *fakeapi.Actions[string, int] // on an IP, to a droplet
	delay   time.Duration
	pending int
	gate    fakeapi.Gate
	stats   Stats
}

// Stats counts what the fake saw, for tests that check client behaviour.
type Stats struct {
	Assigns     int // assign POSTs accepted
	Pending     int // 422 pending-event answers
	RateLimited int // 429 answers
	Requests    int // API requests (not metadata)
}

// New starts a fake holding the given reserved IPs, all unassigned. Close it
// with t.Cleanup(s.Close).
func New(token string, ips ...string) *Server {
	s := &Server{
		Token: token, holder: map[string]int{}, actions: fakeapi.NewActions[string, int](1000),
		gate: fakeapi.Gate{
			Authorized: fakeapi.Bearer(token),
			Limit:      fakeapi.Window{Limit: 5000, Reset: time.Hour}, // DigitalOcean's hourly window
			Unauthorized: func(w http.ResponseWriter) {
				writeErr(w, http.StatusUnauthorized, "unauthorized", "Unable to authenticate you")
			},
			Limited: func(w http.ResponseWriter) {
				writeErr(w, http.StatusTooManyRequests, "too_many_requests", "API Rate limit exceeded.")
			},
			RateLimitHeaders: true,
		},
	}
	for _, ip := range ips {
		s.holder[ip] = 0
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/reserved_ips/{ip}", s.api(s.getIP))
	mux.HandleFunc("POST /v2/reserved_ips/{ip}/actions", s.api(s.postAction))
	mux.HandleFunc("GET /v2/reserved_ips/{ip}/actions/{id}", s.api(s.getAction))
	mux.HandleFunc("GET /v2/actions/{id}", s.api(s.getAction))
	mux.HandleFunc("GET /droplets/{droplet}/metadata/v1/{path...}", s.metadata)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// MetadataURL is the metadata base URL as droplet id sees it (the equivalent
// of http://169.254.169.254 on that droplet).
func (s *Server) MetadataURL(droplet int) string {
	return fmt.Sprintf("%s/droplets/%d", s.URL, droplet)
}

// SetActionDelay makes later actions stay in-progress for d.
func (s *Server) SetActionDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// FailPending makes the next n action POSTs fail with 422 "pending event".
func (s *Server) FailPending(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = n
}

// RateLimit answers every API request with 429 until d from now.
func (s *Server) RateLimit(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate.Limit.CloseFor(time.Now(), d)
}

// SetHolder assigns ip to droplet at once (0 unassigns), as another actor would.
func (s *Server) SetHolder(ip string, droplet int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holder[ip] = droplet
}

// Holder returns the droplet holding ip, 0 if none.
func (s *Server) Holder(ip string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(time.Now())
	return s.holder[ip]
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests, st.RateLimited = s.gate.Requests, s.gate.RateLimited
	return st
}

// settle completes actions whose time has come; callers hold mu.
func (s *Server) settle(now time.Time) {
	s.actions.Settle(now, func(ip string, droplet int) { s.holder[ip] = droplet })
}

type handler func(w http.ResponseWriter, r *http.Request, now time.Time)

// api wraps a handler with the gate (auth, rate limit) and settling; it
// holds mu.
func (s *Server) api(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		now := time.Now()
		if !s.gate.Pass(w, r, now) {
			return
		}
		s.settle(now)
		h(w, r, now)
	}
}

// lookup returns the reserved IP the path names and its droplet, or answers
// 404 and returns ok false when the fake has no such IP.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (ip string, droplet int, ok bool) {
	ip = r.PathValue("ip")
	droplet, ok = s.holder[ip]
	if !ok {
		writeNotFound(w)
	}
	return ip, droplet, ok
}

func (s *Server) getIP(w http.ResponseWriter, r *http.Request, _ time.Time) {
	ip, d, ok := s.lookup(w, r)
	if !ok {
		return
	}
	rip := map[string]any{
		"ip":         ip,
		"region":     map[string]any{"slug": "fra1", "name": "Frankfurt 1", "available": true},
		"droplet":    nil,
		"locked":     s.actions.Busy(ip),
		"project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
	}
	if d != 0 {
		rip["droplet"] = map[string]any{"id": d, "name": fmt.Sprintf("droplet-%d", d), "status": "active"}
	}
	writeJSON(w, http.StatusOK, map[string]any{"reserved_ip": rip, "links": map[string]any{}})
}

func (s *Server) postAction(w http.ResponseWriter, r *http.Request, now time.Time) {
	ip, cur, ok := s.lookup(w, r)
	if !ok {
		return
	}
	var req struct {
		Type      string `json:"type"`
		DropletID int    `json:"droplet_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "bad_request", "invalid JSON: "+err.Error())
		return
	}
	if s.pending > 0 || s.actions.Busy(ip) {
		if s.pending > 0 {
			s.pending--
		}
		s.stats.Pending++
		writeErr(w, http.StatusUnprocessableEntity, "unprocessable_entity", "Reserved IP already has a pending event.")
		return
	}
	var kind string
	var droplet int
	switch req.Type {
	case "assign":
		if req.DropletID <= 0 {
			writeErr(w, http.StatusUnprocessableEntity, "unprocessable_entity", "droplet_id is required")
			return
		}
		// DigitalOcean refuses a droplet that already has a reserved IP, even
		// this same one.
		for _, d := range s.holder {
			if d == req.DropletID {
				writeErr(w, http.StatusUnprocessableEntity, "unprocessable_entity", "Droplet already has a reserved IP assigned.")
				return
			}
		}
		kind, droplet = "assign_ip", req.DropletID
		s.stats.Assigns++
	case "unassign":
		if cur == 0 {
			writeErr(w, http.StatusUnprocessableEntity, "unprocessable_entity", "Reserved IP is not assigned to a Droplet.")
			return
		}
		kind = "unassign_ip"
	default:
		writeErr(w, http.StatusUnprocessableEntity, "unprocessable_entity", fmt.Sprintf("unknown action type %q", req.Type))
		return
	}
	a := s.actions.Start(ip, droplet, kind, now, s.delay)
	s.settle(now) // a zero delay completes at once
	writeJSON(w, http.StatusCreated, map[string]any{"action": s.actionJSON(a)})
}

func (s *Server) getAction(w http.ResponseWriter, r *http.Request, _ time.Time) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	a, ok := s.actions.Get(id)
	if err != nil || !ok || (r.PathValue("ip") != "" && r.PathValue("ip") != a.IP) {
		writeNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": s.actionJSON(a)})
}

func (s *Server) actionJSON(a *fakeapi.Action[string, int]) map[string]any {
	m := map[string]any{
		"id":            a.ID,
		"status":        "in-progress",
		"type":          a.Kind,
		"started_at":    a.Started.UTC().Format(time.RFC3339),
		"completed_at":  nil,
		"resource_id":   ipResourceID(a.IP),
		"resource_type": "reserved_ip",
		"region_slug":   "fra1",
	}
	if a.Finished {
		m["status"] = "completed"
		m["completed_at"] = a.Done.UTC().Format(time.RFC3339)
	}
	return m
}

// ipResourceID mimics the API, which reports a reserved IP's resource_id as
// the address packed into an integer.
func ipResourceID(ip string) int {
	var n int
	for _, p := range strings.Split(ip, ".") {
		v, _ := strconv.Atoi(p)
		n = n<<8 | v
	}
	return n
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(time.Now())
	droplet, err := strconv.Atoi(r.PathValue("droplet"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	held := ""
	for ip, d := range s.holder {
		if d == droplet {
			held = ip
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch r.PathValue("path") {
	case "id":
		fmt.Fprint(w, droplet)
	case "reserved_ip/ipv4/active", "floating_ip/ipv4/active":
		fmt.Fprint(w, held != "")
	case "interfaces/public/0/anchor_ipv4/address":
		fmt.Fprint(w, AnchorIP(droplet))
	case "reserved_ip/ipv4/ip_address", "floating_ip/ipv4/ip_address":
		if held == "" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, held)
	default:
		http.NotFound(w, r)
	}
}

// AnchorIP is the anchor IP the fake gives a droplet: a private 10.x
// address on the droplet's public interface, as DigitalOcean assigns.
func AnchorIP(droplet int) string {
	return fmt.Sprintf("10.%d.%d.%d", 16+droplet>>16&15, droplet>>8&255, 1+droplet%254)
}

func writeNotFound(w http.ResponseWriter) {
	writeErr(w, http.StatusNotFound, "not_found", "The resource you were accessing could not be found.")
}

func writeErr(w http.ResponseWriter, code int, id, msg string) {
	writeJSON(w, code, map[string]any{"id": id, "message": msg, "request_id": "fake-" + strconv.Itoa(code)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
