package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	s.must(state.AddMember{Member: state.Member{Name: "node5", Role: state.RoleApp, Address: "node5:7946", Pending: true}})
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
		{"a pending joiner may not copy releases", "GET", "/v1/deploy/artifact/" + digest, "node5", "", http.StatusForbidden},
		{"a removed node may not install", "POST", "/v1/deploy/install", "node9", `{"rollout":"d-1"}`, http.StatusForbidden},
		{"a witness that does not lead may not install", "POST", "/v1/deploy/install", "witness2", `{"rollout":"d-1"}`, http.StatusForbidden},
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

// fetchErr is a Fetcher that fails with err.
type fetchErr struct{ err error }

func (f fetchErr) Fetch(context.Context, state.Delivery, string) (string, artifact.Expect, error) {
	return "", artifact.Expect{}, f.err
}

// TestFetchTellsARefusalFromAnOutage: the fetch endpoint answers 422 when
// the release itself is refused (the driver records it as refused, and
// the poll fallback leaves that build alone) and 502 when the forge could
// not serve it (tried again).
func TestFetchTellsARefusalFromAnOutage(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"wrong checksum", fmt.Errorf("verify: %w: the file's is ab, the published one cd", artifact.ErrChecksum), http.StatusUnprocessableEntity},
		{"too large", fmt.Errorf("%w: 300 MiB", artifact.ErrTooLarge), http.StatusUnprocessableEntity},
		{"bad signature", fmt.Errorf("%w: made by none of the 1 pinned keys", artifact.ErrSignature), http.StatusUnprocessableEntity},
		{"forge down", errors.New("GET https://gitlab.example/api/v4/projects/1/jobs/9: 503 Service Unavailable"), http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, "node1", "node2")
			s.receive("d-1", false)
			s.must(state.StartRollout{Rollout: state.Rollout{ID: "d-1", Phase: state.PhaseFetch, Driver: "witness", StartedAt: s.now}})
			store, err := artifact.OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			l := NewLocal(LocalOptions{Name: "node1", Cluster: s, Machine: s.m, Store: store, Fetcher: fetchErr{tt.err},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			h := l.Handlers(fakeCaller{leader: "witness"})["POST /v1/deploy/fetch"]
			req := httptest.NewRequest(http.MethodPost, "/v1/deploy/fetch", strings.NewReader(`{"rollout":"d-1"}`))
			req.Header.Set("X-Test-Peer", "witness")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d (%s); want %d", rec.Code, rec.Body, tt.want)
			}
			if !strings.Contains(rec.Body.String(), tt.err.Error()[:20]) {
				t.Errorf("reply %s does not say why", rec.Body)
			}
		})
	}
}

// peerStatusErr is a peer's answer as the cluster client returns it.
type peerStatusErr struct{ status int }

func (e peerStatusErr) Error() string   { return fmt.Sprintf("GET on node2: HTTP %d", e.status) }
func (e peerStatusErr) HTTPStatus() int { return e.status }

// failingPeers cannot copy any release.
type failingPeers struct{}

func (failingPeers) Open(context.Context, string, string) (io.ReadCloser, error) {
	return nil, peerStatusErr{http.StatusNotFound}
}

// TestInstallAnswersItsOwnVerdict: an install that fails answers 422 (the
// driver rolls back and blames the release) even when the error wraps a
// peer's own HTTP status, such as a 404 from a failed copy.
func TestInstallAnswersItsOwnVerdict(t *testing.T) {
	s := newSim(t, "node1", "node2")
	s.receive("d-1", false)
	s.must(state.StartRollout{Rollout: state.Rollout{ID: "d-1", Phase: state.PhaseFetch, Driver: "witness", StartedAt: s.now}})
	store, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal(LocalOptions{Name: "node1", Cluster: s, Machine: s.m, Store: store, Peers: failingPeers{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := l.Handlers(fakeCaller{leader: "witness"})["POST /v1/deploy/install"]
	body := fmt.Sprintf(`{"rollout":"d-1","package":"site","version":"0.2.0-1","digest":"%s","from":["node2"]}`, strings.Repeat("ab", 32))
	req := httptest.NewRequest(http.MethodPost, "/v1/deploy/install", strings.NewReader(body))
	req.Header.Set("X-Test-Peer", "witness")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(rec.Body.String(), "404") {
		t.Fatalf("answered %d %s; want 422 naming the peer's 404", rec.Code, rec.Body)
	}
}
