package cluster

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// JoinRequest describes the node that wants to join.
type JoinRequest struct {
	Name      string // node name, becomes the certificate's CN
	Role      string // state.RoleApp or state.RoleWitness
	Advertise string // host:port of its listener, as peers will dial it
	// IPs are extra IP SANs for its certificate; the Advertise host is
	// always included when it is an IP address.
	IPs []netip.Addr
	// Priority is its placement priority ([failover] priority).
	Priority int
	// Level is the newest state level it can apply; 0 means this
	// binary's (state.New().Level()).
	Level int
}

// JoinResult is what a successful join hands back.
type JoinResult struct {
	// Credentials are the node's new certificate and key (generated
	// locally; the key never left this process) and the CA, with its key
	// for app nodes. Save them with Credentials.Save(dir).
	Credentials *pki.Node
	// Members are the cluster's members, including the new node.
	Members []state.Member
}

// joinBody is the JSON body of POST /v1/join.
type joinBody struct {
	TokenID     string `json:"token_id"`
	TokenSecret string `json:"token_secret"`
	CAHash      string `json:"ca_hash"` // the pin the client checked
	Name        string `json:"name"`
	Role        string `json:"role"`
	Advertise   string `json:"advertise"`
	CSR         string `json:"csr"` // PEM
	Priority    int    `json:"priority,omitempty"`
	Level       int    `json:"level,omitempty"` // absent from nodes before levels
}

// joinReply is the JSON reply of POST /v1/join.
type joinReply struct {
	Cert    string         `json:"cert"`             // PEM, the node certificate
	CA      string         `json:"ca"`               // PEM, the CA certificate
	CAKey   string         `json:"ca_key,omitempty"` // PEM, app nodes only
	Members []state.Member `json:"members"`
}

// Join asks the node at addr (host:port) to admit this node into its
// cluster with a join token. It connects without a client certificate and
// trusts the server only if the CA in its certificate chain has the hash
// the token pins; the private key is generated here and only a CSR is
// sent. On success the node is a member and a raft non-voter; start it
// with New and the saved credentials, and it promotes itself to voter
// once it has caught up. Errors wrap pki.ErrTokenFormat, pki.ErrCAMismatch,
// state.ErrBadToken, state.ErrTokenExpired, state.ErrTokenUsedUp,
// ErrNameTaken, ErrJoinRefused or ErrCannotSign when those are the cause.
func Join(ctx context.Context, addr, token string, req JoinRequest) (JoinResult, error) {
	tok, err := pki.ParseToken(token)
	if err != nil {
		return JoinResult{}, err
	}
	if err := pki.ValidName(req.Name); err != nil {
		return JoinResult{}, fmt.Errorf("join: %w", err)
	}
	if req.Role != state.RoleApp && req.Role != state.RoleWitness {
		return JoinResult{}, fmt.Errorf("join: role %q: want %q or %q", req.Role, state.RoleApp, state.RoleWitness)
	}
	host, err := checkHostPort(req.Advertise)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join: advertise address: %w", err)
	}
	ips := slices.Clone(req.IPs)
	if ip, err := netip.ParseAddr(host); err == nil && !slices.Contains(ips, ip) {
		ips = append([]netip.Addr{ip}, ips...)
	}
	key, err := pki.NewKey()
	if err != nil {
		return JoinResult{}, err
	}
	csr, err := pki.NewCSR(key, req.Name, ips)
	if err != nil {
		return JoinResult{}, err
	}
	if req.Level == 0 {
		req.Level = state.New().Level()
	}
	body, err := json.Marshal(joinBody{
		TokenID: tok.ID, TokenSecret: tok.Secret, CAHash: tok.CAHash,
		Name: req.Name, Role: req.Role, Advertise: req.Advertise, CSR: string(csr),
		Priority: req.Priority, Level: req.Level,
	})
	if err != nil {
		return JoinResult{}, err
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13,
			// Trust comes from the pin, checked in VerifyConnection.
			InsecureSkipVerify: true,
			VerifyConnection:   verifyPinned(tok.CAHash),
		},
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}}
	defer client.CloseIdleConnections()
	var reply joinReply
	if err := postJSON(ctx, client, addr, "/v1/join", body, &reply); err != nil {
		return JoinResult{}, fmt.Errorf("join %s: %w", addr, err)
	}

	ca, err := pki.ParseCA([]byte(reply.CA), []byte(reply.CAKey))
	if err != nil {
		return JoinResult{}, fmt.Errorf("join %s: reply: %w", addr, err)
	}
	if !pki.MatchesPin(ca.Cert, tok.CAHash) {
		return JoinResult{}, fmt.Errorf("join %s: reply: %w: got %s, token pins %s", addr, pki.ErrCAMismatch, ca.Hash(), tok.CAHash)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return JoinResult{}, err
	}
	creds, err := pki.NewNode(ca, []byte(reply.Cert), keyPEM)
	if err != nil {
		return JoinResult{}, fmt.Errorf("join %s: reply: %w", addr, err)
	}
	if creds.Name != req.Name {
		return JoinResult{}, fmt.Errorf("join %s: reply: certificate is for %q, not %q", addr, creds.Name, req.Name)
	}
	return JoinResult{Credentials: creds, Members: reply.Members}, nil
}

