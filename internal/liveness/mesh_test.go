package liveness

import (
	"context"
	"errors"
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

// memNet connects meshes in memory; a cut node neither sends nor answers.
type memNet struct {
	mu     sync.Mutex
	meshes map[string]*Mesh
	cut    map[string]bool
}

type memTransport struct {
	net  *memNet
	from string
}

func (tr memTransport) Probe(ctx context.Context, addr string, deadline time.Time, req *Request) (Reply, error) {
	tr.net.mu.Lock()
	peer, down := tr.net.meshes[addr], tr.net.cut[addr] || tr.net.cut[tr.from]
	tr.net.mu.Unlock()
	if peer == nil || down {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(deadline)):
		}
		return Reply{}, errors.New("unreachable")
	}
	return peer.HandleProbe(tr.from, req), nil
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
// follow their peers' through their own subscriptions, independently; a
// fact marked InProbes also travels with probes.
func TestFactsFromSeveralCapabilities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		net := &memNet{meshes: map[string]*Mesh{}, cut: map[string]bool{}}
		meshes := map[string]*Mesh{}
		for _, name := range []string{"node1", "node2", "witness"} {
			m := newMemMesh(t, net, name)
			meshes[name] = m
			// "failover" says who leads, with probes too; "delivery" says the
			// installed version, in replies only.
			if err := m.Contribute(Source{Name: "failover", InProbes: true, Value: func() []byte { return []byte("leader:" + name) }}); err != nil {
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
		var replies, probes, withPrev int
		for _, u := range seen["delivery"] {
			_, hasDelivery := u.Facts.Get("delivery")
			_, hasFailover := u.Facts.Get("failover")
			switch {
			case u.Sent.IsZero(): // a probe: InProbes facts only
				probes++
				if hasDelivery || !hasFailover || u.Prev != nil {
					t.Errorf("probe update from %s carries %v (prev %v)", u.Peer, u.Facts, u.Prev)
				}
			default:
				replies++
				if !hasDelivery || !hasFailover {
					t.Errorf("reply update from %s carries %v", u.Peer, u.Facts)
				}
				if u.Prev != nil {
					withPrev++
				}
			}
		}
		if replies == 0 || probes == 0 || withPrev != replies-2 {
			t.Errorf("%d replies (%d with a previous one), %d probes; want both kinds, and Prev on all but each peer's first reply", replies, withPrev, probes)
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
			if exp, ok := m.LeaseExpiry(); !ok || exp.Sub(now) <= 400*time.Millisecond {
				t.Errorf("%s's lease expires at %v, %v from now; want about the lease ahead", name, exp, exp.Sub(now))
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
