package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/liveness"
)

// simNet is an in-memory cluster: a fake consensus log applied to every
// connected node's state, a probe transport with partitions, and a VIP
// register with a split-brain observer.
type simNet struct {
	t      *testing.T
	mu     sync.Mutex
	leader string
	term   uint64
	log    [][]byte
	nodes  map[string]*simNode
	cut    map[string]bool // partitioned from everyone
	lag    map[string]bool // connected, but its log does not catch up
	vip    map[string]bool // node -> address configured
	maxVIP int             // most nodes holding at one sampled instant
	// Connections open to each node's VIP, and whether it turns new ones
	// away (see Drainer).
	open     map[string]int
	draining map[string]bool
	// flushTook is how long each Flush takes; flushes records them.
	flushTook time.Duration
	flushes   []simFlush
	// lchanged is closed when leadership may have changed (a transfer, or
	// the leader cut off or reconnected).
	lchanged chan struct{}
	// interval is the meshes' probe interval (default 50ms).
	interval time.Duration
}

func (s *simNet) leadershipChangedLocked() {
	close(s.lchanged)
	s.lchanged = make(chan struct{})
}

type simNode struct {
	name    string
	machine *state.Machine
	applied int
	node    *Node
	mesh    *liveness.Mesh
	cancel  context.CancelFunc
	done    chan struct{}
	healthy bool
	alive   bool
	// healthCh signals health changes, as health.Runner.Changes does.
	healthCh chan struct{}
}

func newSim(t *testing.T, names ...string) *simNet {
	s := &simNet{t: t, nodes: map[string]*simNode{}, cut: map[string]bool{}, lag: map[string]bool{}, vip: map[string]bool{},
		open: map[string]int{}, draining: map[string]bool{}, leader: "witness", term: 1, lchanged: make(chan struct{}),
		interval: 50 * time.Millisecond}
	for _, n := range names {
		s.nodes[n] = &simNode{name: n, machine: state.New(), healthy: true, healthCh: make(chan struct{}, 1)}
	}
	for _, n := range names {
		role := state.RoleApp
		if n == "witness" {
			role = state.RoleWitness
		}
		s.commit(state.AddMember{Member: state.Member{Name: n, Role: role, Address: n}})
	}
	return s
}

func (s *simNet) commit(c state.Command) error {
	b, err := state.Encode(c)
	if err != nil {
		return err
	}
	s.log = append(s.log, b)
	var result error
	for _, n := range s.nodes {
		if r := s.catchUpLocked(n); n.name == s.leader {
			result = r
		}
	}
	return result
}

// catchUpLocked applies the log to a connected, live node; it returns the
// result of the last entry applied.
func (s *simNet) catchUpLocked(n *simNode) error {
	var last error
	if s.cut[n.name] || s.lag[n.name] || (!n.alive && n.node != nil) {
		return nil
	}
	for n.applied < len(s.log) {
		n.applied++
		last = n.machine.Apply(uint64(n.applied), s.log[n.applied-1])
	}
	return last
}

