package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestHandlerAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		n.move("a", true, false)
		h := n.nodes["b"].c.Handler(func(r *http.Request) string { return r.Header.Get("X-Peer") })
		tests := []struct {
			name, peer string
			req        SyncRequest
			body       string
			want       int
		}{
			{"the holder", "a", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusOK},
			{"a stale epoch", "a", SyncRequest{Dir: dir, Epoch: 0}, "", http.StatusConflict},
			{"not the holder", "b", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
			{"undeclared", "a", SyncRequest{Dir: "/etc", Epoch: 1}, "", http.StatusConflict},
			{"garbage", "a", SyncRequest{}, "{", http.StatusBadRequest},
		}
		for _, tt := range tests {
			body := []byte(tt.body)
			if tt.body == "" {
				body, _ = json.Marshal(tt.req)
			}
			r := httptest.NewRequestWithContext(context.Background(), "POST", SyncPath, bytes.NewReader(body))
			r.Header.Set("X-Peer", tt.peer)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("%s: status %d (%s); want %d", tt.name, w.Code, w.Body, tt.want)
			}
		}
		// Serving: only the source, for its epoch, to an app member.
		if _, err := n.nodes["a"].c.Serve("b", dir, 1); err != nil {
			t.Errorf("the holder refused to serve its standby: %v", err)
		}
		if _, err := n.nodes["a"].c.Serve("witness", dir, 1); err == nil {
			t.Error("the holder served the witness")
		}
		if _, err := n.nodes["b"].c.Serve("a", dir, 1); err == nil {
			t.Error("a standby served")
		}
		still, err := n.nodes["a"].c.Serve("b", dir, 1)
		if err != nil {
			t.Fatal(err)
		}
		n.move("b", true, false)
		if still() {
			t.Error("a transfer goes on after the holder moved")
		}
	})
}

