// Package localapi is the CLI's way into a running agent: JSON over HTTP on
// a unix socket that only root can open. The server side declares the
// Backend it needs; the agent implements it. The client is what the CLI uses.
package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Status is the agent's view of the cluster, as printed by `tandem status
// --json`. Field names are stable.
type Status struct {
	Node         string       `json:"node"`
	Role         string       `json:"role"`
	Version      string       `json:"version"`
	Mode         string       `json:"mode"`
	Raft         RaftStatus   `json:"raft"`
	Holder       HolderStatus `json:"holder"`
	VIP          VIPStatus    `json:"vip"`
	LeaseValid   bool         `json:"lease_valid"`
	Members      []Member     `json:"members"`
	LastFailover *Failover    `json:"last_failover"`
	Moves        []Failover   `json:"recent_moves"`
	HeldMove     *HeldMove    `json:"held_move"` // a move placement holds back now; null when none
	LastError    string       `json:"last_error,omitempty"`
	GeneratedAt  time.Time    `json:"generated_at"`
}

// RaftStatus is this node's raft view.
type RaftStatus struct {
	State         string `json:"state"`
	Leader        string `json:"leader"`
	Term          uint64 `json:"term"`
	LastContactMs int64  `json:"last_contact_ms"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
}

// HolderStatus is the committed holder of the floating IP.
type HolderStatus struct {
	Node   string    `json:"node"`
	Epoch  uint64    `json:"epoch"`
	Active bool      `json:"active"`
	Since  time.Time `json:"since"`
}

// VIPStatus describes the floating IP.
type VIPStatus struct {
	Address  string `json:"address"`
	Provider string `json:"provider"`
	HeldHere bool   `json:"held_here"`
}

// Member is one node as seen from here.
type Member struct {
	Name      string  `json:"name"`
	Role      string  `json:"role"`
	Address   string  `json:"address"`
	Suffrage  string  `json:"suffrage"` // voter, nonvoter, staging (raft's view) or pending (joined, not counted yet)
	Reachable bool    `json:"reachable"`
	Healthy   bool    `json:"healthy"`
	Holding   bool    `json:"holding"`
	AgeMs     int64   `json:"last_reply_ms"`
	Checks    []Check `json:"checks"`
	// Failures is this app node's failure count (moves away from it
	// because it was unhealthy or lost) within the failure window, since
	// its last 'tandem reset'. At the threshold it is penalised until
	// PenalisedUntil.
	Failures       int        `json:"failures"`
	Penalised      bool       `json:"penalised"`
	PenalisedUntil *time.Time `json:"penalised_until,omitempty"`
}

// HeldMove is a move away from an unhealthy holder that placement holds
// back, and why.
type HeldMove struct {
	From   string     `json:"from"`
	To     string     `json:"to"`   // "" when no standby is healthy
	Kind   string     `json:"kind"` // cooloff, backoff or no_standby
	Reason string     `json:"reason"`
	Until  *time.Time `json:"until,omitempty"` // absent: until a standby is healthy
}

// Check is one health check's latest result.
type Check struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Healthy bool   `json:"healthy"`
	Output  string `json:"output"`
}

// Failover is one move of the floating IP.
type Failover struct {
	Epoch      uint64    `json:"epoch"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
	DurationMs int64     `json:"duration_ms"`
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	TTL  time.Duration `json:"ttl"`
	Uses int           `json:"uses"`
}

// TokenReply carries a new token.
type TokenReply struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
}

// SwitchoverRequest asks for a planned move.
type SwitchoverRequest struct {
	To      string        `json:"to"`
	Timeout time.Duration `json:"timeout"`
}

// SwitchoverReply reports a completed move.
type SwitchoverReply struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Epoch  uint64 `json:"epoch"`
	TookMs int64  `json:"took_ms"`
}