func (s *simNet) start(name string) {
	n := s.nodes[name]
	role := n.machine.View().Members[name].Role
	var prov Provider
	if role == state.RoleApp {
		prov = &simVIP{net: s, node: name}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	mesh, err := liveness.New(liveness.Options{
		Self: name, Machine: n.machine, Tr: &simTransport{net: s, from: name},
		Interval: s.interval, Lease: 500 * time.Millisecond, Margin: 100 * time.Millisecond, Logger: logger,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	node, err := New(Options{
		Name: name, Role: role, Machine: n.machine,
		Cluster:       &simCluster{net: s, node: name},
		Provider:      prov,
		Health:        &simHealth{net: s, node: name},
		HealthChanged: n.healthCh,
		Mesh:          mesh,
		Policy:        state.Policy{Cooloff: 2 * time.Second, FailureThreshold: 3, FailureWindow: time.Minute},
		DrainTimeout:  2 * time.Second,
		Flushers:      []Flusher{simFlusher{net: s, node: name}},
		FlushTimeout:  time.Second,
		Logger:        logger,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	n.node, n.mesh, n.cancel, n.done, n.alive = node, mesh, cancel, make(chan struct{}), true
	s.mu.Unlock()
	go func() {
		defer close(n.done)
		var wg sync.WaitGroup
		wg.Go(func() { _ = mesh.Run(ctx) })
		_ = node.Run(ctx)
		wg.Wait()
	}()
}

// powerOff stops a node without letting it clean up, like a power loss: its
// address disappears with it.
func (s *simNet) powerOff(name string) {
	s.mu.Lock()
	n := s.nodes[name]
	n.alive = false
	delete(s.vip, name)
	s.mu.Unlock()
	n.cancel()
}

func (s *simNet) partition(name string, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut[name] = cut
	if name == s.leader {
		s.leadershipChangedLocked()
	}
	if !cut {
		s.catchUpLocked(s.nodes[name])
	}
}

func (s *simNet) setHealthy(name string, ok bool) {
	s.mu.Lock()
	s.nodes[name].healthy = ok
	s.mu.Unlock()
	select {
	case s.nodes[name].healthCh <- struct{}{}:
	default:
	}
}

func (s *simNet) holders() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n, on := range s.vip {
		if on {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// observe samples the VIP every 5 ms, like the lab's split-brain observer.
func (s *simNet) observe(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		if h := s.holders(); len(h) > s.maxVIP {
			s.mu.Lock()
			s.maxVIP = len(h)
			s.mu.Unlock()
		}
	}
}

func (s *simNet) waitHolder(t *testing.T, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		h := s.holders()
		if len(h) == 1 && h[0] == want {
			return time.Since(start)
		}
		if len(h) > 1 {
			t.Fatalf("split brain after %v: %v hold the VIP", time.Since(start), h)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("holders = %v after %v; want [%s]", s.holders(), within, want)
	return 0
}

func (s *simNet) moves() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nodes["witness"].machine.View().Moves)
}

type simCluster struct {
	net  *simNet
	node string
}

func (c *simCluster) Apply(ctx context.Context, cmd state.Command) error {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	if c.net.cut[c.node] || c.net.cut[c.net.leader] || !c.net.nodes[c.net.leader].alive {
		return errors.New("no leader reachable")
	}
	return c.net.commit(cmd)
}

func (c *simCluster) IsLeader() bool {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.leader == c.node && !c.net.cut[c.node]
}

func (c *simCluster) Leader() (string, string) {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.leader, ""
}

func (c *simCluster) Term() uint64 {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.term
}

func (c *simCluster) TransferLeadership(ctx context.Context, to string) error {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	c.net.leader, c.net.term = to, c.net.term+1
	c.net.leadershipChangedLocked()
	return nil
}

func (c *simCluster) LeadershipChanged() <-chan struct{} {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.lchanged
}

type simHealth struct {
	net  *simNet
	node string
}

func (h *simHealth) Snapshot() health.Report {
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	return health.Report{Healthy: h.net.nodes[h.node].healthy}
}

type simTransport struct {
	net  *simNet
	from string
}

// down reports whether messages from a to b are lost: either end is cut
// off, or b is not running.
func (s *simNet) down(a, b string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	peer, exists := s.nodes[b]
	// A member with no simulated node is one whose agent never started.
	return !exists || s.cut[a] || s.cut[b] || !peer.alive
}

func (tr *simTransport) Dial(ctx context.Context, addr string, deadline time.Time) (net.Conn, error) {
	time.Sleep(time.Millisecond) // one-way latency
	if tr.net.down(tr.from, addr) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Until(deadline)):
			return nil, context.DeadlineExceeded
		}
	}
	tr.net.mu.Lock()
	peer := tr.net.nodes[addr].mesh
	tr.net.mu.Unlock()
	a, b := net.Pipe()
	go func() { _ = peer.ServeConn(&simConn{Conn: b, net: tr.net, from: addr, to: tr.from}, tr.from) }()
	return &simConn{Conn: a, net: tr.net, from: tr.from, to: addr}, nil
}

// simConn delays what it writes by the one-way latency and loses it while
// the path is down.
type simConn struct {
	net.Conn
	net      *simNet
	from, to string
}

func (c *simConn) Write(b []byte) (int, error) {
	time.Sleep(time.Millisecond)
	if c.net.down(c.from, c.to) {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

type simVIP struct {
	net  *simNet
	node string
}

func (v *simVIP) Acquire(ctx context.Context) error {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	v.net.vip[v.node] = true
	return nil
}

func (v *simVIP) Release(ctx context.Context) error {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	delete(v.net.vip, v.node)
	v.net.draining[v.node] = false
	return nil
}

type simFlush struct {
	node, to         string
	held, stoppedNew bool // the node still held the IP, new connections turned away
	openConns        int
	took             time.Duration
}

// simFlusher stands in for file replication.
type simFlusher struct {
	net  *simNet
	node string
}

func (f simFlusher) Flush(ctx context.Context, to string) error {
	f.net.mu.Lock()
	rec := simFlush{node: f.node, to: to, held: f.net.vip[f.node], stoppedNew: f.net.draining[f.node], openConns: f.net.open[f.node]}
	took := f.net.flushTook
	f.net.mu.Unlock()
	start := time.Now()
	var err error
	select {
	case <-time.After(took):
	case <-ctx.Done():
		err = ctx.Err()
	}
	rec.took = time.Since(start)
	f.net.mu.Lock()
	f.net.flushes = append(f.net.flushes, rec)
	f.net.mu.Unlock()
	return err
}

func (v *simVIP) StopNew(ctx context.Context) error {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	v.net.draining[v.node] = true
	return nil
}

func (v *simVIP) InFlight(ctx context.Context) (int, error) {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	return v.net.open[v.node], nil
}

func (v *simVIP) Held(ctx context.Context) (bool, error) {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	return v.net.vip[v.node], nil
}

// runSim brings up node1, node2 and a witness (the raft leader), waits for
// the initial placement on node1 and runs fn. It fails on any instant with
// two holders.
func runSim(t *testing.T, fn func(t *testing.T, s *simNet)) {
	runSimEvery(t, 50*time.Millisecond, fn)
}

// runSimEvery is runSim with the meshes' probe interval.
func runSimEvery(t *testing.T, interval time.Duration, fn func(t *testing.T, s *simNet)) {
	synctest.Test(t, func(t *testing.T) {
		s := newSim(t, "node1", "node2", "witness")
		s.interval = interval
		ctx, cancel := context.WithCancel(context.Background())
		go s.observe(ctx)
		for _, n := range []string{"witness", "node1", "node2"} {
			s.start(n)
		}
		s.waitHolder(t, "node1", 3*time.Second)
		fn(t, s)
		cancel()
		for _, n := range s.nodes {
			if n.alive {
				n.cancel()
				<-n.done
			}
		}
		if s.maxVIP > 1 {
			t.Errorf("split brain: %d nodes held the VIP at one sampled instant", s.maxVIP)
		}
		s.checkStateUntouched(t)
	})
}

// checkStateUntouched replays each node's applied log into a fresh state and
// compares it with the node's own: views share the state's maps and slices,
// so a reader that changed one would show here.
func (s *simNet) checkStateUntouched(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.nodes {
		replay := state.New()
		for i, e := range s.log[:n.applied] {
			_ = replay.Apply(uint64(i+1), e)
		}
		want, _ := replay.Save()
		got, _ := n.machine.Save()
		if string(got) != string(want) {
			t.Errorf("%s: the state differs from a replay of its log; a reader changed a view:\n got  %s\n want %s", n.name, got, want)
		}
	}
}

func TestSimulatedFaults(t *testing.T) {
	tests := []struct {
		name      string
		fault     func(s *simNet)
		want      string // holder after the fault
		within    time.Duration
		wantMoves int // moves after the initial placement
	}{
		{"holder power loss", func(s *simNet) { s.powerOff("node1") }, "node2", time.Second, 1},
		{"holder app fails", func(s *simNet) { s.setHealthy("node1", false) }, "node2", time.Second, 1},
		{"holder partitioned", func(s *simNet) { s.partition("node1", true) }, "node2", time.Second, 1},
		{"witness lost", func(s *simNet) { s.powerOff("witness"); s.partition("witness", true) }, "node1", time.Second, 0},
		{"standby lost", func(s *simNet) { s.powerOff("node2") }, "node1", time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSim(t, func(t *testing.T, s *simNet) {
				before := s.moves()
				tt.fault(s)
				took := s.waitHolder(t, tt.want, tt.within)
				time.Sleep(5 * time.Second) // anything that would flap does so now
				if h := s.holders(); len(h) != 1 || h[0] != tt.want {
					t.Errorf("holders after settling = %v; want [%s]", h, tt.want)
				}
				if got := s.moves() - before; got != tt.wantMoves {
					t.Errorf("moves = %d; want %d", got, tt.wantMoves)
				}
				t.Logf("%s: %v to serve from %s", tt.name, took, tt.want)
			})
		})
	}
}

// TestDetectionAnyInterval cuts the holder's power, or fails its app, at
// every tenth of a round and checks that the time to serve from the
// standby does not grow with the probe interval: a holder's death is
// declared lease+margin after its last message and an app failure is
// announced at once, whenever the rounds fall.
func TestDetectionAnyInterval(t *testing.T) {
	faults := []struct {
		name  string
		fault func(s *simNet)
	}{
		{"power loss", func(s *simNet) { s.powerOff("node1") }},
		{"app failure", func(s *simNet) { s.setHealthy("node1", false) }},
	}
	for _, f := range faults {
		mean := map[time.Duration]time.Duration{}
		for _, every := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond} {
			var sum, worst time.Duration
			// Five phases of the round, not more: each is a synctest
			// bubble, and go1.26.8's runtime crashed (SIGSEGV in
			// timer.maybeRunChan) twice in about 500 bubbles under -race.
			const phases = 5
			for i := range phases {
				runSimEvery(t, every, func(t *testing.T, s *simNet) {
					time.Sleep(time.Until(time.Now().Truncate(every).Add(every + time.Duration(i)*every/phases + time.Millisecond)))
					f.fault(s)
					took := s.waitHolder(t, "node2", 2*time.Second)
					sum += took
					worst = max(worst, took)
				})
			}
			mean[every] = sum / phases
			t.Logf("%s, interval %v: serving again after %v on average, %v at worst", f.name, every, mean[every], worst)
		}
		if m50, m100 := mean[50*time.Millisecond], mean[100*time.Millisecond]; m100 > m50+5*time.Millisecond {
			t.Errorf("%s: at a 100ms interval serving again takes %v on average, at 50ms %v: want no slower", f.name, m100, m50)
		}
	}
}

func TestPartitionHealNoMoveBack(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		s.partition("node1", true)
		s.waitHolder(t, "node2", time.Second)
		s.partition("node1", false)
		time.Sleep(5 * time.Second)
		if h := s.holders(); len(h) != 1 || h[0] != "node2" {
			t.Fatalf("holders after heal = %v; want [node2]", h)
		}
		if got := s.moves(); got != 2 {
			t.Errorf("moves = %d; want 2 (initial + one failover)", got)
		}
	})
}

