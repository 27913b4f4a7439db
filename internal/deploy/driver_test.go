package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// sim is a cluster of app nodes plus a witness around one state machine:
// commands apply at once, nodes "install" by reporting a new release, and
// the IP moves by committing a new holder.
type sim struct {
	t      *testing.T
	m      *state.Machine
	idx    uint64
	now    time.Time
	mu     sync.Mutex
	leader bool
	calls  []string                   // "install node2 0.2.0", "move node2", "hook pre node2"
	store  map[string]map[string]bool // node → digests it has
	fail   map[string]error           // "install node2 0.2.0" → error
	down   map[string]bool            // unreachable nodes
	// downAfterMove makes a node unreachable once the IP moved off it.
	downAfterMove string
	failAt        int // fail the Nth apply (0: never), to kill the driver
	applies       int
	healthy       map[string]bool
	fetched       FetchResult
	release       map[string]map[string]string // node → package → version, as "dpkg" has it
}

func newSim(t *testing.T, apps ...string) *sim {
	s := &sim{t: t, m: state.New(), now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), leader: true,
		store: map[string]map[string]bool{}, fail: map[string]error{}, down: map[string]bool{}, healthy: map[string]bool{},
		release: map[string]map[string]string{}}
	for _, n := range apps {
		s.must(state.AddMember{Member: state.Member{Name: n, Role: state.RoleApp, Address: n + ":7946"}})
		s.store[n] = map[string]bool{"v1digest": true}
		s.release[n] = map[string]string{"site": "0.1.0-1"}
		s.must(state.SetInstalled{Node: n, Releases: map[string]state.Release{"site": {Package: "site", Version: "0.1.0-1", Digest: "v1digest"}}})
		s.healthy[n] = true
	}
	s.must(state.AddMember{Member: state.Member{Name: "witness", Role: state.RoleWitness, Address: "w:7946"}})
	s.healthy["witness"] = true
	s.must(state.SetHolder{Node: apps[0], PrevEpoch: 0, Active: true, At: s.now})
	s.must(state.SetDeployPolicy{Policy: state.DeployPolicy{Packages: []string{"site"}, Soak: time.Second, GateTimeout: time.Minute, Auto: true}})
	s.fetched = FetchResult{Package: "site", Version: "0.2.0-1", Digest: "v2digest", Size: 1000}
	return s
}

func (s *sim) must(c state.Command) {
	s.t.Helper()
	s.idx++
	if err := s.m.Apply(s.idx, mustEncode(s.t, c)); err != nil {
		s.t.Fatalf("apply %s: %v", c.Type(), err)
	}
}

