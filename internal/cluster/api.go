package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// maxBody bounds request bodies on the cluster endpoints.
const maxBody = 1 << 20

func (n *Node) routes() {
	n.handler.HandleFunc("GET /v1/ca", n.handleCA)
	n.handler.HandleFunc("POST /v1/join", n.handleJoin)
	n.handler.Handle("POST /v1/apply", n.requireMember(http.HandlerFunc(n.handleApply)))
	n.handler.Handle("POST /v1/membership", n.requireMember(http.HandlerFunc(n.handleMembership)))
	n.handler.Handle("POST /v1/renew", n.requireMember(http.HandlerFunc(n.handleRenew)))
	n.handler.Handle("GET /v1/members", n.requireMember(http.HandlerFunc(n.handleMembers)))
	n.handler.Handle("POST /v1/ca/key", n.requireMember(http.HandlerFunc(n.handleCAKey)))
}

// requireCert lets through only requests with a verified client
// certificate from the cluster CA.
func requireCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if PeerName(r) == "" {
			writeError(w, ErrUnauthenticated)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// requireMember is requireCert plus: the caller must be a current member,
// so a removed node's still-valid certificate cannot change the cluster,
// and its certificate must carry the key pinned for it, so one minted with
// the CA key cannot either. Both are checked on every request: a
// connection may outlive a removal.
func (n *Node) requireMember(h http.Handler) http.Handler {
	return requireCert(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := n.machine.View().Members[PeerName(r)]; !ok {
			writeError(w, fmt.Errorf("%w: %q is not a member of this cluster", ErrUnauthenticated, PeerName(r)))
			return
		}
		if err := n.checkPin(r.TLS.VerifiedChains[0][0]); err != nil {
			n.log.Warn("request refused: the caller's key is not the one pinned for it", "peer", PeerName(r), "remote", r.RemoteAddr)
			writeError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	}))
}

func (n *Node) handleCA(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(n.creds.CA().CertPEM())
}

// Apply commits a state command and returns the state's verdict: nil, or
// the error the state machine rejected it with (errors.Is works with the
// state package's sentinel errors, also across the wire). On a follower it
// forwards the command to the leader over the mTLS API. During an election
// it retries until the context's deadline (ApplyTimeout by default), but
// only when the command surely was not committed.
func (n *Node) Apply(ctx context.Context, cmd state.Command) error {
	data, err := state.Encode(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	err = n.onLeader(ctx, func(ctx context.Context) error {
		if n.IsLeader() {
			return n.applyLocal(ctx, data)
		}
		return n.forward(ctx, "/v1/apply", data, nil)
	})
	if err != nil {
		return fmt.Errorf("apply %s: %w", cmd.Type(), err)
	}
	return nil
}

// errRetry marks an attempt that surely had no effect and may be retried
// once a leader is known.
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }
func (e errRetry) Unwrap() error { return e.err }

// writeOutcome answers a forwarded request with err, unwrapped from any
// errRetry (the caller retries by its status), or with an empty success.
func writeOutcome(w http.ResponseWriter, err error) {
	if err == nil {
		writeJSON(w, struct{}{})
		return
	}
	var retry errRetry
	if errors.As(err, &retry) {
		err = retry.err
	}
	writeError(w, err)
}

