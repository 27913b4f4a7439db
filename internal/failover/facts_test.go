package failover

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/liveness"
)

func TestFactsRoundTrip(t *testing.T) {
	tests := []NodeFacts{
		{},
		{Role: state.RoleWitness},
		{Role: state.RoleApp, Healthy: true, Holding: true, Epoch: 42},
		{Role: state.RoleApp, Starting: true, UnhealthyForMs: 1500, Epoch: 1 << 40, Checks: []health.CheckStatus{
			{Name: "site", Type: health.TypeHTTP, Healthy: false, Error: "connection refused", Output: ""},
			{Name: "db", Type: health.TypeTCP, Healthy: true, Output: "connected"},
		}},
	}
	for _, want := range tests {
		b := appendFacts(nil, &want)
		got, err := decodeFacts(b, true)
		if err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip = %+v; want %+v", got, want)
		}
		brief, err := decodeFacts(b, false)
		if err != nil || brief.Checks != nil || brief.Healthy != want.Healthy || brief.Epoch != want.Epoch {
			t.Errorf("decode without checks = %+v, %v", brief, err)
		}
	}
	v := LeaderView{Term: 7, Holder: "node2", Epoch: 9, Active: true}
	got, err := decodeLeaderView(appendLeaderView(nil, &v))
	if err != nil || got != v {
		t.Errorf("leader view round trip = %+v, %v; want %+v", got, err, v)
	}
	if got, err := decodeLeaderView(EncodeLeaderView(v)); err != nil || got != v {
		t.Errorf("EncodeLeaderView round trip = %+v, %v; want %+v", got, err, v)
	}
}

func FuzzDecodeFacts(f *testing.F) {
	f.Add(appendFacts(nil, &NodeFacts{Role: "app", Healthy: true, Checks: []health.CheckStatus{{Name: "a", Output: "x"}}}))
	f.Add(appendLeaderView(nil, &LeaderView{Term: 1, Holder: "n", Epoch: 2}))
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if fa, err := decodeFacts(b, true); err == nil {
			// Encoding cleans texts up (valid UTF-8, bounded), so the
			// second round trip must be exact.
			once, err := decodeFacts(appendFacts(nil, &fa), true)
			if err != nil {
				t.Fatalf("re-encoded facts %+v do not decode: %v", fa, err)
			}
			twice, err := decodeFacts(appendFacts(nil, &once), true)
			if err != nil || !reflect.DeepEqual(twice, once) {
				t.Fatalf("re-encoded facts %+v decode as %+v, %v", once, twice, err)
			}
		}
		if v, err := decodeLeaderView(b); err == nil {
			if again, err := decodeLeaderView(appendLeaderView(nil, &v)); err != nil || again != v {
				t.Fatalf("re-encoded view %+v decodes as %+v, %v", v, again, err)
			}
		}
	})
}