// verifyPinned accepts a server whose chain contains a CA with the pinned
// hash and whose leaf that CA signed for server use.
func verifyPinned(pin string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		var served []string
		for _, c := range cs.PeerCertificates {
			if !c.IsCA {
				continue
			}
			if pki.MatchesPin(c, pin) {
				return pki.VerifyServer(c)(cs)
			}
			served = append(served, pki.Hash(c))
		}
		if len(served) == 0 {
			return fmt.Errorf("%w: the server sent no CA certificate (is it a tandem node?); the token pins %s", pki.ErrCAMismatch, pin)
		}
		return fmt.Errorf("%w: the server's CA is %s but the token pins %s: the token is for another cluster, or someone is in the way",
			pki.ErrCAMismatch, strings.Join(served, ", "), pin)
	}
}

func checkHostPort(hp string) (host string, err error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", fmt.Errorf("%q: want host:port", hp)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 || host == "" {
		return "", fmt.Errorf("%q: want host:port with a port in 1-65535", hp)
	}
	return host, nil
}

// handleJoin admits a node. Every check that can fail is made before the
// token use is committed, so a refused join changes nothing; the CSR is
// signed only after the token use commits. Callers are anonymous until
// their token checks out: they are rate limited, wait for the join lock
// only in small numbers, and learn nothing about the cluster from a
// refusal.
func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	release, err := n.joinGate.enter(r.RemoteAddr, n.now())
	if err != nil {
		n.log.Warn("join turned away", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, err)
		return
	}
	res, err := n.join(r.Context(), r)
	release()
	if err != nil {
		n.log.Warn("join refused", "remote", r.RemoteAddr, "err", err)
		// Refusals are slow, so guessing tokens stays slow; the sleep
		// holds no lock, so it cannot starve a real join.
		time.Sleep(n.joinDelay)
		writeError(w, err)
		return
	}
	writeJSON(w, res)
}

