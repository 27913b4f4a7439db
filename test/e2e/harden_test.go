package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/labcluster"
)

// applyArgs applies the two risky areas, the ones the no-lockout
// guarantee is about. The updates area needs apt's mirrors, which the lab
// cannot reach; the audit below still runs every area.
func applyArgs(confirm string) []string {
	return []string{"tandem", "harden", "apply", "--area", "firewall", "--area", "sshd", "--confirm", confirm}
}

const sshdDropIn = "/etc/ssh/sshd_config.d/00-tandem.conf"

// hardenPolicy opens the lab's site and webhook ports (the defaults, 80
// and 443, are not the lab's).
const hardenPolicy = "\n[harden]\nopen_ports = [8000, 8443]\n"

// reachable reports whether the client namespace can open a TCP
// connection to addr:port within 3 s (a dropped SYN times out).
func reachableFromClient(ctx context.Context, c *Labctl, addr string, port int) bool {
	out, _ := c.Sh(ctx, "client", fmt.Sprintf("timeout 3 bash -c 'exec 3<>/dev/tcp/%s/%d' 2>/dev/null && echo open || echo closed", addr, port))
	return strings.TrimSpace(out) == "open"
}

// sshBanner reads sshd's banner from the client namespace.
func sshBanner(ctx context.Context, c *Labctl, addr string) string {
	out, _ := c.Sh(ctx, "client", fmt.Sprintf("curl -s --max-time 3 telnet://%s:22 </dev/null | head -c 7 || true", addr))
	return out
}

func fwLoaded(ctx context.Context, c *Labctl, node string) bool {
	r, err := c.Exec(ctx, node, "nft", "list", "table", "inet", "tandem-fw")
	return err == nil && r.Code == 0
}

// waitReverted waits until the timer has put node back: no table, no
// script, the unlisted port open again.
func waitReverted(t *testing.T, ctx context.Context, c *Labctl, node, addr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if !fwLoaded(ctx, c, node) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if fwLoaded(ctx, c, node) {
		out, _ := c.Sh(ctx, node, "systemctl list-timers --all 'tandem-harden-*' --no-pager; journalctl -u 'tandem-harden-revert-*' --no-pager | tail -20")
		t.Fatalf("%s: the firewall is still loaded %v after an unconfirmed apply:\n%s", node, within, out)
	}
	took := time.Since(start)
	if out := c.MustSh(t, ctx, node, "ls /etc/tandem/firewall.nft /etc/systemd/system/tandem-firewall.service "+sshdDropIn+" 2>&1 || true"); strings.Count(out, "No such file") != 3 {
		t.Errorf("%s: files left after the revert:\n%s", node, out)
	}
	if !reachableFromClient(ctx, c, addr, 9999) {
		t.Errorf("%s: port 9999 still closed after the revert", node)
	}
	return took
}

func cleanHarden(ctx context.Context, c *Labctl, node string) {
	c.Sh(ctx, node, `tandem harden revert >/dev/null 2>&1; systemctl stop hfw-listen9999 2>/dev/null
nft delete table inet tandem-fw 2>/dev/null
systemctl disable tandem-firewall.service 2>/dev/null
rm -f /etc/tandem/firewall.nft /etc/systemd/system/tandem-firewall.service /etc/ssh/sshd_config.d/00-tandem.conf
systemctl reload ssh
rm -rf /var/lib/tandem/harden/pending /var/lib/tandem/harden/reverted
systemctl daemon-reload
[ -f /etc/tandem/tandem.toml.hfw ] && mv /etc/tandem/tandem.toml.hfw /etc/tandem/tandem.toml
systemctl start tandem
true`)
}

