package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
)

// The "Checked by" list for the lab, one scenario per test.

func containerNodes() []string {
	return []string{lab.WitnessName, lab.NodeName(1), lab.NodeName(2)}
}

func TestNodesBootAsRealSystems(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 2*time.Minute)
	for _, n := range containerNodes() {
		r := c.MustExec(t, ctx, n, "systemctl", "is-system-running", "--wait")
		st := strings.TrimSpace(r.Stdout)
		if st != "running" {
			failed, _ := c.Exec(ctx, n, "systemctl", "--failed", "--no-legend", "--plain")
			t.Errorf("%s: is-system-running = %q (exit %d), want running; failed units:\n%s", n, st, r.Code, failed.Stdout)
		}
		// PID 1 is systemd, and real services run.
		if got := c.MustSh(t, ctx, n, "cat /proc/1/comm"); strings.TrimSpace(got) != "systemd" {
			t.Errorf("%s: PID 1 is %q, want systemd", n, got)
		}
		for _, unit := range []string{"ssh", "dbus", "systemd-journald"} {
			r := c.MustExec(t, ctx, n, "systemctl", "is-active", unit)
			if strings.TrimSpace(r.Stdout) != "active" {
				t.Errorf("%s: %s is %q, want active", n, unit, strings.TrimSpace(r.Stdout))
			}
		}
		if got := strings.TrimSpace(c.MustSh(t, ctx, n, "hostname")); got != n {
			t.Errorf("%s: hostname is %q", n, got)
		}
	}
	// The image holds what later work needs.
	for _, bin := range []string{"nft", "ip", "python3", "gunicorn", "curl", "keepalived", "sshd", "dpkg", "adduser"} {
		if _, err := c.Sh(ctx, "node1", "command -v "+bin); err != nil {
			t.Errorf("node1 has no %s: %v", bin, err)
		}
	}
	if _, err := c.Sh(ctx, "node1", "python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys'"); err != nil {
		t.Errorf("python3 -m venv does not work: %v", err)
	}
}

func TestAddresses(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	out := c.MustSh(t, ctx, "node1", "ip -4 -o addr")
	if !strings.Contains(out, "10.77.0.11/24") || !strings.Contains(out, "eth0") {
		t.Errorf("node1's ip -4 -o addr lacks 10.77.0.11/24 on eth0:\n%s", out)
	}
	want := map[string]string{"client": "10.77.0.2", "witness": "10.77.0.10", "node1": "10.77.0.11", "node2": "10.77.0.12"}
	st := c.MustStatus(t, ctx)
	if len(st) != len(want) {
		t.Errorf("status lists %d members, want %d: %+v", len(st), len(want), st)
	}
	for _, n := range st {
		if want[n.Name] != n.Address {
			t.Errorf("status: %s has address %q, want %q", n.Name, n.Address, want[n.Name])
		}
		if n.State != lab.StateRunning {
			t.Errorf("status: %s is %s, want running", n.Name, n.State)
		}
		if n.Role != lab.RoleClient && n.InitPID <= 0 {
			t.Errorf("status: %s has no init PID", n.Name)
		}
		if n.Role != lab.RoleClient {
			// The init PID is a real host process: the container's systemd.
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n.InitPID))
			if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
				t.Errorf("status: %s's init PID %d is %q (%v), want systemd", n.Name, n.InitPID, comm, err)
			}
		}
	}
	// The client runs on the host's file system in its own namespace.
	if out := c.MustSh(t, ctx, "client", "ip -4 -o addr show dev eth0"); !strings.Contains(out, "10.77.0.2/24") {
		t.Errorf("client lacks 10.77.0.2/24:\n%s", out)
	}
}

func TestReachability(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	for _, p := range [][2]string{
		{"node1", "10.77.0.12"}, {"node2", "10.77.0.11"}, {"node1", "node2"}, // names resolve through /etc/hosts
		{"client", "10.77.0.11"}, {"client", "10.77.0.12"}, {"client", "10.77.0.10"},
		{"witness", "10.77.0.11"},
	} {
		if !c.Ping(ctx, p[0], p[1]) {
			t.Errorf("%s cannot reach %s", p[0], p[1])
		}
	}
	// TCP too: sshd answers on every node.
	out, err := c.Sh(ctx, "client", "curl -s --max-time 3 telnet://10.77.0.11:22 </dev/null | head -c 7 || true")
	if err != nil || !strings.HasPrefix(out, "SSH-2.0") {
		t.Errorf("client cannot open TCP to node1's sshd: %q %v", out, err)
	}
	// The lab never routes to the world.
	if c.Ping(ctx, "node1", "192.0.2.1") {
		t.Error("node1 reaches an address outside the lab")
	}
}

