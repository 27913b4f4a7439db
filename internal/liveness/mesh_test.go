package liveness

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// testState holds node1, node2 and a witness, all voters.
func testState(t testing.TB) *state.Machine {
	t.Helper()
	m := state.New()
	for i, n := range []string{"node1", "node2", "witness"} {
		role := state.RoleApp
		if n == "witness" {
			role = state.RoleWitness
		}
		b, _ := state.Encode(state.AddMember{Member: state.Member{Name: n, Role: role, Address: n}})
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// memNet connects meshes in memory; a cut node's streams carry nothing and
// it can dial no one.
type memNet struct {
	mu     sync.Mutex
	meshes map[string]*Mesh
	cut    map[string]bool
}

func (n *memNet) down(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.meshes[b] == nil || n.cut[a] || n.cut[b]
}

type memTransport struct {
	net  *memNet
	from string
}

func (tr memTransport) Dial(ctx context.Context, addr string, deadline time.Time) (net.Conn, error) {
	if tr.net.down(tr.from, addr) {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(deadline)):
		}
		return nil, errors.New("unreachable")
	}
	tr.net.mu.Lock()
	peer := tr.net.meshes[addr]
	tr.net.mu.Unlock()
	a, b := net.Pipe()
	go func() { _ = peer.ServeConn(&memConn{Conn: b, net: tr.net, from: addr, to: tr.from}, tr.from) }()
	return &memConn{Conn: a, net: tr.net, from: tr.from, to: addr}, nil
}

// memConn drops what it is given to write while either end is cut.
type memConn struct {
	net.Conn
	net      *memNet
	from, to string
}

func (c *memConn) Write(b []byte) (int, error) {
	if c.net.down(c.from, c.to) {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func newMemMesh(t testing.TB, n *memNet, self string) *Mesh {
	t.Helper()
	m, err := New(Options{Self: self, Machine: testState(t), Tr: memTransport{net: n, from: self},
		Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond, Margin: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.meshes[self] = m
	n.mu.Unlock()
	return m
}

// TestFactsFromSeveralCapabilities: two capabilities contribute facts and
// follow their peers' through their own subscriptions, independently; every
// message carries every fact.
func TestFactsFromSeveralCapabilities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := &memNet{meshes: map[string]*Mesh{}, cut: map[string]bool{}}
		meshes := map[string]*Mesh{}
		for _, name := range []string{"node1", "node2", "witness"} {
			m := newMemMesh(t, net, name)
			meshes[name] = m
			// "failover" says who leads; "delivery" says the installed version.
			if err := m.Contribute(Source{Name: "failover", Value: func() []byte { return []byte("leader:" + name) }}); err != nil {
				t.Fatal(err)
			}
			version := "1.0-" + name
			if err := m.Contribute(Source{Name: "delivery", Value: func() []byte { return []byte(version) }}); err != nil {
				t.Fatal(err)
			}
		}
		if err := meshes["node1"].Contribute(Source{Name: "delivery", Value: func() []byte { return nil }}); err == nil {
			t.Error("a second contribution named delivery was accepted")
		}
		if err := meshes["node1"].Contribute(Source{Name: strings.Repeat("x", MaxFactName+1), Value: func() []byte { return nil }}); err == nil {
			t.Error("an overlong fact name was accepted")
		}
		var mu sync.Mutex
		seen := map[string][]Update{} // by subscriber
		sub := func(name string) func(Update) {
			return func(u Update) {
				mu.Lock()
				seen[name] = append(seen[name], u)
				mu.Unlock()
			}
		}
		meshes["node1"].Subscribe(sub("failover"))
		meshes["node1"].Subscribe(sub("delivery"))

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, m := range meshes {
			wg.Go(func() { _ = m.Run(ctx) })
		}
		time.Sleep(200 * time.Millisecond)
		cancel()
		wg.Wait()

		for _, peer := range []string{"node2", "witness"} {
			p, ok := meshes["node1"].Peer(peer)
			if !ok {
				t.Fatalf("node1 has no reply from %s", peer)
			}
			if v, _ := p.Facts.Get("delivery"); string(v) != "1.0-"+peer {
				t.Errorf("%s's delivery fact = %q", peer, v)
			}
			if v, _ := p.Facts.Get("failover"); string(v) != "leader:"+peer {
				t.Errorf("%s's failover fact = %q", peer, v)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(seen["failover"]) == 0 || len(seen["failover"]) != len(seen["delivery"]) {
			t.Fatalf("subscribers saw %d and %d updates; want the same, more than 0", len(seen["failover"]), len(seen["delivery"]))
		}
		var answers, withPrev int
		for _, u := range seen["delivery"] {
			_, hasDelivery := u.Facts.Get("delivery")
			_, hasFailover := u.Facts.Get("failover")
			if !hasDelivery || !hasFailover {
				t.Errorf("update from %s carries %v", u.Peer, u.Facts)
			}
			switch {
			case u.Sent.IsZero():
				if u.Prev != nil {
					t.Errorf("unacknowledging update from %s has Prev %v", u.Peer, u.Prev)
				}
			default:
				answers++
				if u.Prev != nil {
					withPrev++
				}
			}
		}
		// 200ms at 50ms: four rounds plus the streams' first messages.
		if answers < 8 || withPrev != answers-2 {
			t.Errorf("%d answers (%d with a previous one); want at least 8, and Prev on all but each peer's first", answers, withPrev)
		}
	})
}

// TestLeaseAndDeath: a node keeps its lease while a majority answers; a
// cut-off peer is dead once enough voters have not heard from it for
// lease+margin, and the cut-off node's own lease runs out first.
func TestLeaseAndDeath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := &memNet{meshes: map[string]*Mesh{}, cut: map[string]bool{}}
		meshes := map[string]*Mesh{}
		for _, name := range []string{"node1", "node2", "witness"} {
			meshes[name] = newMemMesh(t, net, name)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		for _, m := range meshes {
			wg.Go(func() { _ = m.Run(ctx) })
		}
		time.Sleep(StartupGrace + time.Second)
		now := time.Now()
		for name, m := range meshes {
			if !m.LeaseValid(now) {
				t.Errorf("%s has no lease in a connected cluster", name)
			}
			// The evidence is a message acknowledged in the peer's latest
			// round, which went out with this node's own or the one before.
			if exp, ok := m.LeaseExpiry(); !ok || exp.Sub(now) < 400*time.Millisecond {
				t.Errorf("%s's lease expires at %v, %v from now; want the lease ahead, less two intervals at most", name, exp, exp.Sub(now))
			}
		}
		if meshes["node2"].Dead(now, "node1") {
			t.Error("node1 is dead while connected")
		}

		net.mu.Lock()
		net.cut["node1"] = true
		net.mu.Unlock()
		cutAt := time.Now()
		exp, _ := meshes["node1"].LeaseExpiry()
		for !meshes["node2"].Dead(time.Now(), "node1") {
			time.Sleep(10 * time.Millisecond)
		}
		dead := time.Since(cutAt)
		// Death counts from the last answer, which came up to one probe
		// interval (50ms) before the cut: lease+margin minus an interval at
		// the earliest.
		if dead < 500*time.Millisecond || dead > 800*time.Millisecond {
			t.Errorf("node1 declared dead %v after the cut; want lease+margin plus a probe interval or so", dead)
		}
		if meshes["node1"].LeaseValid(time.Now()) || !exp.Before(time.Now()) {
			t.Error("the cut-off node's lease outlived its declared death")
		}
	})
}

// TestHeardAgesDuringStartupGrace: a voter never heard from is reported
// with -1 (not silent) during the startup grace, then with the uptime.
func TestHeardAgesDuringStartupGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := &memNet{meshes: map[string]*Mesh{}, cut: map[string]bool{}}
		m := newMemMesh(t, net, "node1")
		r := m.HandleProbe("node2", &Request{From: "node2"})
		if r.Node != "node1" || r.HeardMs["node2"] != 0 || r.HeardMs["witness"] != -1 {
			t.Errorf("reply during the grace = %+v; want node2 heard now and witness -1", r)
		}
		if _, ok := r.HeardMs["node1"]; ok {
			t.Error("a node reports its own heard age")
		}
		time.Sleep(StartupGrace)
		r = m.HandleProbe("node2", &Request{From: "node2"})
		if r.HeardMs["witness"] != StartupGrace.Milliseconds() {
			t.Errorf("witness heard age after the grace = %d; want the uptime", r.HeardMs["witness"])
		}
	})
}