// onLeader runs fn until it succeeds or fails for good, retrying
// attempts that had no effect (no leader, not the leader, leader
// unreachable) until ctx ends.
func (n *Node) onLeader(ctx context.Context, fn func(context.Context) error) error {
	backoff := 10 * time.Millisecond
	for {
		err := fn(ctx)
		var retry errRetry
		if !errors.As(err, &retry) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", retry.err, ctx.Err())
		case <-n.LeadershipChanged():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func (n *Node) applyLocal(ctx context.Context, data []byte) error {
	timeout, err := remaining(ctx, n.timing.ApplyTimeout)
	if err != nil {
		return err
	}
	// Nothing enters the log that a member cannot apply.
	if err := n.machine.Admissible(data); err != nil {
		return err
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return errRetry{ErrNotLeader}
		}
		// ErrLeadershipLost and timeouts leave the outcome unknown, so the
		// command is not retried: it may have been committed.
		return fmt.Errorf("raft apply: %w", err)
	}
	// Followers learn of a commit only with the next entries or after
	// CommitTimeout (tens of ms). A barrier entry is sent at once and tells
	// them now, so a new holder acts on its own log within a round trip.
	n.raft.Barrier(timeout)
	if err, ok := f.Response().(error); ok {
		return err
	}
	return nil
}

// leaderAPI returns the leader's name and the address of its API: the
// member's recorded address, else its raft address (the same listener).
func (n *Node) leaderAPI() (string, string) {
	name, addr := n.Leader()
	if name == "" {
		return "", ""
	}
	if m, ok := n.machine.View().Members[name]; ok && m.Address != "" {
		addr = m.Address
	}
	return name, addr
}

// forward POSTs body to path on the leader and decodes a JSON reply into
// out (when not nil).
func (n *Node) forward(ctx context.Context, path string, body []byte, out any) error {
	leader, addr := n.leaderAPI()
	if leader == "" {
		return errRetry{ErrNoLeader}
	}
	if leader == n.name {
		return errRetry{ErrNotLeader} // we lost leadership between checks
	}
	err := postJSON(ctx, n.client, addr, path, body, out)
	var remote *RemoteError
	switch {
	case errors.As(err, &remote) && errors.Is(remote, ErrNotLeader):
		return errRetry{fmt.Errorf("forward to %s: %w", leader, err)}
	case isDialError(err):
		return errRetry{fmt.Errorf("forward to %s: %w", leader, err)}
	case err != nil:
		return fmt.Errorf("forward to %s: %w", leader, err)
	}
	return nil
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// postJSON POSTs body to https://addr/path and decodes the reply.
func postJSON(ctx context.Context, c *http.Client, addr, path string, body []byte, out any) error {
	return requestJSON(ctx, c, http.MethodPost, addr, path, body, out)
}

// requestJSON sends body (none when nil) to a peer's endpoint and decodes
// its JSON reply into out (unless nil); an error reply becomes a
// *RemoteError.
func requestJSON(ctx context.Context, c *http.Client, method, addr, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read reply from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode reply from %s: %w", addr, err)
	}
	return nil
}

func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	if !n.IsLeader() {
		writeError(w, ErrNotLeader)
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeError(w, fmt.Errorf("%w: read body: %v", state.ErrInvalid, err))
		return
	}
	// Reject garbage, and what the caller's role may not do, before it
	// reaches the log.
	if err := n.machine.Authorize(n.machine.View().Members[PeerName(r)], data); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := n.withTimeout(r.Context())
	defer cancel()
	writeOutcome(w, n.applyLocal(ctx, data))
}

// membershipChange is the body of /v1/membership.
type membershipChange struct {
	Op   string `json:"op"` // add_voter, add_nonvoter, remove
	Name string `json:"name"`
	Addr string `json:"addr,omitempty"`
}

// AddVoter adds a voter to the raft configuration (through the leader).
// The node at addr should be running: until it is, raft counts it in the
// quorum without its vote. Joining nodes need not call it; they are added
// as non-voters and promote themselves once they have caught up.
func (n *Node) AddVoter(ctx context.Context, name, addr string) error {
	return n.changeMembership(ctx, membershipChange{Op: "add_voter", Name: name, Addr: addr})
}

// RemoveServer removes a node: its member record from the state, then its
// raft server, both on the leader.
func (n *Node) RemoveServer(ctx context.Context, name string) error {
	return n.changeMembership(ctx, membershipChange{Op: "remove", Name: name})
}

func (n *Node) changeMembership(ctx context.Context, c membershipChange) error {
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	err = n.onLeader(ctx, func(ctx context.Context) error {
		if n.IsLeader() {
			return n.changeLocal(ctx, c)
		}
		return n.forward(ctx, "/v1/membership", body, nil)
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.Op, c.Name, err)
	}
	return nil
}

