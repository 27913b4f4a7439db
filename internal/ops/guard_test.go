package ops

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// fakeBans applies bans to the service's fake cluster and protects one
// member address, as the ban controller does.
type fakeBans struct {
	fc   *fakeCluster
	name string
	now  time.Time
}

func (b *fakeBans) Protected(a netip.Addr) (string, bool) {
	if a == netip.MustParseAddr("192.0.2.2") {
		return "192.0.2.2 is the address of cluster member node2", true
	}
	return "", false
}

func (b *fakeBans) Ban(ctx context.Context, a netip.Addr, d time.Duration, reason string) (state.Ban, error) {
	if why, ok := b.Protected(a); ok {
		return state.Ban{}, errors.New(why)
	}
	return state.Ban{}, b.fc.Apply(ctx, state.BanAddr{Addr: a, Jail: "manual", Reason: reason, By: b.name, At: b.now, Bantime: d, Manual: true})
}

func (b *fakeBans) Unban(ctx context.Context, a netip.Addr) error {
	return b.fc.Apply(ctx, state.UnbanAddr{Addr: a, By: b.name, At: b.now})
}

type fakeKernel map[netip.Addr]time.Duration

func (k fakeKernel) Banned() (map[netip.Addr]time.Duration, error) { return k, nil }

func newGuardOps(t *testing.T, role string) *Guard {
	_, fc, _ := newService(t)
	name := "node1"
	if role == state.RoleWitness {
		name = "witness"
	}
	return &Guard{Node: name, Role: role, Machine: fc.m, Bans: &fakeBans{fc: fc, name: "node1", now: t0},
		Kernel: fakeKernel{netip.MustParseAddr("203.0.113.7"): time.Hour}, Now: func() time.Time { return t0 }}
}

func TestGuardBanAndUnban(t *testing.T) {
	g := newGuardOps(t, state.RoleApp)
	ctx := context.Background()
	b, err := g.Ban(ctx, localapi.BanRequest{Addr: "203.0.113.7", Reason: "scanner"})
	if err != nil || !b.Until.Equal(t0.Add(DefaultManualBan)) || b.By != "node1" {
		t.Fatalf("Ban = %+v, %v; want until %v by node1", b, err, t0.Add(DefaultManualBan))
	}
	if _, err := g.Ban(ctx, localapi.BanRequest{Addr: "2001:db8::7", For: "90m"}); err != nil {
		t.Fatal(err)
	}
	l := g.List()
	if len(l.Bans) != 2 || l.Bans[0].Addr != "203.0.113.7" || !l.Bans[0].Enforced || l.Bans[1].Enforced {
		t.Fatalf("List = %+v; want both, the first enforced here", l.Bans)
	}
	if st := g.Status(); st.Active != 2 || st.IPv4 != 1 || st.IPv6 != 1 || st.Enforced != 1 {
		t.Errorf("Status = %+v", st)
	}
	if err := g.Unban(ctx, localapi.UnbanRequest{Addr: "203.0.113.7"}); err != nil {
		t.Fatal(err)
	}
	if err := g.Unban(ctx, localapi.UnbanRequest{Addr: "203.0.113.7"}); err == nil || !strings.Contains(err.Error(), "is not banned") {
		t.Errorf("second Unban = %v; want 'is not banned'", err)
	}
}

// TestGuardRefusals: what the operator's ban must refuse, each with a
// message that says what is wrong.
func TestGuardRefusals(t *testing.T) {
	ctx := context.Background()
	app := newGuardOps(t, state.RoleApp)
	tests := []struct {
		name string
		g    *Guard
		req  localapi.BanRequest
		says string
	}{
		{"on a witness", newGuardOps(t, state.RoleWitness), localapi.BanRequest{Addr: "203.0.113.9"}, "run this on an app node"},
		{"a member's address", app, localapi.BanRequest{Addr: "192.0.2.2"}, "cluster member node2"},
		{"a network", app, localapi.BanRequest{Addr: "203.0.113.0/24"}, "is a network"},
		{"not an address", app, localapi.BanRequest{Addr: "example.org"}, "is not an IP address"},
		{"loopback", app, localapi.BanRequest{Addr: "::1"}, "not a unicast host address"},
		{"a mapped address", app, localapi.BanRequest{Addr: "::ffff:127.0.0.1"}, "not a unicast host address"},
		{"a bad duration", app, localapi.BanRequest{Addr: "203.0.113.9", For: "forever"}, "--for"},
		{"a negative duration", app, localapi.BanRequest{Addr: "203.0.113.9", For: "-1h"}, "--for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.g.Ban(ctx, tt.req); err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Ban(%+v) = %v; want an error saying %q", tt.req, err, tt.says)
			}
		})
	}
	if err := newGuardOps(t, state.RoleWitness).Unban(ctx, localapi.UnbanRequest{Addr: "203.0.113.9"}); err == nil {
		t.Error("Unban on a witness succeeded")
	}
	if n := len(app.Machine.View().Guard().Bans); n != 0 {
		t.Errorf("refusals left %d bans", n)
	}
}

// TestGuardSocketRefusesNonRoot: the ban endpoints live on the local API's
// socket, which only root may open: a caller whose filesystem uid is not 0
// cannot connect.
func TestGuardSocketRefusesNonRoot(t *testing.T) {
	testenv.NeedRoot(t, "to serve the socket as root and call it as another user")
	g := newGuardOps(t, state.RoleApp)
	dir, err := os.MkdirTemp("", "guard-sock-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tandem.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- localapi.Serve(ctx, sock, g.Routes(), slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { cancel(); <-done }()
	var list localapi.BanList
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if list, err = localapi.Call[localapi.BanList](ctx, localapi.NewClient(sock), http.MethodGet, "/v1/guard/bans", nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("root cannot call the socket: %v", err)
		}
	}
	if list.Bans == nil {
		t.Fatal("root's call returned no list")
	}
	// As nobody: setfsuid is per thread, and dropping the filesystem uid
	// from 0 drops the capability to override file permissions.
	var dialErr error
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		old, _, _ := syscall.Syscall(syscall.SYS_SETFSUID, 65534, 0, 0)
		defer syscall.Syscall(syscall.SYS_SETFSUID, old, 0, 0)
		var c net.Conn
		if c, dialErr = net.Dial("unix", sock); dialErr == nil {
			c.Close()
		}
	}()
	if !errors.Is(dialErr, syscall.EACCES) {
		t.Errorf("dial as uid 65534 = %v; want permission denied", dialErr)
	}
}
