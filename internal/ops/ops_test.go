package ops

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/health"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/pki"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

type fakeCluster struct {
	m       *state.Machine
	index   uint64
	left    bool
	removed string
	tokens  []int
}

func (f *fakeCluster) Apply(ctx context.Context, cmd state.Command) error {
	b, err := state.Encode(cmd)
	if err != nil {
		return err
	}
	f.index++
	return f.m.Apply(f.index, b)
}
func (f *fakeCluster) RaftStats() cluster.Stats {
	return cluster.Stats{State: "Follower", Term: 3, Leader: "node2", LastContact: t0.Add(-40 * time.Millisecond)}
}
func (f *fakeCluster) Servers(ctx context.Context) ([]cluster.Server, error) {
	return []cluster.Server{{Name: "node1", Suffrage: "voter"}, {Name: "node2", Suffrage: "voter"},
		{Name: "node3", Suffrage: "voter"}, {Name: "witness", Suffrage: "voter"}}, nil
}
func (f *fakeCluster) CreateToken(ctx context.Context, ttl time.Duration, uses int, role string) (pki.Token, error) {
	f.tokens = append(f.tokens, uses)
	return pki.Token{}, nil
}
func (f *fakeCluster) Leave(ctx context.Context) error { f.left = true; return nil }
func (f *fakeCluster) RemoveServer(ctx context.Context, name string) error {
	f.removed = name
	return nil
}

type fakeFailover struct {
	st         failover.Status
	handOffErr error
}

func (f *fakeFailover) Status() failover.Status { return f.st }
func (f *fakeFailover) Switchover(ctx context.Context, to string, timeout time.Duration) (failover.Move, error) {
	if to == "witness" {
		return failover.Move{}, errors.New("switchover: \"witness\" is a witness and cannot hold the IP")
	}
	return failover.Move{From: "node1", To: to, Epoch: 5, Took: 30 * time.Millisecond}, nil
}
func (f *fakeFailover) HandOff(ctx context.Context, timeout time.Duration) (failover.Move, bool, error) {
	return failover.Move{}, f.handOffErr == nil, f.handOffErr
}

