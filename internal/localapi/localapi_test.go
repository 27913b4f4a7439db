package localapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type fakeBackend struct {
	mode  string
	reset []string
}

func (f *fakeBackend) Status(ctx context.Context) (Status, error) {
	return Status{Node: "node1", Mode: f.mode, Holder: HolderStatus{Node: "node1", Epoch: 3, Active: true}}, nil
}
func (f *fakeBackend) CreateToken(ctx context.Context, r TokenRequest) (TokenReply, error) {
	if r.Uses < 0 {
		return TokenReply{}, errors.New("uses must not be negative")
	}
	return TokenReply{Token: "tandem1.x", Uses: r.Uses}, nil
}
func (f *fakeBackend) SetMode(ctx context.Context, mode string) error {
	if mode != "auto" && mode != "maintenance" {
		return errors.New("bad mode " + mode)
	}
	f.mode = mode
	return nil
}
func (f *fakeBackend) Switchover(ctx context.Context, r SwitchoverRequest) (SwitchoverReply, error) {
	return SwitchoverReply{From: "node1", To: r.To, Epoch: 4}, nil
}
func (f *fakeBackend) Leave(ctx context.Context) error { return nil }
func (f *fakeBackend) Remove(ctx context.Context, node string) error {
	return errors.New("no such node " + node)
}

func (f *fakeBackend) ResetFailures(ctx context.Context, node string) error {
	if node != "node1" && node != "node2" {
		return errors.New("not a member: " + node)
	}
	f.reset = append(f.reset, node)
	return nil
}

func TestRoundTrip(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "t.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &fakeBackend{mode: "auto"}
	go func() { _ = Serve(ctx, sock, b, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
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
	if err := c.ResetFailures(ctx, "node2"); err != nil || len(b.reset) != 1 || b.reset[0] != "node2" {
		t.Errorf("ResetFailures(node2) = %v; backend saw %v", err, b.reset)
	}
	if err := c.ResetFailures(ctx, "node9"); err == nil || !strings.Contains(err.Error(), "node9") {
		t.Errorf("ResetFailures(node9) = %v; want the backend's error", err)
	}
}

func TestAgentDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "missing.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrAgentDown) {
		t.Fatalf("Status() on a missing socket = %v; want ErrAgentDown", err)
	}
}
