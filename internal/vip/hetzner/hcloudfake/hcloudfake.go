// Package hcloudfake is a local stand-in for the Hetzner Cloud floating-IP API
// and server metadata service, written from docs.hetzner.cloud and matched to
// the paths and JSON shapes hcloud-go sends and expects.
//
// It serves (under /v1):
//
//	GET  /v1/floating_ips/{id}                      the floating IP, "server" is the holder
//	POST /v1/floating_ips/{id}/actions/assign       {"server": N}
//	POST /v1/floating_ips/{id}/actions/unassign
//	GET  /v1/floating_ips/{id}/actions/{action}     an action
//	GET  /v1/actions/{action}, GET /v1/actions?id=  actions (as hcloud-go's waiter lists them)
//	GET  /servers/{server}/hetzner/v1/metadata/instance-id
//
// Faults it reproduces: actions that stay "running" for a while
// (SetActionDelay); 423 "locked" while an action on the IP runs and on demand
// (FailLocked); 429 rate_limit_exceeded with RateLimit-Limit/-Remaining/-Reset
// until the reset passes (RateLimit); another server holding the IP (SetHolder).
package hcloudfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/internal/fakeapi"
)

// Server is the fake API. All methods are safe for concurrent use.
type Server struct {
	URL   string // API base, to pass as the hcloud endpoint (ends in /v1)
	Token string

	srv *httptest.Server

	mu      sync.Mutex
	ips     map[int64]*fip
	actions *fakeapi.Actions[int64, int64] // on a floating IP id, to a server
	delay   time.Duration
	locked  int
	gate    fakeapi.Gate
	stats   Stats
}

// Stats counts what the fake saw.
type Stats struct {
	Assigns     int
	Locked      int
	RateLimited int
	Requests    int
}

type fip struct {
	id     int64
	ip     string
	server int64
}

