package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/labprobe"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// The failover budget the e2e scenarios hold tandem to (I2). The
// benchmark (make bench-failover) measures the real figures; this bound
// leaves room for a loaded CI machine.
const failoverBudget = 2 * time.Second

var apps = []string{"node1", "node2"}

// clusterStatus runs 'tandem status --json' on a node.
func clusterStatus(ctx context.Context, c *Labctl, node string) (localapi.Status, error) {
	var st localapi.Status
	r, err := c.Exec(ctx, node, "tandem", "status", "--json")
	if err != nil {
		return st, err
	}
	if r.Code != 0 {
		return st, r.Err()
	}
	return st, json.Unmarshal([]byte(r.Stdout), &st)
}

// healthy reports whether a node sees three reachable voters, every app node
// healthy and an active holder.
func healthy(st localapi.Status) bool {
	if len(st.Members) != 3 || !st.Holder.Active || st.Holder.Node == "" || st.Mode != "auto" {
		return false
	}
	// Settled: the raft leader (the controller) is not the holder, so that
	// losing the holder does not also cost an election.
	if st.Raft.Leader == "" || st.Raft.Leader == st.Holder.Node {
		return false
	}
	for _, m := range st.Members {
		if m.Suffrage != "voter" || !m.Reachable || (m.Role == "app" && !m.Healthy) {
			return false
		}
	}
	return true
}

