package files

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

const dir = "/srv/uploads"

// fakeNet is a cluster of controllers whose trees are maps, joined by a
// fake transfer with rsync's semantics (copy, delete, quarantine) and fake
// peer calls. Each node has its own state machine; commits reach every
// node not marked lagging.
type fakeNet struct {
	t     testing.TB
	mu    sync.Mutex
	log   [][]byte
	nodes map[string]*fakeNode
	// sends counts the sync requests each node made, per epoch.
	sends map[string]map[uint64]int
	// broken refuses calls to these peers, like a partition.
	broken map[string]bool
}

type fakeNode struct {
	name    string
	machine *state.Machine
	applied int
	lagging bool
	held    Held
	tree    map[string]string
	quar    map[string]map[string]string // quarantine dir -> file -> content
	c       *Controller
}

func newFakeNet(t testing.TB, names ...string) *fakeNet {
	n := &fakeNet{t: t, nodes: map[string]*fakeNode{}, sends: map[string]map[uint64]int{}, broken: map[string]bool{}}
	for _, name := range names {
		n.nodes[name] = &fakeNode{name: name, machine: state.New(), tree: map[string]string{}, quar: map[string]map[string]string{}}
	}
	for _, name := range names {
		n.commit(state.AddMember{Member: state.Member{Name: name, Role: state.RoleApp, Address: name}})
	}
	n.commit(state.AddMember{Member: state.Member{Name: "witness", Role: state.RoleWitness, Address: "witness"}})
	for _, name := range names {
		fn := n.nodes[name]
		c, err := New(Options{Name: name, Specs: []Spec{{Dir: dir, Delete: true}}, Machine: fn.machine,
			Held:     func() Held { n.mu.Lock(); defer n.mu.Unlock(); return fn.held },
			Transfer: fakeTransfer{n, fn}, Peers: fakePeers{n, fn},
			Batch: 50 * time.Millisecond, FullScan: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		fn.c = c
	}
	return n
}

func (n *fakeNet) commit(cmd state.Command) {
	b, err := state.Encode(cmd)
	if err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	n.log = append(n.log, b)
	n.mu.Unlock()
	n.catchUp()
}

func (n *fakeNet) catchUp() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, fn := range n.nodes {
		for !fn.lagging && fn.applied < len(n.log) {
			fn.applied++
			_ = fn.machine.Apply(uint64(fn.applied), n.log[fn.applied-1])
		}
	}
}

// move commits a move to node and, when active, configures it there and
// unconfigures everyone else (what failover does).
func (n *fakeNet) move(node string, active, drain bool) {
	var prev uint64
	for _, fn := range n.nodes {
		prev = max(prev, fn.machine.View().Holder.Epoch)
	}
	n.commit(state.SetHolder{Node: node, PrevEpoch: prev, Active: active, Drain: drain, Reason: "test"})
	if active {
		n.setHeld(node, prev+1)
	}
}

func (n *fakeNet) activate() {
	var e uint64
	for _, fn := range n.nodes {
		e = max(e, fn.machine.View().Holder.Epoch)
	}
	n.commit(state.Activate{Epoch: e})
	h := n.nodes[firstName(n)].machine.View().Holder
	n.setHeld(h.Node, e)
}

func firstName(n *fakeNet) string {
	for name := range n.nodes {
		return name
	}
	return ""
}

func (n *fakeNet) setHeld(node string, epoch uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, fn := range n.nodes {
		if name == node {
			fn.held = Held{Holding: true, Epoch: epoch}
			fn.c.Promote(epoch) // as failover's events do
		} else {
			fn.held = Held{}
			fn.c.Demote(epoch)
		}
	}
}

// write changes a file on node and tells its controller, as inotify would.
func (n *fakeNet) write(node, file, content string) {
	n.mu.Lock()
	fn := n.nodes[node]
	fn.tree[file] = content
	n.mu.Unlock()
	fn.c.touch(dir, Change{At: time.Now(), Bytes: int64(len(content))})
}

func (n *fakeNet) remove(node, file string) {
	n.mu.Lock()
	fn := n.nodes[node]
	delete(fn.tree, file)
	n.mu.Unlock()
	fn.c.touch(dir, Change{At: time.Now()})
}

func (n *fakeNet) tree(node string) map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.nodes[node].tree)
}