func TestLeaderOnHolderIsMovedAway(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		s.mu.Lock()
		s.leader, s.term = "node1", s.term+1
		s.leadershipChangedLocked()
		s.mu.Unlock()
		time.Sleep(time.Second)
		s.mu.Lock()
		leader := s.leader
		s.mu.Unlock()
		if leader == "node1" {
			t.Fatalf("leader stayed on the holder")
		}
		if h := s.holders(); len(h) != 1 || h[0] != "node1" {
			t.Fatalf("holders = %v; want [node1]", h)
		}
	})
}

func TestMaintenanceFreezes(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		s.mu.Lock()
		err := s.commit(state.SetMode{Mode: state.ModeMaintenance})
		s.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		s.setHealthy("node1", false)
		time.Sleep(3 * time.Second)
		if h := s.holders(); fmt.Sprint(h) != "[node1]" {
			t.Fatalf("holders in maintenance = %v; want [node1]", h)
		}
		if got := s.moves(); got != 1 {
			t.Errorf("moves = %d; want 1", got)
		}
	})
}

// TestFullRestartKeepsHolder powers every node off and brings them back one
// by one, seconds apart: the holder and its epoch must survive (I4), since
// the startup grace keeps the first node up from calling the others dead.
func TestFullRestartKeepsHolder(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		epoch := s.nodes["witness"].machine.View().Holder.Epoch
		for _, n := range []string{"node1", "node2", "witness"} {
			s.powerOff(n)
			<-s.nodes[n].done
		}
		// The holder's app takes a while to come up after the boot, as a
		// real gunicorn does: not yet healthy must not count as failed.
		s.setHealthy("node1", false)
		for _, n := range []string{"witness", "node2", "node1"} {
			s.start(n)
			time.Sleep(3 * time.Second)
		}
		s.setHealthy("node1", true)
		s.waitHolder(t, "node1", 5*time.Second)
		time.Sleep(liveness.StartupGrace)
		if h := s.holders(); len(h) != 1 || h[0] != "node1" {
			t.Fatalf("holders after a full restart = %v; want [node1]", h)
		}
		if got := s.nodes["witness"].machine.View().Holder.Epoch; got != epoch {
			t.Errorf("epoch after a full restart = %d; want %d", got, epoch)
		}
	})
}