func (n *Node) join(ctx context.Context, r *http.Request) (_ joinReply, err error) {
	var req joinBody
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		return joinReply{}, fmt.Errorf("%w: join request: %v", state.ErrInvalid, err)
	}
	if !pki.MatchesPin(n.creds.CA().Cert, req.CAHash) {
		return joinReply{}, fmt.Errorf("%w: this cluster's CA is %s, the token pins %q", pki.ErrCAMismatch, n.creds.CA().Hash(), req.CAHash)
	}
	// The token first: until it checks out the caller is anonymous, and
	// nothing below (names, addresses, roles) is its business. Nothing
	// unauthenticated reaches the raft log either: the token must be
	// known here before its use is proposed.
	use := state.UseToken{ID: req.TokenID, SecretHash: pki.HashSecret(req.TokenSecret), At: n.now()}
	if err := n.awaitToken(ctx, use); err != nil {
		return joinReply{}, err
	}
	if r := n.machine.View().Rotation; r != nil {
		return joinReply{}, fmt.Errorf("%w: %w (phase %s): join once it has finished ('tandem ca status'), with a token created then",
			ErrJoinRefused, state.ErrRotating, r.Phase)
	}
	if !n.creds.CanSign() {
		view := n.machine.View()
		var apps []string
		for _, name := range view.Apps() {
			apps = append(apps, name+" at "+view.Members[name].Address)
		}
		if len(apps) == 0 {
			return joinReply{}, fmt.Errorf("%w (%s is a %s)", ErrCannotSign, n.name, n.role)
		}
		return joinReply{}, fmt.Errorf("%w (%s is a %s; app nodes: %s)", ErrCannotSign, n.name, n.role, strings.Join(apps, ", "))
	}
	if req.Role != state.RoleApp && req.Role != state.RoleWitness {
		return joinReply{}, fmt.Errorf("%w: role %q: want %q or %q", state.ErrInvalid, req.Role, state.RoleApp, state.RoleWitness)
	}
	if want := n.machine.View().Tokens[req.TokenID].Role; want != "" && want != req.Role {
		return joinReply{}, fmt.Errorf("%w: this token admits %s nodes only, not %s nodes; create one with 'tandem token create --role %s' on an app node",
			state.ErrBadToken, want, req.Role, req.Role)
	}
	if _, err := checkHostPort(req.Advertise); err != nil {
		return joinReply{}, fmt.Errorf("%w: advertise address %v", state.ErrInvalid, err)
	}
	if req.Level < 0 {
		return joinReply{}, fmt.Errorf("%w: state level %d", state.ErrInvalid, req.Level)
	}
	csr, err := pki.ParseCSR([]byte(req.CSR), req.Name)
	if err != nil {
		return joinReply{}, err
	}

	// One join at a time on this node, so two joins cannot both pass the
	// name check below.
	n.joinMu.Lock()
	defer n.joinMu.Unlock()
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()

	now := n.now()
	// Pending until its agent runs and promotes itself (see promoteSelf).
	joining := state.Member{Name: req.Name, Role: req.Role, Address: req.Advertise, Joined: now, Pending: true,
		Priority: req.Priority, Level: req.Level, Key: pki.HashKey(csr.RawSubjectPublicKeyInfo)}
	view := n.machine.View()
	var current []state.Member
	for _, name := range view.Names() {
		m := view.Members[name]
		if name == req.Name {
			// A node may rejoin under its own name from its own address
			// (after losing its disk, say); anything else is a clash.
			if m.Address != req.Advertise || m.Role != req.Role {
				return joinReply{}, fmt.Errorf("%w: %q is already the %s at %s; remove it first (tandem remove %s) or pick another name",
					ErrNameTaken, name, m.Role, m.Address, name)
			}
			joining.Joined = m.Joined
			continue
		}
		if m.Address == req.Advertise {
			return joinReply{}, fmt.Errorf("%w: address %s already belongs to member %q", ErrNameTaken, req.Advertise, name)
		}
		current = append(current, m)
	}
	// A node older than a member may meet committed commands it cannot
	// apply, and would drift from the others.
	for _, m := range current {
		if lv := max(joining.Level, state.BaseLevel); lv < max(m.Level, state.BaseLevel) {
			return joinReply{}, fmt.Errorf("%w: %s runs tandem with state level %d, older than member %s (level %d): upgrade %s before it joins",
				ErrJoinRefused, req.Name, lv, m.Name, m.Level, req.Name)
		}
	}
	if n.policy != nil {
		if err := n.policy(current, joining); err != nil {
			return joinReply{}, fmt.Errorf("%w: %w", ErrJoinRefused, err)
		}
	}

	// The token was checked above; check again under the lock (another
	// join may have used it up), then commit its use. From here on the
	// token is consumed cluster-wide; expiry and uses are checked again by
	// the state machine at commit.
	use.At = now
	if err := precheckToken(n.machine.View(), use); err != nil {
		return joinReply{}, err
	}
	if err := n.Apply(ctx, use); err != nil {
		return joinReply{}, err
	}
	cert, err := n.creds.CA().SignCSRFor([]byte(req.CSR), req.Name, now, n.certValidity)
	if err != nil {
		return joinReply{}, err
	}
	if err := n.Apply(ctx, state.AddMember{Member: joining}); err != nil {
		return joinReply{}, err
	}
	if err := n.changeMembership(ctx, membershipChange{Op: "add_nonvoter", Name: req.Name, Addr: req.Advertise}); err != nil {
		return joinReply{}, err
	}
	reply := joinReply{Cert: string(cert), CA: string(n.creds.CA().CertPEM())}
	if req.Role == state.RoleApp {
		key, err := n.creds.CA().KeyPEM()
		if err != nil {
			return joinReply{}, err
		}
		reply.CAKey = string(key)
	}
	view = n.machine.View()
	for _, name := range view.Names() {
		reply.Members = append(reply.Members, view.Members[name])
	}
	n.log.Info("node joined", "name", req.Name, "role", req.Role, "advertise", req.Advertise, "token", req.TokenID)
	return reply, nil
}