func mustEncode(t *testing.T, c state.Command) []byte {
	b, err := state.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Cluster.
func (s *sim) Apply(_ context.Context, c state.Command) error {
	s.mu.Lock()
	s.applies++
	if s.failAt > 0 && s.applies == s.failAt {
		s.leader = false
		s.mu.Unlock()
		return errors.New("not the leader")
	}
	s.mu.Unlock()
	s.idx++
	return s.m.Apply(s.idx, mustEncode(s.t, c))
}
func (s *sim) IsLeader() bool                     { s.mu.Lock(); defer s.mu.Unlock(); return s.leader }
func (s *sim) LeadershipChanged() <-chan struct{} { return make(chan struct{}) }

// Nodes.
func (s *sim) Fetch(_ context.Context, node string, req FetchRequest) (FetchResult, error) {
	s.calls = append(s.calls, "fetch "+node)
	if err := s.fail["fetch"]; err != nil {
		return FetchResult{}, err
	}
	s.store[node][s.fetched.Digest] = true
	return s.fetched, nil
}

func (s *sim) Install(_ context.Context, node string, req InstallRequest) (InstallResult, error) {
	call := fmt.Sprintf("install %s %s", node, req.Version)
	s.calls = append(s.calls, call)
	if s.down[node] {
		return InstallResult{}, errors.New("dial: connection refused")
	}
	if !s.store[node][req.Digest] {
		if !slices.ContainsFunc(req.From, func(p string) bool { return s.store[p][req.Digest] }) {
			return InstallResult{}, fmt.Errorf("%s: no peer has %s (from %v)", node, req.Digest, req.From)
		}
		s.store[node][req.Digest] = true
	}
	// dpkg installs, the node reports, then the gate runs.
	s.release[node]["site"] = req.Version
	s.must(state.SetInstalled{Node: node, Releases: map[string]state.Release{"site": {Package: "site", Version: req.Version, Digest: req.Digest}}})
	if err := s.fail[call]; err != nil {
		return InstallResult{}, refused{err}
	}
	return InstallResult{Version: req.Version, Took: time.Second}, nil
}

func (s *sim) Hook(_ context.Context, node string, req HookRequest) error {
	call := "hook " + req.Hook + " " + node
	s.calls = append(s.calls, call)
	if err := s.fail[call]; err != nil {
		return refused{err}
	}
	return nil
}

// refused is a node's answer that the release failed (HTTP 422).
type refused struct{ err error }

func (r refused) Error() string   { return r.err.Error() }
func (r refused) HTTPStatus() int { return 422 }

// Mover.
func (s *sim) Switchover(_ context.Context, to string, _ time.Duration) error {
	s.calls = append(s.calls, "move "+to)
	h := s.m.View().Holder
	if h.Node == s.downAfterMove {
		s.down[h.Node] = true
	}
	s.must(state.SetHolder{Node: to, PrevEpoch: h.Epoch, Active: true, At: s.now, Drain: true})
	return nil
}

func (s *sim) health(time.Time) map[string]NodeHealth {
	out := map[string]NodeHealth{}
	for n, ok := range s.healthy {
		out[n] = NodeHealth{Reachable: !s.down[n], Healthy: ok && !s.down[n]}
	}
	return out
}

func (s *sim) driver(name string) *Driver {
	return NewDriver(DriverOptions{Name: name, Cluster: s, Machine: s.m, Nodes: s, Mover: s, Health: s.health,
		Now: func() time.Time { return s.now }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func (s *sim) receive(id string, force bool) {
	s.now = s.now.Add(time.Second)
	s.must(state.ReceiveDelivery{Delivery: state.Delivery{ID: id, Source: "gitlab", Kind: "gitlab", ReceivedBy: "node1",
		ReceivedAt: s.now, Keys: []string{"k/" + id}, Force: force}})
}

// run steps the driver until nothing is left to do (or it loses leadership).
func (s *sim) run(d *Driver) {
	s.t.Helper()
	for i := 0; i < 100; i++ {
		dep := s.m.View().Deploy()
		if _, queued := dep.NextQueued(); dep.Rollout == nil && !queued {
			return
		}
		if !s.IsLeader() {
			return
		}
		s.now = s.now.Add(5 * time.Second)
		if wait := d.step(context.Background()); wait > time.Minute {
			return
		}
		if _, queued := s.m.View().Deploy().NextQueued(); s.m.View().Deploy().Rollout == nil && queued && d.holdBack(s.m.View(), mustNext(s.m)) != "" {
			return
		}
	}
	s.t.Fatal("driver did not settle in 100 steps")
}

func mustNext(m *state.Machine) state.Delivery {
	d, _ := m.View().Deploy().NextQueued()
	return d
}

func (s *sim) versions() string {
	var out []string
	for _, n := range s.m.View().Apps() {
		r, _ := s.m.View().Deploy().Running(n, "site")
		out = append(out, n+"="+r.Version)
	}
	return strings.Join(out, " ")
}

func TestRollouts(t *testing.T) {
	tests := []struct {
		name      string
		apps      []string
		setup     func(s *sim)
		wantCalls []string
		wantOut   string // delivery status
		wantVers  string
		wantHold  string
		wantBad   bool
	}{
		{
			name:      "standby first, planned move, then the former holder",
			apps:      []string{"node1", "node2"},
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "move node2", "install node1 0.2.0-1"},
			wantOut:   state.DeliveryDeployed, wantVers: "node1=0.2.0-1 node2=0.2.0-1", wantHold: "node2",
		},
		{
			name:      "three nodes: both standbys before the move",
			apps:      []string{"node1", "node2", "node3"},
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "install node3 0.2.0-1", "move node2", "install node1 0.2.0-1"},
			wantOut:   state.DeliveryDeployed, wantVers: "node1=0.2.0-1 node2=0.2.0-1 node3=0.2.0-1", wantHold: "node2",
		},
		{
			name:      "a standby failing its gate rolls back; the holder is never touched",
			apps:      []string{"node1", "node2"},
			setup:     func(s *sim) { s.fail["install node2 0.2.0-1"] = errors.New("health gate: /healthz answered 500") },
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "install node2 0.1.0-1"},
			wantOut:   state.DeliveryRolledBack, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1", wantBad: true,
		},
		{
			name:  "the former holder failing after the move: the IP returns to a node on the old release",
			apps:  []string{"node1", "node2"},
			setup: func(s *sim) { s.fail["install node1 0.2.0-1"] = errors.New("health gate: timed out") },
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "move node2", "install node1 0.2.0-1",
				"install node1 0.1.0-1", "move node1", "install node2 0.1.0-1"},
			wantOut: state.DeliveryRolledBack, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1", wantBad: true,
		},
		{
			name: "pre hook runs once on the first upgraded node before the move; post at the end",
			apps: []string{"node1", "node2"},
			setup: func(s *sim) {
				s.must(state.SetDeployPolicy{Policy: state.DeployPolicy{Packages: []string{"site"}, Auto: true, PreHook: true, PostHook: true}})
			},
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "hook pre node2", "move node2", "install node1 0.2.0-1", "hook post node2"},
			wantOut:   state.DeliveryDeployed, wantVers: "node1=0.2.0-1 node2=0.2.0-1", wantHold: "node2",
		},
		{
			name: "a failing pre hook rolls back before the IP moves",
			apps: []string{"node1", "node2"},
			setup: func(s *sim) {
				s.must(state.SetDeployPolicy{Policy: state.DeployPolicy{Packages: []string{"site"}, Auto: true, PreHook: true}})
				s.fail["hook pre node2"] = errors.New("migration failed")
			},
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "hook pre node2", "install node2 0.1.0-1"},
			wantOut:   state.DeliveryRolledBack, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1", wantBad: true,
		},
		{
			name: "the former holder unreachable after the move: rolled back as far as possible, the release not blamed",
			apps: []string{"node1", "node2", "node3"},
			setup: func(s *sim) {
				s.fail["install node1 0.2.0-1"] = nil
				s.downAfterMove = "node1"
			},
			wantCalls: []string{"fetch node1", "install node2 0.2.0-1", "install node3 0.2.0-1", "move node2", "install node1 0.2.0-1",
				"install node3 0.1.0-1", "move node3", "install node2 0.1.0-1"},
			wantOut: state.DeliveryRolledBack, wantVers: "node1=0.1.0-1 node2=0.1.0-1 node3=0.1.0-1", wantHold: "node3", wantBad: false,
		},
		{
			name:      "an older version is refused before any install",
			apps:      []string{"node1", "node2"},
			setup:     func(s *sim) { s.fetched.Version = "0.0.9-1" },
			wantCalls: []string{"fetch node1"},
			wantOut:   state.DeliveryFailed, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1",
		},
		{
			name:      "a failed fetch (bad checksum) installs nothing",
			apps:      []string{"node1", "node2"},
			setup:     func(s *sim) { s.fail["fetch"] = errors.New("artifact SHA-256 does not match") },
			wantCalls: []string{"fetch node1"},
			wantOut:   state.DeliveryFailed, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1",
		},
		{
			name: "a release that failed before is not deployed again",
			apps: []string{"node1", "node2"},
			setup: func(s *sim) {
				s.fail["install node2 0.2.0-1"] = errors.New("gate")
				s.run(s.driver("witness"))
				delete(s.fail, "install node2 0.2.0-1")
				s.calls = nil
				s.receive("d-2", false)
			},
			wantCalls: []string{"fetch node1"},
			wantOut:   state.DeliveryFailed, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1", wantBad: true,
		},
		{
			name:      "a degraded cluster holds an automatic deploy back",
			apps:      []string{"node1", "node2"},
			setup:     func(s *sim) { s.healthy["node2"] = false },
			wantCalls: nil,
			wantOut:   state.DeliveryQueued, wantVers: "node1=0.1.0-1 node2=0.1.0-1", wantHold: "node1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, tt.apps...)
			s.receive("d-1", false)
			if tt.setup != nil {
				tt.setup(s)
			}
			s.run(s.driver("witness"))
			if !slices.Equal(s.calls, tt.wantCalls) {
				t.Errorf("calls:\n  %q\nwant\n  %q", s.calls, tt.wantCalls)
			}
			dep := s.m.View().Deploy()
			last := dep.Deliveries[len(dep.Deliveries)-1]
			if last.Status != tt.wantOut {
				t.Errorf("delivery %s: %s (%s); want %s", last.ID, last.Status, last.Reason, tt.wantOut)
			}
			if got := s.versions(); got != tt.wantVers {
				t.Errorf("versions %q; want %q", got, tt.wantVers)
			}
			if h := s.m.View().Holder.Node; h != tt.wantHold {
				t.Errorf("holder %s; want %s", h, tt.wantHold)
			}
			if _, bad := dep.Bad["v2digest"]; bad != tt.wantBad {
				t.Errorf("release marked bad = %v; want %v", bad, tt.wantBad)
			}
			if last.Finished() && dep.Rollout != nil {
				t.Errorf("delivery finished but a rollout is still open: %+v", dep.Rollout)
			}
			checkJournal(t, dep)
		})
	}
}