// TestStaleLeaderViewsDoNotConfirm replays, to a healed node whose log still
// lags, the leader's probes from before the move (as TCP retransmits them
// when a partition heals). They must not make it take the IP back.
func TestStaleLeaderViewsDoNotConfirm(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		old := s.nodes["witness"].machine.View().Holder
		s.partition("node1", true)
		s.waitHolder(t, "node2", time.Second)
		s.mu.Lock()
		s.lag["node1"] = true
		s.mu.Unlock()
		s.partition("node1", false)
		view := appendLeaderView(nil, &LeaderView{Term: 1, Holder: "node1", Epoch: old.Epoch, Active: true})
		stale := &liveness.Message{From: "witness", ID: 1, Facts: liveness.Facts{{Name: FactLeader, Value: view}}}
		for i := 0; i < 100; i++ {
			s.nodes["node1"].mesh.Receive("witness", stale)
			time.Sleep(10 * time.Millisecond)
			if h := s.holders(); len(h) != 1 || h[0] != "node2" {
				t.Fatalf("holders = %v after a replayed leader view; want [node2]", h)
			}
		}
		s.mu.Lock()
		s.lag["node1"] = false
		s.catchUpLocked(s.nodes["node1"])
		s.mu.Unlock()
		time.Sleep(time.Second)
		if h := s.holders(); len(h) != 1 || h[0] != "node2" {
			t.Fatalf("holders = %v after catching up; want [node2]", h)
		}
	})
}