// TestAcknowledgements: a message extends the receiver's lease only by
// acknowledging one of the receiver's recent messages, from that message's
// send time; it counts as an answer (Update.Sent, Peer) only if it
// acknowledges a message at least as recent as the latest answer's.
func TestAcknowledgements(t *testing.T) {
	tests := []struct {
		name string
		// acks, in arrival order: the index of node1's message (0, 1, 2,
		// sent 10ms apart) each of node2's messages acknowledges; -1 for
		// none, -2 for an ID node1 never sent.
		acks      []int
		wantLease int // index of the message the lease counts from; -1: no lease
		wantSent  []int
	}{
		{"none", []int{-1}, -1, []int{-1}},
		{"unknown ID", []int{-2}, -1, []int{-1}},
		{"latest", []int{2}, 2, []int{2}},
		{"in order", []int{0, 1, 1, 2}, 2, []int{0, 1, 1, 2}},
		{"overtaken", []int{2, 0}, 2, []int{2, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				net := &memNet{meshes: map[string]*Mesh{}, cut: map[string]bool{}}
				m := newMemMesh(t, net, "node1")
				var sent []time.Time
				var ids []uint64
				for range 3 {
					now := time.Now()
					ids = append(ids, m.stamp(now))
					sent = append(sent, now)
					time.Sleep(10 * time.Millisecond)
				}
				var updates []Update
				m.Subscribe(func(u Update) { updates = append(updates, u) })
				for i, a := range tt.acks {
					msg := &Message{From: "node2", ID: uint64(i + 1)}
					switch {
					case a == -2:
						msg.Ack = ids[2] + 100
					case a >= 0:
						msg.Ack = ids[a]
					}
					m.Receive("node2", msg)
				}
				// node2 alone completes a majority of the three voters.
				exp, ok := m.LeaseExpiry()
				if tt.wantLease < 0 {
					if ok {
						t.Errorf("lease until %v; want none", exp)
					}
				} else if want := sent[tt.wantLease].Add(m.Lease()); !ok || !exp.Equal(want) {
					t.Errorf("lease until %v (%v); want %v", exp, ok, want)
				}
				for i, u := range updates {
					want := time.Time{}
					if tt.wantSent[i] >= 0 {
						want = sent[tt.wantSent[i]]
					}
					if !u.Sent.Equal(want) {
						t.Errorf("update %d: Sent %v; want %v", i, u.Sent, want)
					}
				}
				if _, ok := m.Peer("node2"); ok != (tt.wantLease >= 0) {
					t.Errorf("Peer(node2) found = %v", ok)
				}
			})
		})
	}
}
