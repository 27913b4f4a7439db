package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/pki"
)

// twoTokens asks Init for what 'tandem init' prints by default: one
// single-use token for a witness and one for an app node.
var twoTokens = cluster.FoundOptions{TokenTTL: time.Hour, Tokens: []cluster.TokenSpec{{Role: "witness", Uses: 1}, {Role: "app", Uses: 1}}}

func byRole(issued []cluster.IssuedToken) map[string]pki.Token {
	out := map[string]pki.Token{}
	for _, t := range issued {
		out[t.Role] = t.Token
	}
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testConfig(t *testing.T, dir, name, role, provider string) *config.Config {
	t.Helper()
	return testConfigWith(t, dir, name, role, provider, "")
}

// testConfigWith is testConfig with extra TOML appended.
func testConfigWith(t *testing.T, dir, name, role, provider, extra string) *config.Config {
	t.Helper()
	doc := fmt.Sprintf(`
[node]
name = %q
role = %q
data_dir = %q
[cluster]
listen = %q
socket = %q
[vip]
provider = %q
address = "10.0.0.100/24"
[vip.linux]
interface = "eth0"
[metrics]
listen = %q
`, name, role, filepath.Join(dir, name), freePort(t), filepath.Join(dir, name+".sock"), provider, freePort(t)) + extra
	if !strings.Contains(extra, "[guard]") {
		// The engine's default sshd jail would follow the host's journal.
		doc += "\n[guard]\nenabled = false\n"
	}
	c, err := config.Parse(name+".toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type running struct {
	kernel *memKernel
	cfg    *config.Config
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg *config.Config) *running {
	var out io.Writer = io.Discard
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		out = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(out, nil)).With("node", cfg.Node.Name)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cfg: cfg, cancel: cancel, done: make(chan error, 1), kernel: &memKernel{}}
	go func() {
		ag := New(cfg, log, "test")
		ag.banKernel = r.kernel // never the host's nftables
		err := ag.Run(ctx)
		if err != nil && ctx.Err() == nil {
			t.Errorf("agent %s stopped: %v", cfg.Node.Name, err)
		}
		r.done <- err
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", within, what)
}

func status(cfg *config.Config) localapi.Status {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := localapi.NewClient(cfg.Cluster.Socket).Status(ctx)
	if err != nil {
		st.LastError = err.Error()
	}
	return st
}

// TestThreeAgents forms a cluster of real agents over mTLS on loopback
// (provider "none", so nothing touches the network): init, a refused join,
// the witness and a second node join, placement, a graceful hand-off when
// the holder stops, and a restart that keeps the epoch history.
func TestThreeAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three agents")
	}
	dir := t.TempDir()
	n1 := testConfig(t, dir, "node1", "app", "none")
	n2 := testConfig(t, dir, "node2", "app", "none")
	w := testConfig(t, dir, "witness", "witness", "none")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	issued, err := Init(ctx, n1, log, twoTokens)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	toks := byRole(issued)
	tok := toks["app"]
	if _, err := Init(ctx, n1, log, cluster.FoundOptions{TokenTTL: time.Hour}); err == nil || !strings.Contains(err.Error(), "already part of a cluster") {
		t.Fatalf("second Init = %v; want 'already part of a cluster'", err)
	}
	a1 := start(t, n1)
	runs := map[string]*running{}
	waitFor(t, 10*time.Second, "node1 to hold", func() bool { return status(n1).Holder.Node == "node1" })

	// A token for another CA is refused and changes nothing.
	hexHash := strings.TrimPrefix(tok.CAHash, "sha256:")
	bad := strings.Replace(tok.String(), hexHash, strings.Repeat("0", len(hexHash)), 1)
	if bad == tok.String() {
		t.Fatal("test bug: the token was not altered")
	}
	if err := Join(ctx, w, n1.Cluster.Advertise, bad); err == nil {
		t.Fatal("join with a token pinning another CA succeeded")
	}
	if cluster.Initialized(w.Node.DataDir) {
		t.Fatal("a refused join left the node initialised")
	}
	if got := len(status(n1).Members); got != 1 {
		t.Fatalf("members after a refused join = %d; want 1", got)
	}

	// A token admits only the role it was made for.
	if err := Join(ctx, w, n1.Cluster.Advertise, tok.String()); err == nil || !strings.Contains(err.Error(), "admits app nodes only") {
		t.Fatalf("witness joining with the app token = %v; want refused, naming the token's role", err)
	}
	for _, c := range []*config.Config{w, n2} {
		if err := Join(ctx, c, n1.Cluster.Advertise, toks[c.Node.Role].String()); err != nil {
			t.Fatalf("Join(%s): %v", c.Node.Name, err)
		}
		// Joined but not running: shown, not counted.
		members := status(n1).Members
		i := slices.IndexFunc(members, func(m localapi.Member) bool { return m.Name == c.Node.Name })
		if i < 0 || members[i].Suffrage != "pending" {
			t.Fatalf("%s before its agent starts: %+v; want it listed as pending", c.Node.Name, members)
		}
		runs[c.Node.Name] = start(t, c)
	}
	waitFor(t, 15*time.Second, "three voters, all reachable", func() bool {
		st := status(n2)
		if len(st.Members) != 3 {
			return false
		}
		for _, m := range st.Members {
			if m.Suffrage != "voter" || !m.Reachable {
				return false
			}
		}
		return true
	})
	waitFor(t, 15*time.Second, "raft leadership to leave the holder", func() bool { return status(n1).Raft.Leader != "node1" })
	epoch := status(n2).Holder.Epoch

	// Stopping the holder hands the IP over instead of failing over.
	a1.stop()
	waitFor(t, 10*time.Second, "node2 to hold", func() bool {
		st := status(n2)
		return st.Holder.Node == "node2" && st.Holder.Active
	})
	st := status(n2)
	if st.Holder.Epoch != epoch+1 || st.LastFailover == nil || st.LastFailover.Reason != "switchover" {
		t.Fatalf("after the holder stopped: epoch %d (want %d), last failover %+v; want a switchover", st.Holder.Epoch, epoch+1, st.LastFailover)
	}

	// node1 comes back as a standby with the history intact.
	runs["node1"] = start(t, n1)
	waitFor(t, 15*time.Second, "node1 back and caught up", func() bool {
		st := status(n1)
		return st.Holder.Node == "node2" && st.Holder.Epoch == epoch+1 && len(st.Moves) >= 2
	})
	time.Sleep(2 * time.Second)
	if st := status(n1); st.Holder.Node != "node2" {
		t.Fatalf("holder moved back to %s after node1 returned; want no preemption", st.Holder.Node)
	}

	// Every agent serves its metrics.
	body := fetch(t, "http://"+n2.Metrics.Listen+"/metrics")
	for _, name := range []string{
		`tandem_node_info{node="node2",role="app",version="test"} 1`,
		`tandem_raft_state{state="Follower"} 1`,
		"tandem_vip_held 1",
		"tandem_holder_epoch ",
		"tandem_lease_valid 1",
		`tandem_moves_total{reason="switchover"} 1`,
		`tandem_provider_call_duration_seconds_count{op="acquire"}`,
		"tandem_raft_last_contact_seconds ",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}

	// Maintenance freezes placement; the CLI sees it at once.
	c2 := localapi.NewClient(n2.Cluster.Socket)
	if err := c2.SetMode(ctx, state.ModeMaintenance); err != nil {
		t.Fatal(err)
	}
	if st := status(n2); st.Mode != state.ModeMaintenance {
		t.Fatalf("mode = %q right after SetMode", st.Mode)
	}
	if _, err := c2.Switchover(ctx, localapi.SwitchoverRequest{To: "witness"}); err == nil {
		t.Fatal("switchover to a witness succeeded")
	}
	if err := c2.Remove(ctx, "nobody"); err == nil {
		t.Fatal("removing a non-member succeeded")
	}

	// A ban on node2 reaches every node's kernel; the witness may not
	// ban; unban lifts it everywhere.
	attacker := netip.MustParseAddr("203.0.113.7")
	b, err := localapi.Call[localapi.BanInfo](ctx, c2, http.MethodPost, "/v1/guard/ban", localapi.BanRequest{Addr: attacker.String(), For: "1h", Reason: "test"})
	if err != nil || b.By != "node2" {
		t.Fatalf("guard ban on node2 = %+v, %v", b, err)
	}
	inKernels := func(want bool) func() bool {
		return func() bool {
			for _, r := range runs {
				k, _ := r.kernel.Banned()
				if _, ok := k[attacker]; ok != want {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 2*time.Second, "the ban in every node's kernel", inKernels(true))
	if g := status(n1).Guard; g == nil || g.Active != 1 || g.IPv4 != 1 || g.Enforced != 1 {
		t.Errorf("node1's status guard = %+v; want 1 IPv4 ban, enforced", g)
	}
	cw := localapi.NewClient(w.Cluster.Socket)
	if _, err := localapi.Call[localapi.BanInfo](ctx, cw, http.MethodPost, "/v1/guard/ban", localapi.BanRequest{Addr: "203.0.113.8"}); err == nil || !strings.Contains(err.Error(), "app node") {
		t.Errorf("guard ban on the witness = %v; want refused, naming app nodes", err)
	}
	for _, bad := range []string{"10.0.0.0/8", "not-an-ip", "127.0.0.1"} {
		if _, err := localapi.Call[localapi.BanInfo](ctx, c2, http.MethodPost, "/v1/guard/ban", localapi.BanRequest{Addr: bad}); err == nil {
			t.Errorf("guard ban %q succeeded; want refused", bad)
		}
	}
	if _, err := localapi.Call[localapi.Empty](ctx, localapi.NewClient(n1.Cluster.Socket), http.MethodPost, "/v1/guard/unban", localapi.UnbanRequest{Addr: attacker.String()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the ban gone from every kernel", inKernels(false))
	if body := fetch(t, "http://"+n2.Metrics.Listen+"/metrics"); !strings.Contains(body, `tandem_guard_active_bans{family="ipv4"} 0`) ||
		!strings.Contains(body, "tandem_guard_enforce_latency_seconds_count") {
		t.Errorf("/metrics lacks the guard's metrics")
	}
}

// TestPreemptionFromConfig reaches preemption the way production does: the
// priorities come from each node's [failover] section, through its join and,
// after a change, through its restart; nothing is set by hand.
func TestPreemptionFromConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three agents")
	}
	for _, preempt := range []bool{true, false} {
		t.Run(fmt.Sprintf("preempt=%v", preempt), func(t *testing.T) {
			dir := t.TempDir()
			failover := func(prio int) string {
				return fmt.Sprintf("[failover]\npreempt = %v\npriority = %d\ncooloff = \"1s\"\n", preempt, prio)
			}
			n1 := testConfigWith(t, dir, "node1", "app", "none", failover(0))
			n2 := testConfigWith(t, dir, "node2", "app", "none", failover(50))
			w := testConfigWith(t, dir, "witness", "witness", "none", "")
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			ctx := context.Background()
			issued, err := Init(ctx, n1, log, twoTokens)
			if err != nil {
				t.Fatalf("Init: %v", err)
			}
			toks := byRole(issued)
			a1 := start(t, n1)
			waitFor(t, 10*time.Second, "node1 to hold", func() bool { return status(n1).Holder.Node == "node1" })
			for _, c := range []*config.Config{w, n2} {
				if err := Join(ctx, c, n1.Cluster.Advertise, toks[c.Node.Role].String()); err != nil {
					t.Fatalf("Join(%s): %v", c.Node.Name, err)
				}
				start(t, c)
			}
			member := func(cfg *config.Config, name string) localapi.Member {
				for _, m := range status(cfg).Members {
					if m.Name == name {
						return m
					}
				}
				return localapi.Member{}
			}
			waitFor(t, 15*time.Second, "node2 to be a healthy voter with its priority recorded", func() bool {
				m := member(n1, "node2")
				return m.Suffrage == "voter" && m.Reachable && m.Healthy && m.Priority == 50
			})
			if !preempt {
				time.Sleep(3 * time.Second) // several cool-offs and decision rounds
				if st := status(n2); st.Holder.Node != "node1" {
					t.Fatalf("holder = %s with preempt = false; want node1 to keep the IP", st.Holder.Node)
				}
				return
			}
			waitFor(t, 10*time.Second, "node2 to take the IP by preemption", func() bool {
				st := status(n2)
				return st.Holder.Node == "node2" && st.Holder.Active && st.LastFailover != nil && st.LastFailover.Reason == "preempt"
			})

			// A priority changed in tandem.toml reaches the state when the
			// node restarts, without a new join.
			a1.stop()
			n1.Failover.Priority = 100
			start(t, n1)
			waitFor(t, 15*time.Second, "node1's new priority to be recorded", func() bool { return member(n2, "node1").Priority == 100 })
			waitFor(t, 15*time.Second, "node1 to take the IP back by preemption", func() bool {
				st := status(n2)
				return st.Holder.Node == "node1" && st.Holder.Active && st.LastFailover != nil && st.LastFailover.Reason == "preempt"
			})
			if lv := member(n2, "node1").StateLevel; lv != state.New().Level() {
				t.Errorf("node1's recorded state level = %d; want this binary's", lv)
			}
		})
	}
}

// memKernel stands in for the kernel's ban sets.
type memKernel struct {
	mu   sync.Mutex
	bans map[netip.Addr]time.Duration
}

func (k *memKernel) Enforce(_ context.Context, b map[netip.Addr]time.Duration) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.bans = maps.Clone(b)
	return nil
}

func (k *memKernel) Banned() (map[netip.Addr]time.Duration, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.bans), nil
}