func (n *fakeNet) quarantine(node string, epoch uint64) map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.nodes[node].quar[QuarantineDir(dir, epoch)])
}

func (n *fakeNet) run(ctx context.Context) {
	for _, fn := range n.nodes {
		go fn.c.Run(ctx)
	}
}

type fakePeers struct {
	n    *fakeNet
	from *fakeNode
}

func (p fakePeers) Sync(ctx context.Context, peer string, r SyncRequest) (SyncReply, error) {
	p.n.mu.Lock()
	if p.n.sends[p.from.name] == nil {
		p.n.sends[p.from.name] = map[uint64]int{}
	}
	p.n.sends[p.from.name][r.Epoch]++
	to, broken := p.n.nodes[peer], p.n.broken[peer] || p.n.broken[p.from.name]
	p.n.mu.Unlock()
	if broken || to == nil {
		return SyncReply{}, fmt.Errorf("dial %s: unreachable", peer)
	}
	return to.c.Receive(ctx, p.from.name, r)
}

// fakeTransfer pulls with rsync's semantics: the source's files are
// copied; with Delete, files the source lacks are removed, or moved to
// the quarantine when one is given, as are files it replaces.
type fakeTransfer struct {
	n  *fakeNet
	to *fakeNode
}

func (f fakeTransfer) Pull(ctx context.Context, p Pull) (PullResult, error) {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	src := f.n.nodes[p.From]
	if f.n.broken[p.From] {
		return PullResult{}, errors.New("connection refused")
	}
	save := func(name, content string) {
		if p.Quarantine == "" {
			return
		}
		if f.to.quar[p.Quarantine] == nil {
			f.to.quar[p.Quarantine] = map[string]string{}
		}
		f.to.quar[p.Quarantine][name] = content
	}
	var res PullResult
	if p.FromQuarantine != 0 {
		// A restore: what src's quarantine holds and this copy lacks.
		for name, content := range src.quar[QuarantineDir(dir, p.FromQuarantine)] {
			if _, ok := f.to.tree[name]; !ok {
				f.to.tree[name] = content
				res.Files++
			}
		}
		return res, nil
	}
	for name, content := range src.tree {
		if old, ok := f.to.tree[name]; ok && old != content {
			save(name, old)
		}
		if f.to.tree[name] != content {
			res.Files++
			res.Bytes += int64(len(content))
		}
		f.to.tree[name] = content
	}
	if p.Spec.Delete {
		for name, content := range f.to.tree {
			if _, ok := src.tree[name]; !ok {
				save(name, content)
				delete(f.to.tree, name)
			}
		}
	}
	return res, nil
}

func equalTrees(a, b map[string]string) bool { return maps.Equal(a, b) }

// settle lets every controller act on what happened.
func settle() {
	time.Sleep(2 * time.Second)
	synctest.Wait()
}