// TestPendingMemberDoesNotCostTheLease adds a member whose agent never
// starts, while the witness is down: as long as the new node is pending
// (joined, not yet a raft voter) the holder keeps its lease from node2; once
// it counts as a voter, node1 and node2 are two of four, no majority, and
// the holder must fence itself.
func TestPendingMemberDoesNotCostTheLease(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		s.powerOff("witness")
		s.partition("witness", true)
		time.Sleep(2 * time.Second)
		s.mu.Lock()
		err := s.commit(state.AddMember{Member: state.Member{Name: "node3", Role: state.RoleApp, Address: "node3", Pending: true}})
		s.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		moves := s.moves()
		time.Sleep(3 * time.Second)
		if h := s.holders(); len(h) != 1 || h[0] != "node1" {
			t.Fatalf("holders with a pending member that never started = %v; want [node1]", h)
		}
		if got := s.moves(); got != moves {
			t.Errorf("moves = %d; want %d", got, moves)
		}
		s.mu.Lock()
		err = s.commit(state.PromoteMember{Name: "node3"})
		s.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if h := s.holders(); len(h) != 0 {
			t.Errorf("holders with two of four voters up = %v; want none (no quorum lease)", h)
		}
	})
}

// TestHealthChangeReachesTheDCAtOnce fails the holder's app at every phase
// of the probe interval: the holder announces the change, the DC probes it
// at once and decides, so the decision never waits for the DC's next round.
func TestHealthChangeReachesTheDCAtOnce(t *testing.T) {
	for _, phase := range []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 40 * time.Millisecond} {
		t.Run(fmt.Sprint(phase), func(t *testing.T) {
			runSim(t, func(t *testing.T, s *simNet) {
				time.Sleep(phase)
				s.setHealthy("node1", false)
				start := time.Now()
				for {
					s.mu.Lock()
					h := s.nodes["witness"].machine.View().Holder
					s.mu.Unlock()
					if h.Node == "node2" {
						break
					}
					if time.Since(start) > time.Second {
						t.Fatalf("no decision within 1s of the app failing")
					}
					time.Sleep(time.Millisecond)
				}
				if took := time.Since(start); took > 15*time.Millisecond {
					t.Errorf("the DC decided %v after the holder's health changed; want <= 15ms (probe interval 50ms)", took)
				}
			})
		})
	}
}

