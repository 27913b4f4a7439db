package config

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestHardenDefaults(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	h := c.Harden
	if h.SSHPort != 22 || !slices.Equal(h.OpenPorts, []int{80, 443}) || !h.FirewallEnabled() || len(h.AdminPrefixes()) != 0 {
		t.Errorf("defaults = %+v; want ssh 22, open 80 and 443, firewall on, no admin CIDRs", h)
	}
	w, err := Parse("t.toml", []byte("[node]\nname = \"w\"\nrole = \"witness\"\n[cluster]\nlisten = \"10.0.0.3:7946\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Harden.OpenPorts) != 0 {
		t.Errorf("a witness opens %v by default; it serves no site", w.Harden.OpenPorts)
	}
	off, err := Parse("t.toml", []byte(minimal+"[harden]\nfirewall = false\nopen_ports = []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if off.Harden.FirewallEnabled() || len(off.Harden.OpenPorts) != 0 {
		t.Errorf("firewall = false, open_ports = [] gave %+v", off.Harden)
	}
}

func TestHardenPrefixes(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[harden]\nadmin_cidrs = [\"192.0.2.7/24\", \"2001:db8::1\", \"::ffff:198.51.100.0/120\"]\nmetrics_cidrs = [\"10.0.0.0/8\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("198.51.100.0/24")}
	if got := c.Harden.AdminPrefixes(); !slices.Equal(got, want) {
		t.Errorf("AdminPrefixes = %v; want %v", got, want)
	}
	if got := c.Harden.MetricsPrefixes(); len(got) != 1 || got[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("MetricsPrefixes = %v", got)
	}
}

func TestHardenErrors(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantKey  string
		wantLine int
		wantMsg  string
	}{
		{"skip without reason", "[harden]\n[harden.skip]\n\"ssh.port-not-22\" = \"\"\n", "harden.skip.ssh.port-not-22", 13, "needs its reason"},
		{"skip blank reason", "[harden]\nskip = { \"fw.default-deny\" = \"  \" }\n", "harden.skip.fw.default-deny", 12, "needs its reason"},
		{"skip not an id", "[harden.skip]\nfirewall = \"x\"\n", "harden.skip.firewall", 12, "not a check ID"},
		{"bad cidr", "[harden]\nadmin_cidrs = [\"10.0.0.0/33\"]\n", "harden.admin_cidrs[0]", 12, "not a network"},
		{"bad metrics cidr", "[harden]\nmetrics_cidrs = [\"office\"]\n", "harden.metrics_cidrs[0]", 12, "not a network"},
		{"ssh port", "[harden]\nssh_port = 70000\n", "harden.ssh_port", 12, "not a TCP port"},
		{"open port dup", "[harden]\nopen_ports = [80, 80]\n", "harden.open_ports[1]", 12, "listed twice"},
		{"open port is ssh", "[harden]\nopen_ports = [22]\n", "harden.open_ports[0]", 12, "SSH port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(minimal+tt.doc))
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("err = %v; want one config error", err)
			}
			e := es[0]
			if e.Key != tt.wantKey || e.Line != tt.wantLine || !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("got %s (key %q line %d); want key %q line %d containing %q", e, e.Key, e.Line, tt.wantKey, tt.wantLine, tt.wantMsg)
			}
		})
	}
}
