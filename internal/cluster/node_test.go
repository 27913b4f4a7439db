package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestApplyReplicatesAndForwards(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx := context.Background()
	_, leader := c.leader()
	f := c.follower()

	// A follower's command reaches the leader and every node applies it.
	if err := f.Apply(ctx, state.SetMode{Mode: state.ModeMaintenance}); err != nil {
		t.Fatalf("Apply on follower: %v", err)
	}
	c.waitConverged()
	for _, n := range c.nodes {
		if got := n.Machine().View().Mode; got != state.ModeMaintenance {
			t.Errorf("%s: Mode = %q; want maintenance", n.Name(), got)
		}
	}

	// Rejections come back as the state's sentinel errors, locally and
	// across the wire.
	tests := []struct {
		name string
		cmd  state.Command
		want error
	}{
		{"stale epoch", state.SetHolder{Node: "n1", PrevEpoch: 41}, state.ErrStaleEpoch},
		{"unknown member", state.SetHolder{Node: "nobody", PrevEpoch: 0}, state.ErrUnknownMember},
		{"bad token", state.UseToken{ID: "nope", SecretHash: "x"}, state.ErrBadToken},
		{"invalid", state.SetMode{Mode: "sideways"}, state.ErrInvalid},
	}
	for _, tt := range tests {
		for _, n := range []*Node{leader, f} {
			err := n.Apply(ctx, tt.cmd)
			if !errors.Is(err, tt.want) {
				t.Errorf("%s on %s: Apply() = %v; want %v", tt.name, n.Name(), err, tt.want)
			}
		}
	}
	// A redelivery is rejected as a duplicate on the follower too, so the
	// webhook listener (on the holder, never the leader) answers it 200.
	del := state.Delivery{ID: "d-1", Keys: []string{"gitlab/id/x"}, ReceivedAt: time.Now()}
	if err := f.Apply(ctx, state.ReceiveDelivery{Delivery: del}); err != nil {
		t.Fatal(err)
	}
	del.ID = "d-2"
	for _, n := range []*Node{leader, f} {
		if err := n.Apply(ctx, state.ReceiveDelivery{Delivery: del}); !errors.Is(err, state.ErrDuplicate) {
			t.Errorf("redelivery on %s: Apply() = %v; want ErrDuplicate", n.Name(), err)
		}
	}
	if got := f.Machine().View().Holder.Epoch; got != 0 {
		t.Errorf("rejected SetHolder changed the epoch to %d", got)
	}

	// Successful holder change from a follower.
	if err := f.Apply(ctx, state.SetHolder{Node: "n2", PrevEpoch: 0, Active: true, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	if h := c.nodes[2].Machine().View().Holder; h.Node != "n2" || h.Epoch != 1 {
		t.Errorf("holder = %+v; want n2 epoch 1", h)
	}

	servers, err := f.Servers(ctx)
	if err != nil || len(servers) != 3 || voters(servers) != 3 {
		t.Fatalf("Servers() = %+v, %v; want 3 voters", servers, err)
	}
	st := f.RaftStats()
	if st.State != "Follower" || st.Term == 0 || st.AppliedIndex == 0 || st.Leader != leader.Name() || st.NumPeers != 2 {
		t.Errorf("RaftStats() = %+v", st)
	}
	if err := leader.VerifyLeader(ctx); err != nil {
		t.Errorf("VerifyLeader on leader = %v", err)
	}
	if err := f.VerifyLeader(ctx); !errors.Is(err, ErrNotLeader) {
		t.Errorf("VerifyLeader on follower = %v; want ErrNotLeader", err)
	}
}

func TestTransferLeadership(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx := context.Background()
	li, old := c.leader()
	target := c.nodes[(li+2)%3]
	changed := target.LeadershipChanged()
	if err := c.nodes[(li+1)%3].TransferLeadership(ctx, target.Name()); !errors.Is(err, ErrNotLeader) {
		t.Errorf("TransferLeadership on follower = %v; want ErrNotLeader", err)
	}
	if err := old.TransferLeadership(ctx, target.Name()); err != nil {
		t.Fatalf("TransferLeadership(%s) = %v", target.Name(), err)
	}
	eventually(t, 5*time.Second, target.Name()+" to lead", target.IsLeader)
	select {
	case <-changed:
	case <-time.After(time.Second):
		t.Error("LeadershipChanged did not fire on the new leader")
	}
	for _, n := range c.nodes {
		eventually(t, 5*time.Second, n.Name()+" to see the new leader", func() bool {
			name, _ := n.Leader()
			return name == target.Name()
		})
	}
	// The old leader now forwards.
	if err := old.Apply(ctx, state.SetMode{Mode: state.ModeMaintenance}); err != nil {
		t.Fatalf("Apply on old leader: %v", err)
	}
	c.waitConverged()
	if err := target.TransferLeadership(ctx, "ghost"); !errors.Is(err, state.ErrUnknownMember) {
		t.Errorf("TransferLeadership(ghost) = %v; want ErrUnknownMember", err)
	}
}

func TestPartitionAndHeal(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx := context.Background()
	li, old := c.leader()
	c.isolate(li)

	// The isolated leader steps down once its lease runs out, and the
	// majority elects a new leader.
	eventually(t, 5*time.Second, "the isolated leader to step down", func() bool { return !old.IsLeader() })
	eventually(t, 5*time.Second, "the majority to elect a leader", func() bool {
		for i, n := range c.nodes {
			if i != li && n.IsLeader() {
				return true
			}
		}
		return false
	})
	maj := c.nodes[(li+1)%3]
	if err := maj.Apply(ctx, state.SetMode{Mode: state.ModeMaintenance}); err != nil {
		t.Fatalf("Apply on the majority side: %v", err)
	}

	// The minority cannot commit: with no leader in sight it gives up at
	// the deadline, and its state does not change.
	short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	if err := old.Apply(short, state.SetMode{Mode: state.ModeAuto}); !errors.Is(err, ErrNoLeader) {
		t.Errorf("Apply on isolated node = %v; want ErrNoLeader", err)
	}
	if got := old.Machine().View().Mode; got != state.ModeAuto {
		t.Errorf("isolated node Mode = %q; want auto (unchanged)", got)
	}

	c.connectAll()
	eventually(t, 5*time.Second, "the healed node to catch up", func() bool {
		return old.Machine().View().Mode == state.ModeMaintenance
	})
	c.waitConverged()
	if name, _ := old.Leader(); name == "" {
		t.Error("healed node knows no leader")
	}
}

func TestRestartKeepsState(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx := context.Background()
	if err := c.nodes[1].Apply(ctx, state.SetHolder{Node: "n3", PrevEpoch: 0, Active: true}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	// Snapshot one node so its restart goes through Restore as well as the
	// log.
	i := 2
	if err := c.nodes[i].raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	want := c.nodes[i].Machine().View()
	if err := c.nodes[i].Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The rest of the cluster keeps committing while it is down.
	if err := c.nodes[0].Apply(ctx, state.SetMode{Mode: state.ModeMaintenance}); err != nil {
		t.Fatal(err)
	}

	_, tr := raft.NewInmemTransport(c.trans[i].LocalAddr())
	c.trans[i] = tr
	c.connectAll()
	n, err := New(ctx, c.opts(i, tr))
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[i] = n
	if !n.Bootstrapped() {
		t.Error("restarted node has no raft state")
	}
	if err := n.Bootstrap(ctx); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Errorf("Bootstrap on restarted node = %v; want ErrAlreadyBootstrapped", err)
	}
	eventually(t, 5*time.Second, "the restarted node to catch up", func() bool {
		v := n.Machine().View()
		return v.Holder == want.Holder && v.Mode == state.ModeMaintenance
	})
	c.waitConverged()
}

func TestRemoveAndLeave(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx := context.Background()
	_, leader := c.leader()
	f := c.follower()
	// Remove through a follower: forwarded to the leader.
	var victim *Node
	for _, n := range c.nodes {
		if n != leader && n != f {
			victim = n
		}
	}
	if err := f.RemoveServer(ctx, victim.Name()); err != nil {
		t.Fatalf("RemoveServer(%s) = %v", victim.Name(), err)
	}
	eventually(t, 5*time.Second, "removal to reach "+f.Name(), func() bool {
		_, ok := f.Machine().View().Members[victim.Name()]
		servers, _ := f.Servers(ctx)
		return !ok && len(servers) == 2
	})
	// A removed node's certificate no longer gets it through the API.
	if err := victim.Apply(ctx, state.SetMode{Mode: state.ModeMaintenance}); err == nil {
		t.Error("Apply from a removed node succeeded")
	}

	// The leader leaves: it hands off leadership first.
	if err := leader.Leave(ctx); err != nil {
		t.Fatalf("Leave() = %v", err)
	}
	eventually(t, 5*time.Second, f.Name()+" to lead alone", f.IsLeader)
	servers, err := f.Servers(ctx)
	if err != nil || len(servers) != 1 || servers[0].Name != f.Name() {
		t.Errorf("Servers() = %+v, %v; want only %s", servers, err, f.Name())
	}
	if _, ok := f.Machine().View().Members[leader.Name()]; ok {
		t.Errorf("%s is still a member after Leave", leader.Name())
	}
	if err := f.Leave(ctx); !errors.Is(err, ErrLastVoter) {
		t.Errorf("Leave on the last voter = %v; want ErrLastVoter", err)
	}
}

// TestFollowersLearnCommitsAtOnce: with a commit timeout far longer than
// the test allows, followers still apply a command within a few round
// trips, because the leader follows each apply with a barrier entry that
// carries the new commit index.
func TestFollowersLearnCommitsAtOnce(t *testing.T) {
	c := newMemClusterTiming(t, 3, Timing{CommitTimeout: 3 * time.Second})
	ctx := context.Background()
	_, leader := c.leader()
	for i := range 3 {
		start := time.Now()
		if err := leader.Apply(ctx, state.SetHolder{Node: "n2", PrevEpoch: uint64(i), Active: true, At: start}); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.nodes {
			for n.Machine().View().Holder.Epoch != uint64(i+1) {
				if time.Since(start) > time.Second {
					t.Fatalf("%s applied epoch %d only after > 1s (commit timeout 3s)", n.Name(), i+1)
				}
				time.Sleep(time.Millisecond)
			}
		}
		if took := time.Since(start); took > 200*time.Millisecond {
			t.Errorf("apply %d reached every node after %v; want well under the 3s commit timeout", i, took)
		}
	}
}

// TestBootstrapElectsAtOnce: a cluster of one leads well within its
// heartbeat timeout (raft waits one, 3 to 6 s here, before standing for
// election), and keeps that timeout for its life as leader.
func TestBootstrapElectsAtOnce(t *testing.T) {
	hb := 3 * time.Second
	start := time.Now()
	c := newMemClusterTiming(t, 1, Timing{HeartbeatTimeout: hb, ElectionTimeout: hb, LeaderLeaseTimeout: hb / 2})
	if took := time.Since(start); took > hb/2 {
		t.Errorf("bootstrap took %v; want well under the %v heartbeat timeout", took, hb)
	}
	if !c.nodes[0].IsLeader() {
		t.Fatal("not the leader after Bootstrap")
	}
	if got := c.nodes[0].raft.ReloadableConfig().HeartbeatTimeout; got != hb {
		t.Errorf("heartbeat timeout after bootstrap = %v; want %v restored", got, hb)
	}
}
