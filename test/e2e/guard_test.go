package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/labprobe"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// guard's scenarios: bans decided on one node, committed through raft and
// held in every node's kernel (nftables table inet tandem-guard).

var clientAddr = lab.ClientAddr.String()

// nodeAddr returns a lab node's address.
func nodeAddr(t *testing.T, ctx context.Context, c *Labctl, node string) string {
	t.Helper()
	return c.MustNode(t, ctx, node).Address
}

// kernelBan reads node's ban set: whether addr is in it and the time it
// has left, as nft prints it ("expires 14s820ms").
func kernelBan(ctx context.Context, c *Labctl, node, addr string) (bool, time.Duration, error) {
	out, err := c.Sh(ctx, node, "nft list set inet tandem-guard bans4")
	if err != nil {
		return false, 0, err
	}
	m := regexp.MustCompile(regexp.QuoteMeta(addr) + `(?: timeout \S+)? expires ([0-9a-z]+)`).FindStringSubmatch(out)
	if m == nil {
		return false, 0, nil
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		return true, 0, fmt.Errorf("parse expiry %q: %w", m[1], err)
	}
	return true, d, nil
}

// reachable reports whether the client connects to addr:port: a ban drops
// its packets, so a dial times out.
func reachable(ctx context.Context, c *Labctl, addr string, port int) bool {
	ctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	conn, err := labprobe.Dial(ctx, c.NetnsPath("client"), "tcp4", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// waitUntil polls cond every 50 ms until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func guardBans(t *testing.T, ctx context.Context, c *Labctl, node string) localapi.BanList {
	t.Helper()
	var l localapi.BanList
	if err := json.Unmarshal([]byte(c.MustSh(t, ctx, node, "tandem guard bans --json")), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// unbanAll lifts every ban so that scenarios do not leak into each other.
func unbanAll(t *testing.T, ctx context.Context, c *Labctl) {
	t.Helper()
	for _, b := range guardBans(t, ctx, c, "node1").Bans {
		c.MustSh(t, ctx, "node1", "tandem guard unban "+b.Addr)
	}
}

// TestGuardBanSurvivesAgentKill: the agent is killed (SIGKILL, and kept
// down) while a ban is active: the kernel still drops the client, and
// lifts the ban on time by itself. Restarted, the agent neither re-adds
// the expired ban nor resets a live one's timeout.
func TestGuardBanSurvivesAgentKill(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 4*time.Minute)
	st := ready(t, ctx, c)
	unbanAll(t, ctx, c)
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	defer tr.finish(1)
	// The standby's agent: a dead holder agent would keep the IP while the
	// other node took it (the agent is what fences).
	node := other(st.Holder.Node)
	addr := nodeAddr(t, ctx, c, node)
	if !reachable(ctx, c, addr, 22) {
		t.Fatalf("the client cannot reach %s's SSH before any ban", node)
	}
	const banFor = 15 * time.Second
	c.MustSh(t, ctx, st.Holder.Node, fmt.Sprintf("tandem guard ban %s --for %s --reason e2e-agent-kill", clientAddr, banFor))
	banned := time.Now()
	waitUntil(t, time.Second, "the ban in "+node+"'s kernel", func() bool { ok, _, _ := kernelBan(ctx, c, node, clientAddr); return ok })

	// SIGKILL, then keep it down (stop cancels systemd's restart).
	c.MustSh(t, ctx, node, "systemctl kill -s KILL tandem; sleep 0.2; systemctl stop tandem; ! systemctl is-active --quiet tandem")
	if ok, left, err := kernelBan(ctx, c, node, clientAddr); err != nil || !ok || left > banFor {
		t.Fatalf("after the agent was killed: in set %v, %v left, %v; want the ban held", ok, left, err)
	}
	if reachable(ctx, c, addr, 22) {
		t.Error("the banned client reached SSH on a node whose agent is dead")
	}
	waitUntil(t, banFor+3*time.Second, "the kernel to lift the ban on time", func() bool {
		ok, _, err := kernelBan(ctx, c, node, clientAddr)
		return err == nil && !ok
	})
	lifted := time.Since(banned)
	t.Logf("ban for %v lifted by the kernel %v after it was committed, with the agent down", banFor, lifted.Round(10*time.Millisecond))
	if lifted < banFor-time.Second {
		t.Errorf("ban lifted after %v; want about %v", lifted, banFor)
	}
	if !reachable(ctx, c, addr, 22) {
		t.Error("the client cannot reach SSH after the ban expired")
	}
	c.MustSh(t, ctx, node, "systemctl start tandem")
	waitHealthy(t, ctx, c, node)
	if ok, _, _ := kernelBan(ctx, c, node, clientAddr); ok {
		t.Error("the restarted agent put the expired ban back")
	}

	// A live ban across a crash and systemd's restart: the element keeps
	// its expiry (reconciled, not flushed and re-added with a fresh one).
	c.MustSh(t, ctx, st.Holder.Node, fmt.Sprintf("tandem guard ban %s --for 60s", clientAddr))
	banned = time.Now()
	c.MustSh(t, ctx, node, "systemctl kill -s KILL tandem")
	waitUntil(t, 30*time.Second, "the agent restarted by systemd", func() bool {
		st, err := clusterStatus(ctx, c, node)
		return err == nil && st.Raft.Leader != ""
	})
	time.Sleep(time.Second) // a sync after the restart
	ok, left, err := kernelBan(ctx, c, node, clientAddr)
	if err != nil || !ok {
		t.Fatalf("after the restart: in set %v, %v; want the ban kept", ok, err)
	}
	if want := 60*time.Second - time.Since(banned); left > want+2*time.Second {
		t.Errorf("after the restart the ban has %v left; want at most %v (its expiry kept)", left, want+2*time.Second)
	}
	unbanAll(t, ctx, c)
	waitUntil(t, time.Second, "the unban in the kernel", func() bool { ok, _, _ := kernelBan(ctx, c, node, clientAddr); return !ok })
}

// TestGuardNewHolderBlocks: a client banned while node A holds the IP is
// dropped by node B the moment B takes over after A loses power.
func TestGuardNewHolderBlocks(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 4*time.Minute)
	st := ready(t, ctx, c)
	unbanAll(t, ctx, c)
	holder := st.Holder.Node
	standby := other(holder)
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	c.MustSh(t, ctx, holder, fmt.Sprintf("tandem guard ban %s --for 5m --reason e2e-new-holder", clientAddr))
	for _, n := range apps {
		waitUntil(t, time.Second, "the ban in "+n+"'s kernel", func() bool { ok, _, _ := kernelBan(ctx, c, n, clientAddr); return ok })
	}
	fault := time.Now()
	if err := c.Kill(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, standby+" to hold", func() bool {
		s, err := clusterStatus(ctx, c, standby)
		return err == nil && s.Holder.Node == standby && s.Holder.Active
	})
	t.Logf("%s took over %v after %s lost power", standby, time.Since(fault).Round(time.Millisecond), holder)
	vip := lab.FloatingIP.String()
	if reachable(ctx, c, vip, labcluster.SitePort) {
		t.Error("the banned client reached the site through the new holder")
	}
	if ok, left, err := kernelBan(ctx, c, standby, clientAddr); err != nil || !ok || left < 4*time.Minute {
		t.Errorf("new holder's set: in %v, %v left, %v; want the ban", ok, left, err)
	}
	// The unban, issued on the surviving node, opens the site again.
	c.MustSh(t, ctx, standby, "tandem guard unban "+clientAddr)
	waitUntil(t, 2*time.Second, "the client served again through the VIP", func() bool { return reachable(ctx, c, vip, labcluster.SitePort) })
	tr.finish(1)
	if err := c.Start(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, ctx, c, holder)
}

// sshFail makes one SSH login attempt with a wrong password from the
// lab's client namespace and returns nil once the server refused it.
func sshFail(ctx context.Context, c *Labctl, addr, user string) error {
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	conn, err := labprobe.Dial(ctx, c.NetnsPath("client"), "tcp4", net.JoinHostPort(addr, "22"))
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.Password("not-the-password")},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second}
	sc, _, _, err := ssh.NewClientConn(conn, addr, cfg)
	if err == nil {
		sc.Close()
		return errors.New("a wrong password logged in")
	}
	if strings.Contains(err.Error(), "unable to authenticate") {
		return nil
	}
	return err
}