// checkJournal asserts every journaled step was closed and the final
// versions are what the last install steps of each node said.
func checkJournal(t *testing.T, dep *state.Deploy) {
	t.Helper()
	for _, r := range dep.History {
		for i, st := range r.Steps {
			if st.State == state.StepStarted {
				t.Errorf("rollout %s step %d (%s %s) never ended", r.ID, st.N, st.Action, st.Node)
			}
			if st.N != r.Steps[0].N+i {
				t.Errorf("rollout %s: step numbers not consecutive: %d at %d", r.ID, st.N, i)
			}
		}
	}
}

func TestNewestQueuedWinsAndOthersAreSuperseded(t *testing.T) {
	s := newSim(t, "node1", "node2")
	s.receive("d-1", false)
	s.receive("d-2", false)
	s.receive("d-3", false)
	s.run(s.driver("witness"))
	dep := s.m.View().Deploy()
	got := map[string]string{}
	for _, d := range dep.Deliveries {
		got[d.ID] = d.Status
	}
	want := map[string]string{"d-1": state.DeliverySuperseded, "d-2": state.DeliverySuperseded, "d-3": state.DeliveryDeployed}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("statuses %v; want %v", got, want)
	}
	if n := strings.Count(strings.Join(s.calls, ","), "fetch"); n != 1 {
		t.Errorf("%d fetches; want 1 (one rollout): %v", n, s.calls)
	}
}

