package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/harden"
)

func TestFirewallOptions(t *testing.T) {
	tests := []struct {
		metrics     string
		wantMetrics int
	}{
		{"127.0.0.1:9746", 0}, {"[::1]:9746", 0}, {"localhost:9746", 0}, {"", 0},
		{":9746", 9746}, {"10.0.0.1:9100", 9100},
	}
	for _, tt := range tests {
		cfg := &config.Config{Cluster: config.Cluster{Listen: "10.0.0.1:7946"}, Metrics: config.Metrics{Listen: tt.metrics},
			Node: config.Node{DataDir: "/var/lib/tandem"}, Harden: config.Harden{SSHPort: 2222, OpenPorts: []int{443}}}
		o := FirewallOptions(cfg, nil)
		if o.MetricsPort != tt.wantMetrics || o.ClusterPort != 7946 || o.SSHPort != 2222 || o.MembersFile != "/var/lib/tandem/harden/fw-members.nft" {
			t.Errorf("metrics %q: %+v", tt.metrics, o)
		}
	}
	off := false
	for _, a := range HardenAreas(&config.Config{Harden: config.Harden{Firewall: &off}}, nil, harden.ExecRunner{}, nil) {
		if a.Name() == "firewall" {
			t.Error("firewall = false still builds the firewall area")
		}
	}
	var names []string
	for _, a := range HardenAreas(&config.Config{}, nil, harden.ExecRunner{}, nil) {
		names = append(names, a.Name())
	}
	if !slices.Equal(names, []string{"firewall", "sshd", "updates", "integrity"}) {
		t.Errorf("areas = %v", names)
	}
}

func TestMemberAddrs(t *testing.T) {
	got := MemberAddrs(map[string]state.Member{
		"a": {Address: "10.0.0.2:7946"}, "b": {Address: "10.0.0.1:7946", Pending: true},
		"c": {Address: "[::ffff:10.0.0.2]:7946"}, "d": {Address: "garbage"},
	})
	want := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")}
	if !slices.Equal(got, want) {
		t.Errorf("MemberAddrs = %v; want %v (pending included, mapped unmapped, junk dropped)", got, want)
	}
}