// guardJail is the sshd jail the brute-force scenario runs with: a short
// bantime, so that its expiry is seen.
const guardJail = `
[[guard.jail]]
name = "sshd"
maxretry = 3
findtime = "1m"
bantime = "20s"
`

// enforcedLatencies returns, per app node, the latency its agent logged
// for the ban of addr ("guard: ban enforced ... latency_ms=N").
func enforcedLatencies(t *testing.T, ctx context.Context, c *Labctl, addr string, since time.Time) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	re := regexp.MustCompile(`addr=` + regexp.QuoteMeta(addr) + ` .*latency_ms=(\d+)`)
	for _, n := range apps {
		j := c.MustSh(t, ctx, n, fmt.Sprintf("journalctl -u tandem --no-pager -o cat --since '%s' | grep 'ban enforced' || true", since.UTC().Format("2006-01-02 15:04:05")))
		if m := re.FindStringSubmatch(j); m != nil {
			ms, _ := strconv.Atoi(m[1])
			out[n] = time.Duration(ms) * time.Millisecond
		}
	}
	return out
}

// TestGuardBruteForce: failed SSH logins from the client get it banned on
// every app node within a second of the decision; the ban expires on
// time; 'unban' works cluster-wide; a member failing logins is never
// banned.
func TestGuardBruteForce(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 8*time.Minute)
	ready(t, ctx, c)
	unbanAll(t, ctx, c)
	// One node at a time, so the cluster keeps its quorum.
	for _, n := range apps {
		c.MustSh(t, ctx, n, "cp /etc/tandem/tandem.toml /etc/tandem/tandem.toml.e2e-guard && cat >> /etc/tandem/tandem.toml <<'EOF'"+guardJail+"EOF\nsystemctl restart tandem")
		waitHealthy(t, ctx, c, n)
	}
	t.Cleanup(func() {
		for _, n := range apps {
			_, _ = c.Sh(context.Background(), n, "mv /etc/tandem/tandem.toml.e2e-guard /etc/tandem/tandem.toml && systemctl restart tandem && sleep 3")
		}
	})
	ready(t, ctx, c)
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	defer tr.finish(1)
	target := "node1"
	addr := nodeAddr(t, ctx, c, target)

	// A member fails logins (more than maxretry) in node1's sshd log:
	// never banned. The control: the same lines naming a stranger ban it,
	// so the lines are read.
	member := nodeAddr(t, ctx, c, "node2")
	const stranger = "10.77.0.50"
	for _, a := range []string{member, stranger} {
		c.MustSh(t, ctx, target, fmt.Sprintf(`for i in 1 2 3 4 5; do logger -t sshd -p auth.info "Failed password for invalid user nobody from %s port 4242$i ssh2"; done`, a))
	}
	deadline := time.Now().Add(5 * time.Second)
	for ok := false; !ok; ok, _, _ = kernelBan(ctx, c, "node2", stranger) {
		if time.Now().After(deadline) {
			out, _ := c.Sh(ctx, target, "journalctl -t sshd --no-pager -n 5; echo ---; ps -eo pid,args | grep -E 'journalctl|tandem' | grep -v grep; echo ---; journalctl -u tandem --no-pager -n 30 | grep -i guard; echo ---; tail -n 30 /etc/tandem/tandem.toml")
			t.Fatalf("the stranger was not banned within 5s (the control that the lines are read):\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.MustSh(t, ctx, "node1", "tandem guard unban "+stranger)

	// The client brute-forces node1.
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if err := sshFail(ctx, c, addr, fmt.Sprintf("admin%d", i)); err != nil {
				t.Logf("attempt %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for _, n := range apps {
		waitUntil(t, 10*time.Second, "the client banned in "+n+"'s kernel", func() bool { ok, _, _ := kernelBan(ctx, c, n, clientAddr); return ok })
	}
	lat := enforcedLatencies(t, ctx, c, clientAddr, start)
	for _, n := range apps {
		d, ok := lat[n]
		t.Logf("%s enforced the ban %v after its decision", n, d)
		if !ok || d > time.Second {
			t.Errorf("%s: enforcement latency %v (logged %v); want within 1 s of the decision", n, d, ok)
		}
	}
	if reachable(ctx, c, addr, 22) {
		t.Error("the banned client still reaches node1's SSH")
	}
	bans := guardBans(t, ctx, c, "node2")
	// Expiry on time (bantime 20 s; the first offence).
	waitUntil(t, 25*time.Second, "the ban to expire", func() bool {
		for _, n := range apps {
			if ok, _, _ := kernelBan(ctx, c, n, clientAddr); ok {
				return false
			}
		}
		return true
	})
	if took := time.Since(start); took < 18*time.Second {
		t.Errorf("the 20 s ban expired %v after the attack began", took)
	}
	if !reachable(ctx, c, addr, 22) {
		t.Error("the client cannot reach SSH after its ban expired")
	}

	// Again: the repeat offender's ban is longer; unban lifts it everywhere.
	for i := range 5 {
		wg.Go(func() { _ = sshFail(ctx, c, addr, fmt.Sprintf("oracle%d", i)) })
	}
	wg.Wait()
	waitUntil(t, 10*time.Second, "the second ban", func() bool { ok, _, _ := kernelBan(ctx, c, "node2", clientAddr); return ok })
	if _, left, _ := kernelBan(ctx, c, "node2", clientAddr); left < 25*time.Second {
		t.Errorf("the second offence's ban has %v left; want it grown beyond the 20 s bantime", left)
	}
	c.MustSh(t, ctx, "node2", "tandem guard unban "+clientAddr)
	for _, n := range apps {
		waitUntil(t, time.Second, "the unban in "+n+"'s kernel", func() bool { ok, _, _ := kernelBan(ctx, c, n, clientAddr); return !ok })
	}
	// Banning a member's address by hand is refused with a clear message.
	r, err := c.Exec(ctx, "node1", "tandem", "guard", "ban", member)
	if err != nil || r.Code == 0 || !strings.Contains(r.Stderr, "cluster member node2") {
		t.Errorf("tandem guard ban %s (node2's address) = exit %d %q %v; want refused, naming the member", member, r.Code, r.Stderr, err)
	}
	bans = guardBans(t, ctx, c, "node1")
	for _, b := range bans.Bans {
		if b.Addr == member {
			t.Errorf("member node2's address %s was banned: %+v", member, b)
		}
	}
}
