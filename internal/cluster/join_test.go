package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// noTwoApps is the agent's linux-VIP rule in miniature: a cluster of
// exactly two voters that are both app nodes is refused.
func noTwoApps(current []state.Member, joining state.Member) error {
	all := append(slices.Clone(current), joining)
	if len(all) == 2 && all[0].Role == state.RoleApp && all[1].Role == state.RoleApp {
		return errors.New("two app nodes without a witness cannot fence an on-link VIP; join the witness first")
	}
	return nil
}

type tlsCluster struct {
	t     *testing.T
	nodes map[string]*Node
	// streams are the nodes' Options.StreamProtocols.
	streams []string
	// keys are the pinned keys the joined nodes were told of.
	keys map[string]string
	// certValidity is the nodes' Options.certValidity.
	certValidity time.Duration
	// dirs and roles are each node's data directory and role, kept for
	// restart.
	dirs, roles map[string]string
}

// founded starts a cluster of one, node "a", over real TLS under a new CA.
func founded(t *testing.T) (*tlsCluster, *pki.CA, *Node) {
	t.Helper()
	c := &tlsCluster{t: t, nodes: map[string]*Node{}}
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := c.start(issue(t, ca, "a"), state.RoleApp, "127.0.0.1:0")
	if err := a.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c, ca, a
}

// start runs a node over real TLS on a loopback port.
func (c *tlsCluster) start(creds *pki.Node, role, addr string) *Node {
	c.t.Helper()
	return c.startWith(creds, role, addr, nil)
}

func (c *tlsCluster) startWith(creds *pki.Node, role, addr string, joinedPeers map[string]string) *Node {
	c.t.Helper()
	// As the agent keeps them: the credentials in the data directory,
	// where renewals and rotations save theirs.
	dir := c.t.TempDir()
	if err := creds.Save(PKIDir(dir)); err != nil {
		c.t.Fatal(err)
	}
	if c.dirs == nil {
		c.dirs, c.roles = map[string]string{}, map[string]string{}
	}
	c.dirs[creds.Name], c.roles[creds.Name] = dir, role
	return c.startIn(creds, role, addr, joinedPeers, dir)
}

