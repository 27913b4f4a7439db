package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// Check IDs. Stable: scripts and harden.skip name them.
const (
	IDDefaultDeny  = "fw.default-deny"
	IDEstablished  = "fw.established-first"
	IDICMP         = "fw.icmp-needed"
	IDSSHRateLimit = "fw.ssh-rate-limit"
	IDSitePorts    = "fw.site-ports-open"
	IDClusterPort  = "fw.cluster-port-members-only"
	IDMetrics      = "fw.metrics-restricted"
	IDOnlyPolicy   = "fw.only-policy-ports"
	IDPersistent   = "fw.persistent"
)

const fixApply = "run 'tandem harden apply --confirm 60s', then 'tandem harden confirm'"

// Ruleset is the live table as nft lists it: the input chain's header and
// rules, and each set's elements.
type Ruleset struct {
	Present bool
	Policy  string // the input chain's policy: "drop", "accept"; "" without an input chain
	Rules   []string
	Sets    map[string][]string
}

var (
	policyRe   = regexp.MustCompile(`type filter hook input priority [^;]+; policy (\w+);`)
	elementsRe = regexp.MustCompile(`elements = \{([^}]*)\}`)
)

// ParseRuleset reads the output of 'nft list table inet tandem-fw'.
func ParseRuleset(text string) Ruleset {
	rs := Ruleset{Sets: map[string][]string{}}
	var set string // the set whose block we are in
	var setText strings.Builder
	inInput := false
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(line, "table inet "+Table+" "):
			rs.Present = true
		case strings.HasPrefix(line, "set ") && strings.HasSuffix(line, "{"):
			set = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "set "), "{"))
			setText.Reset()
		case set != "" && line == "}":
			var elems []string
			if m := elementsRe.FindStringSubmatch(setText.String()); m != nil {
				for _, e := range strings.Split(m[1], ",") {
					if e = strings.TrimSpace(e); e != "" {
						elems = append(elems, e)
					}
				}
			}
			rs.Sets[set] = elems
			set = ""
		case set != "":
			setText.WriteString(" " + line)
		case strings.HasPrefix(line, "chain "):
			inInput = line == "chain input {"
		case inInput && line == "}":
			inInput = false
		case inInput:
			if m := policyRe.FindStringSubmatch(line); m != nil {
				rs.Policy = m[1]
			} else if line != "" {
				rs.Rules = append(rs.Rules, line)
			}
		}
	}
	return rs
}

// live lists the table; ok is false (with no error) when it is not loaded.
func (a *Area) live(ctx context.Context) (Ruleset, error) {
	out, err := a.run.Run(ctx, "nft", "list", "table", "inet", Table)
	if err != nil {
		if strings.Contains(err.Error(), "No such file or directory") || strings.Contains(err.Error(), "does not exist") {
			return Ruleset{Sets: map[string][]string{}}, nil
		}
		return Ruleset{}, err
	}
	return ParseRuleset(string(out)), nil
}

// Audit implements harden.Area; every check reads the live ruleset.
func (a *Area) Audit(ctx context.Context) []check.Result {
	rs, err := a.live(ctx)
	ids := []string{IDDefaultDeny, IDEstablished, IDICMP, IDSSHRateLimit, IDSitePorts, IDClusterPort, IDMetrics, IDOnlyPolicy}
	var out []check.Result
	if err != nil {
		for _, id := range ids {
			out = append(out, check.Result{ID: id, Title: titles[id], Status: check.Error, Current: "cannot read the live ruleset: " + err.Error(), Wanted: wanted(a, id), Fix: "install nftables and run as root"})
		}
	} else {
		for _, id := range ids {
			r := check.Result{ID: id, Title: titles[id], Fix: fixApply}
			if !rs.Present {
				r.Status, r.Current, r.Wanted = check.Fail, "table inet "+Table+" is not loaded", "loaded, "+wanted(a, id)
			} else {
				r.Status, r.Current, r.Wanted = checks[id](a, rs)
			}
			out = append(out, r)
		}
	}
	return append(out, a.persistent(ctx))
}