func TestANewLeaderResumesTheRollout(t *testing.T) {
	for failAt := 1; failAt <= 12; failAt++ {
		t.Run(fmt.Sprint("driver dies at commit ", failAt), func(t *testing.T) {
			s := newSim(t, "node1", "node2")
			s.receive("d-1", false)
			s.failAt = failAt
			s.run(s.driver("node2"))
			interrupted := s.m.View().Deploy().Rollout != nil
			// A new leader takes over.
			s.mu.Lock()
			s.leader, s.failAt = true, 0
			s.mu.Unlock()
			s.run(s.driver("witness"))
			dep := s.m.View().Deploy()
			if d, _ := dep.Delivery("d-1"); d.Status != state.DeliveryDeployed {
				t.Fatalf("delivery %s (%s); want deployed", d.Status, d.Reason)
			}
			if got := s.versions(); got != "node1=0.2.0-1 node2=0.2.0-1" {
				t.Errorf("versions %q", got)
			}
			// The journal matches what each node runs.
			for _, n := range []string{"node1", "node2"} {
				r, _ := dep.Running(n, "site")
				if s.release[n]["site"] != r.Version {
					t.Errorf("%s: dpkg has %s, the state says %s", n, s.release[n]["site"], r.Version)
				}
			}
			if dep.History[len(dep.History)-1].Driver != "witness" && interrupted {
				t.Errorf("the finished rollout's driver is %s; want the new leader", dep.History[len(dep.History)-1].Driver)
			}
		})
	}
}

func TestHoldBack(t *testing.T) {
	s := newSim(t, "node1", "node2")
	healthy := s.health(s.now)
	del := state.Delivery{ID: "d"}
	if why := HoldBack(s.now, s.m.View(), del, healthy); why != "" {
		t.Fatalf("healthy cluster held back: %s", why)
	}
	s.must(state.SetDeployLock{Lock: &state.Lock{Message: "release freeze", By: "node1"}})
	if why := HoldBack(s.now, s.m.View(), del, healthy); !strings.Contains(why, "release freeze") {
		t.Errorf("locked: %q", why)
	}
	del.Force = true
	if why := HoldBack(s.now, s.m.View(), del, healthy); why != "" {
		t.Errorf("forced delivery held back: %s", why)
	}
	s.must(state.SetDeployLock{})
	del.Force = false
	s.must(state.SetMode{Mode: state.ModeMaintenance})
	if why := HoldBack(s.now, s.m.View(), del, healthy); !strings.Contains(why, "maintenance") {
		t.Errorf("maintenance: %q", why)
	}
	s.must(state.SetMode{Mode: state.ModeAuto})
	s.must(state.SetDeployPolicy{Policy: state.DeployPolicy{Packages: []string{"site"}}})
	if why := HoldBack(s.now, s.m.View(), del, healthy); !strings.Contains(why, "auto = false") {
		t.Errorf("auto off: %q", why)
	}
	del.Manual = true
	if why := HoldBack(s.now, s.m.View(), del, healthy); why != "" {
		t.Errorf("manual deploy with auto off held back: %s", why)
	}
}
