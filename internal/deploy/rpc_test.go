package deploy

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// fakeCaller says the request came from the node named in X-Test-Peer.
type fakeCaller struct{ leader string }

func (f fakeCaller) PeerName(r *http.Request) string { return r.Header.Get("X-Test-Peer") }
func (f fakeCaller) Leader() (string, string)        { return f.leader, "" }

func TestRPCRefusesWhoMustBeRefused(t *testing.T) {
	s := newSim(t, "node1", "node2")
	s.receive("d-1", false)
	s.must(state.StartRollout{Rollout: state.Rollout{ID: "d-1", Phase: state.PhaseFetch, Driver: "witness", StartedAt: s.now}})
	store, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	digest, err := store.Put(strings.NewReader("release bytes"), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(LocalOptions{Name: "node1", Cluster: s, Machine: s.m, Store: store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	mux := http.NewServeMux()
	for p, h := range l.Handlers(fakeCaller{leader: "witness"}) {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name, method, path, peer, body string
		want                           int
	}{
		{"a non-leader member may not install", "POST", "/v1/deploy/install", "node2", `{"rollout":"d-1"}`, http.StatusForbidden},
		{"an unknown caller may not install", "POST", "/v1/deploy/install", "", `{"rollout":"d-1"}`, http.StatusForbidden},
		{"a non-leader member may not fetch", "POST", "/v1/deploy/fetch", "node2", `{"rollout":"d-1"}`, http.StatusForbidden},
		{"a non-leader member may not run hooks", "POST", "/v1/deploy/hook", "node2", `{"rollout":"d-1","hook":"pre"}`, http.StatusForbidden},
		{"the leader, for a rollout not in progress", "POST", "/v1/deploy/install", "witness", `{"rollout":"d-999"}`, http.StatusConflict},
		{"the leader, with a malformed body", "POST", "/v1/deploy/install", "witness", `{"rollout":`, http.StatusBadRequest},
		{"a witness may not copy releases", "GET", "/v1/deploy/artifact/" + digest, "witness", "", http.StatusForbidden},
		{"a removed node may not copy releases", "GET", "/v1/deploy/artifact/" + digest, "node9", "", http.StatusForbidden},
		{"an app member copies a release", "GET", "/v1/deploy/artifact/" + digest, "node2", "", http.StatusOK},
		{"a path that is not a digest", "GET", "/v1/deploy/artifact/..%2f..%2fetc%2fshadow", "node2", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, bytes.NewBufferString(tt.body))
			req.Header.Set("X-Test-Peer", tt.peer)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d (%s); want %d", resp.StatusCode, b, tt.want)
			}
			if tt.want == http.StatusOK && string(b) != "release bytes" {
				t.Errorf("body %q", b)
			}
			if tt.want >= 400 {
				var e struct{ Error string }
				if json.Unmarshal(b, &e) != nil || e.Error == "" {
					t.Errorf("error reply %q does not say why", b)
				}
			}
		})
	}
}

func TestStoreFileRefusesWhatThePolicyRefuses(t *testing.T) {
	dir := t.TempDir()
	store, err := artifact.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(LocalOptions{Name: "node1", Store: store, Policy: artifact.Policy{Packages: []string{"site"}, Arch: "amd64"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: time.Now})
	if _, err := l.StoreFile(strings.NewReader("not a deb")); err == nil {
		t.Fatal("a file that is not a .deb was stored")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sha256"))
	if len(ents) != 0 {
		t.Errorf("a refused file was left in the store: %v", ents)
	}
}
