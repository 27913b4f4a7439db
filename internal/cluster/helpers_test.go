package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// testLogger logs through t until the test's cleanup runs; raft goroutines
// that log later are dropped rather than panicking the test binary.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func issue(t *testing.T, ca *pki.CA, name string) *pki.Node {
	t.Helper()
	n, err := ca.Issue(name, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for nodes that must know their address before they listen.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// memCluster is a cluster whose raft runs on the in-memory transport while
// each node's HTTP API (used for forwarding) runs on a loopback listener.
type memCluster struct {
	t     *testing.T
	ca    *pki.CA
	nodes []*Node
	trans []*raft.InmemTransport
	dirs  []string
	// timing is every node's raft timers; zero fields take the defaults.
	timing Timing
	// machine, when set, builds node i's state machine (a test simulates
	// an older tandem with fewer commands); default state.New.
	machine func(i int) *state.Machine
	// creds are each node's credentials, kept across restarts so its
	// pinned key stays its own.
	creds map[int]*pki.Node
}

func (c *memCluster) opts(i int, tr *raft.InmemTransport) Options {
	name := fmt.Sprintf("n%d", i+1)
	m := state.New()
	if c.machine != nil {
		m = c.machine(i)
	}
	return Options{
		Name: name, Role: state.RoleApp, DataDir: c.dirs[i], Listen: "127.0.0.1:0",
		TLS: c.credsOf(i, name), Machine: m, Logger: testLogger(c.t),
		raftTransport: tr, Timing: c.timing,
	}
}

func (c *memCluster) credsOf(i int, name string) *pki.Node {
	if c.creds == nil {
		c.creds = map[int]*pki.Node{}
	}
	if c.creds[i] == nil {
		c.creds[i] = issue(c.t, c.ca, name)
	}
	return c.creds[i]
}

func newMemCluster(t *testing.T, size int) *memCluster {
	t.Helper()
	return newMemClusterTiming(t, size, Timing{})
}

// newMemClusterTiming is newMemCluster with raft timers of the test's own
// (zero fields take the defaults).
func newMemClusterTiming(t *testing.T, size int, timing Timing) *memCluster {
	t.Helper()
	return newMemClusterWith(t, size, &memCluster{timing: timing})
}

// newMemClusterWith starts a cluster with c's timing and machines.
func newMemClusterWith(t *testing.T, size int, c *memCluster) *memCluster {
	t.Helper()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.t, c.ca = t, ca
	ctx := context.Background()
	for i := range size {
		c.dirs = append(c.dirs, t.TempDir())
		_, tr := raft.NewInmemTransport("")
		c.trans = append(c.trans, tr)
		n, err := New(ctx, c.opts(i, tr))
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	t.Cleanup(func() { shutdownAll(c.nodes) })
	c.connectAll()
	if err := c.nodes[0].Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.nodes[1:] {
		m := state.Member{Name: n.Name(), Role: state.RoleApp, Address: n.Addr()}
		if err := c.nodes[0].Apply(ctx, state.AddMember{Member: m}); err != nil {
			t.Fatal(err)
		}
		// As after a join: a non-voter that promotes itself once caught up.
		add := membershipChange{Op: "add_nonvoter", Name: n.Name(), Addr: string(c.trans[i+1].LocalAddr())}
		if err := c.nodes[0].changeMembership(ctx, add); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every node to be a voter", func() bool {
		servers, err := c.nodes[0].Servers(ctx)
		return err == nil && voters(servers) == size
	})
	c.waitConverged()
	return c
}

func (c *memCluster) connectAll() {
	for i, a := range c.trans {
		for j, b := range c.trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
}

// isolate cuts node i off from every other node, both ways.
func (c *memCluster) isolate(i int) {
	c.trans[i].DisconnectAll()
	for j, tr := range c.trans {
		if j != i {
			tr.Disconnect(c.trans[i].LocalAddr())
		}
	}
}

// waitConverged waits until every node has applied the same state.
func (c *memCluster) waitConverged() {
	c.t.Helper()
	eventually(c.t, 5*time.Second, "all nodes to apply the same state", func() bool {
		want := c.nodes[0].Machine().View()
		for _, n := range c.nodes {
			v := n.Machine().View()
			if v.Index != want.Index || v.Index == 0 || len(v.Members) != len(c.nodes) {
				return false
			}
		}
		return true
	})
}

func (c *memCluster) leader() (int, *Node) {
	c.t.Helper()
	var idx = -1
	eventually(c.t, 5*time.Second, "a leader", func() bool {
		for i, n := range c.nodes {
			if n.IsLeader() {
				idx = i
				return true
			}
		}
		return false
	})
	return idx, c.nodes[idx]
}

func (c *memCluster) follower() *Node {
	li, _ := c.leader()
	return c.nodes[(li+1)%len(c.nodes)]
}

func rAddr(n *Node) raft.ServerAddress { return raft.ServerAddress(n.Addr()) }

// shutdownAll stops nodes concurrently, so a leader's hand-off at shutdown
// does not wait for peers that are already gone.
func shutdownAll(nodes []*Node) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { n.Shutdown(context.Background()) })
	}
	wg.Wait()
}
