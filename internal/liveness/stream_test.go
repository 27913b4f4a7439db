package liveness

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/pki"
)

// tlsPeers returns credentials for node1 (server) and the named clients.
func tlsPeers(t testing.TB, clients ...string) (*pki.Node, map[string]*pki.Node) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue("node1", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*pki.Node{}
	for _, c := range clients {
		if out[c], err = ca.Issue(c, nil, now); err != nil {
			t.Fatal(err)
		}
	}
	return server, out
}

// serve runs m's stream handler behind a TLS listener that asks for ALPN,
// as the cluster's listener does; it counts the connections accepted.
func serve(t testing.TB, m *Mesh, creds *pki.Node) (string, *atomic.Int32) {
	t.Helper()
	cfg := creds.ServerConfig()
	cfg.NextProtos = []string{ALPN}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					tc.Close()
					return
				}
				cs := tc.ConnectionState()
				_ = m.ServeConn(tc, pki.PeerName(&cs))
			}()
		}
	}()
	return ln.Addr().String(), &accepted
}

func TestStreamTransport(t *testing.T) {
	server, clients := tlsPeers(t, "node2", "stranger")
	m, err := New(Options{Self: "node1", Machine: testState(t), Tr: memTransport{}, Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Contribute(Source{Name: "failover", Value: func() []byte { return []byte("healthy") }}); err != nil {
		t.Fatal(err)
	}
	addr, accepted := serve(t, m, server)
	ctx := context.Background()

	tr := &StreamTransport{TLS: clients["node2"].ClientConfig()}
	defer tr.Close()
	for i := range 20 {
		r, err := tr.Probe(ctx, addr, time.Now().Add(2*time.Second), &Request{From: "node2"})
		if err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
		if v, _ := r.Facts.Get("failover"); r.Node != "node1" || string(v) != "healthy" || r.HeardMs["node2"] != 0 {
			t.Fatalf("probe %d: reply %+v", i, r)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("20 probes in a row opened %d connections; want 1, reused", n)
	}
	if m.Heard("node2").IsZero() {
		t.Error("the server did not record node2's probes")
	}

	tests := []struct {
		name  string
		creds *pki.Node
		from  string
		want  string
	}{
		{"impersonation", clients["node2"], "witness", "EOF"},
		{"not a member", clients["stranger"], "stranger", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &StreamTransport{TLS: tt.creds.ClientConfig()}
			defer tr.Close()
			_, err := tr.Probe(ctx, addr, time.Now().Add(2*time.Second), &Request{From: tt.from})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("probe = %v; want the stream closed (%s)", err, tt.want)
			}
		})
	}

	t.Run("verify refuses the answering node", func(t *testing.T) {
		var saw string
		tr := &StreamTransport{TLS: clients["node2"].ClientConfig(), Verify: func(a string, cs tls.ConnectionState) error {
			saw = a + " " + cs.PeerCertificates[0].Subject.CommonName
			return errors.New("not the pinned key")
		}}
		defer tr.Close()
		before := accepted.Load()
		_, err := tr.Probe(ctx, addr, time.Now().Add(2*time.Second), &Request{From: "node2"})
		if err == nil || !strings.Contains(err.Error(), "not the pinned key") || saw != addr+" node1" {
			t.Errorf("probe = %v (verify saw %q); want Verify's refusal for node1 at %s", err, saw, addr)
		}
		// And the refused connection is not kept for the next probe.
		_, err = tr.Probe(ctx, addr, time.Now().Add(2*time.Second), &Request{From: "node2"})
		if err == nil || accepted.Load()-before != 2 {
			t.Errorf("second probe = %v after %d connections; want a new connection, refused again", err, accepted.Load()-before)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		// A peer that accepts but never answers costs the prober no more
		// than its deadline.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		start := time.Now()
		_, err = tr.Probe(ctx, ln.Addr().String(), time.Now().Add(200*time.Millisecond), &Request{From: "node2"})
		if err == nil || time.Since(start) > time.Second {
			t.Errorf("probe of a silent peer = %v after %v; want an error at the deadline", err, time.Since(start))
		}
	})
}

// BenchmarkProbeRoundTrip measures one probe and its reply over a real
// mutual-TLS stream on loopback, both ends in this process: the mesh's
// steady cost per peer and interval.
func BenchmarkProbeRoundTrip(b *testing.B) {
	server, clients := tlsPeers(b, "node2")
	m, err := New(Options{Self: "node1", Machine: testState(b), Tr: memTransport{}, Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	facts := []byte("0123456789abcdef0123456789abcdef")
	if err := m.Contribute(Source{Name: "failover", Value: func() []byte { return facts }}); err != nil {
		b.Fatal(err)
	}
	addr, _ := serve(b, m, server)
	tr := &StreamTransport{TLS: clients["node2"].ClientConfig()}
	defer tr.Close()
	req := &Request{From: "node2", Facts: Facts{{Name: "failover.leader", Value: facts[:12]}}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.Probe(ctx, addr, time.Now().Add(time.Second), req); err != nil {
			b.Fatal(err)
		}
	}
}
