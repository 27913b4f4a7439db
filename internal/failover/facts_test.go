package failover

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strings"
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

// testNode is a failover node whose mesh's streams lead to the test, which
// counts the messages sent on them and never answers, for feeding it
// updates by hand.
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

// countTransport's streams count the messages sent on them.
type countTransport struct{ n atomic.Int32 }

func (c *countTransport) Dial(ctx context.Context, addr string, deadline time.Time) (net.Conn, error) {
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		r := bufio.NewReader(b)
		for {
			n, err := binary.ReadUvarint(r)
			if err != nil {
				return
			}
			if _, err := r.Discard(int(n)); err != nil {
				return
			}
			c.n.Add(1)
		}
	}()
	return a, nil
}

type fixedLeader bool

func (l fixedLeader) Apply(context.Context, state.Command) error       { return nil }
func (l fixedLeader) IsLeader() bool                                   { return bool(l) }
func (l fixedLeader) Leader() (string, string)                         { return "", "" }
func (l fixedLeader) Term() uint64                                     { return 1 }
func (l fixedLeader) TransferLeadership(context.Context, string) error { return nil }
func (l fixedLeader) LeadershipChanged() <-chan struct{}               { return nil }

// TestAnnounceWakesOnlyALeader: a message that announces a change gets an
// answer at once, and on the raft leader, the one that decides, it also
// starts a round of messages to every peer; a routine message gets neither.
func TestAnnounceWakesOnlyALeader(t *testing.T) {
	tests := []struct {
		name     string
		leader   bool
		announce bool
		want     int32 // messages sent after it
	}{
		{"leader, announced", true, true, 3},
		{"leader, routine message", true, false, 0},
		{"follower, announced", false, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n, tr := testNode(t, tt.leader)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); _ = n.mesh.Run(ctx) }()
				synctest.Wait() // the first round: streams dialled and greeted
				before := tr.n.Load()
				n.mesh.Receive("node2", &liveness.Message{From: "node2", ID: 1, Announce: tt.announce})
				synctest.Wait()
				cancel()
				<-done
				if got := tr.n.Load() - before; got != tt.want {
					t.Errorf("messages sent = %d; want %d", got, tt.want)
				}
			})
		})
	}
}

// TestAnswersWakeTheDC: the DC decides once a round's answers are in from
// every other member, in the same wakeup, so it needs no ticker while all
// answer; at once on an answer that changes a peer's health; and on every
// answer while its last decision missed one. A message that answers nothing
// (it may be late) does not count, and a node that does not lead is never
// woken.
func TestAnswersWakeTheDC(t *testing.T) {
	tests := []struct {
		name   string
		leader bool
		short  bool // the DC's last decision missed an answer
		// "-" before a name: a message that answers nothing; "!": an answer
		// whose health differs from the peer's previous one.
		answers []string
		want    bool
	}{
		{"leader, all answered", true, false, []string{"node2", "witness"}, true},
		{"leader, one missing", true, false, []string{"node2"}, false},
		{"leader, one unacknowledging", true, false, []string{"node2", "-witness"}, false},
		{"leader, an answer from the last round", true, false, []string{"witness", "wait", "node2"}, false},
		{"leader, health changed", true, false, []string{"!node2"}, true},
		{"leader, after a short round, late in the round", true, true, []string{"late", "node2"}, true},
		{"leader, after a short round, before the DC's timer", true, true, []string{"node2"}, false},
		{"follower, all answered", false, false, []string{"node2", "witness"}, false},
		{"follower, health changed", false, false, []string{"!node2"}, false},
	}
	facts := func(healthy bool) liveness.Facts {
		return liveness.Facts{{Name: FactNode, Value: appendFacts(nil, &NodeFacts{Role: "app", Healthy: healthy})}}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n, _ := testNode(t, tt.leader)
				n.short = tt.short
				poked := false
				for _, a := range tt.answers {
					switch a {
					case "wait":
						time.Sleep(n.mesh.Interval())
						continue
					case "late": // past the DC's timer in this round
						time.Sleep(n.mesh.Interval() / 2)
						continue
					}
					u := liveness.Update{Peer: strings.TrimLeft(a, "-!"), Facts: facts(true), Sent: time.Now()}
					switch a[0] {
					case '-':
						u.Sent = time.Time{}
					case '!':
						u.Prev, u.Facts = facts(true), facts(false)
					}
					n.onUpdate(u)
					select {
					case <-n.ctrl:
						poked = true
					default:
					}
				}
				if poked != tt.want {
					t.Errorf("DC woken = %v; want %v", poked, tt.want)
				}
			})
		})
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

// TestTransferTarget: the DC hands leadership off the IP holder, to a
// witness first, and from an app node that does not hold the IP only to a
// witness; a witness keeps it.
func TestTransferTarget(t *testing.T) {
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
	tests := []struct {
		name, self, holder string
		unreachable        string
		want               string
	}{
		{"holder, to the witness", "node1", "node1", "", "witness"},
		{"holder, witness down", "node1", "node1", "witness", "node2"},
		{"standby, to the witness", "node2", "node1", "", "witness"},
		{"standby, witness down", "node2", "node1", "witness", ""},
		{"witness keeps it", "witness", "node1", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role := state.RoleApp
			if tt.self == "witness" {
				role = state.RoleWitness
			}
			n := &Node{o: Options{Name: tt.self, Role: role}}
			s := m.View()
			s.Holder.Node = tt.holder
			views := map[string]NodeView{}
			for _, name := range []string{"node1", "node2", "witness"} {
				views[name] = NodeView{Reachable: name != tt.unreachable}
			}
			if got, _ := n.transferTarget(s, views); got != tt.want {
				t.Errorf("transferTarget = %q; want %q", got, tt.want)
			}
		})
	}
}
