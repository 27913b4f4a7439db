// Package localapi is the CLI's way into a running agent: JSON over HTTP on
// a unix socket that only root can open. The server serves a table of
// routes that each capability contributes (see Route and Endpoint); the
// agent collects them. This package also holds the wire types of the
// cluster operations (status, tokens, mode, switchover, membership), whose
// JSON field names are stable, and the client the CLI uses.
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
	// HoldingBack says why this node, the committed holder, does not
	// configure the IP (no lease, waiting for the leader, ...).
	HoldingBack string `json:"holding_back,omitempty"`
	// StateWarning says when this node could not apply committed entries,
	// or a member runs an older state level than this node (upgrade it).
	StateWarning string `json:"state_warning,omitempty"`
	// Delivery is null when no delivery has happened or been configured.
	Delivery *DeliveryStatus `json:"delivery,omitempty"`
	// Files is null on a node without [[files]].
	Files *FilesStatus `json:"files,omitempty"`
	// Harden is the agent's last baseline audit; null before the first
	// (it runs 30 s after start, then hourly).
	Harden *HardenStatus `json:"harden,omitempty"`
	// Guard counts the cluster's bans in force; null when none is and the
	// guard does not run here.
	Guard       *GuardStatus `json:"guard,omitempty"`
	GeneratedAt time.Time    `json:"generated_at"`
}

// HardenStatus summarises the agent's last baseline audit.
type HardenStatus struct {
	CheckedAt    time.Time      `json:"checked_at"`
	Passed       int            `json:"passed"`
	Failed       int            `json:"failed"`
	Skipped      int            `json:"skipped"`
	Errors       int            `json:"errors"`
	FailedByArea map[string]int `json:"failed_by_area"`
	Failing      []string       `json:"failing,omitempty"` // IDs of failed checks and checks that could not run
}

// DeliveryStatus is delivery's part of 'tandem status': what each node
// runs and the rollout in progress. Field names are stable.
type DeliveryStatus struct {
	// Installed is node → package → release.
	Installed   map[string]map[string]ReleaseStatus `json:"installed"`
	Rollout     *RolloutStatus                      `json:"rollout"` // null when none runs
	Queued      int                                 `json:"queued"`
	Locked      string                              `json:"locked,omitempty"` // the lock's message
	LastOutcome string                              `json:"last_outcome,omitempty"`
	LastReason  string                              `json:"last_reason,omitempty"`
}

// ReleaseStatus is one installed release.
type ReleaseStatus struct {
	Version string `json:"version"`
	SHA256  string `json:"sha256,omitempty"`
}

// RolloutStatus is the rollout in progress.
type RolloutStatus struct {
	Delivery string    `json:"delivery"`
	Package  string    `json:"package"`
	Version  string    `json:"version"`
	Phase    string    `json:"phase"`
	Driver   string    `json:"driver"`
	Step     string    `json:"step"` // the latest journal step, e.g. "#2 install node2 started"
	Started  time.Time `json:"started"`
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
	Priority  int     `json:"priority"`
	// StateLevel is the newest state level its tandem can apply.
	StateLevel int `json:"state_level"`
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
	Uses int           `json:"uses"` // 0: unlimited until it expires
	Role string        `json:"role"` // the role it admits: app or witness
}

// TokenReply carries a new token.
type TokenReply struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
}

// TokenInfo describes a join token; the secret is never stored or shown.
type TokenInfo struct {
	ID       string    `json:"id"`
	Role     string    `json:"role"`      // "" for a token that admits either role
	UsesLeft int       `json:"uses_left"` // -1: unlimited
	Expires  time.Time `json:"expires"`
	Created  time.Time `json:"created"`
	Expired  bool      `json:"expired"`
}

// TokenList is every join token the cluster knows.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// RevokeRequest deletes a join token.
type RevokeRequest struct {
	ID string `json:"id"`
}

// ModeRequest switches between "auto" and "maintenance".
type ModeRequest struct {
	Mode string `json:"mode"`
}

// RemoveRequest removes another member.
type RemoveRequest struct {
	Node string `json:"node"`
}

// ResetRequest clears a node's failure count.
type ResetRequest struct {
	Node string `json:"node"`
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

// Route is one endpoint of the local API. Each capability (cluster
// operations, delivery, files, guard) contributes its own routes; the agent
// only collects them, so a new capability never edits another's handlers.
type Route struct {
	Pattern string // a net/http pattern: "GET /v1/status"
	Handler http.Handler
}

// Empty is the request or reply of an endpoint that carries no data.
type Empty struct{}

// Endpoint adapts fn to a JSON endpoint: the body (capped at 1 MiB) decodes
// into Req unless Req is Empty, fn's reply is encoded, and its error becomes
// {"error": message} with status 409.
func Endpoint[Req, Resp any](fn func(ctx context.Context, req Req) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if _, empty := any(req).(Empty); !empty && !decode(w, r, &req) {
			return
		}
		respond[Resp](w)(fn(r.Context(), req))
	})
}

// Error is the JSON error body.
type Error struct {
	Error string `json:"error"`
}

// Serve listens on the unix socket at path until ctx ends.
func Serve(ctx context.Context, path string, routes []Route, log *slog.Logger) error {
	h, err := Handler(routes)
	if err != nil {
		return fmt.Errorf("local api: %w", err)
	}
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
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("local api listening", "socket", path, "routes", len(routes))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("local api: %w", err)
	}
	return nil
}

// Handler routes the table. Two capabilities claiming one pattern is a
// wiring mistake, reported instead of net/http's panic.
func Handler(routes []Route) (http.Handler, error) {
	mux := http.NewServeMux()
	seen := map[string]bool{}
	for _, rt := range routes {
		if seen[rt.Pattern] {
			return nil, fmt.Errorf("route %q is registered twice", rt.Pattern)
		}
		seen[rt.Pattern] = true
		if err := register(mux, rt); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

func register(mux *http.ServeMux, rt Route) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("route %q: %v", rt.Pattern, r)
		}
	}()
	mux.Handle(rt.Pattern, rt.Handler)
	return nil
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