// TestPlannedMoveDrains: a planned move waits for the old holder's open
// connections to close (new ones turned away) before it releases, for at
// most DrainTimeout, and never beyond its lease; an unplanned move does not
// wait at all.
func TestPlannedMoveDrains(t *testing.T) {
	tests := []struct {
		name    string
		drain   bool
		closeAt time.Duration // when the open connections close; 0: never
		cut     bool          // node1 is partitioned right after the decision
		// node1 must still hold at holdUntil and no longer at goneBy.
		holdUntil, goneBy time.Duration
	}{
		{"connections close", true, 600 * time.Millisecond, false, 500 * time.Millisecond, 700 * time.Millisecond},
		{"drain times out", true, 0, false, 1900 * time.Millisecond, 2200 * time.Millisecond},
		{"lease lost while draining", true, 0, true, 0, 600 * time.Millisecond},
		{"unplanned move", false, 0, false, 0, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSim(t, func(t *testing.T, s *simNet) {
				s.mu.Lock()
				s.open["node1"] = 3
				epoch := s.nodes["witness"].machine.View().Holder.Epoch
				err := s.commit(state.SetHolder{Node: "node2", PrevEpoch: epoch, Reason: "switchover", Drain: tt.drain, At: time.Now()})
				s.mu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if tt.cut {
					s.partition("node1", true)
				}
				if tt.closeAt > 0 {
					time.AfterFunc(tt.closeAt, func() {
						s.mu.Lock()
						s.open["node1"] = 0
						s.mu.Unlock()
					})
				}
				holds := func() bool {
					s.mu.Lock()
					defer s.mu.Unlock()
					return s.vip["node1"]
				}
				if tt.holdUntil > 0 {
					time.Sleep(tt.holdUntil)
					if !holds() {
						t.Fatalf("node1 released %v after a planned move with open connections; want it to drain", tt.holdUntil)
					}
					s.mu.Lock()
					draining := s.draining["node1"]
					s.mu.Unlock()
					if !draining {
						t.Errorf("node1 did not turn new connections away while draining")
					}
				}
				time.Sleep(tt.goneBy - time.Since(start))
				if holds() {
					t.Fatalf("node1 still holds the IP %v after the move", tt.goneBy)
				}
			})
		})
	}
}

