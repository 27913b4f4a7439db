// Package firewall is the baseline's firewall area: an nftables table of
// tandem's own (inet tandem-fw) that denies incoming traffic by default.
// It is an nft script under /etc/tandem loaded at boot by a small unit
// ordered before the network, so it holds without the agent; the agent only
// keeps the cluster members' set current. The audit reads the live ruleset.
package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// Table is the firewall's nftables table (family inet).
const Table = "tandem-fw"

// Default paths.
const (
	DefaultScript  = "/etc/tandem/firewall.nft"
	DefaultUnit    = "/etc/systemd/system/tandem-firewall.service"
	DefaultMembers = "/var/lib/tandem/harden/fw-members.nft"
	DefaultPending = "/var/lib/tandem/harden/pending" // harden's unconfirmed applies
	UnitName       = "tandem-firewall.service"
)

// SSH rate limit, per source address: a token bucket of SSHBurst new
// connections refilled at one per SSHRefillMinutes minute(s). At most 5 new
// connections pass in any 30 s, tighter than ufw's limit (the 6th in 30 s
// is refused).
const (
	SSHBurst       = 5
	SSHRatePerMin  = 1
	sshMeterExpiry = "5m" // ≥ the time to refill the burst, so a waiting source keeps its debt
)

// Runner runs a command and returns its standard output.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// Options is the firewall's policy, in standard types.
type Options struct {
	SSHPort     int
	AdminCIDRs  []netip.Prefix // SSH without rate limit
	OpenPorts   []int          // the site's TCP ports, open to all
	ClusterPort int            // tandem's mTLS port: members (and JoinCIDRs) only
	Members     []netip.Addr   // the cluster's members now
	JoinCIDRs   []netip.Prefix
	// MetricsPort is the metrics port when it listens beyond loopback;
	// 0 when it is on loopback or off.
	MetricsPort  int
	MetricsCIDRs []netip.Prefix

	Script, Unit, MembersFile string // default DefaultScript, DefaultUnit, DefaultMembers
	// PendingDir holds unconfirmed applies; the unit reverts them at boot
	// (a reboot inside the confirmation window). Default DefaultPending.
	PendingDir string
	// Root prefixes the paths the area reads (tests); plans name host paths.
	Root string
	// Nft and Systemctl are the commands the reload's shell script runs,
	// default "nft" and "systemctl"; tests run nft in a namespace.
	Nft, Systemctl string
}

// Area is the firewall area.
type Area struct {
	o   Options
	run Runner
}

// New returns the firewall area.
func New(o Options, run Runner) *Area {
	if o.Script == "" {
		o.Script = DefaultScript
	}
	if o.Unit == "" {
		o.Unit = DefaultUnit
	}
	if o.MembersFile == "" {
		o.MembersFile = DefaultMembers
	}
	if o.PendingDir == "" {
		o.PendingDir = DefaultPending
	}
	if o.Nft == "" {
		o.Nft = "nft"
	}
	if o.Systemctl == "" {
		o.Systemctl = "systemctl"
	}
	return &Area{o: o, run: run}
}

// Name implements harden.Area.
func (a *Area) Name() string { return "firewall" }

func split(ps []netip.Prefix) (v4, v6 []string) {
	for _, p := range ps {
		if p.Addr().Is4() {
			v4 = append(v4, p.String())
		} else {
			v6 = append(v6, p.String())
		}
	}
	return v4, v6
}

func intervalSet(b *strings.Builder, name, typ string, elems []string) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tflags interval\n", name, typ)
	if len(elems) > 0 {
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
	b.WriteString("\t}\n")
}