func newService(t *testing.T) (*Service, *fakeCluster, *fakeFailover) {
	t.Helper()
	fc := &fakeCluster{m: state.New()}
	for _, m := range []state.Member{
		{Name: "node1", Role: state.RoleApp}, {Name: "node2", Role: state.RoleApp},
		{Name: "node3", Role: state.RoleApp, Pending: true}, {Name: "witness", Role: state.RoleWitness},
	} {
		if err := fc.Apply(context.Background(), state.AddMember{Member: m}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []state.Command{
		state.SetHolder{Node: "node2", Active: true, Reason: "initial placement", At: t0.Add(-time.Hour)},
		state.SetHolder{Node: "node1", PrevEpoch: 1, Active: true, Reason: "holder lost", FaultAt: t0.Add(-time.Minute), At: t0.Add(-time.Minute + 600*time.Millisecond)},
	} {
		if err := fc.Apply(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	ff := &fakeFailover{st: failover.Status{
		Holding: true, LeaseValid: true,
		Local: failover.NodeFacts{Healthy: true, Holding: true, Checks: []health.CheckStatus{{Name: "web", Type: "http", Healthy: true}}},
		Peers: map[string]failover.PeerStatus{
			"node2":   {Reply: failover.NodeFacts{Healthy: false, Checks: []health.CheckStatus{{Name: "web", Healthy: false, Output: "503"}}}, Age: 30 * time.Millisecond},
			"witness": {Reply: failover.NodeFacts{Healthy: true}, Age: 5 * time.Second},
		},
	}}
	s := New(Options{Node: "node1", Role: state.RoleApp, Version: "1.2.3", VIPAddress: "10.0.0.100/24", VIPProvider: "linux",
		Machine: fc.m, Cluster: fc, Failover: ff, Now: func() time.Time { return t0 }})
	return s, fc, ff
}

func TestStatus(t *testing.T) {
	s, _, _ := newService(t)
	st := s.Status(context.Background())
	if st.Holder.Node != "node1" || st.Holder.Epoch != 2 || !st.VIP.HeldHere || st.Raft.LastContactMs != 40 {
		t.Fatalf("status = %+v", st)
	}
	if st.LastFailover == nil || st.LastFailover.From != "node2" || st.LastFailover.DurationMs != 600 {
		t.Errorf("last failover = %+v; want node2 -> node1 in 600ms", st.LastFailover)
	}
	want := map[string]struct {
		suffrage           string
		reachable, healthy bool
		checks             int
	}{
		"node1":   {"voter", true, true, 1},     // this node: its own reply
		"node2":   {"voter", true, false, 1},    // a fresh peer reply
		"node3":   {"pending", false, false, 0}, // joined, not counted; never heard
		"witness": {"voter", false, false, 0},   // its last reply is too old
	}
	if len(st.Members) != len(want) {
		t.Fatalf("members = %+v", st.Members)
	}
	for _, m := range st.Members {
		w := want[m.Name]
		if m.Suffrage != w.suffrage || m.Reachable != w.reachable || m.Healthy != w.healthy || len(m.Checks) != w.checks {
			t.Errorf("%s = %+v; want %+v", m.Name, m, w)
		}
	}
}

func TestOperationsRefuse(t *testing.T) {
	s, fc, ff := newService(t)
	ctx := context.Background()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"bad mode", s.SetMode(ctx, "off"), `mode "off"`},
		{"remove self", s.Remove(ctx, "node1"), "tandem leave"},
		{"remove stranger", s.Remove(ctx, "node9"), "not a member"},
		{"token without lifetime", func() error { _, err := s.CreateToken(ctx, localapi.TokenRequest{}); return err }(), "lifetime"},
		{"negative uses", func() error {
			_, err := s.CreateToken(ctx, localapi.TokenRequest{TTL: time.Hour, Uses: -2})
			return err
		}(), "uses"},
	}
	for _, tt := range tests {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: err = %v; want one containing %q", tt.name, tt.err, tt.want)
		}
	}
	if fc.removed != "" || len(fc.tokens) != 0 {
		t.Errorf("a refused operation reached the cluster: removed %q, tokens %v", fc.removed, fc.tokens)
	}
	ff.handOffErr = errors.New("no healthy standby")
	if err := s.Leave(ctx); err == nil || fc.left {
		t.Errorf("Leave with a failed hand-off = %v, left=%v; want refused before leaving", err, fc.left)
	}
}

func TestRoutes(t *testing.T) {
	s, fc, _ := newService(t)
	h, err := localapi.Handler(s.Routes())
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec
	}
	if rec := call("POST", "/v1/mode", `{"mode":"maintenance"}`); rec.Code != http.StatusOK {
		t.Fatalf("mode: %d %s", rec.Code, rec.Body)
	}
	if fc.m.View().Mode != state.ModeMaintenance {
		t.Error("maintenance was not applied")
	}
	if rec := call("POST", "/v1/switchover", `{"to":"witness"}`); rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "witness") {
		t.Errorf("switchover to the witness: %d %s; want 409 naming it", rec.Code, rec.Body)
	}
	if rec := call("POST", "/v1/tokens", `{"ttl":3600000000000,"uses":1,"role":"app"}`); rec.Code != http.StatusOK || len(fc.tokens) != 1 || fc.tokens[0] != 1 {
		t.Errorf("token: %d %s, uses %v", rec.Code, rec.Body, fc.tokens)
	}
	if rec := call("GET", "/v1/status", ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"holder":{"node":"node1"`) {
		t.Errorf("status: %d %s", rec.Code, rec.Body)
	}
}

func TestTokens(t *testing.T) {
	s, fc, _ := newService(t)
	ctx := context.Background()
	for _, tk := range []state.Token{
		{ID: "old", SecretHash: "h1", UsesLeft: 1, Created: t0.Add(-48 * time.Hour), Expires: t0.Add(-24 * time.Hour), Role: "app"},
		{ID: "new", SecretHash: "h2", UsesLeft: -1, Created: t0.Add(-time.Hour), Expires: t0.Add(time.Hour)},
	} {
		if err := fc.Apply(ctx, state.AddToken{Token: tk}); err != nil {
			t.Fatal(err)
		}
	}
	l := s.ListTokens()
	if len(l.Tokens) != 2 || l.Tokens[0].ID != "old" || !l.Tokens[0].Expired || l.Tokens[1].Expired || l.Tokens[1].Role != "" {
		t.Fatalf("ListTokens = %+v; want old (expired) then new", l.Tokens)
	}
	if b, _ := json.Marshal(l); strings.Contains(string(b), "h1") || strings.Contains(string(b), "secret") {
		t.Errorf("the token list shows secret hashes: %s", b)
	}
	if err := s.RevokeToken(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if _, ok := fc.m.View().Tokens["old"]; ok {
		t.Error("revoked token still in the state")
	}
	if err := s.RevokeToken(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "tandem token list") {
		t.Errorf("revoking an unknown token = %v", err)
	}
	if _, err := s.CreateToken(ctx, localapi.TokenRequest{TTL: time.Hour, Uses: 1, Role: "admin"}); err == nil || !strings.Contains(err.Error(), "role") {
		t.Errorf("a token for role admin = %v; want refused", err)
	}
	w := New(Options{Node: "witness", Role: state.RoleWitness, Machine: fc.m, Cluster: fc, Failover: &fakeFailover{}, Now: func() time.Time { return t0 }})
	for name, err := range map[string]error{
		"token": func() error {
			_, err := w.CreateToken(ctx, localapi.TokenRequest{TTL: time.Hour, Uses: 1, Role: "app"})
			return err
		}(),
		"revoke":      w.RevokeToken(ctx, "new"),
		"maintenance": w.SetMode(ctx, state.ModeMaintenance),
		"remove":      w.Remove(ctx, "node2"),
	} {
		if err == nil || !strings.Contains(err.Error(), "app node") {
			t.Errorf("%s on the witness = %v; want refused, pointing to an app node", name, err)
		}
	}
}