// Backend is what the server needs from the agent.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	CreateToken(ctx context.Context, r TokenRequest) (TokenReply, error)
	SetMode(ctx context.Context, mode string) error
	Switchover(ctx context.Context, r SwitchoverRequest) (SwitchoverReply, error)
	Leave(ctx context.Context) error
	Remove(ctx context.Context, node string) error
	ResetFailures(ctx context.Context, node string) error
}

// Error is the JSON error body.
type Error struct {
	Error string `json:"error"`
}

// Serve listens on the unix socket at path until ctx ends.
func Serve(ctx context.Context, path string, b Backend, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("local api: %w", err)
	}
	_ = os.Remove(path) // a stale socket from a crash
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("local api: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("local api: %w", err)
	}
	srv := &http.Server{Handler: Handler(b), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("local api listening", "socket", path)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("local api: %w", err)
	}
	return nil
}

// Handler routes the API to b.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		respond[Status](w)(b.Status(r.Context()))
	})
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if !decode(w, r, &req) {
			return
		}
		respond[TokenReply](w)(b.CreateToken(r.Context(), req))
	})
	mux.HandleFunc("POST /v1/mode", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Mode string `json:"mode"`
		}
		if !decode(w, r, &req) {
			return
		}
		respond[struct{}](w)(struct{}{}, b.SetMode(r.Context(), req.Mode))
	})
	mux.HandleFunc("POST /v1/switchover", func(w http.ResponseWriter, r *http.Request) {
		var req SwitchoverRequest
		if !decode(w, r, &req) {
			return
		}
		respond[SwitchoverReply](w)(b.Switchover(r.Context(), req))
	})
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		respond[struct{}](w)(struct{}{}, b.Leave(r.Context()))
	})
	mux.HandleFunc("POST /v1/remove", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Node string `json:"node"`
		}
		if !decode(w, r, &req) {
			return
		}
		respond[struct{}](w)(struct{}{}, b.Remove(r.Context(), req.Node))
	})
	mux.HandleFunc("POST /v1/reset", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Node string `json:"node"`
		}
		if !decode(w, r, &req) {
			return
		}
		respond[struct{}](w)(struct{}{}, b.ResetFailures(r.Context(), req.Node))
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, Error{Error: "bad request: " + err.Error()})
		return false
	}
	return true
}

func respond[T any](w http.ResponseWriter) func(T, error) {
	return func(v T, err error) {
		if err != nil {
			writeJSON(w, http.StatusConflict, Error{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client talks to an agent's local API.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{path: path, hc: &http.Client{Transport: tr}}
}

// ErrAgentDown means nothing answers on the socket.
var ErrAgentDown = errors.New("the tandem agent is not running")

func (c *Client) do(ctx context.Context, method, route string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tandem"+route, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("%w (no socket at %s; start it with 'systemctl start tandem' or check --config)", ErrAgentDown, c.path)
		}
		return fmt.Errorf("local api %s: %w", route, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e Error
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("local api %s: %s", route, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status fetches the agent's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// CreateToken asks for a join token.
func (c *Client) CreateToken(ctx context.Context, r TokenRequest) (TokenReply, error) {
	var t TokenReply
	return t, c.do(ctx, http.MethodPost, "/v1/tokens", r, &t)
}

// SetMode switches auto/maintenance.
func (c *Client) SetMode(ctx context.Context, mode string) error {
	return c.do(ctx, http.MethodPost, "/v1/mode", map[string]string{"mode": mode}, &struct{}{})
}

// Switchover asks for a planned move and waits for it.
func (c *Client) Switchover(ctx context.Context, r SwitchoverRequest) (SwitchoverReply, error) {
	var s SwitchoverReply
	return s, c.do(ctx, http.MethodPost, "/v1/switchover", r, &s)
}

// Leave makes this node leave the cluster.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/leave", nil, &struct{}{})
}

// Remove removes another node from the cluster.
func (c *Client) Remove(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/v1/remove", map[string]string{"node": node}, &struct{}{})
}

// ResetFailures clears a node's failure count, lifting its penalty.
func (c *Client) ResetFailures(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/v1/reset", map[string]string{"node": node}, &struct{}{})
}