// testNode is a failover node on a mesh whose probes all fail and are
// counted, for feeding it updates by hand.
func testNode(t *testing.T, leader bool) (*Node, *countTransport) {
	t.Helper()
	m := state.New()
	for i, n := range []string{"node1", "node2", "witness"} {
		b, _ := state.Encode(state.AddMember{Member: state.Member{Name: n, Role: state.RoleApp, Address: n}})
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	tr := &countTransport{}
	mesh, err := liveness.New(liveness.Options{Self: "node1", Machine: m, Tr: tr,
		Interval: time.Second, Lease: 2 * time.Second, Margin: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Options{Name: "node1", Role: state.RoleWitness, Machine: m, Cluster: fixedLeader(leader), Mesh: mesh,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return n, tr
}

type countTransport struct{ n atomic.Int32 }

func (c *countTransport) Probe(context.Context, string, time.Time, *liveness.Request) (liveness.Reply, error) {
	c.n.Add(1)
	return liveness.Reply{}, context.DeadlineExceeded
}

type fixedLeader bool

func (l fixedLeader) Apply(context.Context, state.Command) error       { return nil }
func (l fixedLeader) IsLeader() bool                                   { return bool(l) }
func (l fixedLeader) Leader() (string, string)                         { return "", "" }
func (l fixedLeader) Term() uint64                                     { return 1 }
func (l fixedLeader) TransferLeadership(context.Context, string) error { return nil }
func (l fixedLeader) LeadershipChanged() <-chan struct{}               { return nil }

// TestAnnounceWakesOnlyALeader: a probe that announces a change starts the
// receiver's probe round at once, but only on the raft leader, the one that
// decides; others ignore it.
func TestAnnounceWakesOnlyALeader(t *testing.T) {
	tests := []struct {
		name       string
		leader     bool
		announce   bool
		wantRounds int32
	}{
		{"leader, announced", true, true, 2},
		{"leader, routine probe", true, false, 1},
		{"follower, announced", false, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n, tr := testNode(t, tt.leader)
				n.mesh.HandleProbe("node2", &liveness.Request{From: "node2", Announce: tt.announce})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); _ = n.mesh.Run(ctx) }()
				synctest.Wait() // the first round, and a second one if kicked
				cancel()
				<-done
				if got := tr.n.Load() / 2; got != tt.wantRounds { // two peers a round
					t.Errorf("probe rounds = %d; want %d", got, tt.wantRounds)
				}
			})
		})
	}
}

// TestPeerChangePokesController: a reply that changes a peer's health or
// holding wakes the DC; a first reply or an unchanged one does not.
func TestPeerChangePokesController(t *testing.T) {
	n, _ := testNode(t, true)
	facts := func(healthy, holding bool) liveness.Facts {
		return liveness.Facts{{Name: FactNode, Value: appendFacts(nil, &NodeFacts{Role: "app", Healthy: healthy, Holding: holding})}}
	}
	steps := []struct {
		healthy, holding bool
		first            bool
		want             bool
	}{
		{true, true, true, false},   // first reply: nothing to compare with
		{true, true, false, false},  // unchanged
		{false, true, false, true},  // health changed
		{false, false, false, true}, // holding changed
		{false, false, false, false},
	}
	var prev liveness.Facts
	for i, st := range steps {
		cur := facts(st.healthy, st.holding)
		u := liveness.Update{Peer: "node2", Facts: cur, Sent: time.Now()}
		if !st.first {
			u.Prev = prev
		}
		n.onUpdate(u)
		poked := false
		select {
		case <-n.ctrl:
			poked = true
		default:
		}
		if poked != st.want {
			t.Errorf("step %d: DC woken = %v; want %v", i, poked, st.want)
		}
		prev = cur
	}
}

type recordEvents struct {
	name string
	log  *[]string
}

func (r recordEvents) Promote(epoch uint64) {
	*r.log = append(*r.log, fmt.Sprintf("%s promote %d", r.name, epoch))
}
func (r recordEvents) Demote(epoch uint64) {
	*r.log = append(*r.log, fmt.Sprintf("%s demote %d", r.name, epoch))
}
func (r recordEvents) Fault(epoch uint64, reason string) {
	*r.log = append(*r.log, fmt.Sprintf("%s fault %d %s", r.name, epoch, reason))
}

// TestEventsFanOut: every subscriber gets every transition, in
// subscription order, the one from Options first.
func TestEventsFanOut(t *testing.T) {
	var log []string
	n, _ := testNode(t, false)
	n.events = []Events{recordEvents{"hooks", &log}} // as Options.Events sets it
	n.Subscribe(recordEvents{"delivery", &log})
	n.Subscribe(recordEvents{"files", &log})
	n.emit(func(e Events) { e.Promote(3) })
	n.emit(func(e Events) { e.Fault(3, "lost quorum lease") })
	want := []string{"hooks promote 3", "delivery promote 3", "files promote 3",
		"hooks fault 3 lost quorum lease", "delivery fault 3 lost quorum lease", "files fault 3 lost quorum lease"}
	if !reflect.DeepEqual(log, want) {
		t.Errorf("events = %q; want %q", log, want)
	}
}
