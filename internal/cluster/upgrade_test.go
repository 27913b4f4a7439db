package cluster

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// TestRollingUpgrade runs a cluster in which n3 runs an older tandem (its
// state knows only the base level's commands). A command n3 could not apply
// is refused with a message that names it, from the leader and through a
// follower, and is never committed; once n3 restarts on the current
// binary and reports its level, the same command goes through.
func TestRollingUpgrade(t *testing.T) {
	old := func() *state.Machine { return state.NewWith(state.Limit(state.BaseLevel, state.Domains()...)...) }
	c := newMemClusterWith(t, 3, &memCluster{machine: func(i int) *state.Machine {
		if i == 2 {
			return old()
		}
		return state.New()
	}})
	ctx := context.Background()
	if c.nodes[2].Machine().Level() >= state.New().Level() {
		t.Fatal("test bug: n3's machine is not older")
	}
	// An older leader cannot even decode the command: keep the leader new.
	if li, _ := c.leader(); li == 2 {
		if err := c.nodes[2].TransferLeadership(ctx, "n1"); err != nil {
			t.Fatal(err)
		}
	}
	level := state.New().Level()
	eventually(t, 10*time.Second, "n1 and n2 to report their level", func() bool {
		v := c.nodes[0].Machine().View()
		return v.Members["n1"].Level == level && v.Members["n2"].Level == level
	})

	prio := state.SetMemberPriority{Name: "n2", Priority: 7}
	for _, n := range []*Node{c.nodes[0], c.nodes[1]} {
		err := n.Apply(ctx, prio)
		if !errors.Is(err, state.ErrUpgradeNeeded) || !strings.Contains(err.Error(), "upgrade n3 first") {
			t.Fatalf("Apply(%s) on %s = %v; want ErrUpgradeNeeded naming n3", prio.Type(), n.Name(), err)
		}
	}
	c.waitConverged()
	for _, n := range c.nodes {
		if k := n.Machine().View().Members["n2"].Key; k != "" {
			t.Fatalf("%s: n2's key %q was pinned while n3 cannot apply the command", n.Name(), k)
		}
		if p := n.Machine().View().Members["n2"].Priority; p != 0 {
			t.Fatalf("%s: n2's priority = %d; the refused command was applied", n.Name(), p)
		}
	}
	// The other nodes' level reports are all n3 missed; it counts them.
	if got, typ := c.nodes[2].Machine().Undecodable(); got == 0 || typ != "set_member_level" {
		t.Errorf("n3 Undecodable = %d, %q; want the level reports it skipped", got, typ)
	}
	if n, _ := c.nodes[0].Machine().Undecodable(); n != 0 {
		t.Errorf("n1 could not apply %d entries", n)
	}

	// Upgrade n3: restart it on the current binary with its data.
	if err := c.nodes[2].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, tr := raft.NewInmemTransport(c.trans[2].LocalAddr())
	c.trans[2] = tr
	c.connectAll()
	c.machine = nil
	n3, err := New(ctx, c.opts(2, tr))
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[2] = n3
	eventually(t, 10*time.Second, "n3 to report its new level", func() bool {
		_, l := c.leader()
		return l.Machine().View().Members["n3"].Level == level
	})
	if err := c.nodes[1].Apply(ctx, prio); err != nil {
		t.Fatalf("Apply(%s) after the upgrade = %v", prio.Type(), err)
	}
	eventually(t, 5*time.Second, "every node to apply the priority", func() bool {
		for _, n := range c.nodes {
			if n.Machine().View().Members["n2"].Priority != 7 {
				return false
			}
		}
		return true
	})
	// Members from before pins report their own keys once all can apply it
	// (n1, the founder, pinned its own at bootstrap).
	eventually(t, 10*time.Second, "every member's own key to be pinned on every node", func() bool {
		for _, n := range c.nodes {
			for _, m := range c.nodes {
				if n.Machine().View().Members[m.Name()].Key != m.ownKey() {
					return false
				}
			}
		}
		return true
	})
}

// TestSetMemberPriorityIsAuthorised: a witness may set its own priority
// only; the leader refuses the forwarded command otherwise.
func TestSetMemberPriorityIsAuthorised(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx := context.Background()
	f := c.follower()
	if err := c.nodes[0].Apply(ctx, state.AddMember{Member: state.Member{Name: f.Name(), Role: state.RoleWitness, Address: f.Addr()}}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	other := "n1"
	if f.Name() == "n1" {
		other = "n2"
	}
	if err := f.Apply(ctx, state.SetMemberPriority{Name: other, Priority: 9}); !errors.Is(err, state.ErrForbidden) {
		t.Fatalf("witness setting %s's priority = %v; want ErrForbidden", other, err)
	}
	// Every member reports its state level at start; until they all have,
	// the leader holds level-2 commands back.
	eventually(t, 10*time.Second, "every member to report its state level", func() bool {
		for _, m := range c.nodes[0].Machine().View().Members {
			if m.Level < 2 {
				return false
			}
		}
		return true
	})
	if err := f.Apply(ctx, state.SetMemberPriority{Name: f.Name(), Priority: 9}); err != nil {
		t.Fatalf("witness setting its own priority = %v", err)
	}
}

// TestNodeComesUpFromFlatSnapshot starts a node whose only raft state is a
// snapshot in the format of the binaries before state domains: it restores
// it, leads, and applies commands on top.
func TestNodeComesUpFromFlatSnapshot(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("state", "testdata", "snapshot-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &memCluster{t: t, ca: ca, dirs: []string{t.TempDir()}}
	_, tr := raft.NewInmemTransport("")
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(c.dirs[0], "raft"), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's members are node1, node2 and witness; this is node1,
	// alone in the raft configuration so that it can lead.
	opts := c.opts(0, tr)
	opts.Name, opts.TLS = "node1", issue(t, c.ca, "node1")
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "node1", Address: tr.LocalAddr()}}}
	sink, err := snaps.Create(raft.SnapshotVersionMax, 7, 1, conf, 1, tr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(fixture); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	v := n.Machine().View()
	if v.Holder.Node != "node1" || v.Holder.Epoch != 1 || v.Mode != state.ModeMaintenance || len(v.Members) != 3 {
		t.Fatalf("restored state: holder %+v, mode %q, members %v", v.Holder, v.Mode, v.Names())
	}
	eventually(t, 10*time.Second, "node1 to lead", n.IsLeader)
	if err := n.Apply(context.Background(), state.SetHolder{Node: "node1", PrevEpoch: 1, Active: true, Reason: "test"}); err != nil {
		t.Fatalf("SetHolder on the restored state = %v", err)
	}
	if got := n.Machine().View().Holder.Epoch; got != 2 {
		t.Errorf("epoch = %d; want 2", got)
	}
}