// TestPlannedMoveFlushes: a planned move flushes (file replication) to the
// new holder after the drain and before the release, for at most
// FlushTimeout, and not beyond the lease; an unplanned move never flushes.
func TestPlannedMoveFlushes(t *testing.T) {
	tests := []struct {
		name      string
		drain     bool
		took      time.Duration
		cut       bool
		holdUntil time.Duration
		goneBy    time.Duration
		flushed   bool
	}{
		{"flush completes", true, 300 * time.Millisecond, false, 200 * time.Millisecond, 500 * time.Millisecond, true},
		{"flush times out", true, time.Hour, false, 900 * time.Millisecond, 1200 * time.Millisecond, true},
		{"lease lost while flushing", true, time.Hour, true, 0, 700 * time.Millisecond, true},
		{"unplanned move", false, 300 * time.Millisecond, false, 0, 100 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSim(t, func(t *testing.T, s *simNet) {
				s.mu.Lock()
				s.flushTook = tt.took
				epoch := s.nodes["witness"].machine.View().Holder.Epoch
				err := s.commit(state.SetHolder{Node: "node2", PrevEpoch: epoch, Reason: "switchover", Drain: tt.drain, At: time.Now()})
				s.mu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if tt.cut {
					s.partition("node1", true)
				}
				holds := func() bool {
					s.mu.Lock()
					defer s.mu.Unlock()
					return s.vip["node1"]
				}
				if tt.holdUntil > 0 {
					time.Sleep(tt.holdUntil)
					if !holds() {
						t.Fatalf("node1 released %v into the flush", tt.holdUntil)
					}
				}
				time.Sleep(tt.goneBy - time.Since(start))
				if holds() {
					t.Fatalf("node1 still holds the IP %v after the move", tt.goneBy)
				}
				s.mu.Lock()
				flushes := slices.Clone(s.flushes)
				s.mu.Unlock()
				if !tt.flushed {
					if len(flushes) != 0 {
						t.Fatalf("an unplanned move flushed: %+v", flushes)
					}
					return
				}
				if len(flushes) != 1 {
					t.Fatalf("flushes = %+v; want one", flushes)
				}
				f := flushes[0]
				if f.node != "node1" || f.to != "node2" || !f.held || !f.stoppedNew {
					t.Errorf("flush = %+v; want node1 flushing to node2 while holding, after turning new connections away", f)
				}
			})
		})
	}
}

// TestForgedEpochFromAMemberIsIgnored: a member that is not the raft
// leader (here node2, the standby) claims a huge epoch in its probes. The
// holder must not take it as news of a newer holder and drop the IP
// (security review, finding 2).
func TestForgedEpochFromAMemberIsIgnored(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		holder := s.holders()
		if len(holder) != 1 {
			t.Fatalf("holders = %v; want one", holder)
		}
		h := holder[0]
		forger := "node2"
		if h == "node2" {
			forger = "node1"
		}
		view := appendLeaderView(nil, &LeaderView{Term: 1 << 40, Holder: forger, Epoch: 1<<63 - 1, Active: true})
		forged := &liveness.Message{From: forger, ID: 1, Facts: liveness.Facts{{Name: FactLeader, Value: view}}}
		for range 100 {
			s.nodes[h].mesh.Receive(forger, forged)
			time.Sleep(10 * time.Millisecond)
			if got := s.holders(); len(got) != 1 || got[0] != h {
				t.Fatalf("holders = %v after %s's forged epoch; want [%s]", got, forger, h)
			}
		}
	})
}