// ready restores the lab after earlier scenarios: every node running and
// connected, no netem, the site up, the cluster healthy, and the cool-off
// since the last move over. It returns the status.
func ready(t *testing.T, ctx context.Context, c *Labctl) localapi.Status {
	t.Helper()
	for _, n := range c.MustStatus(t, ctx) {
		switch {
		case n.Role == lab.RoleClient:
		case n.State == lab.StateStopped:
			if err := c.Start(ctx, n.Name); err != nil {
				t.Fatal(err)
			}
		case n.State == lab.StatePartitioned:
			if err := c.Heal(ctx, n.Name); err != nil {
				t.Fatal(err)
			}
		}
		if n.Netem != "" {
			if err := c.Netem(ctx, n.Name, "--clear"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range apps {
		c.MustSh(t, ctx, n, "systemctl start pysite")
	}
	var st localapi.Status
	deadline := time.Now().Add(90 * time.Second)
	for {
		var err error
		st, err = clusterStatus(ctx, c, "node1")
		if err == nil && healthy(st) {
			if st.LastFailover == nil || time.Since(st.LastFailover.At) > 7*time.Second {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready after 90s: %+v (err %v)", st, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func other(node string) string {
	if node == "node1" {
		return "node2"
	}
	return "node1"
}

// trial watches the VIP and sends client traffic while a scenario runs.
type trial struct {
	t      *testing.T
	c      *Labctl
	start  time.Time
	obs    *labprobe.Observer
	client *labprobe.Client
	stop   context.CancelFunc
	done   chan struct{}
}

func startTrial(t *testing.T, ctx context.Context, c *Labctl, timeout time.Duration) *trial {
	t.Helper()
	tctx, stop := context.WithCancel(ctx)
	obs, _ := c.Observe(tctx, lab.FloatingIP, []string{"node1", "node2", "witness"}, 5*time.Millisecond)
	client, err := labprobe.NewClient(c.NetnsPath("client"), labcluster.VIPURL+"healthz", 10*time.Millisecond, timeout)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	tr := &trial{t: t, c: c, start: time.Now(), obs: obs, client: client, stop: stop, done: make(chan struct{})}
	go func() { defer close(tr.done); _ = client.Run(tctx) }()
	time.Sleep(300 * time.Millisecond) // a baseline before the fault
	return tr
}

// finish stops the trial and checks I1 (never two holders) and I3 (at most
// maxMoves moves).
func (tr *trial) finish(maxMoves int) labprobe.Report {
	tr.t.Helper()
	tr.stop()
	<-tr.done
	rep := tr.obs.Report()
	if rep.Samples < 50 {
		tr.t.Errorf("observer took only %d samples", rep.Samples)
	}
	if n := len(rep.SplitBrain); n > 0 {
		tr.t.Errorf("I1 violated: %d samples with two holders, first at %v: %v", n, rep.SplitBrain[0].At, rep.SplitBrain[0].Holders)
	}
	if m := rep.Moves(); m > maxMoves {
		tr.t.Errorf("I3 violated: %d moves, want at most %d; changes: %v", m, maxMoves, rep.Changes)
	}
	if tr.t.Failed() {
		tr.t.Logf("holder changes seen by the observer: %v", rep.Changes)
		since := tr.start.UTC().Format("2006-01-02 15:04:05")
		for _, n := range []string{"node1", "node2", "witness"} {
			out, _ := tr.c.Sh(context.Background(), n, "journalctl -u tandem --no-pager -o short-precise --since '"+since+"' | grep -v level=DEBUG | tail -40")
			tr.t.Logf("journal of %s since the trial began:\n%s", n, out)
		}
	}
	return rep
}

// servedBy waits until a request started after since succeeds from node and
// returns the outage measured from since.
func (tr *trial) servedBy(node string, since time.Time, within time.Duration) time.Duration {
	tr.t.Helper()
	deadline := time.Now().Add(within + time.Second)
	for time.Now().Before(deadline) {
		for _, r := range tr.client.Results() {
			if r.OK && r.Start.After(since) && strings.Contains(r.Body, fmt.Sprintf("%q", node)) {
				d := r.End.Sub(since)
				if d > within {
					tr.t.Errorf("I2: %s served after %v, budget %v", node, d.Round(time.Millisecond), within)
				}
				return d
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr.t.Fatalf("I2 violated: %s did not serve within %v of the fault (holders now %v)", node, within, tr.obs.Current().Holders)
	return 0
}

func (tr *trial) failures(from, to time.Time) int {
	return labprobe.Failures(tr.client.Results(), from, to)
}

// stableFor watches for d and fails on any move.
func stableFor(t *testing.T, tr *trial, want string, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if h := tr.obs.Current().Holders; len(h) != 1 || h[0] != want {
		t.Errorf("holders after %v = %v; want [%s]", d, h, want)
	}
}

// waitHook waits until node's hook log (see labcluster.HookLog) has a line
// with the state and event, i.e. its promote, demote or fault hook ran with
// keepalived's notify argument.
func waitHook(t *testing.T, ctx context.Context, c *Labctl, node, state, event string) {
	t.Helper()
	want := " " + state + " " + event
	var log string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		log, _ = c.Sh(ctx, node, "cat "+labcluster.HookLog+" 2>/dev/null || true")
		if strings.Contains(log, want) {
			return
		}
	}
	t.Errorf("%s: no %q hook run in %s:\n%s", node, want, labcluster.HookLog, log)
}

func clearHooks(t *testing.T, ctx context.Context, c *Labctl) {
	t.Helper()
	for _, n := range apps {
		c.MustSh(t, ctx, n, "rm -f "+labcluster.HookLog)
	}
}

func TestFailoverHolderPowerLoss(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	st := ready(t, ctx, c)
	holder := st.Holder.Node
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	fault := time.Now()
	if err := c.Kill(ctx, holder); err != nil {
		t.Fatal(err)
	}
	d := tr.servedBy(other(holder), fault, failoverBudget)
	t.Logf("holder %s lost power: %s served after %v", holder, other(holder), d.Round(time.Millisecond))
	waitHook(t, ctx, c, other(holder), "MASTER", "promote")

	// Scenario 5: the old holder comes back and stays standby.
	if err := c.Start(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, ctx, c, other(holder))
	stableFor(t, tr, other(holder), 5*time.Second)
	tr.finish(1)
}

func waitHealthy(t *testing.T, ctx context.Context, c *Labctl, node string) localapi.Status {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := clusterStatus(ctx, c, node)
		if err == nil && healthy(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not healthy after 90s: %+v (err %v)", st, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestFailoverAppFailure(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	clearHooks(t, ctx, c)
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	fault := time.Now()
	c.MustSh(t, ctx, holder, "systemctl stop pysite")
	d := tr.servedBy(other(holder), fault, failoverBudget)
	t.Logf("app on %s stopped: %s served after %v", holder, other(holder), d.Round(time.Millisecond))
	waitHook(t, ctx, c, holder, "BACKUP", "demote")
	waitHook(t, ctx, c, other(holder), "MASTER", "promote")
	c.MustSh(t, ctx, holder, "systemctl start pysite")
	stableFor(t, tr, other(holder), 3*time.Second)
	tr.finish(1)
	st, err := clusterStatus(ctx, c, other(holder))
	if err != nil {
		t.Fatal(err)
	}
	if st.LastFailover == nil || st.LastFailover.Reason != "holder unhealthy" {
		t.Errorf("last failover = %+v; want reason 'holder unhealthy'", st.LastFailover)
	}
}

func TestFailoverPartitionedHolder(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	clearHooks(t, ctx, c)
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	fault := time.Now()
	if err := c.Partition(ctx, holder); err != nil {
		t.Fatal(err)
	}
	d := tr.servedBy(other(holder), fault, failoverBudget)
	t.Logf("holder %s partitioned: %s served after %v", holder, other(holder), d.Round(time.Millisecond))
	// The cut-off node fenced itself: it no longer has the VIP.
	if h := tr.obs.Current().Holders; len(h) != 1 || h[0] != other(holder) {
		t.Errorf("holders while %s is partitioned = %v", holder, h)
	}
	waitHook(t, ctx, c, holder, "FAULT", "fault") // lost its quorum lease
	if err := c.Heal(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, ctx, c, holder)
	stableFor(t, tr, other(holder), 5*time.Second) // nothing moves back
	tr.finish(1)
}

func TestFailoverWitnessLost(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	fault := time.Now()
	if err := c.Kill(ctx, "witness"); err != nil {
		t.Fatal(err)
	}
	stableFor(t, tr, holder, 8*time.Second)
	if n := tr.failures(fault, time.Now()); n > 0 {
		t.Errorf("%d requests failed after the witness was lost; want none", n)
	}
	tr.finish(0)
	if err := c.Start(ctx, "witness"); err != nil {
		t.Fatal(err)
	}
}

func TestFailoverFullRestart(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	before := ready(t, ctx, c)
	for _, n := range []string{"node1", "node2", "witness"} {
		if err := c.Kill(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"node1", "node2", "witness"} {
		if err := c.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	waitHealthy(t, ctx, c, "node2")
	// Past the agents' startup grace, nothing may have moved.
	time.Sleep(12 * time.Second)
	after := waitHealthy(t, ctx, c, "node2")
	if after.Holder.Node != before.Holder.Node || after.Holder.Epoch != before.Holder.Epoch {
		t.Errorf("holder after a full restart = %s at epoch %d; want %s at epoch %d (I4)",
			after.Holder.Node, after.Holder.Epoch, before.Holder.Node, before.Holder.Epoch)
	}
	if len(after.Moves) < len(before.Moves) {
		t.Fatalf("move history shrank from %d to %d entries (I4)", len(before.Moves), len(after.Moves))
	}
	for i, mv := range before.Moves {
		if got := after.Moves[i]; got.Epoch != mv.Epoch || got.To != mv.To || got.Reason != mv.Reason {
			t.Errorf("move %d changed across the restart: %+v -> %+v", i, mv, got)
		}
	}
	t.Logf("after a full restart: holder %s, epoch %d (was %s, %d)", after.Holder.Node, after.Holder.Epoch, before.Holder.Node, before.Holder.Epoch)
}

func TestFailoverMaintenanceFreezes(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	c.MustSh(t, ctx, "node1", "tandem maintenance on")
	t.Cleanup(func() { _, _ = c.Sh(context.Background(), "node1", "tandem maintenance off") })
	tr := startTrial(t, ctx, c, 250*time.Millisecond)
	c.MustSh(t, ctx, holder, "systemctl stop pysite")
	stableFor(t, tr, holder, 4*time.Second)
	tr.finish(0)
	c.MustSh(t, ctx, holder, "systemctl start pysite")
	c.MustSh(t, ctx, "node1", "tandem maintenance off")
}

func TestFailoverSwitchover(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	// A witness reports and votes, nothing more: it may not move the IP.
	if _, err := c.Sh(ctx, "witness", "tandem switchover --to "+other(holder)); err == nil || !strings.Contains(err.Error(), "app node") {
		t.Fatalf("switchover on the witness: %v; want a refusal saying to run it on an app node", err)
	}
	tr := startTrial(t, ctx, c, 5*time.Second)
	start := time.Now()
	out := c.MustSh(t, ctx, other(holder), "tandem switchover --to "+other(holder))
	t.Logf("switchover: %s", strings.TrimSpace(out))
	// A planned move waits for the connections in flight to the IP, up to
	// the drain timeout (2 s by default), by design: one connection still
	// open then (CI saw one, for the whole drain) costs that wait, not a
	// failed request.
	tr.servedBy(other(holder), start, failoverBudget+2*time.Second)
	time.Sleep(6 * time.Second) // let every request started meanwhile finish
	if n := tr.failures(start.Add(-time.Second), time.Now()); n > 0 {
		t.Errorf("%d requests with a 5 s timeout failed during the switchover; want none", n)
	}
	tr.finish(1)
}

func TestJoinWithBadTokenChangesNothing(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 2*time.Minute)
	before := ready(t, ctx, c)
	tok := strings.TrimSpace(c.MustSh(t, ctx, "node1", "tandem token create --ttl 10m"))
	parts := strings.Split(tok, ".")
	if len(parts) != 4 {
		t.Fatalf("token %q does not look like tandem1.HASH.ID.SECRET", tok)
	}
	cfg := "[node]\nname = \"node9\"\ndata_dir = \"/tmp/jointest\"\n[cluster]\nlisten = \"10.77.0.12:7999\"\nsocket = \"/tmp/jointest.sock\"\n[vip]\nprovider = \"none\"\n"
	c.MustSh(t, ctx, "node2", "rm -rf /tmp/jointest && cat > /tmp/join.toml <<'EOF'\n"+cfg+"EOF")
	bad := map[string]string{
		"wrong secret":  strings.Join([]string{parts[0], parts[1], parts[2], strings.Repeat("a", len(parts[3]))}, "."),
		"wrong CA hash": strings.Join([]string{parts[0], strings.Repeat("0", len(parts[1])), parts[2], parts[3]}, "."),
		"garbage":       "not-a-token",
	}
	for name, token := range bad {
		r := c.MustExec(t, ctx, "node2", "tandem", "--config", "/tmp/join.toml", "join", "--no-start", "--token", token, "10.77.0.11:7946")
		if r.Code == 0 {
			t.Errorf("%s: join succeeded", name)
		}
		if !strings.Contains(r.Stderr, "token") && !strings.Contains(r.Stderr, "CA") {
			t.Errorf("%s: refusal does not say what is wrong: %s", name, r.Stderr)
		}
		t.Logf("%s: %s", name, strings.TrimSpace(r.Stderr))
	}
	if r := c.MustExec(t, ctx, "node2", "test", "-e", "/tmp/jointest/cluster.json"); r.Code == 0 {
		t.Error("a refused join left the node initialised")
	}
	after, err := clusterStatus(ctx, c, "node1")
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Members) != len(before.Members) || after.Holder != before.Holder {
		t.Errorf("a refused join changed the cluster: members %d -> %d, holder %+v -> %+v",
			len(before.Members), len(after.Members), before.Holder, after.Holder)
	}
}

// TestFailoverDegradedNetworkNoMoves degrades every node's link (50 ms ±
// 20 ms, 2% loss) for five minutes (TANDEM_E2E_SOAK overrides) and expects
// no move at all.
func TestFailoverDegradedNetworkNoMoves(t *testing.T) {
	soak := 5 * time.Minute
	if v := os.Getenv("TANDEM_E2E_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TANDEM_E2E_SOAK=%q: %v", v, err)
		}
		soak = d
	}
	c := suite(t)
	ctx := testCtx(t, soak+3*time.Minute)
	before := ready(t, ctx, c)
	for _, n := range []string{"node1", "node2", "witness"} {
		if err := c.Netem(ctx, n, "--delay", "50ms", "--jitter", "20ms", "--loss", "2%"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{"node1", "node2", "witness"} {
			_ = c.Netem(context.Background(), n, "--clear")
		}
	})
	tr := startTrial(t, ctx, c, 2*time.Second)
	stableFor(t, tr, before.Holder.Node, soak)
	tr.finish(0)
	after, err := clusterStatus(ctx, c, before.Holder.Node)
	if err != nil {
		t.Fatal(err)
	}
	if after.Holder.Epoch != before.Holder.Epoch {
		t.Errorf("epoch changed from %d to %d under a degraded network; want no move", before.Holder.Epoch, after.Holder.Epoch)
	}
	rs := tr.client.Results()
	ok := 0
	for _, r := range rs {
		if r.OK {
			ok++
		}
	}
	t.Logf("%v of 50±20 ms delay and 2%% loss: %d/%d requests ok, epoch %d", soak, ok, len(rs), after.Holder.Epoch)
}
