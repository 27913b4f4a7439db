package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

const testStream = "tandem-test"

// TestCAKeyAloneIsNotMembership is the attack of issue 10, finding 4: an
// app node holds the CA key, so it (or whoever takes it) can mint a
// certificate named like any member. Its key is not the pinned one, so
// raft, the API and the streams refuse it, on the listener's side and on
// the dialler's; and a removed member's own certificate is refused too.
func TestCAKeyAloneIsNotMembership(t *testing.T) {
	ctx := context.Background()
	c := &tlsCluster{t: t, nodes: map[string]*Node{}, streams: []string{testStream}}
	ca, _ := pki.NewCA(time.Now())
	a := c.start(issue(t, ca, "a"), state.RoleApp, "127.0.0.1:0")
	if err := a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	a.Handle("GET /v1/whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, PeerName(r))
	}))
	a.HandleConn(testStream, func(c net.Conn, peer string) error {
		_, err := fmt.Fprintf(c, "hello %s\n", peer)
		return err
	})
	tok, err := a.CreateToken(ctx, time.Hour, 2, "")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	eventually(t, 10*time.Second, "three voters", func() bool {
		servers, err := a.Servers(ctx)
		return err == nil && voters(servers) == 3 && len(a.Machine().View().Voters()) == 3
	})

	// What the attacker holds: the CA key (any app node's), and so
	// certificates for members' names with keys of its own.
	forgedW := issue(t, ca, "w")
	forgedA := issue(t, ca, "a")

	api := func(creds *pki.Node) (string, error) {
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &creds.Cert, nil }}
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}, Timeout: 3 * time.Second}
		defer cl.CloseIdleConnections()
		resp, err := cl.Get("https://" + a.Addr() + "/v1/whoami")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
		}
		return string(body), nil
	}
	stream := func(creds *pki.Node) (string, error) {
		cfg := creds.ClientConfig()
		cfg.NextProtos = []string{testStream}
		conn, err := tls.Dial("tcp", a.Addr(), cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		return bufio.NewReader(conn).ReadString('\n')
	}
	raftConn := func(creds *pki.Node) error {
		cfg := creds.ClientConfig()
		cfg.NextProtos = []string{ALPNRaft}
		conn, err := tls.Dial("tcp", a.Addr(), cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		return err
	}

	// The real w gets through; the control that the checks can pass.
	if got, err := api(w.Credentials()); err != nil || got != "w" {
		t.Fatalf("whoami as w = %q, %v; want w", got, err)
	}
	if got, err := stream(w.Credentials()); err != nil || got != "hello w\n" {
		t.Fatalf("stream as w = %q, %v; want hello w", got, err)
	}
	if err := raftConn(w.Credentials()); !isTimeout(err) {
		t.Fatalf("raft connection as w = %v; want it kept open (a read timeout)", err)
	}
	for _, forged := range []*pki.Node{forgedW, forgedA} {
		t.Run("forged "+forged.Name, func(t *testing.T) {
			if got, err := api(forged); err == nil {
				t.Errorf("API with a forged %s certificate answered %q; want refused", forged.Name, got)
			}
			if got, err := stream(forged); err == nil {
				t.Errorf("stream with a forged %s certificate answered %q; want refused", forged.Name, got)
			}
			if err := raftConn(forged); err == nil || isTimeout(err) {
				t.Errorf("raft with a forged %s certificate = %v; want it closed at once", forged.Name, err)
			}
		})
	}

	// Removal is revocation: b's own certificate is refused at once.
	bcreds := b.Credentials()
	braft := bcreds.ClientConfig()
	braft.NextProtos = []string{ALPNRaft}
	open, err := tls.Dial("tcp", a.Addr(), braft) // open before the removal
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveServer(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got, err := api(bcreds); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Errorf("API as removed b = %q, %v; want 401 not a member", got, err)
	}
	if got, err := stream(bcreds); err == nil {
		t.Errorf("stream as removed b answered %q; want refused", got)
	}
	if err := raftConn(bcreds); err == nil || isTimeout(err) {
		t.Errorf("raft as removed b = %v; want it closed at once", err)
	}
	_ = open.SetDeadline(time.Now().Add(3 * revokeInterval))
	if _, err := open.Read(make([]byte, 1)); isTimeout(err) {
		t.Errorf("b's raft connection from before its removal stayed open: %v", err)
	}

	// The dialler's side: a forged w at w's address. a's API client, raft
	// dialer and VerifyPeerAt (the probes') all refuse it.
	waddr := w.Addr()
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	fake := fakeNode(t, forgedW, waddr)
	defer fake.Close()
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(gctx, http.MethodGet, "https://"+waddr+"/v1/ca", nil)
	if _, err := a.Client().Do(req); err == nil || !strings.Contains(err.Error(), "pins") {
		t.Errorf("a's client to the forged w = %v; want refused for its key", err)
	}
	sl := newStreamLayer(newConnListener(advertiseAddr("x")), a.Credentials(), a.raftPeerAt, a.checkPin)
	if conn, err := sl.Dial(raft.ServerAddress(waddr), time.Second); err == nil || !strings.Contains(err.Error(), "pins") {
		if conn != nil {
			conn.Close()
		}
		t.Errorf("raft dial to the forged w = %v; want refused for its key", err)
	}
	cfg := a.Credentials().ClientConfig()
	cfg.NextProtos = []string{testStream}
	conn, err := tls.Dial("tcp", waddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := a.VerifyPeerAt(waddr, conn.ConnectionState()); err == nil || !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("VerifyPeerAt(forged w) = %v; want ErrUnauthenticated", err)
	}
	// w's real certificate at another address is not w either.
	if err := a.VerifyPeerAt("127.0.0.1:1", tls.ConnectionState{PeerCertificates: []*x509.Certificate{w.Credentials().Cert.Leaf}}); err == nil {
		t.Error("VerifyPeerAt(w at another address) = nil; want refused")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// fakeNode listens at addr with creds, as a node would, and keeps every
// connection open after the handshake.
func fakeNode(t *testing.T, creds *pki.Node, addr string) net.Listener {
	t.Helper()
	cfg := creds.ServerConfig()
	cfg.NextProtos = []string{ALPNRaft, testStream, alpnH2, alpnH1}
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return ln
}

// TestJoinedKeysStandIn: a freshly joined node, whose state names nobody
// yet, checks its peers against the keys it was told of at join.
func TestJoinedKeysStandIn(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	a := issue(t, ca, "a")
	c := &tlsCluster{t: t, nodes: map[string]*Node{}, streams: []string{testStream},
		keys: map[string]string{"a": pki.Hash(a.Cert.Leaf)}}
	x := c.startWith(issue(t, ca, "x"), state.RoleApp, "127.0.0.1:0", map[string]string{"a": "127.0.0.1:1"})
	x.HandleConn(testStream, func(c net.Conn, peer string) error {
		_, err := fmt.Fprintf(c, "hello %s\n", peer)
		return err
	})
	stream := func(creds *pki.Node) (string, error) {
		cfg := creds.ClientConfig()
		cfg.NextProtos = []string{testStream}
		conn, err := tls.Dial("tcp", x.Addr(), cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		return bufio.NewReader(conn).ReadString('\n')
	}
	if got, err := stream(a); err != nil || got != "hello a\n" {
		t.Errorf("stream from a = %q, %v; want hello a", got, err)
	}
	if got, err := stream(issue(t, ca, "a")); err == nil {
		t.Errorf("stream from a forged a = %q; want refused", got)
	}
	if got, err := stream(issue(t, ca, "y")); err == nil {
		t.Errorf("stream from y, named by no one = %q; want refused", got)
	}
}