// New starts a fake; floating IP ids map to addresses, all unassigned.
func New(token string, ips map[int64]string) *Server {
	s := &Server{
		Token: token, ips: map[int64]*fip{}, actions: fakeapi.NewActions[int64, int64](5000),
		gate: fakeapi.Gate{
			Authorized: fakeapi.Bearer(token),
			Limit:      fakeapi.Window{Limit: 3600, Reset: time.Second}, // Hetzner refills one a second
			Unauthorized: func(w http.ResponseWriter) {
				writeErr(w, http.StatusUnauthorized, "unauthorized", "unable to authenticate")
			},
			Limited: func(w http.ResponseWriter) {
				writeErr(w, http.StatusTooManyRequests, "rate_limit_exceeded", "limit of 3600 requests per hour reached")
			},
			RateLimitHeaders: true,
		},
	}
	for id, ip := range ips {
		s.ips[id] = &fip{id: id, ip: ip}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/floating_ips/{id}", s.api(s.getFIP))
	mux.HandleFunc("POST /v1/floating_ips/{id}/actions/{cmd}", s.api(s.postAction))
	mux.HandleFunc("GET /v1/floating_ips/{id}/actions/{action}", s.api(s.getAction))
	mux.HandleFunc("GET /v1/actions/{action}", s.api(s.getAction))
	mux.HandleFunc("GET /v1/actions", s.api(s.listActions))
	mux.HandleFunc("GET /servers/{server}/hetzner/v1/metadata/{key}", s.metadata)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL + "/v1"
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// MetadataURL is the metadata endpoint as server id sees it (the equivalent
// of http://169.254.169.254/hetzner/v1/metadata).
func (s *Server) MetadataURL(server int64) string {
	return fmt.Sprintf("%s/servers/%d/hetzner/v1/metadata", s.srv.URL, server)
}

// SetActionDelay makes later actions stay running for d.
func (s *Server) SetActionDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// FailLocked makes the next n action POSTs fail with 423 "locked".
func (s *Server) FailLocked(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.locked = n
}

// RateLimit answers every API request with 429 until d from now.
func (s *Server) RateLimit(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate.Limit.CloseFor(time.Now(), d)
}

// SetHolder assigns floating IP id to server at once (0 unassigns).
func (s *Server) SetHolder(id, server int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ips[id].server = server
}

// Holder returns the server holding floating IP id, 0 if none.
func (s *Server) Holder(id int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(time.Now())
	return s.ips[id].server
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests, st.RateLimited = s.gate.Requests, s.gate.RateLimited
	return st
}

func (s *Server) settle(now time.Time) {
	s.actions.Settle(now, func(id, server int64) { s.ips[id].server = server })
}

type handler func(w http.ResponseWriter, r *http.Request, now time.Time)

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

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) *fip {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	f, ok := s.ips[id]
	if err != nil || !ok {
		writeErr(w, http.StatusNotFound, "not_found", "floating_ip with ID '"+r.PathValue("id")+"' not found")
		return nil
	}
	return f
}

func (s *Server) getFIP(w http.ResponseWriter, r *http.Request, _ time.Time) {
	f := s.lookup(w, r)
	if f == nil {
		return
	}
	var server any
	if f.server != 0 {
		server = f.server
	}
	writeJSON(w, http.StatusOK, map[string]any{"floating_ip": map[string]any{
		"id": f.id, "name": fmt.Sprintf("vip-%d", f.id), "description": nil, "ip": f.ip, "type": "ipv4",
		"server": server, "dns_ptr": []any{map[string]any{"ip": f.ip, "dns_ptr": "static.example.com"}},
		"home_location": map[string]any{"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1",
			"country": "DE", "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071, "network_zone": "eu-central"},
		"blocked": false, "protection": map[string]any{"delete": false}, "labels": map[string]string{},
		"created": "2016-01-30T23:50:00+00:00",
	}})
}

func (s *Server) postAction(w http.ResponseWriter, r *http.Request, now time.Time) {
	f := s.lookup(w, r)
	if f == nil {
		return
	}
	var req struct {
		Server *int64 `json:"server"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "json_error", "invalid JSON: "+err.Error())
		return
	}
	if s.locked > 0 || s.actions.Busy(f.id) {
		if s.locked > 0 {
			s.locked--
		}
		s.stats.Locked++
		writeErr(w, http.StatusLocked, "locked", "floating_ip is locked")
		return
	}
	var command string
	var server int64
	switch r.PathValue("cmd") {
	case "assign":
		if req.Server == nil || *req.Server <= 0 {
			writeErr(w, http.StatusBadRequest, "invalid_input", "invalid input in field 'server'")
			return
		}
		command, server = "assign_floating_ip", *req.Server
		s.stats.Assigns++
	case "unassign":
		command = "unassign_floating_ip"
	default:
		writeErr(w, http.StatusNotFound, "not_found", "action not found")
		return
	}
	a := s.actions.Start(f.id, server, command, now, s.delay)
	s.settle(now)
	writeJSON(w, http.StatusCreated, map[string]any{"action": actionJSON(a)})
}

func (s *Server) getAction(w http.ResponseWriter, r *http.Request, _ time.Time) {
	id, err := strconv.ParseInt(r.PathValue("action"), 10, 64)
	a, ok := s.actions.Get(id)
	if err != nil || !ok || (r.PathValue("id") != "" && r.PathValue("id") != strconv.FormatInt(a.IP, 10)) {
		writeErr(w, http.StatusNotFound, "not_found", "action not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": actionJSON(a)})
}

func (s *Server) listActions(w http.ResponseWriter, r *http.Request, _ time.Time) {
	var out []any
	for _, v := range r.URL.Query()["id"] {
		id, err := strconv.ParseInt(v, 10, 64)
		if a, ok := s.actions.Get(id); err == nil && ok {
			out = append(out, actionJSON(a))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"actions": out, "meta": map[string]any{"pagination": map[string]any{
		"page": 1, "per_page": 25, "previous_page": nil, "next_page": nil, "last_page": 1, "total_entries": len(out),
	}}})
}

func actionJSON(a *fakeapi.Action[int64, int64]) map[string]any {
	m := map[string]any{
		"id": a.ID, "command": a.Kind, "status": "running", "progress": 0,
		"started": a.Started.UTC().Format(time.RFC3339), "finished": nil, "error": nil,
		"resources": []any{map[string]any{"id": a.IP, "type": "floating_ip"}},
	}
	if a.Holder != 0 {
		m["resources"] = append(m["resources"].([]any), map[string]any{"id": a.Holder, "type": "server"})
	}
	if a.Finished {
		m["status"] = "success"
		m["progress"] = 100
		m["finished"] = a.Done.UTC().Format(time.RFC3339)
	}
	return m
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	server, err := strconv.ParseInt(r.PathValue("server"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	switch r.PathValue("key") {
	case "instance-id":
		fmt.Fprint(w, server)
	case "hostname":
		fmt.Fprintf(w, "server-%d", server)
	default:
		http.NotFound(w, r)
	}
}

func writeErr(w http.ResponseWriter, code int, c, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": c, "message": msg, "details": map[string]any{}}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
