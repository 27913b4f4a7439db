package firewall

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

func testOptions() Options {
	return Options{
		SSHPort: 22, OpenPorts: []int{80, 443}, ClusterPort: 7946, MetricsPort: 9746,
		AdminCIDRs:   []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		MetricsCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::7/128")},
		Members:      []netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::3")},
	}
}

// fakeNft answers 'nft list table' with a listing and systemctl with a
// unit state.
type fakeNft struct {
	listing string
	err     error
	unit    string
	cmds    [][]string
}

func (f *fakeNft) Run(_ context.Context, argv ...string) ([]byte, error) {
	f.cmds = append(f.cmds, argv)
	switch argv[0] {
	case "nft":
		return []byte(f.listing), f.err
	case "systemctl":
		if f.unit == "" {
			return nil, errors.New("exit status 1")
		}
		return []byte(f.unit + "\n"), nil
	}
	return nil, nil
}

// good is nft 1.0.6's listing of the script of testOptions.
func good(t *testing.T) string {
	b, err := os.ReadFile("testdata/live.txt")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAuditChecks(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(string) string
		nftErr  error
		unit    string
		failing []string // IDs expected to fail; all others pass
		errored bool
	}{
		{name: "compliant", unit: "enabled"},
		{name: "policy accept", unit: "enabled", edit: r("policy drop;", "policy accept;"), failing: []string{IDDefaultDeny}},
		{name: "no established rule", unit: "enabled", edit: r(`ct state established,related accept comment "keep every established session first"`, ""), failing: []string{IDEstablished}},
		{name: "drop before established", unit: "enabled", edit: r(`ct state established,related accept`, `tcp dport 1 drop
		ct state established,related accept`), failing: []string{IDEstablished}},
		{name: "no PMTU", unit: "enabled", edit: r("packet-too-big, ", ""), failing: []string{IDICMP}},
		{name: "ssh limit too loose", unit: "enabled", edit: r("limit rate over 1/minute }", "limit rate over 1/second }"), failing: []string{IDSSHRateLimit}},
		{name: "ssh burst too large", unit: "enabled", edit: r("limit rate over 1/minute }", "limit rate over 1/minute burst 10 packets }"), failing: []string{IDSSHRateLimit}},
		{name: "ssh no v6 meter", unit: "enabled", edit: r("update @ssh_meter6 { ip6 saddr limit rate over 1/minute }", "ip6 saddr ::1"), failing: []string{IDSSHRateLimit}},
		{name: "ssh accepted before its limit", unit: "enabled", edit: r("tcp dport 22 ip saddr @admin4 accept", "tcp dport 22 accept"), failing: []string{IDSSHRateLimit}},
		{name: "site port closed", unit: "enabled", edit: r("tcp dport { 80, 443 }", "tcp dport 80"), failing: []string{IDSitePorts}},
		{name: "cluster port open to all", unit: "enabled", edit: r("tcp dport 7946 ip saddr @members4 accept", "tcp dport 7946 accept"), failing: []string{IDClusterPort}},
		{name: "stale members set", unit: "enabled", edit: r("elements = { 10.0.0.1, 10.0.0.2 }", "elements = { 10.0.0.1, 10.0.0.9 }"), failing: []string{IDClusterPort}},
		{name: "metrics open to all", unit: "enabled", edit: r("tcp dport 9746 ip saddr @metrics4 accept", "tcp dport 9746 accept"), failing: []string{IDMetrics}},
		{name: "metrics set differs", unit: "enabled", edit: r("elements = { 10.0.0.0/8 }", "elements = { 0.0.0.0/0 }"), failing: []string{IDMetrics}},
		{name: "extra port", unit: "enabled", edit: r(`counter packets`, `tcp dport 9999 accept
		counter packets`), failing: []string{IDOnlyPolicy}},
		{name: "not enabled at boot", unit: "disabled", failing: []string{IDPersistent}},
		{name: "unit missing", failing: []string{IDPersistent}},
		{name: "table absent", unit: "enabled", edit: func(string) string { return "" }, nftErr: errors.New("Error: No such file or directory; did you mean table ‘tandem-fw’"),
			failing: []string{IDDefaultDeny, IDEstablished, IDICMP, IDSSHRateLimit, IDSitePorts, IDClusterPort, IDMetrics, IDOnlyPolicy}},
		{name: "nft broken", unit: "enabled", nftErr: errors.New("nft: permission denied"), errored: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			o := testOptions()
			o.Root = root
			os.MkdirAll(filepath.Join(root, "etc/tandem"), 0o755)
			os.WriteFile(filepath.Join(root, DefaultScript), []byte("x"), 0o644)
			listing := good(t)
			if tt.edit != nil {
				listing = tt.edit(listing)
			}
			a := New(o, &fakeNft{listing: listing, err: tt.nftErr, unit: tt.unit})
			res := a.Audit(t.Context())
			if len(res) != 9 {
				t.Fatalf("%d results; want 9", len(res))
			}
			for _, r := range res {
				if r.Title == "" || r.Wanted == "" || r.Fix == "" || r.Current == "" {
					t.Errorf("%s: incomplete result %+v", r.ID, r)
				}
				want := check.Pass
				switch {
				case tt.errored && r.ID != IDPersistent:
					want = check.Error
				case contains(tt.failing, r.ID):
					want = check.Fail
				}
				if r.Status != want {
					t.Errorf("%s = %s (%s); want %s", r.ID, r.Status, r.Current, want)
				}
			}
		})
	}
}