// Script is the nft script of the whole table. Loading it replaces the
// table in one transaction (nft -f is atomic): the host is never without a
// firewall half-way, and an invalid script changes nothing.
func (a *Area) Script() []byte {
	o := a.o
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by 'tandem harden apply'; do not edit: change [harden] in
# /etc/tandem/tandem.toml and apply again. Loaded at boot by %s.
table inet %s
delete table inet %s
table inet %s {
`, UnitName, Table, Table, Table)
	admin4, admin6 := split(o.AdminCIDRs)
	intervalSet(&b, "admin4", "ipv4_addr", admin4)
	intervalSet(&b, "admin6", "ipv6_addr", admin6)
	join4, join6 := split(o.JoinCIDRs)
	intervalSet(&b, "join4", "ipv4_addr", join4)
	intervalSet(&b, "join6", "ipv6_addr", join6)
	met4, met6 := split(o.MetricsCIDRs)
	intervalSet(&b, "metrics4", "ipv4_addr", met4)
	intervalSet(&b, "metrics6", "ipv6_addr", met6)
	// The members' sets are filled by the members file (included below,
	// rewritten by the agent on every membership change).
	b.WriteString("\tset members4 {\n\t\ttype ipv4_addr\n\t}\n\tset members6 {\n\t\ttype ipv6_addr\n\t}\n")
	for _, fam := range []string{"4", "6"} {
		typ := map[string]string{"4": "ipv4_addr", "6": "ipv6_addr"}[fam]
		fmt.Fprintf(&b, "\tset ssh_meter%s {\n\t\ttype %s\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout %s\n\t}\n", fam, typ, sshMeterExpiry)
	}
	fmt.Fprintf(&b, `	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept comment "keep every established session first"
		iif "lo" accept
		icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query } accept
		icmpv6 type echo-request limit rate 10/second burst 20 packets accept
		icmp type { destination-unreachable, time-exceeded, parameter-problem } accept
		icmp type echo-request limit rate 10/second burst 20 packets accept
		ct state invalid drop
		udp sport 67 udp dport 68 accept comment "DHCPv4 replies"
		ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept comment "DHCPv6 replies"
		tcp dport %[1]d ip saddr @admin4 accept
		tcp dport %[1]d ip6 saddr @admin6 accept
		tcp dport %[1]d ct state new update @ssh_meter4 { ip saddr limit rate over %[2]d/minute burst %[3]d packets } drop comment "ssh rate limit"
		tcp dport %[1]d ct state new update @ssh_meter6 { ip6 saddr limit rate over %[2]d/minute burst %[3]d packets } drop comment "ssh rate limit"
		tcp dport %[1]d accept
`, o.SSHPort, SSHRatePerMin, SSHBurst)
	if len(o.OpenPorts) > 0 {
		ports := slices.Clone(o.OpenPorts)
		slices.Sort(ports)
		ps := make([]string, len(ports))
		for i, p := range ports {
			ps[i] = fmt.Sprint(p)
		}
		fmt.Fprintf(&b, "\t\ttcp dport { %s } accept comment \"the site\"\n", strings.Join(ps, ", "))
	}
	if o.ClusterPort > 0 {
		fmt.Fprintf(&b, "\t\ttcp dport %[1]d ip saddr @members4 accept\n\t\ttcp dport %[1]d ip6 saddr @members6 accept\n", o.ClusterPort)
		fmt.Fprintf(&b, "\t\ttcp dport %[1]d ip saddr @join4 accept\n\t\ttcp dport %[1]d ip6 saddr @join6 accept\n", o.ClusterPort)
	}
	if o.MetricsPort > 0 {
		fmt.Fprintf(&b, "\t\ttcp dport %[1]d ip saddr @metrics4 accept\n\t\ttcp dport %[1]d ip6 saddr @metrics6 accept\n", o.MetricsPort)
	}
	b.WriteString("\t\tcounter comment \"dropped by the default policy\"\n\t}\n}\n")
	fmt.Fprintf(&b, "include \"%s\"\n", globOf(o.MembersFile))
	return []byte(b.String())
}

// globOf makes the include of the members file optional: nft accepts a
// glob that matches nothing, so a missing file (an agent never run) does
// not stop the firewall from loading.
func globOf(p string) string {
	if p == "" {
		return p
	}
	return p[:len(p)-1] + "[" + p[len(p)-1:] + "]"
}

// MembersScript is the members file: it refills the members' sets.
func MembersScript(members []netip.Addr) []byte {
	var v4, v6 []string
	seen := map[netip.Addr]bool{}
	sorted := make([]netip.Addr, 0, len(members))
	for _, m := range members {
		sorted = append(sorted, m.Unmap())
	}
	slices.SortFunc(sorted, netip.Addr.Compare)
	for _, m := range sorted {
		if !m.IsValid() || seen[m] {
			continue
		}
		seen[m] = true
		if m.Is4() {
			v4 = append(v4, m.String())
		} else {
			v6 = append(v6, m.String())
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by tandem: the cluster's members, who may reach its port.\nflush set inet %[1]s members4\nflush set inet %[1]s members6\n", Table)
	if len(v4) > 0 {
		fmt.Fprintf(&b, "add element inet %s members4 { %s }\n", Table, strings.Join(v4, ", "))
	}
	if len(v6) > 0 {
		fmt.Fprintf(&b, "add element inet %s members6 { %s }\n", Table, strings.Join(v6, ", "))
	}
	return []byte(b.String())
}

// UnitFile loads the script at boot, before the network comes up. With no
// ExecStop the rules stay when the unit stops; if the script fails to load,
// nothing is loaded (the host stays reachable) and the unit shows failed.
// First it runs the revert of any apply left unconfirmed by a reboot inside
// its confirmation window (its transient timer did not survive).
func (a *Area) UnitFile() []byte {
	return []byte(fmt.Sprintf(`# Written by 'tandem harden apply'.
[Unit]
Description=tandem firewall (nftables table inet %s)
Documentation=man:tandem(1)
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
RequiresMountsFor=%s %s

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=-/bin/sh -c 'for s in %s/*/revert.sh; do [ -f "$$s" ] && /bin/sh "$$s"; done; true'
ExecStart=/usr/sbin/nft -f %s

[Install]
WantedBy=sysinit.target
`, Table, dirOf(a.o.Script), dirOf(a.o.MembersFile), a.o.PendingDir, a.o.Script))
}

func dirOf(p string) string { return p[:strings.LastIndex(p, "/")] }

// reload loads what the files say: the script when present, else no
// table; the unit enabled when present, else its link removed. The same
// command serves the apply and its revert (which may restore absence).
func (a *Area) reload() []string {
	unitLink := "/etc/systemd/system/sysinit.target.wants/" + UnitName
	return []string{"/bin/sh", "-c", fmt.Sprintf(`set -e
if [ -f %[1]s ]; then %[6]s -f %[1]s; else %[6]s delete table inet %[2]s 2>/dev/null || true; fi
if [ -f %[3]s ]; then %[7]s daemon-reload; %[7]s enable %[4]s 2>/dev/null; else rm -f %[5]s; %[7]s daemon-reload; fi`,
		a.o.Script, Table, a.o.Unit, UnitName, unitLink, a.o.Nft, a.o.Systemctl)}
}

// Plan implements harden.Area: the script, the members file and the unit;
// a reload alone when the files are right but the live table is not.
func (a *Area) Plan(ctx context.Context) (check.Plan, error) {
	p := check.Plan{
		Area: a.Name(),
		Files: []check.File{
			{Path: a.o.Script, Content: a.Script(), Mode: 0o644},
			{Path: a.o.MembersFile, Content: MembersScript(a.o.Members), Mode: 0o644},
			{Path: a.o.Unit, Content: a.UnitFile(), Mode: 0o644},
		},
		Validate: [][]string{{"nft", "-c", "-f", a.o.Script}},
		Reload:   [][]string{a.reload()},
		Risky:    true,
	}
	same, err := a.filesMatch()
	if err != nil {
		return check.Plan{}, err
	}
	if !same {
		return p, nil
	}
	if res := a.Audit(ctx); slices.ContainsFunc(res, func(r check.Result) bool { return r.Status != check.Pass }) {
		// The files are right but the live table is not (flushed by
		// hand, or a member changed while the agent was down).
		p.Files = nil
		p.Validate = nil
		return p, nil
	}
	return check.Plan{Area: a.Name()}, nil
}
