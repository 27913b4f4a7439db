package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/harden"
	"github.com/tandem-ha/tandem/internal/harden/check"
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

func TestHardenWatchRecords(t *testing.T) {
	w := newHardenWatch(&Agent{metrics: newMetrics()})
	if w.Status() != nil {
		t.Fatal("status before the first audit")
	}
	w.record(harden.Report{Findings: []harden.Finding{
		{Area: "firewall", Result: check.Result{ID: "fw.default-deny", Status: check.Fail}},
		{Area: "firewall", Result: check.Result{ID: "fw.icmp-needed", Status: check.Pass}},
		{Area: "sshd", Result: check.Result{ID: "ssh.x", Status: check.Error}},
	}, Failed: 1, Passed: 1, Errors: 1}, time.Unix(100, 0))
	st := w.Status()
	if st == nil || st.Failed != 1 || st.Errors != 1 || !slices.Equal(st.Failing, []string{"fw.default-deny", "ssh.x"}) {
		t.Fatalf("status = %+v", st)
	}
	if got := testutil.ToFloat64(w.gauge.WithLabelValues("firewall")); got != 1 {
		t.Errorf("tandem_harden_failing_checks{area=firewall} = %v; want 1", got)
	}
	if got := testutil.ToFloat64(w.gauge.WithLabelValues("sshd")); got != 0 {
		t.Errorf("tandem_harden_failing_checks{area=sshd} = %v; want 0 (an error is not a failure)", got)
	}
}