func r(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("listing lacks " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func contains(ids []string, id string) bool {
	for _, i := range ids {
		if i == id {
			return true
		}
	}
	return false
}

func TestPlan(t *testing.T) {
	root := t.TempDir()
	o := testOptions()
	o.Root = root
	f := &fakeNft{listing: good(t), unit: "enabled"}
	a := New(o, f)
	p, err := a.Plan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Risky || len(p.Files) != 3 || len(p.Validate) != 1 || len(p.Reload) != 1 {
		t.Fatalf("plan on a bare host = %+v; want 3 files, validate, reload, risky", p)
	}
	for _, file := range p.Files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(file.Path)), 0o755)
		os.WriteFile(filepath.Join(root, file.Path), file.Content, 0o644)
	}
	if p, err := a.Plan(t.Context()); err != nil || !p.Empty() {
		t.Errorf("plan with the files and live table in place = %+v, %v; want empty", p, err)
	}
	f.listing = strings.Replace(f.listing, "policy drop;", "policy accept;", 1)
	if p, err := a.Plan(t.Context()); err != nil || len(p.Files) != 0 || len(p.Reload) != 1 {
		t.Errorf("plan with the right files but a wrong live table = %+v, %v; want a reload alone", p, err)
	}
}

func TestMembersScript(t *testing.T) {
	got := string(MembersScript([]netip.Addr{netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("10.0.0.2"), {}}))
	want := "# Written by tandem: the cluster's members, who may reach its port.\nflush set inet tandem-fw members4\nflush set inet tandem-fw members6\nadd element inet tandem-fw members4 { 10.0.0.1, 10.0.0.2 }\n"
	if got != want {
		t.Errorf("MembersScript =\n%s\nwant\n%s", got, want)
	}
}

func TestParseRuleset(t *testing.T) {
	rs := ParseRuleset(good(t))
	if !rs.Present || rs.Policy != "drop" || len(rs.Rules) < 10 {
		t.Fatalf("ParseRuleset = %+v", rs)
	}
	if got := rs.Sets["members4"]; len(got) != 2 || got[0] != "10.0.0.1" {
		t.Errorf("members4 = %v", got)
	}
	if got := rs.Sets["ssh_meter4"]; len(got) != 0 {
		t.Errorf("ssh_meter4 = %v; want empty", got)
	}
	for _, junk := range []string{"", "}}}", "chain input {\n", "set x {\nelements = { a,", strings.Repeat("table inet tandem-fw {\n", 100)} {
		ParseRuleset(junk) // must not panic
	}
}

// A reboot inside the confirmation window: the unit's ExecStartPre runs
// every pending revert before the firewall loads.
func TestUnitRevertsPendingAtBoot(t *testing.T) {
	dir := t.TempDir()
	pending := filepath.Join(dir, "pending")
	for _, id := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(pending, id), 0o700)
		os.WriteFile(filepath.Join(pending, id, "revert.sh"), []byte("echo "+id+" >> "+filepath.Join(dir, "reverted")+"\n"), 0o700)
	}
	a := New(Options{PendingDir: pending}, nil)
	var pre string
	for _, line := range strings.Split(string(a.UnitFile()), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStartPre=-"); ok {
			pre = v
		}
	}
	if pre == "" {
		t.Fatalf("no ExecStartPre in\n%s", a.UnitFile())
	}
	// systemd turns $$ into $; the command line is then split like sh's
	// for this simple quoting.
	pre = strings.ReplaceAll(pre, "$$", "$")
	script, ok := strings.CutPrefix(pre, "/bin/sh -c '")
	if !ok || !strings.HasSuffix(script, "'") {
		t.Fatalf("ExecStartPre = %q", pre)
	}
	if out, err := exec.Command("/bin/sh", "-c", strings.TrimSuffix(script, "'")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "reverted")); string(b) != "a\nb\n" {
		t.Errorf("reverts run at boot: %q; want a and b", b)
	}
	// With nothing pending it succeeds and does nothing.
	os.RemoveAll(pending)
	if out, err := exec.Command("/bin/sh", "-c", strings.TrimSuffix(script, "'")).CombinedOutput(); err != nil {
		t.Fatalf("nothing pending: %v: %s", err, out)
	}
}