func (n *Node) changeLocal(ctx context.Context, c membershipChange) error {
	timeout, err := remaining(ctx, n.timing.ApplyTimeout)
	if err != nil {
		return err
	}
	var f raft.Future
	switch c.Op {
	case "add_voter", "add_nonvoter":
		if c.Addr == "" || pki.ValidName(c.Name) != nil {
			return fmt.Errorf("%w: %s needs a valid name and an address", state.ErrInvalid, c.Op)
		}
		if c.Op == "add_voter" {
			f = n.raft.AddVoter(raft.ServerID(c.Name), raft.ServerAddress(c.Addr), 0, timeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(c.Name), raft.ServerAddress(c.Addr), 0, timeout)
		}
	case "remove":
		servers, err := n.Servers(ctx)
		if err != nil {
			return err
		}
		for _, s := range servers {
			if s.Name == c.Name && s.Suffrage == "voter" && voters(servers) == 1 {
				return fmt.Errorf("%w: %s", ErrLastVoter, c.Name)
			}
		}
		err = n.applyLocal(ctx, mustEncode(state.RemoveMember{Name: c.Name, At: n.now()}))
		if err != nil && !errors.Is(err, state.ErrUnknownMember) {
			return err
		}
		f = n.raft.RemoveServer(raft.ServerID(c.Name), 0, timeout)
	default:
		return fmt.Errorf("%w: membership op %q", state.ErrInvalid, c.Op)
	}
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return errRetry{ErrNotLeader}
		}
		return fmt.Errorf("raft: %w", err)
	}
	n.log.Info("raft membership changed", "op", c.Op, "server", c.Name, "addr", c.Addr)
	// Only now that raft counts it may the failover quorum count it too.
	if m, ok := n.machine.View().Members[c.Name]; ok && m.Pending && c.Op == "add_voter" {
		return n.markVoter(ctx, c.Name)
	}
	return nil
}

// markVoter records, on the leader, that raft has made a pending member a
// voter.
func (n *Node) markVoter(ctx context.Context, name string) error {
	if err := n.applyLocal(ctx, mustEncode(state.PromoteMember{Name: name})); err != nil {
		return fmt.Errorf("mark %s as a voter: %w", name, err)
	}
	return nil
}

// remaining is the time left before ctx's deadline, or def without one.
func remaining(ctx context.Context, def time.Duration) (time.Duration, error) {
	d, ok := ctx.Deadline()
	if !ok {
		return def, nil
	}
	left := time.Until(d)
	if left <= 0 {
		return 0, context.DeadlineExceeded
	}
	return left, nil
}

func mustEncode(c state.Command) []byte {
	b, err := state.Encode(c)
	if err != nil {
		panic(err) // the state's own command types always encode
	}
	return b
}

func (n *Node) handleMembership(w http.ResponseWriter, r *http.Request) {
	if !n.IsLeader() {
		writeError(w, ErrNotLeader)
		return
	}
	var c membershipChange
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&c); err != nil {
		writeError(w, fmt.Errorf("%w: %v", state.ErrInvalid, err))
		return
	}
	if err := authorizeMembership(n.machine.View().Members[PeerName(r)], c); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := n.withTimeout(r.Context())
	defer cancel()
	writeOutcome(w, n.changeLocal(ctx, c))
}

// authorizeMembership lets an app node change the membership (remove a
// node, add the node it admitted) and a witness only promote itself.
func authorizeMembership(caller state.Member, c membershipChange) error {
	switch {
	case caller.Name == "":
		return fmt.Errorf("%w: only members may change the membership", state.ErrForbidden)
	case caller.Role == state.RoleApp:
		return nil
	case c.Op == "add_voter" && c.Name == caller.Name:
		return nil
	}
	return fmt.Errorf("%w: %s is a %s and may only promote itself, not %s %s; run this on an app node",
		state.ErrForbidden, caller.Name, caller.Role, c.Op, c.Name)
}

// promoteSelf asks the leader to make this node a voter once it is a
// non-voter that has caught up with the log: joins add nodes as
// non-voters so that a node that never starts cannot cost the quorum. It
// tries every promoteRetry while there is something to do; once this node
// is a voter it only looks again when the membership or the leadership
// changes, or after promoteBackstop (raft's configuration notifies no one),
// since a timer four times a second was a good share of an idle agent's
// wakeups.
func (n *Node) promoteSelf(ctx context.Context) {
	t := time.NewTimer(promoteRetry)
	defer t.Stop()
	for {
		members, leadership := n.machine.Changed(state.MembershipDomain), n.LeadershipChanged()
		wait := promoteRetry
		if n.promoteStep(ctx) {
			wait = promoteBackstop
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-members:
		case <-leadership:
		}
	}
}

const (
	promoteRetry    = 250 * time.Millisecond
	promoteBackstop = 5 * time.Second
)