func (c *tlsCluster) startIn(creds *pki.Node, role, addr string, joinedPeers map[string]string, dir string) *Node {
	c.t.Helper()
	n, err := New(context.Background(), Options{
		Name: creds.Name, Role: role, DataDir: dir, Listen: addr, PKIDir: PKIDir(dir),
		TLS: creds, Machine: state.New(), Logger: testLogger(c.t), JoinPolicy: noTwoApps,
		noJoinDelay: true, JoinedPeers: joinedPeers, JoinedKeys: c.keys, StreamProtocols: c.streams,
		certValidity: c.certValidity,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	if len(c.nodes) == 0 {
		c.t.Cleanup(func() { shutdownAll(slices.Collect(maps.Values(c.nodes))) })
	}
	c.nodes[n.Name()] = n
	return n
}

// restart stops node name and starts it again from its data directory and
// the credentials saved there, at the same address.
func (c *tlsCluster) restart(name string) *Node {
	c.t.Helper()
	old := c.nodes[name]
	if err := old.Shutdown(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	return c.startAgain(name, old.Addr())
}

// startAgain starts a stopped node from its data directory at addr.
func (c *tlsCluster) startAgain(name, addr string) *Node {
	c.t.Helper()
	creds, err := pki.Load(PKIDir(c.dirs[name]))
	if err != nil {
		c.t.Fatalf("load %s's credentials: %v", name, err)
	}
	return c.startIn(creds, c.roles[name], addr, nil, c.dirs[name])
}

// join joins a node through via and starts it.
func (c *tlsCluster) join(via *Node, token, name, role string) (*Node, JoinResult) {
	c.t.Helper()
	addr := freeAddr(c.t)
	res, err := Join(context.Background(), via.Addr(), token, JoinRequest{Name: name, Role: role, Advertise: addr})
	if err != nil {
		c.t.Fatalf("Join(%s via %s) = %v", name, via.Name(), err)
	}
	// Through the files, as tandem join would.
	dir := c.t.TempDir()
	if err := res.Credentials.Save(dir); err != nil {
		c.t.Fatal(err)
	}
	creds, err := pki.Load(dir)
	if err != nil {
		c.t.Fatal(err)
	}
	peers := map[string]string{}
	c.keys = map[string]string{}
	for _, m := range res.Members {
		peers[m.Name] = m.Address
		c.keys[m.Name] = m.Key
	}
	return c.startWith(creds, role, addr, peers), res
}

func (c *tlsCluster) fingerprint(n *Node) string {
	v := n.Machine().View()
	servers, _ := n.Servers(context.Background())
	return fmt.Sprintf("members=%v tokens=%v servers=%v", v.Members, v.Tokens, servers)
}

func TestJoinOverTLS(t *testing.T) {
	ctx := context.Background()
	c, ca, a := founded(t)
	if err := a.Bootstrap(ctx); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Errorf("second Bootstrap = %v; want ErrAlreadyBootstrapped", err)
	}
	tok, err := a.CreateToken(ctx, time.Hour, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	token := tok.String()
	if rec := a.Machine().View().Tokens[tok.ID]; rec.SecretHash != tok.SecretHash() || strings.Contains(fmt.Sprint(rec), tok.Secret) {
		t.Fatalf("token record %+v: want only the secret's hash", rec)
	}

	// The join policy refuses a=app + b=app before anything changes.
	before := c.fingerprint(a)
	_, err = Join(ctx, a.Addr(), token, JoinRequest{Name: "b", Role: state.RoleApp, Advertise: freeAddr(t)})
	if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), "join the witness first") {
		t.Fatalf("Join(b) into a one-app cluster = %v; want ErrJoinRefused with the policy's reason", err)
	}
	if after := c.fingerprint(a); after != before {
		t.Fatalf("refused join changed the cluster:\n%s\n%s", before, after)
	}

	// A node running an older state level than the members is refused
	// before anything changes.
	_, err = Join(ctx, a.Addr(), token, JoinRequest{Name: "w", Role: state.RoleWitness, Advertise: freeAddr(t), Level: state.BaseLevel})
	if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), "upgrade w before it joins") {
		t.Fatalf("Join(w) at the base level = %v; want ErrJoinRefused naming w", err)
	}
	if after := c.fingerprint(a); after != before {
		t.Fatalf("refused join changed the cluster:\n%s\n%s", before, after)
	}

	// The witness joins through a; it gets no CA key.
	w, wres := c.join(a, token, "w", state.RoleWitness)
	if wres.Credentials.CanSign() || w.Credentials().CanSign() {
		t.Error("witness received the CA key")
	}
	if len(wres.Members) != 2 {
		t.Errorf("JoinResult.Members = %v; want a and w", wres.Members)
	}
	// A witness cannot sign joins, and says where to go instead.
	eventually(t, 5*time.Second, "w to catch up", func() bool { return len(w.Machine().View().Members) == 2 })
	_, err = Join(ctx, w.Addr(), token, JoinRequest{Name: "b", Role: state.RoleApp, Advertise: freeAddr(t)})
	if !errors.Is(err, ErrCannotSign) || !strings.Contains(err.Error(), "app nodes: a at "+a.Addr()) {
		t.Errorf("Join via the witness = %v; want ErrCannotSign", err)
	}

	// b joins through a, then c through b (a follower holding the CA key),
	// which forwards the token use and membership change to the leader.
	b, bres := c.join(a, token, "b", state.RoleApp)
	if !bres.Credentials.CanSign() {
		t.Error("app node b did not receive the CA key")
	}
	eventually(t, 5*time.Second, "b to catch up", func() bool { return len(b.Machine().View().Members) == 3 })
	cn, _ := c.join(b, token, "c", state.RoleApp)
	leaf := cn.Credentials().Cert.Leaf
	if leaf.Subject.CommonName != "c" || len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("c's certificate: CN %q IPs %v; want c, [127.0.0.1]", leaf.Subject.CommonName, leaf.IPAddresses)
	}

	// All four nodes become voters and see the same state.
	nodes := []*Node{a, w, b, cn}
	eventually(t, 10*time.Second, "four voters on every node with the same state", func() bool {
		want := c.fingerprint(a)
		for _, n := range nodes {
			servers, err := n.Servers(ctx)
			// Voters() leaves out pending members: each joiner's promotion
			// to raft voter must also be recorded in the state.
			if err != nil || voters(servers) != 4 || len(n.Machine().View().Voters()) != 4 || c.fingerprint(n) != want {
				return false
			}
		}
		return true
	})
	// Each member's key is pinned: the founder's at bootstrap, the others'
	// from their CSRs by the node that signed their join.
	for _, n := range nodes {
		if got, want := a.Machine().View().Members[n.Name()].Key, pki.Hash(n.Credentials().Cert.Leaf); got != want || !strings.HasPrefix(got, "sha256:") {
			t.Errorf("%s's pinned key = %q; want %q", n.Name(), got, want)
		}
	}
	if got := a.Machine().View().Tokens[tok.ID].UsesLeft; got != 0 {
		t.Errorf("token uses left = %d; want 0", got)
	}
	// An app follower applies through the leader; a witness may not.
	if err := b.Apply(ctx, state.SetMode{Mode: state.ModeMaintenance}); err != nil {
		t.Errorf("Apply on follower b: %v", err)
	}
	if err := w.Apply(ctx, state.SetMode{Mode: state.ModeAuto}); !errors.Is(err, state.ErrForbidden) {
		t.Errorf("Apply on the witness = %v; want ErrForbidden", err)
	}

	// Refusals: each leaves the cluster as it was.
	other, _ := pki.NewCA(time.Now())
	fresh, err := b.CreateToken(ctx, time.Hour, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	shortLived, err := a.CreateToken(ctx, time.Millisecond, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	wrongSecret := fresh
	wrongSecret.Secret = strings.Repeat("x", 32)
	wrongPin := fresh
	wrongPin.CAHash = other.Hash()
	tests := []struct {
		name  string
		token string
		node  string
		want  error
	}{
		{"wrong secret", wrongSecret.String(), "d", state.ErrBadToken},
		{"unknown id", "tandem1." + strings.TrimPrefix(ca.Hash(), "sha256:") + ".zzzzzz." + fresh.Secret, "d", state.ErrBadToken},
		{"expired", shortLived.String(), "d", state.ErrTokenExpired},
		{"used up", token, "d", state.ErrTokenUsedUp},
		{"wrong CA pin", wrongPin.String(), "d", pki.ErrCAMismatch},
		{"malformed", "tandem1.abc", "d", pki.ErrTokenFormat},
		{"name taken", fresh.String(), "b", ErrNameTaken},
		{"bad name", fresh.String(), "-x-", pki.ErrInvalidName},
	}
	settle := func() string {
		time.Sleep(100 * time.Millisecond) // let any (wrong) change replicate
		return c.fingerprint(cn)
	}
	before = settle()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Join(ctx, a.Addr(), tt.token, JoinRequest{Name: tt.node, Role: state.RoleApp, Advertise: freeAddr(t)})
			if !errors.Is(err, tt.want) {
				t.Errorf("Join() = %v; want %v", err, tt.want)
			}
			if after := settle(); after != before {
				t.Errorf("refused join changed the cluster:\n%s\n%s", before, after)
			}
		})
	}
	// The fresh token still works after all that.
	if _, err := Join(ctx, b.Addr(), fresh.String(), JoinRequest{Name: "d", Role: state.RoleWitness, Advertise: freeAddr(t)}); err != nil {
		t.Errorf("Join(d) with the fresh token = %v", err)
	}
}