// TestHardenApplyConfirmRevert is the lab scenario of 'tandem harden
// apply': an unconfirmed apply reverts by itself, also with the agent
// killed during the wait; a confirmed one keeps SSH, the site through the
// VIP and the cluster working, closes a port the policy does not open, and
// a second apply changes nothing.
func TestHardenApplyConfirmRevert(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 10*time.Minute)
	st := ready(t, ctx, c)
	// The standby: its agent is killed in step 2 (killing the holder's
	// would leave its address configured while the IP moves), and the IP
	// is switched over to it once it is hardened.
	node := other(st.Holder.Node)
	addr := c.MustNode(t, ctx, node).Address
	t.Cleanup(func() { cleanHarden(context.Background(), c, node) })
	c.MustSh(t, ctx, node, "cp /etc/tandem/tandem.toml /etc/tandem/tandem.toml.hfw && printf '"+strings.ReplaceAll(hardenPolicy, "\n", `\n`)+"' >> /etc/tandem/tandem.toml")
	// A service the policy does not open.
	c.MustSh(t, ctx, node, "systemd-run --unit hfw-listen9999 python3 -m http.server --bind 0.0.0.0 9999")
	for deadline := time.Now().Add(10 * time.Second); !reachableFromClient(ctx, c, addr, 9999); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the test listener on 9999 is not reachable before the firewall")
		}
	}
	tr := startTrial(t, ctx, c, 500*time.Millisecond)

	// 1. Unconfirmed: the timer puts everything back by itself.
	r := c.MustExec(t, ctx, node, applyArgs("10s")...)
	if !strings.Contains(r.Stdout, "tandem harden confirm") || !strings.Contains(r.Stdout, "/etc/tandem/firewall.nft") || !strings.Contains(r.Stdout, sshdDropIn) {
		t.Errorf("apply's output does not show the change and how to confirm:\n%s", r.Stdout)
	}
	if reachableFromClient(ctx, c, addr, 9999) {
		t.Error("port 9999 is open under the firewall")
	}
	if b := sshBanner(ctx, c, addr); b != "SSH-2.0" {
		t.Errorf("ssh under the firewall answers %q", b)
	}
	took := waitReverted(t, ctx, c, node, addr, 25*time.Second)
	t.Logf("unconfirmed apply reverted by its timer after %v more", took.Round(time.Millisecond))

	// 2. Unconfirmed and the agent killed during the wait: the revert is
	// not the agent's, so it still happens.
	c.MustExec(t, ctx, node, applyArgs("10s")...)
	c.MustSh(t, ctx, node, "systemctl kill --signal=SIGKILL tandem.service")
	killed := time.Now()
	waitReverted(t, ctx, c, node, addr, 25*time.Second)
	t.Logf("with the agent killed, the apply reverted %v after the kill", time.Since(killed).Round(time.Millisecond))
	c.MustSh(t, ctx, node, "systemctl start tandem")
	waitHealthy(t, ctx, c, node)

	// 3. Confirmed: SSH, the site and the cluster keep working; 9999 is closed.
	r = c.MustExec(t, ctx, node, applyArgs("30s")...)
	if !fwLoaded(ctx, c, node) {
		t.Fatalf("no firewall after apply:\n%s", r.Stdout)
	}
	// The confirmation comes from a new session, as an admin would.
	if b := sshBanner(ctx, c, addr); b != "SSH-2.0" {
		t.Errorf("ssh under the firewall answers %q", b)
	}
	c.MustExec(t, ctx, node, "tandem", "harden", "confirm")
	time.Sleep(32 * time.Second) // past the deadline: nothing reverts
	if !fwLoaded(ctx, c, node) {
		t.Fatal("the confirmed firewall was reverted")
	}
	c.MustSh(t, ctx, node, "test -f "+sshdDropIn)
	if reachableFromClient(ctx, c, addr, 9999) {
		t.Error("port 9999, not in the policy, is reachable from the client")
	}
	if b := sshBanner(ctx, c, addr); b != "SSH-2.0" {
		t.Errorf("ssh after confirm answers %q", b)
	}
	if !reachableFromClient(ctx, c, addr, labcluster.SitePort) {
		t.Error("the site's port is closed")
	}
	members := c.MustSh(t, ctx, node, "nft list set inet tandem-fw members4")
	for _, n := range c.MustStatus(t, ctx) {
		if n.Role != "client" && !strings.Contains(members, n.Address) {
			t.Errorf("member %s (%s) is not in the firewall's members set:\n%s", n.Name, n.Address, members)
		}
	}
	if reachableFromClient(ctx, c, addr, labcluster.Port) {
		t.Error("the cluster port is reachable from the client, which is no member")
	}
	// The site through the VIP on the hardened node, and failover to it.
	c.MustExec(t, ctx, node, "tandem", "switchover", "--to", node)
	moved := time.Now()
	tr.servedBy(node, moved, 5*time.Second)
	if st := waitHealthy(t, ctx, c, node); st.Holder.Node != node {
		t.Errorf("holder after the switchover = %s; want the hardened %s", st.Holder.Node, node)
	}

	// 4. A second apply changes nothing and says so.
	r = c.MustExec(t, ctx, node, applyArgs("30s")...)
	if !strings.Contains(r.Stdout, "nothing to change") {
		t.Errorf("second apply:\n%s", r.Stdout)
	}
	if out := c.MustSh(t, ctx, node, "ls /var/lib/tandem/harden/pending 2>/dev/null | wc -l"); strings.TrimSpace(out) != "0" {
		t.Errorf("the second apply left a pending change: %s", out)
	}

	// The audit reads the live ruleset: every firewall check passes.
	ar, _ := c.Exec(ctx, node, "tandem", "harden", "audit", "--json")
	var rep struct {
		Checks []struct {
			ID, Area, Status, Current string
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(ar.Stdout), &rep); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, ar.Stdout)
	}
	fw := 0
	areas := map[string]int{}
	for _, ch := range rep.Checks {
		areas[ch.Area]++
		if ch.Area == "firewall" {
			fw++
			if ch.Status != "pass" {
				t.Errorf("audit: %s = %s (%s)", ch.ID, ch.Status, ch.Current)
			}
		}
	}
	if fw < 9 {
		t.Errorf("audit ran %d firewall checks; want 9", fw)
	}
	for _, a := range []string{"sshd", "updates", "integrity"} {
		if areas[a] == 0 {
			t.Errorf("audit ran no %s check: %v", a, areas)
		}
	}
	t.Logf("audit on %s (exit %d): %v checks by area", node, ar.Code, areas)
	tr.finish(1) // the switchover onto the hardened node
}