func TestHostNetworkUntouched(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	b, err := os.ReadFile(os.Getenv(envHostBefore))
	if err != nil {
		t.Fatalf("no snapshot from before the lab: %v", err)
	}
	now, err := HostNetwork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if now != string(b) {
		t.Errorf("the host's ip -j addr / ip -j route changed while the lab is up\nbefore:\n%s\nnow:\n%s", b, now)
	}
	// Nothing of the lab is a link in the host's namespace.
	links := mustRun(t, ctx, "ip", "-o", "link")
	if strings.Contains(links, "ve-") || strings.Contains(links, "br0") {
		t.Errorf("lab links in the host namespace:\n%s", links)
	}
}

func TestExecPassesThrough(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	r := c.MustExec(t, ctx, "node1", "sh", "-c", "echo out; echo err >&2; exit 7")
	if r.Code != 7 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("exec = exit %d, stdout %q, stderr %q; want 7, \"out\\n\", \"err\\n\"", r.Code, r.Stdout, r.Stderr)
	}
	r, err := c.Run(ctx, strings.NewReader("from stdin"), "exec", "node2", "--", "cat")
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 0 || r.Stdout != "from stdin" {
		t.Errorf("exec with stdin = exit %d, %q", r.Code, r.Stdout)
	}
	r = c.MustExec(t, ctx, "client", "sh", "-c", "exit 3")
	if r.Code != 3 {
		t.Errorf("exec in client: exit %d, want 3", r.Code)
	}
	r = c.MustExec(t, ctx, "node9", "true")
	if r.Code == 0 || !strings.Contains(r.Stderr, "no node") {
		t.Errorf("exec in a missing node: exit %d, %q", r.Code, r.Stderr)
	}
}

func TestErrors(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	r, _ := c.Run(ctx, nil, "up")
	if r.Code != 1 || !strings.Contains(r.Stderr, "already up") || !strings.Contains(r.Stderr, "tandem lab down") {
		t.Errorf("up of a running lab: exit %d, %q; want 1 and a hint to run down", r.Code, r.Stderr)
	}
	// make lab's second run: up --reuse reports the running lab and its
	// cluster instead of failing, and leaves it as it was.
	before, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, _ = c.Run(ctx, nil, "up", "--reuse", "--nodes", fmt.Sprint(suiteNodes))
	if r.Code != 0 || !strings.Contains(r.Stderr, "already up") || !strings.Contains(r.Stdout, "10.77.0.100") {
		t.Errorf("up --reuse of a running lab: exit %d, stdout %q, stderr %q; want 0 and the running lab reported", r.Code, r.Stdout, r.Stderr)
	}
	if after, err := c.Status(ctx); err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("up --reuse changed the lab: before %v, after %v (%v)", before, after, err)
	}
	// Not root: exit 3 with one message saying how to fix it.
	cmd := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", c.Bin, "lab", "status", "--name", c.Name)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(string(out), "needs root") {
		t.Errorf("lab status as nobody: %v, %q; want exit 3 and 'needs root'", err, out)
	}
	for _, args := range [][]string{{"kill", "node7"}, {"partition", "nodeX"}, {"netem", "node1", "--loss", "200%"}, {"exec", "node1", "true"}} {
		if r, _ := c.Run(ctx, nil, args...); r.Code == 0 || r.Stderr == "" {
			t.Errorf("tandem lab %v: exit %d, stderr %q; want an error", args, r.Code, r.Stderr)
		}
	}
}

func TestCopyIn(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	src := filepath.Join(t.TempDir(), "payload.sh")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho copied\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := c.CopyIn(ctx, src, "node1", "/root/"); err != nil {
		t.Fatal(err)
	}
	if out := c.MustSh(t, ctx, "node1", "/root/payload.sh && stat -c %a /root/payload.sh"); out != "copied\n750\n" {
		t.Errorf("copied file runs as %q, want copied and mode 750", out)
	}
	if err := c.CopyIn(ctx, src, "node2", "/tmp/renamed"); err != nil {
		t.Fatal(err)
	}
	if out := c.MustSh(t, ctx, "node2", "cat /tmp/renamed"); !strings.Contains(out, "echo copied") {
		t.Errorf("node2:/tmp/renamed = %q", out)
	}
	if err := c.CopyIn(ctx, src, "node1", "/nonexistent/dir/x"); err == nil {
		t.Error("copy into a missing directory succeeded")
	}
}