var titles = map[string]string{
	IDDefaultDeny:  "incoming traffic not explicitly allowed is dropped",
	IDEstablished:  "established sessions are accepted first, so a rule change never cuts them",
	IDICMP:         "the ICMP and ICMPv6 the network needs (PMTU, neighbour discovery, errors) pass",
	IDSSHRateLimit: "new SSH connections are rate-limited per source, at least as tightly as ufw limit",
	IDSitePorts:    "the site's ports are open",
	IDClusterPort:  "tandem's cluster port accepts only the cluster's current members",
	IDMetrics:      "the metrics port accepts only metrics_cidrs",
	IDOnlyPolicy:   "no port is opened beyond the policy",
	IDPersistent:   "the firewall is loaded at boot, before the network, without the agent",
}

func wanted(a *Area, id string) string {
	_, _, w := checks[id](a, Ruleset{Policy: "drop", Sets: map[string][]string{}})
	return w
}

var checks = map[string]func(a *Area, rs Ruleset) (check.Status, string, string){
	IDDefaultDeny: func(a *Area, rs Ruleset) (check.Status, string, string) {
		return pass(rs.Policy == "drop"), "input policy " + orNone(rs.Policy), "input policy drop"
	},
	IDEstablished: func(a *Area, rs Ruleset) (check.Status, string, string) {
		const want = "ct state established,related accept before any drop"
		for i, r := range rs.Rules {
			if strings.HasPrefix(r, "ct state established,related accept") {
				return check.Pass, fmt.Sprintf("rule %d", i+1), want
			}
			if strings.Contains(r, " drop") {
				return check.Fail, fmt.Sprintf("a drop (rule %d) comes first: %s", i+1, r), want
			}
		}
		return check.Fail, "no rule accepts established sessions", want
	},
	IDICMP: func(a *Area, rs Ruleset) (check.Status, string, string) {
		need := []string{"icmpv6:packet-too-big", "icmpv6:nd-neighbor-solicit", "icmpv6:nd-neighbor-advert", "icmpv6:nd-router-advert", "icmp:destination-unreachable"}
		var missing []string
		for _, n := range need {
			proto, typ, _ := strings.Cut(n, ":")
			if !slices.ContainsFunc(rs.Rules, func(r string) bool {
				return strings.HasPrefix(r, proto+" type ") && strings.Contains(r, typ) && strings.HasSuffix(r, "accept")
			}) {
				missing = append(missing, n)
			}
		}
		return pass(len(missing) == 0), "not accepted: " + orNone(strings.Join(missing, ", ")), "all of " + strings.Join(need, ", ") + " accepted"
	},
	IDSSHRateLimit: sshRateLimit,
	IDSitePorts: func(a *Area, rs Ruleset) (check.Status, string, string) {
		var closed []string
		for _, p := range a.o.OpenPorts {
			if !slices.ContainsFunc(rs.Rules, func(r string) bool {
				ports, rest := dports(r)
				return slices.Contains(ports, p) && !strings.Contains(rest, "saddr") && strings.Contains(rest, "accept")
			}) {
				closed = append(closed, strconv.Itoa(p))
			}
		}
		return pass(len(closed) == 0), "closed: " + orNone(strings.Join(closed, ", ")), "open: " + ints(a.o.OpenPorts)
	},
	IDClusterPort: func(a *Area, rs Ruleset) (check.Status, string, string) {
		want := fmt.Sprintf("port %d from the members' sets only, holding %s", a.o.ClusterPort, orNone(addrs(a.o.Members)))
		if a.o.ClusterPort == 0 {
			return check.Pass, "no cluster port", want
		}
		if r, ok := openToAll(rs, a.o.ClusterPort); ok {
			return check.Fail, "open to everyone: " + r, want
		}
		if !slices.ContainsFunc(rs.Rules, func(r string) bool {
			ports, rest := dports(r)
			return slices.Contains(ports, a.o.ClusterPort) && strings.Contains(rest, "@members4") && strings.Contains(rest, "accept")
		}) {
			return check.Fail, "the members are not allowed in", want
		}
		live := append(slices.Clone(rs.Sets["members4"]), rs.Sets["members6"]...)
		var wantSet []string
		for _, m := range a.o.Members {
			wantSet = append(wantSet, m.Unmap().String())
		}
		slices.Sort(live)
		slices.Sort(wantSet)
		wantSet = slices.Compact(wantSet)
		if !slices.Equal(live, wantSet) {
			return check.Fail, "members set holds " + orNone(strings.Join(live, ", ")), want
		}
		return check.Pass, "members set holds " + orNone(strings.Join(live, ", ")), want
	},
	IDMetrics: func(a *Area, rs Ruleset) (check.Status, string, string) {
		if a.o.MetricsPort == 0 {
			return check.Pass, "metrics listen on loopback or are off", "not reachable from other hosts, or only from metrics_cidrs"
		}
		want := fmt.Sprintf("port %d from %s only", a.o.MetricsPort, orNone(prefixes(a.o.MetricsCIDRs)))
		if r, ok := openToAll(rs, a.o.MetricsPort); ok {
			return check.Fail, "open to everyone: " + r, want
		}
		got := append(slices.Clone(rs.Sets["metrics4"]), rs.Sets["metrics6"]...)
		wantSet := wantPrefixes(a.o.MetricsCIDRs)
		slices.Sort(got)
		slices.Sort(wantSet)
		return pass(slices.Equal(got, wantSet)), "metrics sets hold " + orNone(strings.Join(got, ", ")), want
	},
	IDOnlyPolicy: func(a *Area, rs Ruleset) (check.Status, string, string) {
		allowed := append([]int{a.o.SSHPort, a.o.ClusterPort, a.o.MetricsPort}, a.o.OpenPorts...)
		dhcp := []int{68, 546} // the DHCP client's replies
		var extra []string
		for _, r := range rs.Rules {
			ports, rest := dports(r)
			if !strings.Contains(rest, "accept") {
				continue
			}
			for _, p := range ports {
				if !slices.Contains(allowed, p) && !(slices.Contains(dhcp, p) && (strings.Contains(r, "udp sport 67 ") || strings.Contains(r, "udp sport 547 "))) {
					extra = append(extra, strconv.Itoa(p))
				}
			}
		}
		return pass(len(extra) == 0), "also open: " + orNone(strings.Join(extra, ", ")), "only " + ints(allowed)
	},
}

