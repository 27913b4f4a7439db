package ops

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/deploy"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestDeliveryStatus(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if ds := deliveryStatus(&state.Deploy{}); ds != nil {
		t.Errorf("no delivery yet: %+v; want nil", ds)
	}
	dep := &state.Deploy{
		Installed:  map[string]map[string]state.Release{"node1": {"site": {Package: "site", Version: "2", Digest: "ab"}}},
		Deliveries: []state.Delivery{{ID: "d-1", Status: state.DeliveryRunning}, {ID: "d-2", Status: state.DeliveryQueued}},
		Rollout: &state.Rollout{ID: "d-1", Package: "site", Version: "3", Phase: state.PhaseForward, Driver: "witness", StartedAt: t0,
			Steps: []state.Step{{N: 2, Action: "install", Node: "node2", State: state.StepStarted}}},
		Lock: &state.Lock{Message: "freeze"},
	}
	ds := deliveryStatus(dep)
	if ds.Installed["node1"]["site"].Version != "2" || ds.Queued != 1 || ds.Locked != "freeze" {
		t.Errorf("%+v", ds)
	}
	if ds.Rollout == nil || ds.Rollout.Step != "#2 install node2 started" || ds.Rollout.Version != "3" {
		t.Errorf("rollout %+v", ds.Rollout)
	}
}

// deployCluster is the fake cluster as delivery sees it.
type deployCluster struct{ *fakeCluster }

func (deployCluster) IsLeader() bool                     { return false }
func (deployCluster) LeadershipChanged() <-chan struct{} { return nil }

