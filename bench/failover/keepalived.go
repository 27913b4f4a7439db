package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
)

// The keepalived peer's fixed choices.
const (
	vrrpRouterID   = 77
	vrrpPriority   = 100 // keepalived's default, the same on both nodes
	healthCheckCmd = "curl -fsS -m 1 http://127.0.0.1:8000/healthz"
	// stateFile is written by the notify script on every VRRP transition;
	// /run is a tmpfs, so a node that lost power comes back without one.
	stateFile    = "/run/bench-vrrp.state"
	notifyScript = "/usr/local/sbin/bench-vrrp-notify"
)

// keepalivedSystem is Debian's keepalived on node1 and node2.
type keepalivedSystem struct {
	b         *bench
	transport string // "multicast" or "unicast"
	settings  string
}

func (k *keepalivedSystem) Name() string { return systemKeepalived }

// keepalivedConf renders a node's keepalived.conf: what a peer would write
// to put the site's VIP on the healthy node. Both nodes start as BACKUP with
// the same (default) priority and nopreempt, the closest keepalived gets to
// tandem's "a recovered node stays standby". Timers are left at their
// defaults: advert_int 1, the script's interval 1 s, rise and fall 1, weight
// 0 (a failing check puts the instance in FAULT, which releases the VIP).
// With unicast the adverts go to the peer instead of 224.0.0.18.
func keepalivedConf(self, peer netip.Addr, unicast bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by bench-failover (tandem): keepalived as a peer would run it.
global_defs {
    router_id %s
    script_user root
    enable_script_security
}

vrrp_script chk_site {
    script "%s"
    interval 1
}

vrrp_instance VI_SITE {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id %d
    priority %d
    advert_int 1
`, self, healthCheckCmd, vrrpRouterID, vrrpPriority)
	if unicast {
		fmt.Fprintf(&b, "    unicast_src_ip %s\n    unicast_peer {\n        %s\n    }\n", self, peer)
	}
	fmt.Fprintf(&b, `    virtual_ipaddress {
        %s/24 dev eth0
    }
    track_script {
        chk_site
    }
    notify %s
}
`, lab.FloatingIP, notifyScript)
	return b.String()
}

// notifyScriptBody records the instance's state; keepalived calls it with
// "INSTANCE", the instance's name, the new state and the priority.
const notifyScriptBody = `#!/bin/sh
echo "$3" > ` + stateFile + `.tmp && mv ` + stateFile + `.tmp ` + stateFile + `
`

// setupKeepalived stops tandem everywhere, makes sure no node keeps the VIP,
// and starts keepalived on both app nodes: node1 first, so that node2 finds
// a master. If node2 also becomes master, its adverts are not arriving over
// multicast and both nodes switch to unicast_peer.
func setupKeepalived(ctx context.Context, b *bench) (*keepalivedSystem, error) {
	for _, n := range []string{"node1", "node2", lab.WitnessName} {
		if _, err := b.sh(ctx, n, "systemctl disable --now tandem.service"); err != nil {
			return nil, fmt.Errorf("stop tandem: %w", err)
		}
	}
	if h := b.vip.holders(); len(h) > 0 {
		fmt.Fprintf(b.out, "  note: the VIP was still on %v after tandem stopped; removing it\n", h)
		for _, n := range h {
			if _, err := b.sh(ctx, n, fmt.Sprintf("ip addr del %s/24 dev eth0", lab.FloatingIP)); err != nil {
				return nil, err
			}
		}
	}
	if h := b.vip.holders(); len(h) > 0 {
		return nil, fmt.Errorf("the VIP is still on %v after tandem stopped", h)
	}
	fmt.Fprintln(b.out, "  tandem stopped and disabled on every node; the VIP is on no node")

	k := &keepalivedSystem{b: b, transport: "multicast"}
	for _, unicast := range []bool{false, true} {
		if unicast {
			k.transport = "unicast"
			fmt.Fprintln(b.out, "  VRRP multicast adverts do not reach the peer (both nodes became MASTER): switching to unicast_peer")
		}
		ok, err := k.start(ctx, unicast)
		if err != nil {
			return nil, err
		}
		if ok {
			break
		}
		if unicast {
			return nil, fmt.Errorf("both nodes are MASTER even with unicast_peer: VRRP adverts do not get through")
		}
	}
	ver, _ := b.sh(ctx, "node1", "keepalived --version 2>&1 | head -n1")
	k.settings = fmt.Sprintf("%s; %s VRRP, advert_int 1, both BACKUP, priority %d, nopreempt; vrrp_script %q interval 1, default rise/fall, weight 0",
		strings.TrimSpace(ver), k.transport, vrrpPriority, healthCheckCmd)
	fmt.Fprintf(b.out, "  keepalived ready (%s VRRP)\n", k.transport)
	return k, nil
}

// start writes the configuration on both nodes and starts keepalived on
// node1 and then node2. ok is false when node2 also became MASTER.
func (k *keepalivedSystem) start(ctx context.Context, unicast bool) (ok bool, err error) {
	addr := map[string]netip.Addr{"node1": lab.NodeAddr(1), "node2": lab.NodeAddr(2)}
	for _, n := range appNodes {
		peer := addr["node1"]
		if n == "node1" {
			peer = addr["node2"]
		}
		script := fmt.Sprintf("systemctl stop keepalived && rm -f %s && mkdir -p /etc/keepalived && cat > /etc/keepalived/keepalived.conf <<'EOF'\n%sEOF\ncat > %s <<'EOF'\n%sEOF\nchmod 755 %s && systemctl enable keepalived 2>/dev/null && keepalived -t -f /etc/keepalived/keepalived.conf",
			stateFile, keepalivedConf(addr[n], peer, unicast), notifyScript, notifyScriptBody, notifyScript)
		if _, err := k.b.sh(ctx, n, script); err != nil {
			return false, fmt.Errorf("configure keepalived: %w", err)
		}
	}
	if _, err := k.b.sh(ctx, "node1", "systemctl start keepalived"); err != nil {
		return false, err
	}
	// A lone BACKUP becomes MASTER after 3 missed adverts plus skew (~3.6 s).
	if err := waitFor(ctx, 15*time.Second, func() bool { return k.state(ctx, "node1") == "MASTER" }); err != nil {
		return false, fmt.Errorf("keepalived on node1 did not become MASTER within 15s (state %q)", k.state(ctx, "node1"))
	}
	if _, err := k.b.sh(ctx, "node2", "systemctl start keepalived"); err != nil {
		return false, err
	}
	// node2 would take over after ~3.6 s if it heard nothing; watch longer.
	deadline := time.Now().Add(6 * time.Second)
	for time.Now().Before(deadline) {
		if k.state(ctx, "node2") == "MASTER" || len(k.b.vip.holders()) > 1 {
			return false, nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return false, err
		}
	}
	if s := k.state(ctx, "node2"); s != "BACKUP" {
		return false, fmt.Errorf("keepalived on node2 is in state %q, want BACKUP", s)
	}
	return true, nil
}

// state returns the instance's latest state on a node, or "" when the node
// or keepalived is down.
func (k *keepalivedSystem) state(ctx context.Context, node string) string {
	out, err := k.b.sh(ctx, node, "cat "+stateFile+" 2>/dev/null || true")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// Ready waits for one MASTER holding the VIP, the other node BACKUP, the
// site healthy on both, and the same cool-off tandem gets.
func (k *keepalivedSystem) Ready(ctx context.Context, lastMove time.Time) (holder, note string, err error) {
	var last string
	for {
		states := map[string]string{}
		var masters []string
		for _, n := range appNodes {
			states[n] = k.state(ctx, n)
			if states[n] == "MASTER" {
				masters = append(masters, n)
			}
		}
		vip := k.b.vip.holders()
		switch {
		case len(masters) != 1:
			last = fmt.Sprintf("states %v", states)
		case slices.ContainsFunc(appNodes, func(n string) bool { return states[n] != "MASTER" && states[n] != "BACKUP" }):
			last = fmt.Sprintf("states %v", states)
		case !slices.Equal(vip, masters):
			last = fmt.Sprintf("MASTER is %s but the VIP is on %v", masters[0], vip)
		case time.Since(lastMove) < k.b.o.cooloff:
			last = fmt.Sprintf("cool-off: %v to go", (k.b.o.cooloff - time.Since(lastMove)).Round(time.Millisecond))
		default:
			last = ""
			for _, n := range appNodes {
				if _, err := k.b.sh(ctx, n, healthCheckCmd+" >/dev/null"); err != nil {
					last = fmt.Sprintf("site unhealthy on %s", n)
				}
			}
			if last == "" {
				return masters[0], "", nil
			}
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return "", "", fmt.Errorf("keepalived not ready: %s", last)
		}
	}
}