// TestRepeatedHangsKeepMoving is issue 13's case: the hourly cap held every
// hung app after the 6th move. Ten hangs, alternating between the nodes
// 25 s apart (fake clock), must each be moved within the cool-off plus
// detection: with a one-minute window neither node reaches 3 failures.
func TestRepeatedHangsKeepMoving(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		holder, standby := "node1", "node2"
		for i := range 10 {
			time.Sleep(25 * time.Second)
			s.setHealthy(holder, false)
			took := s.waitHolder(t, standby, 3*time.Second)
			if took > 1500*time.Millisecond {
				t.Errorf("hang %d on %s: moved after %v; want within 1.5s", i+1, holder, took)
			}
			s.setHealthy(holder, true)
			holder, standby = standby, holder
		}
		if got := s.moves(); got != 11 {
			t.Errorf("moves = %d; want 11 (initial + one per hang)", got)
		}
	})
}

// TestSingleFailingNodeIsLeft checks that a node that keeps failing is
// penalised: a hang of the other node right after is held back for the
// back-off instead of moving straight onto it, then moved (no freeze), and
// once the penalty decays the node is an ordinary target again.
func TestSingleFailingNodeIsLeft(t *testing.T) {
	runSim(t, func(t *testing.T, s *simNet) {
		witness := func() *simNode { s.mu.Lock(); defer s.mu.Unlock(); return s.nodes["witness"] }()
		// node1 fails three times; each time the IP moves to node2 and is
		// switched back by hand (a planned move is nobody's failure).
		for i := range 3 {
			s.setHealthy("node1", false)
			s.waitHolder(t, "node2", 3*time.Second)
			s.setHealthy("node1", true)
			if i < 2 {
				time.Sleep(3 * time.Second)
				s.mu.Lock()
				epoch := witness.machine.View().Holder.Epoch
				err := s.commit(state.SetHolder{Node: "node1", PrevEpoch: epoch, Reason: "switchover", At: time.Now(), Drain: true})
				s.mu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
				s.waitHolder(t, "node1", 3*time.Second)
			}
		}
		// node1 is penalised: node2's hang is held back (back-off: twice
		// the 2s cool-off after the last move), not moved onto node1 at once.
		s.setHealthy("node2", false)
		time.Sleep(time.Second)
		if h := s.holders(); len(h) != 1 || h[0] != "node2" {
			t.Fatalf("holders = %v; want [node2]: node1 is penalised", h)
		}
		if held := witness.node.Status().Held; held == nil || held.Kind != HoldBackoff || held.To != "node1" {
			t.Fatalf("held = %+v; want a back-off to node1", held)
		}
		// The other nodes learn the held move from the DC's replies.
		node2 := func() *simNode { s.mu.Lock(); defer s.mu.Unlock(); return s.nodes["node2"] }()
		if held := node2.node.Status().Held; held == nil || held.Kind != HoldBackoff {
			t.Errorf("node2's status: held = %+v; want the DC's back-off", held)
		}
		s.waitHolder(t, "node1", 5*time.Second) // backed off, not frozen
		if held := witness.node.Status().Held; held != nil {
			t.Errorf("held after the move = %+v; want none", held)
		}
		s.setHealthy("node2", true)
		// After the one-minute window node1's failures have decayed: a hang
		// of node2 is moved onto it within the detection time.
		time.Sleep(61 * time.Second)
		s.setHealthy("node1", false)
		s.waitHolder(t, "node2", 3*time.Second)
		s.setHealthy("node1", true)
		time.Sleep(3 * time.Second)
		s.setHealthy("node2", false)
		if took := s.waitHolder(t, "node1", 3*time.Second); took > 500*time.Millisecond {
			t.Errorf("after the penalty decayed: moved in %v; want within 0.5s", took)
		}
	})
}