func newDeliveryOps(t *testing.T, local bool) (*Delivery, *fakeCluster, string) {
	t.Helper()
	_, fc, _ := newService(t)
	d := &Delivery{Name: "node1", Cluster: deployCluster{fc}, Machine: fc.m,
		Health: func(time.Time) map[string]deploy.NodeHealth { return nil }}
	if !local {
		return d, fc, ""
	}
	store, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d.Local = deploy.NewLocal(deploy.LocalOptions{Name: "node1", Store: store, Policy: artifact.Policy{Packages: []string{"site"}, Arch: "amd64"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	d.StoreDir = store.Dir()
	return d, fc, store.Dir()
}

// TestDeployRefuses: 'tandem deploy' requests that must not queue anything.
func TestDeployRefuses(t *testing.T) {
	ctx := context.Background()
	app, fc, storeDir := newDeliveryOps(t, true)
	witness, _, _ := newDeliveryOps(t, false)
	outside := filepath.Join(t.TempDir(), ".incoming-1")
	notIncoming := filepath.Join(storeDir, "site.deb")
	junk := filepath.Join(storeDir, ".incoming-2")
	for _, p := range []string{outside, notIncoming, junk} {
		if err := os.WriteFile(p, []byte("not a deb"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		d    *Delivery
		req  localapi.DeployRequest
		says string
	}{
		{"on a witness", witness, localapi.DeployRequest{File: outside}, "app node"},
		{"nothing named", app, localapi.DeployRequest{}, "name a .deb file or a URL"},
		{"a file outside the store", app, localapi.DeployRequest{File: outside}, "not an incoming release file"},
		{"a path escaping the store", app, localapi.DeployRequest{File: filepath.Join(storeDir, "..", filepath.Base(storeDir)+"x", ".incoming-1")}, "not an incoming release file"},
		{"a store file that is not incoming", app, localapi.DeployRequest{File: notIncoming}, "not an incoming release file"},
		{"an incoming file that is not a .deb", app, localapi.DeployRequest{File: junk}, "deb"},
		{"a URL without its SHA-256", app, localapi.DeployRequest{URL: "https://ci.example/site_2_amd64.deb"}, "--sha256"},
		{"a URL with a short SHA-256", app, localapi.DeployRequest{URL: "https://ci.example/site_2_amd64.deb", SHA256: "abc"}, "--sha256"},
		{"a URL with a SHA-256 that is not hex", app, localapi.DeployRequest{URL: "https://ci.example/site_2_amd64.deb", SHA256: strings.Repeat("z", 64)}, "--sha256"},
		{"a URL that is not http(s)", app, localapi.DeployRequest{URL: "file:///etc/shadow", SHA256: strings.Repeat("a", 64)}, "http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.d.Deploy(ctx, tt.req); err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Deploy(%+v) = %v; want an error saying %q", tt.req, err, tt.says)
			}
		})
	}
	if n := len(fc.m.View().Deploy().Deliveries); n != 0 {
		t.Errorf("refused requests queued %d deliveries", n)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("a file outside the store was touched: %v", err)
	}
}

// TestRollbackTarget: the default is the release the newest deployed
// rollout replaced; a version is found in any rollout's history, with a
// node that has it.
func TestRollbackTarget(t *testing.T) {
	rel := func(v, d string) state.Release { return state.Release{Package: "site", Version: v, Digest: d} }
	both := func(r state.Release) map[string]state.Release {
		return map[string]state.Release{"node1": r, "node2": r}
	}
	dep := &state.Deploy{
		Installed: map[string]map[string]state.Release{"node1": {"site": rel("0.4", "d4")}, "node2": {"site": rel("0.4", "d4")}},
		History: []*state.Rollout{
			{ID: "d-1", Package: "site", Version: "0.2", Digest: "b2", Outcome: state.DeliveryDeployed, Previous: both(rel("0.1", "a1"))},
			{ID: "d-2", Package: "site", Version: "0.3", Digest: "c3", Outcome: state.DeliveryRolledBack, Previous: both(rel("0.2", "b2")),
				Steps: []state.Step{{N: 1, Action: "fetch", Node: "node2", State: state.StepDone}}},
			{ID: "d-3", Package: "site", Version: "0.4", Digest: "d4", Outcome: state.DeliveryDeployed, Previous: both(rel("0.2", "b2"))},
			{ID: "d-4", Package: "site", Version: "0.5", Digest: "e5", Outcome: state.DeliveryFailed, Previous: both(rel("0.4", "d4"))},
		},
	}
	tests := []struct {
		version, wantVersion, wantDigest, wantNode string
	}{
		{"", "0.2", "b2", "node1"}, // what d-3 (the newest deployed) replaced, not d-4's failure
		{"0.1", "0.1", "a1", "node1"},
		{"0.3", "0.3", "c3", "node2"}, // only its fetcher ever stored it
		{"0.4", "0.4", "d4", "node1"},
		{"9.9", "", "", ""},
	}
	for _, tt := range tests {
		got, node := rollbackTarget(dep, tt.version)
		if got.Version != tt.wantVersion || got.Digest != tt.wantDigest || node != tt.wantNode {
			t.Errorf("rollbackTarget(%q) = %+v on %q; want %s %s on %q", tt.version, got, node, tt.wantVersion, tt.wantDigest, tt.wantNode)
		}
	}
	if got, node := rollbackTarget(&state.Deploy{}, ""); got.Digest != "" || node != "" {
		t.Errorf("no history: %+v on %q; want nothing", got, node)
	}
	d, fc, _ := newDeliveryOps(t, false)
	if _, err := d.Rollback(context.Background(), localapi.DeployRequest{Version: "9.9"}); err == nil || !strings.Contains(err.Error(), "tandem releases") {
		t.Errorf("rollback to an unknown version = %v; want one pointing at 'tandem releases'", err)
	}
	if n := len(fc.m.View().Deploy().Deliveries); n != 0 {
		t.Errorf("a refused rollback queued %d deliveries", n)
	}
}

// TestDeploySocketRefusesNonRoot: the delivery endpoints (deploy, rollback,
// lock) live on the local API's socket, which only root may open.
func TestDeploySocketRefusesNonRoot(t *testing.T) {
	testenv.NeedRoot(t, "to serve the socket as root and call it as another user")
	d, _, _ := newDeliveryOps(t, false)
	dir, err := os.MkdirTemp("", "deploy-sock-")
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
	go func() { done <- localapi.Serve(ctx, sock, d.Routes(), slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err = localapi.Call[localapi.Plan](ctx, localapi.NewClient(sock), http.MethodGet, "/v1/deploy/plan", nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("root cannot call the socket: %v", err)
		}
	}
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

// TestPlanAndLock: 'tandem deploy plan' says what would run next, in which
// order, and why it is held back, changing nothing; 'deploy lock' needs a
// message, and the plan shows it.
func TestPlanAndLock(t *testing.T) {
	ctx := context.Background()
	d, fc, _ := newDeliveryOps(t, false)
	healthy := map[string]deploy.NodeHealth{"node1": {Reachable: true, Healthy: true}, "node2": {Reachable: true, Healthy: true}}
	d.Health = func(time.Time) map[string]deploy.NodeHealth { return healthy }
	for _, c := range []state.Command{
		state.SetDeployPolicy{Policy: state.DeployPolicy{Packages: []string{"site"}, Auto: true}},
		state.ReceiveDelivery{Delivery: state.Delivery{ID: "d-1", Source: "gitlab", ReceivedAt: t0, Keys: []string{"k1"}}},
		state.ReceiveDelivery{Delivery: state.Delivery{ID: "d-2", Source: "gitlab", ReceivedAt: t0.Add(time.Second), Keys: []string{"k2"}}},
	} {
		if err := fc.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	before := fc.index
	p := d.Plan()
	if p.Next == nil || p.Next.ID != "d-2" || p.Queued != 2 || p.HeldBack != "" || p.Holder != "node1" ||
		strings.Join(p.Order, " ") != "node2 node1" {
		t.Errorf("plan %+v (next %+v); want d-2 next of 2, node2 then the holder node1, not held back", p, p.Next)
	}
	healthy["node2"] = deploy.NodeHealth{Reachable: false}
	if p := d.Plan(); !strings.Contains(p.HeldBack, "node2 is unreachable") {
		t.Errorf("degraded cluster: held back %q; want node2 named", p.HeldBack)
	}
	if fc.index != before {
		t.Errorf("the plan committed %d commands", fc.index-before)
	}

	h, err := localapi.Handler(d.Routes())
	if err != nil {
		t.Fatal(err)
	}
	lock := func(body string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/deploy/lock", strings.NewReader(body)))
		return rec.Code
	}
	if code := lock(`{"lock":true,"message":"  "}`); code < 400 || fc.m.View().Deploy().Lock != nil {
		t.Errorf("a lock without a message answered %d, lock %+v; want refused", code, fc.m.View().Deploy().Lock)
	}
	healthy["node2"] = deploy.NodeHealth{Reachable: true, Healthy: true}
	if code := lock(`{"lock":true,"message":"release freeze"}`); code != http.StatusOK {
		t.Fatalf("lock answered %d", code)
	}
	if l := fc.m.View().Deploy().Lock; l == nil || l.Message != "release freeze" || l.By != "node1" {
		t.Errorf("lock %+v", l)
	}
	if p := d.Plan(); !strings.Contains(p.HeldBack, "release freeze") {
		t.Errorf("locked: held back %q; want the message", p.HeldBack)
	}
	if code := lock(`{"lock":false}`); code != http.StatusOK || fc.m.View().Deploy().Lock != nil {
		t.Errorf("unlock answered %d, lock %+v", code, fc.m.View().Deploy().Lock)
	}
}