var rateRe = regexp.MustCompile(`limit rate over (\d+)/(second|minute|hour|day)(?: burst (\d+) packets)?`)

// sshRateLimit checks a per-source meter limits new SSH connections for
// IPv4 and IPv6 before any rule accepts the port for everyone, and that
// the limit lets through at most 6 connections in 30 s (ufw limit).
func sshRateLimit(a *Area, rs Ruleset) (check.Status, string, string) {
	want := "per-source meter, at most 6 new connections in 30 s, for IPv4 and IPv6, before the port is accepted"
	p := a.o.SSHPort
	var v4, v6 bool
	var worst float64
	for _, r := range rs.Rules {
		ports, rest := dports(r)
		if !slices.Contains(ports, p) {
			continue
		}
		if m := rateRe.FindStringSubmatch(rest); m != nil && strings.Contains(rest, "ct state new") && strings.Contains(rest, "drop") &&
			(strings.Contains(rest, "update @") || strings.Contains(rest, "add @")) {
			n, _ := strconv.Atoi(m[1])
			burst := 5 // nft's default, which its listing leaves out
			if m[3] != "" {
				burst, _ = strconv.Atoi(m[3])
			}
			per := map[string]float64{"second": 1, "minute": 60, "hour": 3600, "day": 86400}[m[2]]
			in30 := float64(burst) + float64(n)*30/per
			worst = max(worst, in30)
			v4 = v4 || strings.Contains(rest, "{ ip saddr")
			v6 = v6 || strings.Contains(rest, "{ ip6 saddr")
			continue
		}
		if strings.HasSuffix(rest, "accept") && !strings.Contains(rest, "saddr") && !(v4 && v6) {
			return check.Fail, "port " + strconv.Itoa(p) + " is accepted before it is limited: " + r, want
		}
	}
	switch {
	case !v4 || !v6:
		return check.Fail, fmt.Sprintf("meter for IPv4: %v, for IPv6: %v", v4, v6), want
	case worst > 6:
		return check.Fail, fmt.Sprintf("up to %.1f new connections in 30 s", worst), want
	}
	return check.Pass, fmt.Sprintf("up to %.1f new connections in 30 s per source", worst), want
}