// TestGuardEngineToKernel runs the whole chain in one agent: failure lines
// in a followed log file, the jail's decision, the ban committed through
// the cluster and put in the (in-memory) kernel; an ignored network's
// failures are not.
func TestGuardEngineToKernel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent")
	}
	dir := t.TempDir()
	authLog := filepath.Join(dir, "auth.log")
	if err := os.WriteFile(authLog, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n1 := testConfigWith(t, dir, "node1", "app", "none", fmt.Sprintf(`
[guard]
ignore = ["198.51.100.0/24"]
[[guard.jail]]
name = "sshd"
enabled = false
[[guard.jail]]
name = "bench"
filter = "sshd"
files = [%q]
maxretry = 2
findtime = "1m"
bantime = "1h"
`, authLog))
	ctx := context.Background()
	if _, err := Init(ctx, n1, slog.New(slog.NewTextHandler(io.Discard, nil)), twoTokens); err != nil {
		t.Fatal(err)
	}
	r := start(t, n1)
	waitFor(t, 10*time.Second, "node1 to hold", func() bool { return status(n1).Holder.Node == "node1" })
	time.Sleep(300 * time.Millisecond) // the follower opens the file
	f, err := os.OpenFile(authLog, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	attacker, ignored := netip.MustParseAddr("203.0.113.50"), netip.MustParseAddr("198.51.100.9")
	for range 2 {
		for _, a := range []netip.Addr{ignored, attacker} {
			fmt.Fprintf(f, "Nov 28 21:00:00 node1 sshd[42]: Failed password for root from %s port 50022 ssh2\n", a)
		}
	}
	waitFor(t, 5*time.Second, "the attacker in the kernel", func() bool {
		k, _ := r.kernel.Banned()
		_, ok := k[attacker]
		return ok
	})
	k, _ := r.kernel.Banned()
	if _, ok := k[ignored]; ok || len(k) != 1 {
		t.Errorf("kernel bans = %v; want only %v (%v is ignored)", k, attacker, ignored)
	}
	if d := k[attacker]; d < 59*time.Minute || d > time.Hour {
		t.Errorf("the ban has %v left; want the jail's hour", d)
	}
	if g := status(n1).Guard; g == nil || g.Active != 1 {
		t.Errorf("status guard = %+v; want one ban", g)
	}
	body := fetch(t, "http://"+n1.Metrics.Listen+"/metrics")
	for _, want := range []string{`tandem_guard_jail_decisions_total{jail="bench"} 1`, `tandem_guard_decisions_total{jail="bench",result="banned"} 1`,
		`tandem_guard_active_bans{family="ipv4"} 1`, "tandem_guard_enforce_latency_seconds_count 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