// tokenCatchUp bounds how long a follower waits to learn of a token it has
// not seen: one created a moment ago on another node.
const tokenCatchUp = time.Second

// startCatchUp bounds how long a node that follows no leader yet, or whose
// state lags its own log, waits for that to end before the catch-up.
const startCatchUp = 10 * time.Second

// awaitToken checks use against this node's state. A token this node does
// not know may have been created an instant ago elsewhere, so a follower
// waits up to tokenCatchUp for its state to catch up. Before that, a node
// that follows no leader, or whose state lags its own log, waits for that
// to end: one that has just started applies its log only once a leader is
// elected (one to two heartbeat timeouts) and has committed, and until
// then it lacks even the tokens it created itself. It never asks the log,
// so a made-up token costs the cluster no entry.
func (n *Node) awaitToken(ctx context.Context, use state.UseToken) error {
	catchUp := time.NewTimer(tokenCatchUp)
	defer catchUp.Stop()
	limit := time.NewTimer(startCatchUp)
	defer limit.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		changed := n.machine.Changed(state.MembershipDomain)
		err := precheckToken(n.machine.View(), use)
		behind := n.raft.AppliedIndex() < n.raft.LastIndex()
		if !errors.Is(err, errUnknownToken) || (n.IsLeader() && !behind) {
			return err
		}
		if leader, _ := n.Leader(); leader == "" || behind {
			catchUp.Reset(tokenCatchUp) // it counts once this node has settled
		}
		select {
		case <-changed:
		case <-poll.C: // a leader elected, or the log applied, without a change of members
		case <-catchUp.C:
			return err
		case <-limit.C:
			return err
		case <-ctx.Done():
			return err
		}
	}
}

// joinRefusalDelay slows down refused joins on each node.
const joinRefusalDelay = 200 * time.Millisecond

// errUnknownToken is ErrBadToken for a token this node has not seen.
var errUnknownToken = fmt.Errorf("%w (unknown id)", state.ErrBadToken)

// precheckToken applies UseToken's checks to a local view. The view may lag
// the leader by a few milliseconds, which matters only for a token created
// in that instant.
func precheckToken(view state.Snapshot, use state.UseToken) error {
	t, ok := view.Tokens[use.ID]
	if !ok {
		return errUnknownToken
	}
	if subtle.ConstantTimeCompare([]byte(t.SecretHash), []byte(use.SecretHash)) != 1 {
		return state.ErrBadToken
	}
	if !use.At.Before(t.Expires) {
		return state.ErrTokenExpired
	}
	if t.UsesLeft == 0 {
		return state.ErrTokenUsedUp
	}
	return nil
}

// CreateToken makes a join token pinned to this cluster's CA and commits
// its record (ID, secret hash, expiry, uses; -1 uses is unlimited). The
// secret exists only in the returned token.
func (n *Node) CreateToken(ctx context.Context, ttl time.Duration, uses int, role string) (pki.Token, error) {
	if n.role != state.RoleApp {
		return pki.Token{}, fmt.Errorf("create token: %w: %s is a %s, which holds no CA key and admits nobody; run 'tandem token create' on an app node",
			state.ErrForbidden, n.name, n.role)
	}
	if ttl <= 0 {
		return pki.Token{}, fmt.Errorf("create token: ttl %v: want a positive duration", ttl)
	}
	if uses == 0 || uses < -1 {
		return pki.Token{}, fmt.Errorf("create token: uses %d: want at least 1, or -1 for unlimited", uses)
	}
	if r := n.machine.View().Rotation; r != nil {
		return pki.Token{}, fmt.Errorf("create token: %w (phase %s): a token would pin a CA that is being replaced; create it once 'tandem ca status' shows the rotation finished",
			state.ErrRotating, r.Phase)
	}
	tok, err := pki.NewToken(n.creds.CA().Hash())
	if err != nil {
		return pki.Token{}, err
	}
	now := n.now()
	if role != "" && role != state.RoleApp && role != state.RoleWitness {
		return pki.Token{}, fmt.Errorf("create token: role %q: want %q or %q", role, state.RoleApp, state.RoleWitness)
	}
	rec := state.Token{ID: tok.ID, SecretHash: tok.SecretHash(), Expires: now.Add(ttl), UsesLeft: uses, Created: now, Role: role}
	if err := n.Apply(ctx, state.AddToken{Token: rec}); err != nil {
		return pki.Token{}, fmt.Errorf("create token: %w", err)
	}
	return tok, nil
}