var dportRe = regexp.MustCompile(`^(?:.*?\s)?(?:tcp|udp) dport (\d+|\{[^}]*\})(.*)$`)

// dports returns the TCP/UDP destination ports a rule matches and the
// rest of the rule.
func dports(rule string) ([]int, string) {
	m := dportRe.FindStringSubmatch(rule)
	if m == nil {
		return nil, rule
	}
	var ports []int
	for _, f := range strings.FieldsFunc(m[1], func(r rune) bool { return r == '{' || r == '}' || r == ',' || r == ' ' }) {
		if n, err := strconv.Atoi(f); err == nil {
			ports = append(ports, n)
		}
	}
	return ports, strings.TrimSpace(m[2])
}

// openToAll finds a rule accepting port from any source.
func openToAll(rs Ruleset, port int) (string, bool) {
	for _, r := range rs.Rules {
		ports, rest := dports(r)
		if slices.Contains(ports, port) && strings.HasSuffix(strings.Split(rest, " comment ")[0], "accept") && !strings.Contains(r, "saddr") {
			return r, true
		}
	}
	return "", false
}

func (a *Area) persistent(ctx context.Context) check.Result {
	r := check.Result{ID: IDPersistent, Title: titles[IDPersistent], Wanted: UnitName + " enabled, loading " + a.o.Script, Fix: fixApply}
	if _, err := os.Stat(a.path(a.o.Script)); err != nil {
		r.Status, r.Current = check.Fail, a.o.Script+" is missing"
		return r
	}
	out, err := a.run.Run(ctx, "systemctl", "is-enabled", UnitName)
	state := strings.TrimSpace(string(out))
	if err != nil && state == "" {
		state = "not installed"
	}
	r.Status, r.Current = pass(state == "enabled"), UnitName+" "+state
	return r
}

func (a *Area) path(p string) string {
	if a.o.Root == "" {
		return p
	}
	return filepath.Join(a.o.Root, p)
}

// filesMatch reports whether the script, members file and unit on disk are
// what the plan would write.
func (a *Area) filesMatch() (bool, error) {
	for _, f := range []struct {
		path string
		want []byte
	}{{a.o.Script, a.Script()}, {a.o.MembersFile, MembersScript(a.o.Members)}, {a.o.Unit, a.UnitFile()}} {
		got, err := os.ReadFile(a.path(f.path))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("firewall: %w", err)
		}
		if !bytes.Equal(got, f.want) {
			return false, nil
		}
	}
	return true, nil
}

func pass(ok bool) check.Status {
	if ok {
		return check.Pass
	}
	return check.Fail
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func ints(ps []int) string {
	var s []string
	for _, p := range ps {
		if p > 0 {
			s = append(s, strconv.Itoa(p))
		}
	}
	return strings.Join(s, ", ")
}

func addrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.Unmap().String())
	}
	return strings.Join(s, ", ")
}

func prefixes(ps []netip.Prefix) string { return strings.Join(wantPrefixes(ps), ", ") }

// wantPrefixes lists prefixes as nft prints set elements: IPv4 first, and
// a single address without its /32 or /128.
func wantPrefixes(ps []netip.Prefix) []string {
	v4, v6 := split(ps)
	var out []string
	for _, p := range append(v4, v6...) {
		pp := netip.MustParsePrefix(p)
		if pp.IsSingleIP() {
			out = append(out, pp.Addr().String())
		} else {
			out = append(out, p)
		}
	}
	return out
}