// Interrupting `tandem lab exec` stops the command in the node too, not
// only the local nsenter.
func TestExecInterruptStopsCommand(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	// A unique duration names the process in node1.
	marker := fmt.Sprintf("sleep 300.%06d", time.Now().UnixNano()%1e6)
	cmd := exec.CommandContext(ctx, c.Bin, "lab", "exec", "--name", c.Name, "node1", "--", "sh", "-c", marker+"; true")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second // a command left running holds stderr open
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	running := func() bool {
		r, err := c.Exec(ctx, "node1", "pgrep", "-f", marker)
		if err != nil {
			t.Fatal(err)
		}
		return r.Code == 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for !running() {
		if time.Now().After(deadline) {
			t.Fatal("command did not start in node1")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("interrupted exec exited 0")
	}
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr %q does not say the command was interrupted", stderr.String())
	}
	deadline = time.Now().Add(5 * time.Second)
	for running() {
		if time.Now().After(deadline) {
			t.Fatal("command still running in node1 after interrupting tandem lab exec")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nor is a zombie left whose parent is outside the node (ppid 0 inside):
	// only the host's init could reap it, and until then the node's init
	// cannot die, which slows a later 'lab kill'.
	orphans := c.MustSh(t, ctx, "node1", "ps -eo stat=,ppid=,comm= | awk '$1 ~ /^Z/ && $2 == 0'")
	if strings.TrimSpace(orphans) != "" {
		t.Errorf("zombies orphaned outside node1 after the interrupt:\n%s", orphans)
	}
}

func TestKillAndStart(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 3*time.Minute)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 10)
	c.MustSh(t, ctx, "node1", "echo "+stamp+" > /root/before-kill && sync")
	// Network state the node made must not outlive its power: an extra
	// address (as a floating IP would be) and a firewall table.
	// (Not the cluster's floating IP itself: the agents own that one.)
	extra := "10.77.0.198"
	c.MustSh(t, ctx, "node1", "ip addr add "+extra+"/24 dev eth0 && nft add table inet e2e_kill")
	if !c.Ping(ctx, "client", extra) {
		t.Fatal("client cannot reach the address node1 added")
	}

	t0 := time.Now()
	if err := c.Kill(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	var stoppedAfter time.Duration
	for {
		n := c.MustNode(t, ctx, "node1")
		if n.State == lab.StateStopped {
			stoppedAfter = time.Since(t0)
			break
		}
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("node1 still %s 5s after kill", n.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("node1 shown stopped %v after kill started", stoppedAfter.Round(time.Millisecond))
	if stoppedAfter > time.Second {
		t.Errorf("node1 shown stopped only after %v, want within 1s", stoppedAfter)
	}
	// The others are unaffected, and node1 is unreachable.
	if n := c.MustNode(t, ctx, "node2"); n.State != lab.StateRunning {
		t.Errorf("node2 is %s after killing node1", n.State)
	}
	for _, addr := range []string{"10.77.0.11", extra} {
		if c.Ping(ctx, "client", addr) {
			t.Errorf("a killed node1 still answers ping on %s", addr)
		}
	}
	if r := c.MustExec(t, ctx, "node1", "true"); r.Code == 0 || !strings.Contains(r.Stderr, "stopped") {
		t.Errorf("exec in a killed node: exit %d, %q", r.Code, r.Stderr)
	}

	if err := c.Start(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if n := c.MustNode(t, ctx, "node1"); n.State != lab.StateRunning {
		t.Fatalf("node1 is %s after start", n.State)
	}
	if st := strings.TrimSpace(c.MustExec(t, ctx, "node1", "systemctl", "is-system-running", "--wait").Stdout); st != "running" {
		t.Errorf("node1 after start: %s", st)
	}
	if got := strings.TrimSpace(c.MustSh(t, ctx, "node1", "cat /root/before-kill")); got != stamp {
		t.Errorf("file written before the kill reads %q, want %q", got, stamp)
	}
	if !c.Ping(ctx, "client", "10.77.0.11") {
		t.Error("client cannot reach node1 after start")
	}
	if out := c.MustSh(t, ctx, "node1", "ip -4 -o addr show dev eth0; nft list tables"); strings.Contains(out, extra) || strings.Contains(out, "e2e_kill") {
		t.Errorf("network state from before the kill survived it:\n%s", out)
	}
	// Starting a running node is refused.
	if err := c.Start(ctx, "node1"); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("start of a running node: %v", err)
	}
}

func TestPartitionAndHeal(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	if err := c.Partition(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Heal(context.Background(), "node1") })
	if n := c.MustNode(t, ctx, "node1"); n.State != lab.StatePartitioned {
		t.Errorf("node1 is %s, want partitioned", n.State)
	}
	for _, from := range []string{"node2", "client"} {
		if c.Ping(ctx, from, "10.77.0.11") {
			t.Errorf("%s reaches a partitioned node1", from)
		}
	}
	if c.Ping(ctx, "node1", "10.77.0.12") {
		t.Error("a partitioned node1 reaches node2")
	}
	if !c.Ping(ctx, "client", "10.77.0.12") {
		t.Error("the partition of node1 cut client from node2")
	}
	// Its own link stays up: the cut is in the network, not the node.
	if out := c.MustSh(t, ctx, "node1", "ip -o link show dev eth0"); !strings.Contains(out, "state UP") {
		t.Errorf("node1's eth0 is not up while partitioned: %s", out)
	}
	if err := c.Heal(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"node2", "client"} {
		if !c.Ping(ctx, from, "10.77.0.11") {
			t.Errorf("%s cannot reach node1 after heal", from)
		}
	}
	if n := c.MustNode(t, ctx, "node1"); n.State != lab.StateRunning {
		t.Errorf("node1 is %s after heal, want running", n.State)
	}
}

var rttRE = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/`)

// pingRTT returns min and max RTT of n pings from -> addr.
func pingRTT(ctx context.Context, t *testing.T, c *Labctl, from, addr string, n int) (lo, hi time.Duration) {
	t.Helper()
	out := c.MustSh(t, ctx, from, fmt.Sprintf("ping -n -q -c %d -i 0.2 -W 2 %s", n, addr))
	m := rttRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no RTT in ping output:\n%s", out)
	}
	ms := func(s string) time.Duration {
		f, _ := strconv.ParseFloat(s, 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	return ms(m[1]), ms(m[3])
}

func TestNetem(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 2*time.Minute)
	if err := c.Netem(ctx, "node1", "--delay", "100ms"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Netem(context.Background(), "node1", "--clear") })
	if n := c.MustNode(t, ctx, "node1"); !strings.Contains(n.Netem, "100ms") {
		t.Errorf("status shows netem %q", n.Netem)
	}
	lo, hi := pingRTT(ctx, t, c, "client", "10.77.0.11", 5)
	t.Logf("client -> node1 RTT with 100ms delay: min %v max %v", lo, hi)
	if lo < 100*time.Millisecond {
		t.Errorf("min RTT %v with --delay 100ms, want >= 100ms", lo)
	}
	// Other nodes are not slowed.
	if _, hi2 := pingRTT(ctx, t, c, "client", "10.77.0.12", 3); hi2 >= 50*time.Millisecond {
		t.Errorf("node2's RTT %v grew with node1's netem", hi2)
	}
	// Bulk TCP passes through the degraded link intact (the forwarder
	// relays offloaded segments).
	sum := strings.TrimSpace(c.MustSh(t, ctx, "node1",
		"head -c 4000000 /dev/urandom > /tmp/blob && systemd-run --quiet --unit=e2e-blob python3 -m http.server 9000 -d /tmp && sha256sum /tmp/blob | cut -d' ' -f1"))
	t.Cleanup(func() { _, _ = c.Sh(context.Background(), "node1", "systemctl stop e2e-blob") })
	got := strings.TrimSpace(c.MustSh(t, ctx, "client",
		"f=$(mktemp) && for i in $(seq 30); do if curl -sf --max-time 20 -o $f http://10.77.0.11:9000/blob; then sha256sum $f | cut -d' ' -f1; rm -f $f; exit 0; fi; sleep 0.2; done; rm -f $f; exit 1"))
	if got != sum {
		t.Errorf("4 MB over the degraded link arrived with sha256 %s, want %s", got, sum)
	}
	// A partition holds while netem relays the node's frames.
	if err := c.Partition(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if c.Ping(ctx, "client", "10.77.0.11") {
		t.Error("client reaches node1 partitioned under netem")
	}
	if err := c.Heal(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if !c.Ping(ctx, "client", "10.77.0.11") {
		t.Error("client cannot reach node1 healed under netem")
	}
	if err := c.Netem(ctx, "node1", "--clear"); err != nil {
		t.Fatal(err)
	}
	if _, hi := pingRTT(ctx, t, c, "client", "10.77.0.11", 3); hi >= 50*time.Millisecond {
		t.Errorf("RTT %v after --clear, want well under 50ms", hi)
	}
	if n := c.MustNode(t, ctx, "node1"); n.Netem != "" {
		t.Errorf("status still shows netem %q after --clear", n.Netem)
	}
	// Bad values are refused with a usage error.
	if r, _ := c.Run(ctx, nil, "netem", "node1", "--delay", "10ms", "--jitter", "20ms"); r.Code != 2 {
		t.Errorf("jitter above delay: exit %d, want 2 (%s)", r.Code, r.Stderr)
	}
}

func TestSplitBrainObserver(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, time.Minute)
	// Not the cluster's floating IP: its agents own that one.
	vip := netip.MustParseAddr("10.77.0.199")
	octx, stop := context.WithCancel(ctx)
	o, errc := c.Observe(octx, vip, []string{"node1", "node2"}, 5*time.Millisecond)
	t.Cleanup(func() {
		for _, n := range []string{"node1", "node2"} {
			_, _ = c.Sh(context.Background(), n, "ip addr del "+vip.String()+"/24 dev eth0 2>/dev/null || true")
		}
	})
	time.Sleep(50 * time.Millisecond)
	c.MustSh(t, ctx, "node1", "ip addr add "+vip.String()+"/24 dev eth0")
	time.Sleep(50 * time.Millisecond)
	c.MustSh(t, ctx, "node2", "ip addr add "+vip.String()+"/24 dev eth0")
	time.Sleep(50 * time.Millisecond)
	c.MustSh(t, ctx, "node1", "ip addr del "+vip.String()+"/24 dev eth0")
	time.Sleep(50 * time.Millisecond)
	stop()
	if err := <-errc; err != nil && err != context.Canceled {
		t.Fatalf("observer: %v", err)
	}
	rep := o.Report()
	if rep.Samples < 20 {
		t.Errorf("observer took only %d samples", rep.Samples)
	}
	if len(rep.SplitBrain) == 0 {
		t.Error("observer missed a deliberate split brain (node1 and node2 both held the VIP)")
	}
	if got := o.Current().Holders; len(got) != 1 || got[0] != "node2" {
		t.Errorf("last holders = %v, want [node2]", got)
	}
}

// TestTeardownAndWarmStart downs the suite's lab twice, checks it left
// nothing behind, then brings it up again with a warm image cache and times
// it: the acceptance figure is under 30 s for three nodes.
func TestTeardownAndWarmStart(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	// Lose the state file first, as a crash might: down must still find and
	// remove everything by scanning the system.
	l, err := lab.New(lab.Options{Name: c.Name})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(l.Dir(), "lab.json")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if r, err := c.Down(ctx); err != nil {
			t.Fatalf("down #%d: %v", i, err)
		} else {
			t.Logf("down #%d took %v", i, r.Elapsed.Round(time.Millisecond))
		}
		if leaks := Leaks(ctx, c.Name); len(leaks) > 0 {
			t.Errorf("after down #%d:\n  %s", i, strings.Join(leaks, "\n  "))
		}
	}
	if out := mustRun(t, ctx, "ip", "netns", "list"); strings.Contains(out, "tandem-"+c.Name+"-") {
		t.Errorf("ip netns list after down:\n%s", out)
	}
	if out, _ := run(ctx, "findmnt", "-rn", "-o", "TARGET"); strings.Contains(out, "/var/lib/tandem/lab/"+c.Name) {
		t.Errorf("findmnt after down:\n%s", out)
	}
	if b, err := os.ReadFile(os.Getenv(envHostBefore)); err == nil {
		if now, err := HostNetwork(ctx); err != nil || now != string(b) {
			t.Errorf("the host's network differs after down\nbefore:\n%s\nnow:\n%s", b, now)
		}
	}

	r, err := c.Up(ctx, suiteNodes, true)
	if err != nil {
		t.Fatalf("warm up: %v", err)
	}
	t.Logf("warm 'tandem lab up' (node1, node2, witness) took %v", r.Elapsed.Round(time.Millisecond))
	if r.Elapsed > 30*time.Second {
		t.Errorf("warm lab up took %v, want under 30s", r.Elapsed)
	}
	for _, n := range containerNodes() {
		if st := strings.TrimSpace(c.MustExec(t, ctx, n, "systemctl", "is-system-running").Stdout); st != "running" {
			t.Errorf("%s after warm up: %s", n, st)
		}
	}
	// Each node got a fresh disk.
	if r := c.MustExec(t, ctx, "node1", "test", "-e", "/root/before-kill"); r.Code == 0 {
		t.Error("node1's disk survived down and up; want a fresh overlay")
	}
}
