package failover

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func testMesh(t testing.TB) *Mesh {
	m := state.New()
	for i, n := range []string{"node1", "node2", "witness"} {
		b, _ := state.Encode(state.AddMember{Member: state.Member{Name: n, Role: state.RoleApp, Address: n}})
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	return NewMesh(MeshOptions{
		Self: "node1", Machine: m, Local: func() ProbeReply { return ProbeReply{Healthy: true} },
		Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond, Margin: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func withPeer(r *http.Request, name string) *http.Request {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: name}}
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	return r
}

func TestProbeHandler(t *testing.T) {
	h := testMesh(t).Handler()
	tests := []struct {
		name   string
		method string
		peer   string // "" = no client certificate
		body   string
		code   int
		want   string
	}{
		{"ok", http.MethodPost, "node2", `{"from":"node2"}`, 200, `"node":"node1"`},
		{"no certificate", http.MethodPost, "", `{"from":"node2"}`, 401, "certificate"},
		{"impersonation", http.MethodPost, "node2", `{"from":"witness"}`, 403, "certificate names"},
		{"bad json", http.MethodPost, "node2", `{"from":`, 400, "bad probe"},
		{"no sender", http.MethodPost, "node2", `{}`, 400, "no sender"},
		{"get", http.MethodGet, "node2", ``, 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, ProbePath, strings.NewReader(tt.body))
			if tt.peer != "" {
				r = withPeer(r, tt.peer)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.want) {
				t.Errorf("%s %s = %d %q; want %d containing %q", tt.method, tt.body, w.Code, w.Body.String(), tt.code, tt.want)
			}
		})
	}
}

func TestProbeRecordsHeardAndReportsAges(t *testing.T) {
	m := testMesh(t)
	r := m.HandleProbe("node2", ProbeRequest{From: "node2"})
	if r.Node != "node1" {
		t.Fatalf("reply from %q", r.Node)
	}
	if age := r.HeardMs["node2"]; age < 0 || age > 50 {
		t.Errorf("heard age of node2 right after its probe = %dms", age)
	}
	if age := r.HeardMs["witness"]; age != -1 {
		t.Errorf("heard age of a peer never heard during the startup grace = %d; want -1", age)
	}
}

func FuzzDecodeProbe(f *testing.F) {
	b, _ := json.Marshal(ProbeRequest{From: "node2", Leader: &LeaderView{Term: 3, Holder: "node1", Epoch: 7, Active: true}})
	f.Add(b)
	f.Add([]byte(`{"from":"x","leader":null}`))
	f.Add([]byte(`[]`))
	m := testMesh(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeProbe(bytes.NewReader(data))
		if err != nil {
			return
		}
		reply := m.HandleProbe(req.From, req)
		if reply.Node != "node1" {
			t.Fatalf("reply names %q", reply.Node)
		}
	})
}

// TestChangedProbeWakesOnlyALeader: a probe marked Changed starts the
// receiver's probe round at once, but only on the raft leader, the one that
// decides; others ignore it.
func TestChangedProbeWakesOnlyALeader(t *testing.T) {
	tests := []struct {
		name     string
		leader   bool
		changed  bool
		wantKick bool
	}{
		{"leader, changed", true, true, true},
		{"leader, routine probe", true, false, false},
		{"follower, changed", false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMesh(t)
			m.leader = func() *LeaderView {
				if tt.leader {
					return &LeaderView{Term: 1}
				}
				return nil
			}
			m.HandleProbe("node2", ProbeRequest{From: "node2", Changed: tt.changed})
			if got := len(m.kick) == 1; got != tt.wantKick {
				t.Errorf("probe round started = %v; want %v", got, tt.wantKick)
			}
		})
	}
}

type replyTransport struct{ reply ProbeReply }

func (r *replyTransport) Probe(context.Context, string, ProbeRequest) (ProbeReply, error) {
	return r.reply, nil
}

// TestPeerChangeCallsBack: a reply that changes a peer's health or holding
// wakes the DC; a first reply or an unchanged one does not.
func TestPeerChangeCallsBack(t *testing.T) {
	m := testMesh(t)
	calls := 0
	m.onPeer = func() { calls++ }
	tr := &replyTransport{}
	m.tr = tr
	peer := state.Member{Name: "node2", Address: "node2"}
	steps := []struct {
		healthy, holding bool
		wantCalls        int
	}{
		{true, true, 0},   // first reply: nothing to compare with
		{true, true, 0},   // unchanged
		{false, true, 1},  // health changed
		{false, false, 2}, // holding changed
		{false, false, 2},
	}
	for i, st := range steps {
		tr.reply = ProbeReply{Node: "node2", Healthy: st.healthy, Holding: st.holding}
		m.inflight["node2"]++
		m.probe(context.Background(), peer, ProbeRequest{From: "node1"})
		if calls != st.wantCalls {
			t.Errorf("step %d: %d callbacks; want %d", i, calls, st.wantCalls)
		}
		time.Sleep(time.Millisecond) // replies are ordered by arrival time
	}
}