// TestWhoIsRefused is the attacker's view of both file endpoints on the
// cluster port. The cluster's listener already refuses outsiders (a
// CA-signed certificate whose key is not pinned, a removed member's
// certificate: internal/cluster TestCAKeyAloneIsNotMembership); these
// are the members it lets through, and what they may not do here.
func TestWhoIsRefused(t *testing.T) {
	n := newFakeNet(t, "a", "b", "c")
	n.commit(state.AddMember{Member: state.Member{Name: "gone", Role: state.RoleApp, Address: "gone"}})
	n.commit(state.RemoveMember{Name: "gone"})
	n.commit(state.AddMember{Member: state.Member{Name: "joining", Role: state.RoleApp, Address: "joining", Pending: true}})
	n.move("a", true, false) // a holds epoch 1; b and c receive
	n.write("a", "f.jpg", "f")

	// POST /v1/files/sync: a source asks a receiver to pull from it.
	handler := func(node string) http.Handler {
		return n.nodes[node].c.Handler(func(r *http.Request) string { return r.Header.Get("X-Peer") })
	}
	syncTests := []struct {
		name, on, peer string
		req            SyncRequest
		body           string
		want           int
	}{
		{"the holder, its epoch (the control)", "b", "a", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusOK},
		{"the holder with a skip list", "b", "a", SyncRequest{Dir: dir, Epoch: 1, Skip: []string{"/app.db", "/app.db-wal"}}, "", http.StatusOK},
		{"the holder, an older epoch", "b", "a", SyncRequest{Dir: dir, Epoch: 0}, "", http.StatusConflict},
		{"the holder, a future epoch", "b", "a", SyncRequest{Dir: dir, Epoch: 2}, "", http.StatusConflict},
		{"a witness", "b", "witness", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
		{"another standby", "b", "c", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
		{"a peer sending to the holder", "a", "b", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
		{"a removed node", "b", "gone", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
		{"no name (no certificate)", "b", "", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
		{"itself", "b", "b", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
		{"an undeclared directory", "b", "a", SyncRequest{Dir: "/etc", Epoch: 1}, "", http.StatusConflict},
		{"a path escaping the directory", "b", "a", SyncRequest{Dir: dir + "/../../etc", Epoch: 1}, "", http.StatusConflict},
		{"a directory below the declared one", "b", "a", SyncRequest{Dir: dir + "/sub", Epoch: 1}, "", http.StatusConflict},
		{"a relative directory", "b", "a", SyncRequest{Dir: "srv/uploads", Epoch: 1}, "", http.StatusConflict},
		{"a skip that clears the excludes", "b", "a", SyncRequest{Dir: dir, Epoch: 1, Skip: []string{"!"}}, "", http.StatusBadRequest},
		{"a skip that includes", "b", "a", SyncRequest{Dir: dir, Epoch: 1, Skip: []string{"+ *"}}, "", http.StatusBadRequest},
		{"an unanchored skip", "b", "a", SyncRequest{Dir: dir, Epoch: 1, Skip: []string{"*"}}, "", http.StatusBadRequest},
		{"too many skips", "b", "a", SyncRequest{Dir: dir, Epoch: 1, Skip: slices.Repeat([]string{"/x"}, maxSkip+1)}, "", http.StatusBadRequest},
		{"not JSON", "b", "a", SyncRequest{}, "{", http.StatusBadRequest},
		{"a body over 1 MiB", "b", "a", SyncRequest{}, `{"dir":"` + strings.Repeat("a", 2<<20) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range syncTests {
		t.Run("sync/"+tt.name, func(t *testing.T) {
			n.mu.Lock()
			delete(n.nodes[tt.on].tree, "f.jpg")
			n.mu.Unlock()
			body := []byte(tt.body)
			if tt.body == "" {
				body, _ = json.Marshal(tt.req)
			}
			r := httptest.NewRequestWithContext(t.Context(), "POST", SyncPath, bytes.NewReader(body))
			r.Header.Set("X-Peer", tt.peer)
			w := httptest.NewRecorder()
			handler(tt.on).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d (%s); want %d", w.Code, w.Body, tt.want)
			}
			pulled := n.tree(tt.on)["f.jpg"] == "f"
			if pulled != (tt.want == http.StatusOK) {
				t.Errorf("pulled = %v with status %d", pulled, w.Code)
			}
			if tt.want != http.StatusOK && !strings.Contains(w.Body.String(), `"error"`) {
				t.Errorf("a refusal without its reason: %s", w.Body)
			}
		})
	}

	// The rsync stream: a receiver asks the source to serve a pull.
	serveTests := []struct {
		name, on, peer, dir string
		epoch               uint64
		ok                  bool
	}{
		{"a standby, the current epoch (the control)", "a", "b", dir, 1, true},
		{"a standby, with a trailing slash", "a", "c", dir + "/", 1, true},
		{"a witness", "a", "witness", dir, 1, false},
		{"a removed node", "a", "gone", dir, 1, false},
		{"an outsider", "a", "x", dir, 1, false},
		{"a node that joined, not promoted yet", "a", "joining", dir, 1, false},
		{"no name", "a", "", dir, 1, false},
		{"an older epoch", "a", "b", dir, 0, false},
		{"a standby asked to serve", "b", "c", dir, 1, false},
		{"a path escaping the directory", "a", "b", dir + "/../../etc", 1, false},
		{"the parent directory", "a", "b", "/srv", 1, false},
		{"an undeclared directory", "a", "b", "/etc/", 1, false},
	}
	for _, tt := range serveTests {
		t.Run("serve/"+tt.name, func(t *testing.T) {
			still, err := n.nodes[tt.on].c.Serve(tt.peer, tt.dir, tt.epoch)
			if (err == nil) != tt.ok {
				t.Fatalf("Serve(%s, %s, %d) on %s = %v; want ok=%v", tt.peer, tt.dir, tt.epoch, tt.on, err, tt.ok)
			}
			if tt.ok && !still() {
				t.Error("still() is false while nothing changed")
			}
		})
	}

	// A node that held an older epoch: a moved on, still configured
	// in epoch 1 because it has not noticed (it is cut off), and its
	// log lags. It may not serve, and nobody takes its requests.
	still, err := n.nodes["a"].c.Serve("b", dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.nodes["a"].lagging = true
	n.mu.Unlock()
	n.move("b", true, false)
	n.mu.Lock()
	n.nodes["a"].held = Held{Holding: true, Epoch: 1}
	n.mu.Unlock()
	if _, ok := MaySend("a", n.nodes["a"].machine.View().Holder, Held{Holding: true, Epoch: 1}); !ok {
		t.Fatal("the test's lagging a should still believe it holds epoch 1")
	}
	for _, recv := range []string{"b", "c"} {
		if _, err := n.nodes[recv].c.Receive(t.Context(), "a", SyncRequest{Dir: dir, Epoch: 1}); !errors.Is(err, ErrNotSource) {
			t.Errorf("%s took a request from the old holder of epoch 1: %v", recv, err)
		}
	}
	// Once a's log has the move (it still has the IP configured), its
	// transfer in flight is cut and it serves nothing more.
	n.mu.Lock()
	n.nodes["a"].lagging = false
	n.mu.Unlock()
	n.catchUp()
	if still() {
		t.Error("the old holder's transfer goes on after it learnt of epoch 2")
	}
	if _, err := n.nodes["a"].c.Serve("c", dir, 1); !errors.Is(err, ErrNotSource) {
		t.Errorf("the old holder serves epoch 1 after it learnt of epoch 2: %v", err)
	}
}

// FuzzSyncHandler feeds the sync endpoint any body from the holder: it
// never panics, answers 200 only for the declared directory in the
// holder's epoch, and what it pulled then left out only anchored paths.
func FuzzSyncHandler(f *testing.F) {
	f.Add([]byte(`{"dir":"/srv/uploads","epoch":1,"skip":["/app.db","/app.db-wal"]}`))
	f.Add([]byte(`{"dir":"/srv/uploads/../../etc","epoch":1}`))
	f.Add([]byte(`{"dir":"/srv/uploads","epoch":1,"skip":["!"]}`))
	f.Add([]byte(`{"dir":"/srv/uploads/","epoch":18446744073709551615}`))
	f.Add([]byte(`[]`))
	n := newFakeNet(f, "a", "b")
	n.move("a", true, false)
	var pulls []Pull
	n.nodes["b"].c.o.Transfer = recordTransfer{&pulls}
	h := n.nodes["b"].c.Handler(func(*http.Request) string { return "a" })
	f.Fuzz(func(t *testing.T, body []byte) {
		pulls = pulls[:0]
		r := httptest.NewRequestWithContext(context.Background(), "POST", SyncPath, bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
			var req SyncRequest
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("200 for a body that is not a request: %q", body)
			}
			if len(pulls) != 1 || pulls[0].Spec.Dir != dir || pulls[0].From != "a" || pulls[0].Epoch != 1 {
				t.Fatalf("200 for %q, pulls %+v", body, pulls)
			}
			for _, s := range pulls[0].Skip {
				if !strings.HasPrefix(s, "/") || len(s) < 2 {
					t.Fatalf("pulled leaving out %q (unanchored)", s)
				}
			}
		case http.StatusBadRequest, http.StatusConflict:
			if len(pulls) != 0 {
				t.Fatalf("refused %q with %d but pulled", body, w.Code)
			}
		default:
			t.Fatalf("status %d for %q", w.Code, body)
		}
	})
}

type recordTransfer struct{ pulls *[]Pull }

func (r recordTransfer) Pull(_ context.Context, p Pull) (PullResult, error) {
	*r.pulls = append(*r.pulls, p)
	return PullResult{}, nil
}

// TestServeQuarantine: a node serves its quarantine only to the holder
// (restoring into the copy that replicates), only beside a declared
// directory, only one that exists.
func TestServeQuarantine(t *testing.T) {
	base := t.TempDir()
	uploads := filepath.Join(base, "uploads")
	if err := os.MkdirAll(QuarantineDir(uploads, 2), 0o755); err != nil {
		t.Fatal(err)
	}
	m := state.New()
	for i, cmd := range []state.Command{
		state.AddMember{Member: state.Member{Name: "a", Role: state.RoleApp, Address: "a"}},
		state.AddMember{Member: state.Member{Name: "b", Role: state.RoleApp, Address: "b"}},
		state.AddMember{Member: state.Member{Name: "c", Role: state.RoleApp, Address: "c"}},
		state.AddMember{Member: state.Member{Name: "w", Role: state.RoleWitness, Address: "w"}},
		state.SetHolder{Node: "b", Active: true, Reason: "test"},
	} {
		if err := m.Apply(uint64(i+1), mustEncode(t, cmd)); err != nil {
			t.Fatal(err)
		}
	}
	var pulls []Pull
	c, err := New(Options{Name: "a", Specs: []Spec{{Dir: uploads, Delete: true}}, Machine: m,
		Held: func() Held { return Held{} }, Transfer: recordTransfer{&pulls}, Peers: fakePeersNone{}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, peer, dir string
		epoch           uint64
		ok              bool
	}{
		{"the holder (the control)", "b", uploads, 2, true},
		{"another standby", "c", uploads, 2, false},
		{"a witness", "w", uploads, 2, false},
		{"an outsider", "x", uploads, 2, false},
		{"no quarantine of that epoch", "b", uploads, 3, false},
		{"an undeclared directory", "b", base, 2, false},
		{"a path escaping", "b", uploads + "/../../etc", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, still, err := c.ServeQuarantine(tt.peer, tt.dir, tt.epoch)
			if (err == nil) != tt.ok {
				t.Fatalf("ServeQuarantine(%s, %s, %d) = %q, %v; want ok=%v", tt.peer, tt.dir, tt.epoch, local, err, tt.ok)
			}
			if tt.ok && (local != QuarantineDir(uploads, 2) || !still()) {
				t.Errorf("serves %q (still %v); want the epoch-2 quarantine", local, still())
			}
		})
	}
	_, still, err := c.ServeQuarantine("b", uploads, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(6, mustEncode(t, state.SetHolder{Node: "c", PrevEpoch: 1, Active: true, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	if still() {
		t.Error("a quarantine transfer goes on after its requester lost the IP")
	}
}