// Call sends in (nil for no body) to the endpoint at method route and
// decodes the reply. Capabilities build their typed client calls on it.
func Call[Resp any](ctx context.Context, c *Client, method, route string, in any) (Resp, error) {
	var out Resp
	return out, c.do(ctx, method, route, in, &out)
}

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

// ListTokens lists the join tokens.
func (c *Client) ListTokens(ctx context.Context) (TokenList, error) {
	return Call[TokenList](ctx, c, http.MethodGet, "/v1/tokens", nil)
}

// RevokeToken deletes a join token by ID.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	_, err := Call[Empty](ctx, c, http.MethodPost, "/v1/tokens/revoke", RevokeRequest{ID: id})
	return err
}

// SetMode switches auto/maintenance.
func (c *Client) SetMode(ctx context.Context, mode string) error {
	return c.do(ctx, http.MethodPost, "/v1/mode", ModeRequest{Mode: mode}, &Empty{})
}

// Switchover asks for a planned move and waits for it.
func (c *Client) Switchover(ctx context.Context, r SwitchoverRequest) (SwitchoverReply, error) {
	var s SwitchoverReply
	return s, c.do(ctx, http.MethodPost, "/v1/switchover", r, &s)
}

// Leave makes this node leave the cluster.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/leave", nil, &Empty{})
}

// Remove removes another node from the cluster.
func (c *Client) Remove(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/v1/remove", RemoveRequest{Node: node}, &Empty{})
}

// ResetFailures clears a node's failure count, lifting its penalty.
func (c *Client) ResetFailures(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/v1/reset", ResetRequest{Node: node}, &Empty{})
}

// FilesStatus is file replication on one node, as printed by 'tandem
// files status --json' and carried in 'tandem status'. Field names are
// stable.
type FilesStatus struct {
	Node    string `json:"node"`
	Holder  string `json:"holder"`
	Sending bool   `json:"sending"` // this node is the source
	Epoch   uint64 `json:"epoch,omitempty"`
	// FromHolder is true when Paths[].Nodes come from the holder's
	// liveness reply rather than from this node.
	FromHolder bool        `json:"from_holder,omitempty"`
	Paths      []FilesPath `json:"paths"`
}

// FilesPath is one replicated directory.
type FilesPath struct {
	Path     string    `json:"path"`
	LastScan time.Time `json:"last_scan"`
	Errors   []string  `json:"errors,omitempty"`
	// SQLite lists databases found in the path and left out.
	SQLite []string `json:"sqlite,omitempty"`
	// Nodes are the receivers, with their lag (from the source).
	Nodes []FilesNode `json:"nodes,omitempty"`
	// This node as a receiver: the source and epoch it last caught up
	// with, and when.
	Source      string            `json:"source,omitempty"`
	SourceEpoch uint64            `json:"source_epoch,omitempty"`
	LastPull    *time.Time        `json:"last_pull,omitempty"`
	PullMs      int64             `json:"pull_ms,omitempty"`
	Quarantine  []FilesQuarantine `json:"quarantine,omitempty"`
}

// FilesNode is one receiver of a path, seen from the source.
type FilesNode struct {
	Node         string     `json:"node"`
	LagSeconds   float64    `json:"lag_seconds"`
	PendingBytes int64      `json:"pending_bytes"`
	LastSync     *time.Time `json:"last_sync,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	Syncs        int        `json:"syncs"`
	Failures     int        `json:"failures"`
}

// FilesQuarantine is one epoch's quarantine beside a path on this node,
// with the commands that restore or discard it.
type FilesQuarantine struct {
	Dir     string `json:"dir"`
	Epoch   uint64 `json:"epoch"`
	Files   int    `json:"files"`
	Restore string `json:"restore"`
	// RestoreOn is the node to run Restore on: the holder, whose copy
	// replicates.
	RestoreOn string `json:"restore_on"`
	Discard   string `json:"discard"`
}

// FilesRestoreRequest asks the holder to add what a node's quarantine
// holds and its copy lacks.
type FilesRestoreRequest struct {
	Path  string `json:"path"`
	From  string `json:"from"`
	Epoch uint64 `json:"epoch"`
}

// FilesRestoreReply says how many files came back.
type FilesRestoreReply struct {
	Files   int64  `json:"files"`
	Message string `json:"message"`
}

// FilesRestore restores a quarantine into the holder's copy.
func (c *Client) FilesRestore(ctx context.Context, r FilesRestoreRequest) (FilesRestoreReply, error) {
	var out FilesRestoreReply
	err := c.do(ctx, http.MethodPost, "/v1/files/restore", r, &out)
	return out, err
}

// FilesSyncRequest asks for a full reconcile now.
type FilesSyncRequest struct {
	Full bool `json:"full"`
}

// FilesSyncReply says what the reconcile did.
type FilesSyncReply struct {
	Sending bool   `json:"sending"`
	Message string `json:"message"`
}

// FilesStatus fetches file replication's status.
func (c *Client) FilesStatus(ctx context.Context) (FilesStatus, error) {
	var out FilesStatus
	err := c.do(ctx, http.MethodGet, "/v1/files/status", nil, &out)
	return out, err
}

// FilesSync forces a full reconcile.
func (c *Client) FilesSync(ctx context.Context, r FilesSyncRequest) (FilesSyncReply, error) {
	var out FilesSyncReply
	err := c.do(ctx, http.MethodPost, "/v1/files/sync", r, &out)
	return out, err
}
