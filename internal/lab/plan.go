package lab

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Roles of the members of a lab. App and witness are the words of the
// cluster's [node] role (config.RoleApp, config.RoleWitness), so a lab node's
// role is the one its tandem.toml gets.
const (
	RoleApp     = "app"     // an app node: node1, node2, ...
	RoleWitness = "witness" // the voter that holds no IP and runs no app
	RoleClient  = "client"  // a bare network namespace that plays the internet
)

// roleNodeV1 is what labs made before the roles were unified call an app
// node; decodeState reads it as RoleApp, so a running lab stays usable.
const roleNodeV1 = "node"

// Names of the special members.
const (
	ClientName  = "client"
	WitnessName = "witness"
)

// MaxNodes bounds --nodes: node addresses are 10.77.0.11 upwards and must stay
// below the floating IP, 10.77.0.100.
const MaxNodes = 89

// The lab's address plan: one /24, with fixed host numbers so that tests and
// docs can name addresses without asking the lab.
var (
	Subnet      = netip.MustParsePrefix("10.77.0.0/24")
	ClientAddr  = netip.MustParseAddr("10.77.0.2")
	WitnessAddr = netip.MustParseAddr("10.77.0.10")
	// FloatingIP is reserved for the cluster's on-link floating IP; the lab
	// never assigns it.
	FloatingIP = netip.MustParseAddr("10.77.0.100")
)

// DefaultName is the lab name used when none is given.
const DefaultName = "tandem"

var labNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,15}$`)

// ValidateName checks a lab name. Names become part of namespace, machine and
// directory names, so they are short and plain.
func ValidateName(name string) error {
	if !labNameRE.MatchString(name) || strings.HasSuffix(name, "-") {
		return fmt.Errorf("lab name %q is invalid: use 1-16 lowercase letters, digits or '-', not ending in '-'", name)
	}
	return nil
}

// Member is one planned member of a lab: a container node or the client.
type Member struct {
	Name string
	Role string
	Addr netip.Addr
}

// Container reports whether the member is a systemd-nspawn container (the
// client is only a network namespace on the host's file system).
func (m Member) Container() bool { return m.Role != RoleClient }

// NodeName returns the name of app node i (1-based).
func NodeName(i int) string { return "node" + strconv.Itoa(i) }

// NodeAddr returns the lab address of app node i (1-based): 10.77.0.(10+i).
func NodeAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + i)})
}

// Plan returns the members of a lab with n app nodes and an optional witness,
// client first. It is the single source of the address plan.
func Plan(n int, witness bool) ([]Member, error) {
	if n < 1 || n > MaxNodes {
		return nil, fmt.Errorf("--nodes %d is out of range: use 1 to %d", n, MaxNodes)
	}
	ms := []Member{{Name: ClientName, Role: RoleClient, Addr: ClientAddr}}
	if witness {
		ms = append(ms, Member{Name: WitnessName, Role: RoleWitness, Addr: WitnessAddr})
	}
	for i := 1; i <= n; i++ {
		ms = append(ms, Member{Name: NodeName(i), Role: RoleApp, Addr: NodeAddr(i)})
	}
	return ms, nil
}

var memberNameRE = regexp.MustCompile(`^(client|witness|br|node[1-9][0-9]?)$`)

// validMember reports whether name could name a lab namespace suffix.
func validMember(name string) bool { return memberNameRE.MatchString(name) }

// Names of the kernel and systemd objects a lab creates. Keeping them in one
// place lets Down find them again without the state file.

// NetnsName is the network namespace of a member (or "br" for the bridge's).
func NetnsName(lab, member string) string { return "tandem-" + lab + "-" + member }

// BridgeNetns is the namespace that holds the lab's bridge.
func BridgeNetns(lab string) string { return NetnsName(lab, "br") }

// MachineName is the nspawn machine name of a node; it is unique per host so
// that nspawn's lock and propagation files of two labs never collide.
func MachineName(lab, node string) string { return "tandem-" + lab + "-" + node }

// bridgeName is the bridge inside the bridge namespace.
const bridgeName = "br0"

// hostIf is the member's interface inside its own namespace.
const hostIf = "eth0"

// portIf is the bridge-side end of a member's veth ("ve-node1"), at most 15
// bytes for the longest member name.
func portIf(member string) string { return "ve-" + member }

// netemPortIf and netemTapIf are the extra veth pair used while netem is on:
// the forwarder relays frames between portIf and netemTapIf, and netemPortIf
// takes portIf's place on the bridge.
func netemPortIf(member string) string { return "vp-" + member }
func netemTapIf(member string) string  { return "vq-" + member }

// ownedNetns reports whether a namespace name belongs to lab.
func ownedNetns(lab, ns string) bool {
	p := "tandem-" + lab + "-"
	return strings.HasPrefix(ns, p) && validMember(strings.TrimPrefix(ns, p))
}
