package liveness

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
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

// listen runs m's stream handlers behind a TLS listener that asks for ALPN,
// as the cluster's listener does; it counts the connections accepted.
func listen(t testing.TB, creds *pki.Node) (net.Listener, *atomic.Int32, func(*Mesh)) {
	t.Helper()
	cfg := creds.ServerConfig()
	cfg.NextProtos = []string{ALPN, ALPNv1}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	start := func(m *Mesh) {
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
					if cs.NegotiatedProtocol == ALPNv1 {
						_ = m.ServeConnV1(tc, pki.PeerName(&cs))
						return
					}
					_ = m.ServeConn(tc, pki.PeerName(&cs))
				}()
			}
		}()
	}
	return ln, &accepted, start
}

// addrState holds node1, node2 and a witness at the given addresses.
func addrState(t testing.TB, addrs map[string]string) *state.Machine {
	t.Helper()
	m := state.New()
	for i, n := range []string{"node1", "node2", "witness"} {
		b, _ := state.Encode(state.AddMember{Member: state.Member{Name: n, Role: state.RoleApp, Address: addrs[n]}})
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// dialRaw opens a TLS stream to addr speaking proto with creds.
func dialRaw(t testing.TB, addr, proto string, creds *pki.Node) *tls.Conn {
	t.Helper()
	cfg := creds.ClientConfig()
	cfg.NextProtos = []string{proto}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStreamTransport(t *testing.T) {
	creds1, clients := tlsPeers(t, "node2", "stranger")
	ln1, accepted1, start1 := listen(t, creds1)
	ln2, accepted2, start2 := listen(t, clients["node2"])
	addrs := map[string]string{"node1": ln1.Addr().String(), "node2": ln2.Addr().String(), "witness": "127.0.0.1:1"}
	meshes := map[string]*Mesh{}
	for name, creds := range map[string]*pki.Node{"node1": creds1, "node2": clients["node2"]} {
		m, err := New(Options{Self: name, Machine: addrState(t, addrs), Tr: &StreamTransport{TLS: creds.ClientConfig()},
			Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Contribute(Source{Name: "failover", Value: func() []byte { return []byte("healthy " + name) }}); err != nil {
			t.Fatal(err)
		}
		meshes[name] = m
	}
	start1(meshes["node1"])
	start2(meshes["node2"])
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, m := range meshes {
		go func() { _ = m.Run(ctx); done <- struct{}{} }()
	}
	time.Sleep(400 * time.Millisecond)
	now := time.Now()
	for self, peer := range map[string]string{"node1": "node2", "node2": "node1"} {
		m := meshes[self]
		p, ok := m.Peer(peer)
		if v, _ := p.Facts.Get("failover"); !ok || string(v) != "healthy "+peer {
			t.Errorf("%s's latest answer from %s = %+v, %v", self, peer, p, ok)
		}
		if exp, ok := m.LeaseExpiry(); !ok || exp.Sub(now) < 300*time.Millisecond {
			t.Errorf("%s's lease expires %v from now (%v); want nearly a lease ahead", self, exp.Sub(now), ok)
		}
	}
	if a1, a2 := accepted1.Load(), accepted2.Load(); a1 != 0 || a2 != 1 {
		t.Errorf("node1 accepted %d streams and node2 %d; want one, dialled by node1, the smaller name", a1, a2)
	}
	cancel()
	<-done
	<-done

	t.Run("refused streams", func(t *testing.T) {
		m, _ := New(Options{Self: "node1", Machine: addrState(t, addrs), Tr: memTransport{}, Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
		ln, _, start := listen(t, creds1)
		start(m)
		tests := []struct {
			name  string
			creds *pki.Node
			from  string
		}{
			{"impersonation", clients["node2"], "witness"},
			{"not a member", clients["stranger"], "stranger"},
		}
		for _, tt := range tests {
			c := dialRaw(t, ln.Addr().String(), ALPN, tt.creds)
			if _, err := c.Write(AppendMessage(nil, &Message{From: tt.from, ID: 1})); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			var b [1]byte
			for {
				// The stream's greeting may come first; then it must end.
				if _, err := c.Read(b[:]); err != nil {
					if !errors.Is(err, io.EOF) {
						t.Errorf("%s: stream = %v; want it closed", tt.name, err)
					}
					break
				}
			}
		}
		if !m.Heard("witness").IsZero() || !m.Heard("stranger").IsZero() {
			t.Error("a refused message counted as heard")
		}
	})

	t.Run("older protocol answered", func(t *testing.T) {
		m, _ := New(Options{Self: "node1", Machine: addrState(t, addrs), Tr: memTransport{}, Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
		ln, _, start := listen(t, creds1)
		start(m)
		c := dialRaw(t, ln.Addr().String(), ALPNv1, clients["node2"])
		if _, err := c.Write(AppendRequest(nil, &Request{From: "node2"})); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		body, err := readFrame(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeReply(body)
		if err != nil || r.Node != "node1" || r.HeardMs["node2"] != 0 {
			t.Errorf("reply = %+v, %v", r, err)
		}
	})

	t.Run("verify refuses the answering node", func(t *testing.T) {
		var saw string
		tr := &StreamTransport{TLS: clients["node2"].ClientConfig(), Verify: func(a string, cs tls.ConnectionState) error {
			saw = a + " " + cs.PeerCertificates[0].Subject.CommonName
			return errors.New("not the pinned key")
		}}
		_, err := tr.Dial(context.Background(), addrs["node1"], time.Now().Add(2*time.Second))
		if err == nil || !strings.Contains(err.Error(), "not the pinned key") || saw != addrs["node1"]+" node1" {
			t.Errorf("dial = %v (verify saw %q); want Verify's refusal for node1 at %s", err, saw, addrs["node1"])
		}
	})
}

// TestOlderPeer runs this version's mesh beside a node of the older
// protocol (ALPNv1 only: it probes every peer and answers probes), as in a
// rolling upgrade, in both dialling directions: the newer node must probe
// the older one itself, so that the older node's replies extend its lease
// and bring its facts.
func TestOlderPeer(t *testing.T) {
	for _, tt := range []struct{ newer, older string }{{"node2", "node1"}, {"node1", "node2"}} {
		t.Run(tt.newer+" newer than "+tt.older, func(t *testing.T) {
			creds1, clients := tlsPeers(t, "node2")
			creds := map[string]*pki.Node{"node1": creds1, "node2": clients["node2"]}
			lnNew, _, startNew := listen(t, creds[tt.newer])
			// The older node: a listener that negotiates only ALPNv1 and
			// answers every request, as versions before ALPN do.
			cfg := creds[tt.older].ServerConfig()
			cfg.NextProtos = []string{ALPNv1}
			lnOld, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lnOld.Close() })
			var requests atomic.Int32
			go func() {
				for {
					c, err := lnOld.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						r := bufio.NewReader(c)
						for {
							body, err := readFrame(r, nil)
							if err != nil {
								return
							}
							if req, err := DecodeRequest(body); err != nil || req.From != tt.newer {
								t.Errorf("older node got request %+v, %v", req, err)
								return
							}
							requests.Add(1)
							reply := Reply{Node: tt.older, HeardMs: map[string]int64{tt.newer: 0}, Facts: Facts{{Name: "failover", Value: []byte("old " + tt.older)}}}
							if _, err := c.Write(AppendReply(nil, &reply)); err != nil {
								return
							}
						}
					}()
				}
			}()
			addrs := map[string]string{tt.newer: lnNew.Addr().String(), tt.older: lnOld.Addr().String(), "witness": "127.0.0.1:1"}
			m, err := New(Options{Self: tt.newer, Machine: addrState(t, addrs), Tr: &StreamTransport{TLS: creds[tt.newer].ClientConfig()},
				Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			startNew(m)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = m.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			// The older node probes the newer one, which learns so that it
			// runs the older protocol.
			probe := dialRaw(t, lnNew.Addr().String(), ALPNv1, creds[tt.older])
			if _, err := probe.Write(AppendRequest(nil, &Request{From: tt.older})); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) && !m.LeaseValid(time.Now()) {
				time.Sleep(20 * time.Millisecond)
			}
			if !m.LeaseValid(time.Now()) {
				t.Fatalf("%s has no lease after 3s beside the older %s (%d requests answered)", tt.newer, tt.older, requests.Load())
			}
			p, ok := m.Peer(tt.older)
			if v, _ := p.Facts.Get("failover"); !ok || string(v) != "old "+tt.older {
				t.Errorf("%s's latest answer from %s = %+v, %v; want its reply's facts", tt.newer, tt.older, p, ok)
			}
		})
	}
}

// BenchmarkMessage measures encoding and decoding one message: the mesh's
// own CPU per peer and interval, beside the write and read.
func BenchmarkMessage(b *testing.B) {
	facts := []byte("0123456789abcdef0123456789abcdef")
	msg := &Message{From: "node2", ID: 1 << 60, Ack: 1<<60 + 1, HeardMs: map[string]int64{"node1": 3, "witness": 4},
		Facts: Facts{{Name: "failover", Value: facts}, {Name: "failover.leader", Value: facts[:12]}}}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], msg)
		if _, err := DecodeMessage(buf[1:]); err != nil {
			b.Fatal(err)
		}
	}
}