func TestForeignPeersRejected(t *testing.T) {
	ctx := context.Background()
	c, ca, a := founded(t)
	a.Handle("GET /v1/whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", PeerName(r), r.Proto)
	}))
	other, _ := pki.NewCA(time.Now())
	foreign := issue(t, other, "a") // same name, wrong CA
	member := issue(t, ca, "m")     // valid certificate, not a member

	get := func(cfg *tls.Config, method, path string) (int, string, error) {
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 3 * time.Second}
		defer cl.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, method, "https://"+a.Addr()+path, strings.NewReader("{}"))
		resp, err := cl.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	insecure := func(creds *pki.Node) *tls.Config {
		// HTTP/1.1: the listener refuses anonymous HTTP/2 (see deliverAnonymous).
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}
		if creds != nil {
			// Force the certificate out: with Certificates alone, Go's
			// client withholds a certificate the server's CA list does not
			// name, and the request arrives unauthenticated instead.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &creds.Cert, nil }
		}
		return cfg
	}

	// A member of the cluster gets through, over HTTP/2.
	self := a.Client()
	resp, err := self.Get("https://" + a.Addr() + "/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "a HTTP/2.0" {
		t.Errorf("whoami as a member = %q; want %q", body, "a HTTP/2.0")
	}

	// The API: a foreign certificate fails the handshake, even for the open
	// endpoints; no certificate gets 401 everywhere but /v1/ca and /v1/join.
	for _, path := range []string{"/v1/ca", "/v1/whoami", "/v1/apply"} {
		method := http.MethodGet
		if path == "/v1/apply" {
			method = http.MethodPost
		}
		if code, _, err := get(insecure(foreign), method, path); err == nil {
			t.Errorf("%s %s with a foreign certificate = %d; want a TLS error", method, path, code)
		}
	}
	polite := insecure(nil)
	polite.Certificates = []tls.Certificate{foreign.Cert}
	if code, body, err := get(polite, http.MethodGet, "/v1/whoami"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("whoami with a withheld foreign certificate = %d %q %v; want 401", code, body, err)
	}
	if code, body, err := get(insecure(nil), http.MethodGet, "/v1/whoami"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("whoami without certificate = %d %q %v; want 401", code, body, err)
	}
	if code, body, err := get(insecure(nil), http.MethodPost, "/v1/apply"); err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "unauthenticated") {
		t.Errorf("apply without certificate = %d %q %v; want 401", code, body, err)
	}
	if code, body, err := get(insecure(member), http.MethodPost, "/v1/apply"); err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "not a member") {
		t.Errorf("apply from a non-member = %d %q %v; want 401 not a member", code, body, err)
	}
	if code, body, err := get(insecure(nil), http.MethodGet, "/v1/ca"); err != nil || code != http.StatusOK || !strings.Contains(body, "BEGIN CERTIFICATE") {
		t.Errorf("GET /v1/ca without certificate = %d %v; want the CA", code, err)
	}
	// Our client refuses a server whose certificate is from another CA.
	foreignServer := c.start(foreign, state.RoleApp, "127.0.0.1:0")
	if _, err := self.Get("https://" + foreignServer.Addr() + "/v1/ca"); err == nil || !strings.Contains(err.Error(), "not from the cluster CA") {
		t.Errorf("member client to a foreign server = %v; want refusal", err)
	}

	// Raft: a foreign certificate, or none, gets no raft connection.
	for _, tt := range []struct {
		name  string
		creds *pki.Node
	}{{"foreign", foreign}, {"none", nil}} {
		t.Run("raft "+tt.name, func(t *testing.T) {
			cfg := insecure(tt.creds)
			cfg.NextProtos = []string{ALPNRaft}
			conn, err := tls.Dial("tcp", a.Addr(), cfg)
			if err != nil {
				return // refused during the handshake
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = conn.Write([]byte{0})
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Error("raft connection without a cluster certificate was kept open")
			} else if strings.Contains(err.Error(), "timeout") {
				t.Errorf("raft connection stayed open until the deadline: %v", err)
			}
		})
	}
	// And the real raft dialer of a foreign node cannot reach a either.
	sl := newStreamLayer(newConnListener(advertiseAddr("x")), foreign, nil, nil)
	sl.tls.VerifyConnection = nil // get past our own check to test a's side
	if conn, err := sl.Dial("x", time.Second); err == nil {
		conn.Close()
		t.Error("dial to a non-raft address succeeded")
	}
	if conn, err := sl.Dial(rAddr(a), time.Second); err == nil {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = conn.Write([]byte{0})
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Error("foreign raft dialer got a response")
		}
		conn.Close()
	}
}

