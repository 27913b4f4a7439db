package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

const netnsDir = "/run/netns"

func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// ipIn runs `ip -n ns args...`: ip enters the namespace itself, so nothing
// ever runs in (or changes) the host's namespace.
func ipIn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, "ip", append([]string{"-n", ns}, args...)...)
	return err
}

// inNetns runs a host binary inside a named network namespace.
func inNetns(ctx context.Context, ns string, argv ...string) (string, error) {
	return run(ctx, "nsenter", append([]string{"--net=" + netnsPath(ns), "--"}, argv...)...)
}

// nftRules is the bridge's filter: a member's bridge ports in the set
// "partitioned" neither send nor receive.
const nftRules = `table bridge tandem {
	set partitioned { type ifname; }
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname @partitioned drop
		oifname @partitioned drop
	}
}
`

// setupNetwork makes the bridge namespace and one namespace per member, each
// linked to the bridge by a veth pair whose bridge end is ve-<member> and
// whose member end is eth0.
func (l *Lab) setupNetwork(ctx context.Context, members []Member) error {
	br := BridgeNetns(l.name)
	steps := [][]string{
		{"ip", "netns", "add", br},
		{"ip", "-n", br, "link", "set", "lo", "up"},
		{"ip", "-n", br, "link", "add", bridgeName, "type", "bridge"},
		{"ip", "-n", br, "link", "set", bridgeName, "up"},
	}
	for _, m := range members {
		steps = append(steps, []string{"ip", "netns", "add", NetnsName(l.name, m.Name)})
	}
	for _, st := range steps {
		if _, err := run(ctx, st[0], st[1:]...); err != nil {
			return fmt.Errorf("create lab network: %w", err)
		}
	}
	for _, m := range members {
		if err := l.plugMember(ctx, m.Name, m.Addr, true); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp("", "tandem-lab-nft-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(nftRules); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if _, err := inNetns(ctx, br, "nft", "-f", f.Name()); err != nil {
		return fmt.Errorf("create lab partition filter: %w", err)
	}
	return nil
}

// plugMember links a member's namespace to the bridge: a veth pair whose
// bridge end is ve-<member> and whose member end is eth0 with the member's
// lab address. attach=false leaves ve-<member> off the bridge (netem's
// forwarder relays it instead).
func (l *Lab) plugMember(ctx context.Context, name string, addr netip.Addr, attach bool) error {
	br, ns := BridgeNetns(l.name), NetnsName(l.name, name)
	steps := [][]string{
		{"ip", "-n", br, "link", "add", portIf(name), "address", memberMAC(addr, 1), "type", "veth",
			"peer", "name", hostIf, "address", memberMAC(addr, 0), "netns", ns},
		{"ip", "-n", br, "link", "set", portIf(name), "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(addr, Subnet.Bits()).String(), "dev", hostIf},
		{"ip", "-n", ns, "link", "set", hostIf, "up"},
	}
	if attach {
		steps = append(steps, []string{"ip", "-n", br, "link", "set", portIf(name), "master", bridgeName})
	}
	for _, st := range steps {
		if _, err := run(ctx, st[0], st[1:]...); err != nil {
			return fmt.Errorf("link %s to the lab bridge: %w", name, err)
		}
	}
	return nil
}

// memberMAC derives a stable, locally administered MAC from a member's
// address (side 0 for its eth0, 1 for the bridge end), so a node that is
// killed and started again keeps its MAC as a real NIC does and its peers'
// ARP entries stay right.
func memberMAC(addr netip.Addr, side byte) string {
	a := addr.As4()
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", side, a[0], a[1], a[2], a[3])
}

// scrubNetns resets a powered-off node's network stack to what a machine
// has before it boots: no links but lo (deleting eth0 also removes its veth
// pair, so nothing answers for the node's addresses), no addresses it added
// (a floating IP included), no nftables rules. The namespace itself stays, so
// observers holding it (netlink handles) keep watching the right node.
func (l *Lab) scrubNetns(ctx context.Context, name string) error {
	ns := NetnsName(l.name, name)
	out, err := run(ctx, "ip", "-n", ns, "-j", "link", "show")
	if err != nil {
		return fmt.Errorf("scrub %s network: %w", name, err)
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return fmt.Errorf("scrub %s network: parse links: %w", name, err)
	}
	var errs []error
	for _, lk := range links {
		if lk.Name != "lo" {
			if err := ipIn(ctx, ns, "link", "delete", "dev", lk.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Setting lo up again restores 127.0.0.1 and ::1 and nothing else.
	for _, st := range [][]string{{"link", "set", "lo", "down"}, {"addr", "flush", "dev", "lo"}, {"link", "set", "lo", "up"}} {
		if err := ipIn(ctx, ns, st...); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := inNetns(ctx, ns, "nft", "flush", "ruleset"); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("scrub %s network: %w", name, err)
	}
	return nil
}

// Partition cuts a member off the lab network: the bridge drops every frame
// to or from its port. The member's own link stays up, as when a switch
// port or an upstream network fails.
func (l *Lab) Partition(ctx context.Context, node string) error {
	return l.setPartition(ctx, node, "add")
}

// Heal undoes Partition.
func (l *Lab) Heal(ctx context.Context, node string) error {
	return l.setPartition(ctx, node, "delete")
}

func (l *Lab) setPartition(ctx context.Context, node, op string) error {
	if _, _, err := l.member(node); err != nil {
		return err
	}
	parted, err := l.partitioned(ctx)
	if err != nil {
		return err
	}
	if (op == "add") == parted[portIf(node)] {
		return nil // already as asked
	}
	// Both the member's port and its netem port, so a partition holds
	// whether or not netem is on.
	elems := fmt.Sprintf("{ %q, %q }", portIf(node), netemPortIf(node))
	if _, err := inNetns(ctx, BridgeNetns(l.name), "nft", op, "element", "bridge", "tandem", "partitioned", elems); err != nil {
		return fmt.Errorf("%s partition of %s: %w", op, node, err)
	}
	l.log.Debug("partition changed", "node", node, "op", op)
	return nil
}

// partitioned returns the bridge ports in the partition set.
func (l *Lab) partitioned(ctx context.Context) (map[string]bool, error) {
	out, err := inNetns(ctx, BridgeNetns(l.name), "nft", "-j", "list", "set", "bridge", "tandem", "partitioned")
	if err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	return parsePartitionSet([]byte(out))
}

func parsePartitionSet(b []byte) (map[string]bool, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse nft set: %w", err)
	}
	out := map[string]bool{}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			var name string
			if json.Unmarshal(e, &name) == nil {
				out[name] = true
			}
		}
	}
	return out, nil
}

// NetnsPath returns the path of a member's network namespace (for example
// to open it with netlink, as the split-brain observer does).
func (l *Lab) NetnsPath(node string) string { return netnsPath(NetnsName(l.name, node)) }

// ownedNetnses lists the lab's namespaces found in /run/netns.
func (l *Lab) ownedNetnses() []string {
	ents, _ := os.ReadDir(netnsDir)
	var out []string
	for _, e := range ents {
		if ownedNetns(l.name, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// deleteNetns removes a named namespace; its links go with it.
func deleteNetns(ctx context.Context, name string) error {
	if _, err := run(ctx, "ip", "netns", "delete", name); err != nil {
		if _, serr := os.Stat(netnsPath(name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

// linkExists reports whether a link exists in a namespace.
func linkExists(ctx context.Context, ns, link string) bool {
	out, err := run(ctx, "ip", "-n", ns, "-o", "link", "show", "dev", link)
	return err == nil && strings.Contains(out, link)
}