func TestHolderReplicatesToEveryStandby(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b", "c")
		n.move("a", true, false)
		n.write("b", "stray.jpg", "b had it before it first caught up")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()

		start := time.Now()
		n.write("a", "one.jpg", "1")
		n.write("a", "two.jpg", "2")
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) && !(len(n.tree("c")) == 2 && n.tree("b")["two.jpg"] == "2") {
			time.Sleep(10 * time.Millisecond)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("replication took %v; want well under 1s", took)
		}
		if !equalTrees(n.tree("a"), n.tree("c")) {
			t.Errorf("c = %v; want a's %v", n.tree("c"), n.tree("a"))
		}
		// b's stray file predates b's first catch-up from a: quarantined.
		if q := n.quarantine("b", 1); q["stray.jpg"] == "" {
			t.Errorf("b's quarantine = %v; want stray.jpg", q)
		}
		if n.sends["b"] != nil || n.sends["c"] != nil {
			t.Errorf("standbys sent: %v", n.sends)
		}
		// Deletes propagate within the epoch.
		n.remove("a", "one.jpg")
		settle()
		if !equalTrees(n.tree("a"), n.tree("b")) || !equalTrees(n.tree("a"), n.tree("c")) {
			t.Errorf("after delete: a=%v b=%v c=%v", n.tree("a"), n.tree("b"), n.tree("c"))
		}
		if _, ok := n.quarantine("c", 1)["one.jpg"]; ok {
			t.Errorf("a delete by the source went to quarantine: %v", n.quarantine("c", 1))
		}
		st := n.nodes["a"].c.Status()
		if !st.Sending || len(st.Paths) != 1 || len(st.Paths[0].Peers) != 2 {
			t.Fatalf("status = %+v", st)
		}
		for _, p := range st.Paths[0].Peers {
			if p.Lag != 0 || p.Syncs == 0 || p.LastError != "" {
				t.Errorf("peer %+v; want caught up", p)
			}
		}
	})
}

func TestReturningOldHolderReceivesAndQuarantines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b", "c")
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		n.write("a", "old.jpg", "o")
		settle()

		// a is cut off: its last upload never leaves it, and it does not
		// learn of the move. b takes over in epoch 2 and gets uploads.
		n.mu.Lock()
		n.broken["a"] = true
		n.nodes["a"].lagging = true
		n.mu.Unlock()
		n.write("a", "last-moment.jpg", "only a has it")
		n.write("a", "old.jpg", "a's newer version")
		n.move("b", true, false)
		n.mu.Lock()
		n.nodes["a"].held = Held{Holding: true, Epoch: 1} // it has not noticed yet
		n.mu.Unlock()
		n.write("b", "new.jpg", "n")
		settle()
		if !equalTrees(n.tree("b"), n.tree("c")) {
			t.Fatalf("c = %v; want b's %v", n.tree("c"), n.tree("b"))
		}
		sentBefore := n.sends["a"][1]

		// a comes back: its log catches up, it drops the IP, and b's
		// copy reaches it. It sends nothing in any epoch.
		n.mu.Lock()
		n.broken["a"] = false
		n.nodes["a"].lagging = false
		n.nodes["a"].held = Held{}
		n.mu.Unlock()
		n.catchUp()
		settle()
		n.write("b", "after.jpg", "x")
		settle()

		if !equalTrees(n.tree("a"), n.tree("b")) {
			t.Errorf("a = %v; want b's %v", n.tree("a"), n.tree("b"))
		}
		q := n.quarantine("a", 2)
		if q["last-moment.jpg"] != "only a has it" || q["old.jpg"] != "a's newer version" {
			t.Errorf("a's quarantine for epoch 2 = %v; want last-moment.jpg and a's old.jpg", q)
		}
		// Every request a made after the move was for epoch 1 and refused
		// (b and c know epoch 2); none reached a transfer.
		if got := n.sends["a"][2]; got != 0 {
			t.Errorf("a sent %d requests in epoch 2", got)
		}
		if n.tree("c")["last-moment.jpg"] != "" || n.tree("b")["last-moment.jpg"] != "" {
			t.Errorf("a's stale file reached b or c")
		}
		_ = sentBefore
		// A later delete by b propagates to a outright: a caught up.
		n.remove("b", "new.jpg")
		settle()
		if _, ok := n.tree("a")["new.jpg"]; ok {
			t.Errorf("b's delete did not reach a")
		}
		if _, ok := n.quarantine("a", 2)["new.jpg"]; ok {
			t.Errorf("b's own delete went to a's quarantine")
		}
	})
}

func TestStaleSenderIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b", "c")
		n.move("a", true, false)
		n.move("b", true, false)
		_, err := n.nodes["c"].c.Receive(t.Context(), "a", SyncRequest{Dir: dir, Epoch: 1})
		if !errors.Is(err, ErrNotSource) {
			t.Errorf("c accepted a's epoch-1 request in epoch 2: %v", err)
		}
		_, err = n.nodes["c"].c.Receive(t.Context(), "b", SyncRequest{Dir: "/elsewhere", Epoch: 2})
		if !errors.Is(err, ErrUnknownPath) {
			t.Errorf("undeclared dir: %v", err)
		}
		if _, err := n.nodes["c"].c.Receive(t.Context(), "b", SyncRequest{Dir: dir, Epoch: 2}); err != nil {
			t.Errorf("the holder's request: %v", err)
		}
	})
}

func TestUnplannedPendingMoveSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		n.move("b", false, false) // a is lost; b not cleared yet
		n.mu.Lock()
		before := n.sends["a"][1]
		n.mu.Unlock()
		n.write("a", "x.jpg", "x")
		settle()
		n.mu.Lock()
		after := n.sends["a"][1]
		n.mu.Unlock()
		if after != before || n.tree("b")["x.jpg"] != "" {
			t.Errorf("a sent during an unplanned pending move (%d -> %d requests)", before, after)
		}
	})
}

func TestFlushBeforePlannedMove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b", "c")
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		// The switchover commits a draining move; a still holds the IP.
		n.move("b", false, true)
		n.mu.Lock()
		n.nodes["a"].held = Held{Holding: true, Epoch: 1}
		n.mu.Unlock()
		synctest.Wait()
		// An upload whose event never arrived (the flush must not rely on
		// events): only the flush sends it.
		n.mu.Lock()
		n.nodes["a"].tree["final.jpg"] = "f"
		n.mu.Unlock()
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		defer fcancel()
		start := time.Now()
		if err := n.nodes["a"].c.Flush(fctx, "b"); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if n.tree("b")["final.jpg"] != "f" {
			t.Errorf("after the flush b = %v", n.tree("b"))
		}
		if took := time.Since(start); took >= 50*time.Millisecond {
			t.Errorf("flush took %v; it should not wait for the batch delay", took)
		}
		// Then the move activates: b sends, a receives, nothing quarantined.
		n.activate()
		n.write("b", "next.jpg", "n")
		settle()
		if !equalTrees(n.tree("a"), n.tree("b")) {
			t.Errorf("a = %v; want b's %v", n.tree("a"), n.tree("b"))
		}
		if q := n.quarantine("a", 2); len(q) != 0 {
			t.Errorf("a planned move quarantined %v", q)
		}
	})
}

func TestFlushToUnreachableTargetTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		n.mu.Lock()
		n.broken["b"] = true
		n.mu.Unlock()
		fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
		defer fcancel()
		err := n.nodes["a"].c.Flush(fctx, "b")
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Flush = %v; want a deadline error", err)
		}
		st := n.nodes["a"].c.Status()
		if p := st.Paths[0].Peers[0]; p.LastError == "" || p.Lag < time.Second {
			t.Errorf("status of the unreachable peer = %+v; want its error and lag", p)
		}
	})
}

// TestFullScanCatchesLostEvents: a change whose event never came (lost,
// or the watch failed) reaches the receivers at the next periodic full
// scan; an inotify queue overflow (Change.Overflow, path unknown) makes
// the source sync at once. Both on synctest's fake clock.
func TestFullScanCatchesLostEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		for _, fn := range n.nodes {
			fn.c.o.FullScan = 30 * time.Second
		}
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		scanned := n.nodes["a"].c.Status().Paths[0].LastScan

		// No event: nothing is sent until the full scan.
		n.mu.Lock()
		n.nodes["a"].tree["lost-event.jpg"] = "x"
		n.mu.Unlock()
		settle()
		if n.tree("b")["lost-event.jpg"] != "" {
			t.Fatal("a change without an event was sent before the full scan: the test does not test the scan")
		}
		time.Sleep(30 * time.Second)
		settle()
		if n.tree("b")["lost-event.jpg"] != "x" {
			t.Errorf("the full scan did not carry a change whose event was lost: b = %v", n.tree("b"))
		}
		if st := n.nodes["a"].c.Status().Paths[0].LastScan; !st.After(scanned) {
			t.Errorf("last full scan %v; want after %v", st, scanned)
		}

		// An overflow: the watcher lost events and says so.
		n.mu.Lock()
		n.nodes["a"].tree["in-the-overflow.jpg"] = "y"
		n.mu.Unlock()
		n.nodes["a"].c.touch(dir, Change{At: time.Now(), Overflow: true})
		settle()
		if n.tree("b")["in-the-overflow.jpg"] != "y" {
			t.Errorf("an overflow did not make the source sync: b = %v", n.tree("b"))
		}
	})
}

