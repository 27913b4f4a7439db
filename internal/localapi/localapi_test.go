package localapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeRoutes serves the cluster-operation endpoints the client calls, the
// way a capability contributes its routes.
func fakeRoutes(mode *string) []Route {
	return []Route{
		{"GET /v1/status", Endpoint(func(ctx context.Context, _ Empty) (Status, error) {
			return Status{Node: "node1", Mode: *mode, Holder: HolderStatus{Node: "node1", Epoch: 3, Active: true}}, nil
		})},
		{"POST /v1/tokens", Endpoint(func(ctx context.Context, r TokenRequest) (TokenReply, error) {
			if r.Uses < 0 {
				return TokenReply{}, errors.New("uses must not be negative")
			}
			return TokenReply{Token: "tandem1.x", Uses: r.Uses}, nil
		})},
		{"POST /v1/mode", Endpoint(func(ctx context.Context, r ModeRequest) (Empty, error) {
			if r.Mode != "auto" && r.Mode != "maintenance" {
				return Empty{}, errors.New("bad mode " + r.Mode)
			}
			*mode = r.Mode
			return Empty{}, nil
		})},
		{"POST /v1/switchover", Endpoint(func(ctx context.Context, r SwitchoverRequest) (SwitchoverReply, error) {
			return SwitchoverReply{From: "node1", To: r.To, Epoch: 4}, nil
		})},
		{"POST /v1/leave", Endpoint(func(ctx context.Context, _ Empty) (Empty, error) { return Empty{}, nil })},
		{"POST /v1/remove", Endpoint(func(ctx context.Context, r RemoveRequest) (Empty, error) {
			return Empty{}, errors.New("no such node " + r.Node)
		})},
	}
}

func TestHandlerRefusesDuplicateRoutes(t *testing.T) {
	mode := "auto"
	routes := append(fakeRoutes(&mode), Route{"GET /v1/status", http.NotFoundHandler()})
	if _, err := Handler(routes); err == nil || !strings.Contains(err.Error(), "GET /v1/status") {
		t.Fatalf("Handler(duplicate) = %v; want an error naming the route", err)
	}
	if _, err := Handler([]Route{{"BOGUS PATTERN WITH SPACES", http.NotFoundHandler()}}); err == nil {
		t.Fatal("Handler(bad pattern) = nil error; want net/http's complaint as an error")
	}
}

func TestEndpointBadBody(t *testing.T) {
	mode := "auto"
	h, err := Handler(fakeRoutes(&mode))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/mode", strings.NewReader("{not json")))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "bad request") {
		t.Fatalf("bad body: %d %s; want 400 bad request", rec.Code, rec.Body)
	}
}

func TestRoundTrip(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "t.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mode := "auto"
	go func() { _ = Serve(ctx, sock, fakeRoutes(&mode), slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	c := NewClient(sock)
	var st Status
	var err error
	for i := 0; i < 100; i++ {
		if st, err = c.Status(ctx); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || st.Holder.Epoch != 3 || st.Node != "node1" {
		t.Fatalf("Status() = %+v, %v", st, err)
	}
	if err := c.SetMode(ctx, "maintenance"); err != nil {
		t.Fatalf("SetMode(maintenance) = %v", err)
	}
	if st, _ := c.Status(ctx); st.Mode != "maintenance" {
		t.Errorf("mode after SetMode = %q", st.Mode)
	}
	if err := c.SetMode(ctx, "bogus"); err == nil || !strings.Contains(err.Error(), "bad mode bogus") {
		t.Errorf("SetMode(bogus) = %v; want the backend's error", err)
	}
	if r, err := c.Switchover(ctx, SwitchoverRequest{To: "node2"}); err != nil || r.To != "node2" {
		t.Errorf("Switchover() = %+v, %v", r, err)
	}
	if err := c.Remove(ctx, "node9"); err == nil || !strings.Contains(err.Error(), "node9") {
		t.Errorf("Remove(node9) = %v", err)
	}
}

func TestAgentDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "missing.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrAgentDown) {
		t.Fatalf("Status() on a missing socket = %v; want ErrAgentDown", err)
	}
}