// TestWitnessMayOnlyReport: a witness reports and votes, nothing more
// (security review, finding 3). Each command it sends the leader directly,
// as a compromised witness would, is refused unless it is a report about
// itself.
func TestWitnessMayOnlyReport(t *testing.T) {
	ctx := context.Background()
	c, _, a := founded(t)
	tok, err := a.CreateToken(ctx, time.Hour, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	eventually(t, 10*time.Second, "w to be a member", func() bool { _, ok := a.Machine().View().Members["w"]; return ok })

	post := func(path string, body []byte) (int, string) {
		t.Helper()
		resp, err := w.Client().Post("https://"+a.Addr()+path, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	refused := []struct {
		name string
		path string
		body []byte
	}{
		{"mint a token", "/v1/apply", mustEncode(state.AddToken{Token: state.Token{ID: "evil", SecretHash: "x", UsesLeft: 5, Expires: time.Now().Add(time.Hour)}})},
		{"maintenance", "/v1/apply", mustEncode(state.SetMode{Mode: state.ModeMaintenance})},
		{"move the IP", "/v1/apply", mustEncode(state.SetHolder{Node: "a", Active: true})},
		{"add a member", "/v1/apply", mustEncode(state.AddMember{Member: state.Member{Name: "ghost", Role: state.RoleApp, Address: "127.0.0.1:1"}})},
		{"another's priority", "/v1/apply", mustEncode(state.SetMemberPriority{Name: "a", Priority: -5})},
		{"remove the leader", "/v1/membership", []byte(`{"op":"remove","name":"a"}`)},
		{"add a voter", "/v1/membership", []byte(`{"op":"add_voter","name":"ghost","addr":"127.0.0.1:1"}`)},
	}
	before := c.fingerprint(a)
	for _, tt := range refused {
		if code, body := post(tt.path, tt.body); code != http.StatusForbidden || !strings.Contains(body, "forbidden") {
			t.Errorf("witness: %s = %d %s; want 403 forbidden", tt.name, code, body)
		}
	}
	if after := c.fingerprint(a); after != before {
		t.Fatalf("refused commands changed the cluster:\n%s\n%s", before, after)
	}
	// Its own reports go through.
	if code, body := post("/v1/apply", mustEncode(state.SetMemberPriority{Name: "w", Priority: 0})); code != http.StatusOK {
		t.Errorf("witness reporting its own priority = %d %s; want 200", code, body)
	}
	if _, err := w.CreateToken(ctx, time.Hour, 1, ""); !errors.Is(err, state.ErrForbidden) {
		t.Errorf("CreateToken on the witness = %v; want ErrForbidden", err)
	}
}

// TestAnonymousJoins: callers without a valid token write nothing to the
// log, learn nothing about the members, and cannot starve a real join
// (security review, findings 5, 6 and 9).
func TestAnonymousJoins(t *testing.T) {
	ctx := context.Background()
	c, ca, a := founded(t)
	tok, err := a.CreateToken(ctx, time.Hour, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	eventually(t, 15*time.Second, "b and w to be voters", func() bool {
		v := a.Machine().View()
		return len(v.Voters()) == 3
	})
	// Refusals are slow again, as in production.
	for _, n := range []*Node{a, b, w} {
		n.joinDelay = 50 * time.Millisecond
	}
	bogus := "tandem1." + strings.TrimPrefix(ca.Hash(), "sha256:") + ".zzzzzz." + strings.Repeat("s", 32)
	time.Sleep(300 * time.Millisecond)
	lastIndex := func() uint64 { return a.RaftStats().LastLogIndex }
	before := lastIndex()
	for i := range 5 {
		_, err := Join(ctx, b.Addr(), bogus, JoinRequest{Name: fmt.Sprintf("x%d", i), Role: state.RoleApp, Advertise: freeAddr(t)})
		if !errors.Is(err, state.ErrBadToken) {
			t.Fatalf("bogus join via a follower = %v; want ErrBadToken", err)
		}
	}
	_, err = Join(ctx, w.Addr(), bogus, JoinRequest{Name: "y", Role: state.RoleApp, Advertise: freeAddr(t)})
	if !errors.Is(err, state.ErrBadToken) {
		t.Errorf("bogus join via the witness = %v; want ErrBadToken before anything else", err)
	}
	for _, leak := range []string{a.Addr(), b.Addr(), "app nodes"} {
		if err != nil && strings.Contains(err.Error(), leak) {
			t.Errorf("a refusal to an anonymous caller names %q: %v", leak, err)
		}
	}
	if after := lastIndex(); after != before {
		t.Errorf("anonymous joins wrote %d log entries; want none", after-before)
	}

	// A flood of bad joins from one address: most are turned away at once
	// (429), and a real join from another address still gets through.
	flood := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext,
	}}
	defer flood.CloseIdleConnections()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := flood.Post("https://"+a.Addr()+"/v1/join", "application/json",
				strings.NewReader(`{"token_id":"zzzzzz","token_secret":"nope","ca_hash":"`+ca.Hash()+`"}`))
			if err != nil { // the connection was turned away
				mu.Lock()
				codes[0]++
				mu.Unlock()
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	time.Sleep(20 * time.Millisecond) // the flood is under way
	start := time.Now()
	if _, err := Join(ctx, a.Addr(), tok.String(), JoinRequest{Name: "d", Role: state.RoleApp, Advertise: freeAddr(t)}); err != nil {
		t.Errorf("a real join during the flood: %v", err)
	}
	took := time.Since(start)
	wg.Wait()
	if took > 3*time.Second {
		t.Errorf("a real join during 100 bad ones took %v; want well under 3s", took)
	}
	if turnedAway := codes[0] + codes[http.StatusTooManyRequests]; turnedAway < 80 {
		t.Errorf("flood answers %v (0: connection refused); want most turned away before any check", codes)
	}
	t.Logf("real join during the flood: %v; flood answers %v", took, codes)
}

// TestRaftRefusesNonMembers: a certificate from the cluster CA is not a
// ticket into raft. A node that never joined, or was removed, cannot open a
// raft connection, and a dialler checks that the node at a member's address
// is that member (security review, finding 1).
func TestRaftRefusesNonMembers(t *testing.T) {
	_, ca, a := founded(t)
	raftConn := func(creds *pki.Node) error {
		cfg := creds.ClientConfig()
		cfg.NextProtos = []string{ALPNRaft}
		conn, err := tls.Dial("tcp", a.Addr(), cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = conn.Write([]byte{0})
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	ghost := issue(t, ca, "ghost")
	if err := raftConn(ghost); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("raft connection from a non-member with a CA certificate: %v; want it closed at once", err)
	}
	// The dialler's side: a's address named as another member's.
	sl := newStreamLayer(newConnListener(advertiseAddr("x")), ghost, func(addr string) (string, bool) { return "b", addr == a.Addr() }, nil)
	if conn, err := sl.Dial(raft.ServerAddress(a.Addr()), time.Second); err == nil || !strings.Contains(err.Error(), `"a"`) {
		if conn != nil {
			conn.Close()
		}
		t.Errorf("dialling b's address and finding a = %v; want refused naming a", err)
	}
}

// TestFreshNodeLearnsLaterMembers: a witness joins but its agent starts
// only after another node has joined and taken the lead. The new leader is
// not among the members the witness was told of at join, so the witness
// must learn it from them, or it would refuse its leader forever.
func TestFreshNodeLearnsLaterMembers(t *testing.T) {
	ctx := context.Background()
	c, ca, a := founded(t)
	tok, err := a.CreateToken(ctx, time.Hour, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	wAddr := freeAddr(t)
	wres, err := Join(ctx, a.Addr(), tok.String(), JoinRequest{Name: "w", Role: state.RoleWitness, Advertise: wAddr})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	eventually(t, 10*time.Second, "b to be a voter", func() bool {
		m, ok := a.Machine().View().Members["b"]
		return ok && !m.Pending
	})
	if err := a.TransferLeadership(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "b to lead", b.IsLeader)

	dir := t.TempDir()
	if err := wres.Credentials.Save(dir); err != nil {
		t.Fatal(err)
	}
	creds, err := pki.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	peers := map[string]string{}
	for _, m := range wres.Members {
		peers[m.Name] = m.Address
	}
	if _, ok := peers["b"]; ok {
		t.Fatal("test bug: w was told of b at join")
	}
	// The member list is for members only: a certificate from the CA of a
	// node that never joined gets nothing.
	ghost := issue(t, ca, "ghost").ClientConfig()
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: ghost}, Timeout: 3 * time.Second}
	resp, err := cl.Get("https://" + a.Addr() + "/v1/members")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), a.Addr()) {
		t.Errorf("GET /v1/members as a non-member = %d %s; want 401 and no member", resp.StatusCode, body)
	}
	cl.CloseIdleConnections()
	w := c.startWith(creds, state.RoleWitness, wAddr, peers)
	eventually(t, 20*time.Second, "w to catch up from its new leader b", func() bool {
		m, ok := w.Machine().View().Members["w"]
		return len(w.Machine().View().Members) == 3 && ok && !m.Pending
	})
}