// TestDeletesOption: with delete = false the source's deletes do not
// propagate; with the default they do (TestHolderReplicatesToEveryStandby).
func TestDeletesOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		for _, fn := range n.nodes {
			for _, p := range fn.c.paths {
				p.spec.Delete = false
			}
		}
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		n.write("a", "x.jpg", "x")
		settle()
		if n.tree("b")["x.jpg"] != "x" {
			t.Fatalf("b = %v", n.tree("b"))
		}
		n.remove("a", "x.jpg")
		settle()
		if n.tree("b")["x.jpg"] != "x" {
			t.Errorf("with delete = false a delete propagated: b = %v", n.tree("b"))
		}
	})
}

// TestSyncAllForcesFullSync is 'tandem files sync --full': on the source
// it sends what no event announced; on a receiver it does nothing and
// says so.
func TestSyncAllForcesFullSync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		n.move("a", true, false)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()
		n.mu.Lock()
		n.nodes["a"].tree["no-event.jpg"] = "x"
		n.mu.Unlock()
		settle()
		if n.tree("b")["no-event.jpg"] != "" {
			t.Fatal("sent without an event or a full sync: the test does not test SyncAll")
		}
		if n.nodes["b"].c.SyncAll() {
			t.Error("a receiver's SyncAll says it sends")
		}
		settle()
		if n.tree("b")["no-event.jpg"] != "" {
			t.Error("a receiver's SyncAll made the source send")
		}
		if !n.nodes["a"].c.SyncAll() {
			t.Error("the source's SyncAll says it does not send")
		}
		settle()
		if n.tree("b")["no-event.jpg"] != "x" {
			t.Errorf("after SyncAll on the source b = %v", n.tree("b"))
		}
	})
}

// TestRestoreFromQuarantine is 'tandem files restore' on the holder: what
// the returning old holder's quarantine holds and the holder lacks comes
// back and replicates; what the holder has is kept. Only the holder
// restores, only from an app node, only a declared directory.
func TestRestoreFromQuarantine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b", "c")
		n.move("b", true, false) // b holds epoch 1
		n.mu.Lock()
		n.nodes["b"].tree["kept.jpg"] = "the holder's version"
		n.nodes["a"].quar[QuarantineDir(dir, 1)] = map[string]string{"kept.jpg": "a's old version", "last-moment.jpg": "only a had it"}
		n.mu.Unlock()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		n.run(ctx)
		settle()

		if _, err := n.nodes["a"].c.Restore(ctx, "a", dir, 1); !errors.Is(err, ErrNotHolder) {
			t.Errorf("a restore on a receiver: %v; want ErrNotHolder", err)
		}
		if _, err := n.nodes["b"].c.Restore(ctx, "witness", dir, 1); err == nil {
			t.Error("the holder restored from the witness")
		}
		if _, err := n.nodes["b"].c.Restore(ctx, "a", "/etc", 1); !errors.Is(err, ErrUnknownPath) {
			t.Errorf("a restore into an undeclared directory: %v", err)
		}
		got, err := n.nodes["b"].c.Restore(ctx, "a", dir, 1)
		if err != nil || got != 1 {
			t.Fatalf("Restore = %d, %v; want 1 file", got, err)
		}
		settle()
		for _, node := range []string{"a", "b", "c"} {
			tree := n.tree(node)
			if tree["last-moment.jpg"] != "only a had it" || tree["kept.jpg"] != "the holder's version" {
				t.Errorf("%s after the restore = %v; want last-moment.jpg back and the holder's kept.jpg", node, tree)
			}
		}
	})
}
