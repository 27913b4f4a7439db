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
		ns := NetnsName(l.name, m.Name)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", br, "link", "add", portIf(m.Name), "type", "veth", "peer", "name", hostIf, "netns", ns},
			[]string{"ip", "-n", br, "link", "set", portIf(m.Name), "master", bridgeName, "up"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns, "addr", "add", netip.PrefixFrom(m.Addr, Subnet.Bits()).String(), "dev", hostIf},
			[]string{"ip", "-n", ns, "link", "set", hostIf, "up"},
		)
	}
	for _, st := range steps {
		if _, err := run(ctx, st[0], st[1:]...); err != nil {
			return fmt.Errorf("create lab network: %w", err)
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
	s, err := l.load()
	if err != nil {
		return err
	}
	if _, err := s.member(node); err != nil {
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