// promoteStep does one step of promoteSelf; settled reports that this
// node is a voter with nothing left to do.
func (n *Node) promoteStep(ctx context.Context) (settled bool) {
	if n.raft.CommitIndex() == 0 || n.raft.AppliedIndex() < n.raft.CommitIndex() {
		return false
	}
	me, ok := n.machine.View().Members[n.name]
	if !ok {
		return false
	}
	if n.IsLeader() {
		// Only a raft voter can lead; a leader still marked pending
		// marks itself.
		if !me.Pending {
			return true
		}
		actx, cancel := context.WithTimeout(ctx, n.timing.ApplyTimeout)
		defer cancel()
		if err := n.markVoter(actx, n.name); err != nil {
			n.log.Warn("marking this node as a voter failed; will retry", "err", err)
			return false
		}
		return true
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	nonvoter := false
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(n.name) && s.Suffrage == raft.Nonvoter {
			nonvoter = true
		}
	}
	// A voter still marked pending lost the race between raft's change
	// and the state's (a leader change in between): ask again, which
	// marks it.
	if !nonvoter && !me.Pending {
		return true
	}
	actx, cancel := context.WithTimeout(ctx, n.timing.ApplyTimeout)
	defer cancel()
	if err := n.AddVoter(actx, n.name, string(n.trans.LocalAddr())); err != nil {
		n.log.Warn("promotion to voter failed; will retry", "err", err)
		return false
	}
	n.log.Info("promoted to voter")
	return false // look again soon: the state marks it a moment later
}

// Wire errors. Each code names a sentinel error; the caller gets a
// *RemoteError that unwraps to the same sentinel.
var wireErrors = []struct {
	code   string
	err    error
	status int
}{
	{"stale_epoch", state.ErrStaleEpoch, http.StatusConflict},
	{"unknown_member", state.ErrUnknownMember, http.StatusNotFound},
	{"bad_token", state.ErrBadToken, http.StatusForbidden},
	{"token_expired", state.ErrTokenExpired, http.StatusForbidden},
	{"token_used_up", state.ErrTokenUsedUp, http.StatusForbidden},
	{"invalid", state.ErrInvalid, http.StatusBadRequest},
	{"upgrade_needed", state.ErrUpgradeNeeded, http.StatusConflict},
	{"forbidden", state.ErrForbidden, http.StatusForbidden},
	{"rotating", state.ErrRotating, http.StatusConflict},
	{"duplicate", state.ErrDuplicate, http.StatusConflict},
	{"busy", state.ErrBusy, http.StatusConflict},
	{"not_leader", ErrNotLeader, http.StatusServiceUnavailable},
	{"no_leader", ErrNoLeader, http.StatusServiceUnavailable},
	{"cannot_sign", ErrCannotSign, http.StatusServiceUnavailable},
	{"name_taken", ErrNameTaken, http.StatusConflict},
	{"too_many_joins", ErrTooManyJoins, http.StatusTooManyRequests},
	{"join_refused", ErrJoinRefused, http.StatusConflict},
	{"unauthenticated", ErrUnauthenticated, http.StatusUnauthorized},
	{"last_voter", ErrLastVoter, http.StatusConflict},
	{"ca_mismatch", pki.ErrCAMismatch, http.StatusForbidden},
	{"invalid_csr", pki.ErrInvalidCSR, http.StatusBadRequest},
	{"invalid_name", pki.ErrInvalidName, http.StatusBadRequest},
}

// RemoteError is an error returned by a peer's API.
type RemoteError struct {
	Code    string // the sentinel's wire name, or "" for other errors
	Message string
	Status  int
}

func (e *RemoteError) Error() string { return e.Message }

// HTTPStatus is the status the peer answered with: the peer was reached
// and refused, as opposed to a transport failure.
func (e *RemoteError) HTTPStatus() int { return e.Status }

// Unwrap returns the sentinel error named by Code, if any.
func (e *RemoteError) Unwrap() error {
	for _, w := range wireErrors {
		if w.code == e.Code {
			return w.err
		}
	}
	return nil
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	body, status := errorBody{Error: err.Error()}, http.StatusInternalServerError
	for _, we := range wireErrors {
		if errors.Is(err, we.err) {
			body.Code, status = we.code, we.status
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func decodeError(status int, b []byte) error {
	var body errorBody
	if err := json.Unmarshal(b, &body); err != nil || body.Error == "" {
		return &RemoteError{Status: status, Message: fmt.Sprintf("HTTP %d: %.200s", status, b)}
	}
	return &RemoteError{Code: body.Code, Message: body.Error, Status: status}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// newClient returns the node's client for peers' APIs: it checks that the
// node answering at an address is the member known there, with its pinned
// key (VerifyPeerAt).
func (n *Node) newClient() *http.Client {
	cfg := n.creds.ClientConfig()
	cfg.NextProtos = []string{alpnH2, alpnH1}
	d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: true,
		DialTLSContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return n.dialVerified(ctx, d, cfg, addr)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
}
