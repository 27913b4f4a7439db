// Package config defines tandem.toml: its schema, defaults, loading and
// validation. Every error names the offending key and, when the key appears
// in the file, its line, so an operator can fix it without guessing.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Example is an annotated tandem.toml with every key and its default.
//
//go:embed example.toml
var Example string

// DefaultPath is where the agent reads its configuration.
const DefaultPath = "/etc/tandem/tandem.toml"

// Duration is a time.Duration written as a Go duration string ("1s", "250ms").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"500ms\", \"2s\" or \"1m\"", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is the whole of tandem.toml.
type Config struct {
	Node     Node     `toml:"node"`
	Cluster  Cluster  `toml:"cluster"`
	VIP      VIP      `toml:"vip"`
	Health   []Check  `toml:"health"`
	Hooks    Hooks    `toml:"hooks"`
	Metrics  Metrics  `toml:"metrics"`
	Failover Failover `toml:"failover"`
	Deploy   Deploy   `toml:"deploy"`
	// Files are the directories replicated from the IP holder to the
	// other app nodes (see README, Shared files).
	Files []FilesPath `toml:"files"`
	// Harden is the host baseline's policy (tandem harden audit/apply).
	Harden Harden `toml:"harden"`
	// Guard is the cluster-wide ban daemon (see README, Guard).
	Guard Guard `toml:"guard"`
	// Warnings are problems that do not stop the agent, such as a
	// deprecated key; the agent logs them and 'config validate' prints them.
	Warnings Errors `toml:"-"`

	guardSSHDefault bool // the sshd jail was added by the defaults
}

// Node describes this machine.
type Node struct {
	Name    string `toml:"name"`     // unique within the cluster; defaults to the hostname
	Role    string `toml:"role"`     // "app" or "witness"
	DataDir string `toml:"data_dir"` // raft log, certificates; default /var/lib/tandem
}

// Cluster describes how this node talks to its peers.
type Cluster struct {
	// Listen is the mTLS address for raft, health probes and the internal API.
	Listen string `toml:"listen"`
	// Advertise is the address peers dial; defaults to Listen when that names
	// a concrete IP.
	Advertise string `toml:"advertise"`
	// Socket is the local API's unix socket, used by the CLI.
	Socket string `toml:"socket"`
}

// VIP is the floating IP and the provider that moves it.
type VIP struct {
	Address  string `toml:"address"` // "10.0.0.100/24" for linux, bare IP for clouds
	Provider string `toml:"provider"`
	// DrainAddress is the local address the cloud delivers the IP's traffic
	// to (an AWS private IP); planned moves let connections to it finish
	// first. Unset, DigitalOcean drains the anchor IP from its metadata,
	// Hetzner the floating IP itself; linux always drains the VIP.
	DrainAddress string       `toml:"drain_address"`
	Linux        LinuxVIP     `toml:"linux"`
	DigitalOcean DigitalOcean `toml:"digitalocean"`
	Hetzner      Hetzner      `toml:"hetzner"`
	AWS          AWS          `toml:"aws"`
	Exec         ExecVIP      `toml:"exec"`
}

// LinuxVIP configures an on-link address moved with gratuitous ARP, or for
// IPv6 with unsolicited neighbour advertisements; the garp_* keys set both.
type LinuxVIP struct {
	Interface   string   `toml:"interface"`
	GARPCount   int      `toml:"garp_count"`
	GARPRepeat  Duration `toml:"garp_repeat"`
	GARPRefresh Duration `toml:"garp_refresh"`
}

// DigitalOcean configures a reserved IP.
type DigitalOcean struct {
	TokenFile   string `toml:"token_file"`
	DropletID   int    `toml:"droplet_id"` // 0: read from the metadata service
	APIURL      string `toml:"api_url"`
	MetadataURL string `toml:"metadata_url"`
}

// Hetzner configures a Hetzner Cloud floating IP.
type Hetzner struct {
	TokenFile    string `toml:"token_file"`
	FloatingIPID int64  `toml:"floating_ip_id"`
	ServerID     int64  `toml:"server_id"` // 0: read from the metadata service
	APIURL       string `toml:"api_url"`
	MetadataURL  string `toml:"metadata_url"`
}

// AWS configures an Elastic IP.
type AWS struct {
	Region       string `toml:"region"`
	AllocationID string `toml:"allocation_id"`
	InstanceID   string `toml:"instance_id"` // "": read from IMDS
	Endpoint     string `toml:"endpoint"`
}

// ExecVIP runs the operator's own scripts.
type ExecVIP struct {
	Acquire string   `toml:"acquire"`
	Release string   `toml:"release"`
	Holder  string   `toml:"holder"` // prints the holding node's name
	Timeout Duration `toml:"timeout"`
}

// Check is one health check.
type Check struct {
	Name     string   `toml:"name"`
	Type     string   `toml:"type"` // http, tcp, exec, systemd
	Target   string   `toml:"target"`
	Status   int      `toml:"status"`    // http: expected status code (default 200)
	Body     string   `toml:"body"`      // http: substring the body must contain
	JSONPath string   `toml:"json_path"` // http: dotted field of a JSON body
	JSONWant string   `toml:"json_want"` // http: its expected value
	Command  []string `toml:"command"`   // exec: argv
	Unit     string   `toml:"unit"`      // systemd
	Interval Duration `toml:"interval"`
	Timeout  Duration `toml:"timeout"`
	Rise     int      `toml:"rise"`
	Fall     int      `toml:"fall"`
}

// Hooks run on transitions, like keepalived's notify_master/backup/fault.
type Hooks struct {
	Promote      string   `toml:"promote"`
	Demote       string   `toml:"demote"`
	Fault        string   `toml:"fault"`
	Timeout      Duration `toml:"timeout"`
	PrimaryUnits []string `toml:"primary_units"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `toml:"listen"` // "" disables
}

// Failover holds the placement policy and its timers.
type Failover struct {
	Preempt  bool     `toml:"preempt"`
	Priority int      `toml:"priority"`
	Cooloff  Duration `toml:"cooloff"`
	// FailureThreshold failures of a node within FailureWindow penalise
	// it: it is not chosen as a target while a healthy node that is not
	// penalised exists, until enough of its failures leave the window.
	FailureThreshold int      `toml:"failure_threshold"`
	FailureWindow    Duration `toml:"failure_window"`
	// MaxMovesPerHour is deprecated and ignored (a warning says so): the
	// hourly cap is replaced by the failure penalty above.
	MaxMovesPerHour  int      `toml:"max_moves_per_hour"`
	Lease            Duration `toml:"lease"`
	HeartbeatTimeout Duration `toml:"heartbeat_timeout"`
	ProbeInterval    Duration `toml:"probe_interval"`
	// DrainTimeout bounds how long a planned move (switchover, preemption,
	// agent stop) waits for connections in flight to the IP to finish.
	DrainTimeout Duration `toml:"drain_timeout"`
}

// Deploy configures continuous delivery: which packages the cluster runs,
// where their builds come from and how a release rolls out. Delivery is
// off while Packages is empty.
type Deploy struct {
	Packages []string `toml:"packages"`
	// Listen is the webhook listener of every app node ("" = none; the
	// poll fallback and 'tandem deploy' still work).
	Listen       string `toml:"listen"`
	TLSCert      string `toml:"tls_cert"`
	TLSKey       string `toml:"tls_key"`
	InsecureHTTP bool   `toml:"insecure_http"` // plain HTTP, only behind a TLS proxy
	// Soak is how long a node's health must pass after an install before
	// the rollout goes on; GateTimeout bounds the wait for it to pass.
	Soak         Duration `toml:"soak"`
	GateTimeout  Duration `toml:"gate_timeout"`
	Keep         int      `toml:"keep"`
	MaxSize      int64    `toml:"max_size"`
	SigningKeys  []string `toml:"signing_keys"`
	PollInterval Duration `toml:"poll_interval"`
	Auto         bool     `toml:"auto"`
	// HealthURL is the URL the health gate asks; default: the first http
	// health check's scheme and host with the package's health path.
	HealthURL        string   `toml:"health_url"`
	PreHook          string   `toml:"pre_hook"`
	PostHook         string   `toml:"post_hook"`
	HookTimeout      Duration `toml:"hook_timeout"`
	NotifyURLs       []string `toml:"notify_urls"`
	NotifySecretFile string   `toml:"notify_secret_file"`
	Sources          []Source `toml:"source"`
}

// FilesPath is one replicated directory: the holder's copy is sent to
// every other app node.
type FilesPath struct {
	Path    string   `toml:"path"`    // absolute directory, e.g. "/var/lib/pysite/uploads"
	Exclude []string `toml:"exclude"` // rsync patterns, e.g. ["*.tmp", "cache/"]
	// Delete propagates the holder's deletes (default true). Files only a
	// returning old holder has are quarantined, never deleted.
	Delete *bool `toml:"delete"`
	// BWLimit caps each transfer, in KiB/s (0: no limit).
	BWLimit int `toml:"bwlimit"`
}

// Harden is the policy of 'tandem harden': which ports the firewall opens,
// to whom, and which checks are skipped (each with its reason).
type Harden struct {
	// Firewall turns the nftables firewall (table inet tandem-fw) on;
	// false leaves the host's firewall alone and skips the fw.* checks.
	Firewall *bool `toml:"firewall"`
	// SSHPort is the port sshd listens on and the firewall opens (rate-limited).
	SSHPort int `toml:"ssh_port"`
	// AdminCIDRs are the networks the administrators come from: SSH from
	// them is not rate-limited, and guard never bans them.
	AdminCIDRs []string `toml:"admin_cidrs"`
	// OpenPorts are the site's TCP ports, open to everyone (default 80, 443).
	OpenPorts []int `toml:"open_ports"`
	// MetricsCIDRs may reach the metrics port when metrics.listen is not
	// loopback; nobody else may.
	MetricsCIDRs []string `toml:"metrics_cidrs"`
	// JoinCIDRs may reach the cluster port besides the current members:
	// a new node's first connection (its join) comes before it is a member.
	JoinCIDRs []string `toml:"join_cidrs"`
	// Skip maps a check ID to the reason it is skipped, e.g.
	// "ssh.port-not-22" = "the provider's console needs port 22".
	Skip map[string]string `toml:"skip"`
}

// FirewallEnabled reports whether tandem manages the firewall (default on).
func (h Harden) FirewallEnabled() bool { return h.Firewall == nil || *h.Firewall }

// AdminPrefixes returns harden.admin_cidrs parsed (validated by Load), for
// the firewall and for guard's ignore list.
func (h Harden) AdminPrefixes() []netip.Prefix { return prefixes(h.AdminCIDRs) }

// MetricsPrefixes returns harden.metrics_cidrs parsed.
func (h Harden) MetricsPrefixes() []netip.Prefix { return prefixes(h.MetricsCIDRs) }

// JoinPrefixes returns harden.join_cidrs parsed.
func (h Harden) JoinPrefixes() []netip.Prefix { return prefixes(h.JoinCIDRs) }

func prefixes(cidrs []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		if p, err := parseCIDR(c); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parseCIDR accepts "192.0.2.0/24" or a bare address (a /32 or /128), and
// masks host bits so "192.0.2.7/24" means the network.
func parseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-map[bool]int{true: 96, false: 0}[p.Addr().Is4In6()]).Masked(), nil
}

// DeletesPropagate reports whether the holder's deletes are replicated.
func (f FilesPath) DeletesPropagate() bool { return f.Delete == nil || *f.Delete }

// Enabled reports whether delivery is configured.
func (d Deploy) Enabled() bool { return len(d.Packages) > 0 }

// Source is one place builds come from: a forge, or any CI (generic).
type Source struct {
	Name         string   `toml:"name"` // the webhook path is /webhook/NAME
	Type         string   `toml:"type"` // gitlab, github, gitea, forgejo, generic
	SecretFile   string   `toml:"secret_file"`
	APIURL       string   `toml:"api_url"`
	APITokenFile string   `toml:"api_token_file"`
	Project      string   `toml:"project"`
	Branches     []string `toml:"branches"`
	Tags         []string `toml:"tags"`
	Job          string   `toml:"job"`
}

// DefaultSoak is deploy.soak's default: how long a node's health must pass
// after its install.
const DefaultSoak = 3 * time.Second

// SourceTypes are the accepted deploy.source types.
var SourceTypes = []string{"gitlab", "github", "gitea", "forgejo", "generic"}

// Error is one problem in the configuration.
type Error struct {
	File string
	Line int    // 0 when the key is absent from the file
	Key  string // dotted key, e.g. "health[1].interval"
	Msg  string // what is wrong and how to fix it
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// Errors is every problem found; Load reports them all at once.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read config: %w (create it, or pass --config; 'tandem init' writes one)", err)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// DefaultDataDir is node.data_dir when the file does not set it.
const DefaultDataDir = "/var/lib/tandem"

// DataDir returns node.data_dir from the file at path even when the rest
// of the file is invalid or missing, so a broken file still shows whether
// this node is a cluster member. It falls back to DefaultDataDir.
func DataDir(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return DefaultDataDir
	}
	var doc struct {
		Node struct {
			DataDir string `toml:"data_dir"`
		} `toml:"node"`
	}
	if toml.Unmarshal(data, &doc) != nil || !strings.HasPrefix(doc.Node.DataDir, "/") {
		return DefaultDataDir
	}
	return doc.Node.DataDir
}

// Parse decodes, defaults and validates data; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	// A generic decode first: go-toml reports syntax errors with positions.
	var generic map[string]any
	if err := toml.Unmarshal(data, &generic); err != nil {
		return nil, syntaxError(name, err)
	}
	lines, err := keyLines(data)
	if err != nil {
		return nil, syntaxError(name, err)
	}
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(name, lines, err)
	}
	c.applyDefaults(func(key string) bool { _, ok := lines[key]; return ok })
	if _, ok := lines["failover.max_moves_per_hour"]; ok {
		c.Warnings = append(c.Warnings, &Error{File: name, Line: lines.lineOf("failover.max_moves_per_hour"), Key: "failover.max_moves_per_hour",
			Msg: "deprecated and ignored: the hourly cap is replaced by per-node failure penalties; remove it and set failover.failure_threshold and failover.failure_window if the defaults (3 in 10m) do not suit"})
	}
	if errs := c.validate(); len(errs) > 0 {
		for _, e := range errs {
			e.File = name
			e.Line = lines.lineOf(e.Key)
		}
		return nil, errs
	}
	return &c, nil
}

func syntaxError(name string, err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		return Errors{{File: name, Line: row, Msg: "syntax error: " + strings.TrimPrefix(de.Error(), "toml: ")}}
	}
	return Errors{{File: name, Msg: "syntax error: " + err.Error()}}
}

var typeMismatch = regexp.MustCompile(`cannot (?:decode|store) TOML (\w+) into (?:struct field )?(?:\S+\.)?(\S+)? ?(?:of )?type (\S+)`)

func decodeError(name string, lines keyIndex, err error) error {
	var sm *toml.StrictMissingError
	if errors.As(err, &sm) {
		var errs Errors
		for _, de := range sm.Errors {
			row, _ := de.Position()
			key := strings.Join(de.Key(), ".")
			errs = append(errs, &Error{File: name, Line: row, Key: key,
				Msg: "unknown key; check its spelling and section (see 'tandem config example')"})
		}
		return errs
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		key := strings.Join(de.Key(), ".")
		return Errors{{File: name, Line: row, Key: key, Msg: friendly(strings.TrimPrefix(de.Error(), "toml: "))}}
	}
	// Type and text-unmarshal errors carry no position; find the key they name.
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	e := &Error{File: name, Msg: friendly(msg)}
	if key, line := lines.find(msg); line > 0 {
		e.Key, e.Line = key, line
	}
	return Errors{e}
}

// friendly rewrites go-toml's type errors, which name Go types, in TOML terms.
func friendly(msg string) string {
	if m := typeMismatch.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("wrong type: the value is a TOML %s but must be %s", m[1], tomlTypeName(m[3]))
	}
	return msg
}

func tomlTypeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case goType == "bool":
		return "true or false"
	case goType == "string", strings.HasSuffix(goType, "Duration"):
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "a table"
}

// applyDefaults fills unset keys; set reports whether a key is in the file,
// for keys where an empty value means "off" rather than "default".
func (c *Config) applyDefaults(set func(key string) bool) {
	if c.Node.Name == "" {
		c.Node.Name, _ = os.Hostname()
	}
	if c.Node.Role == "" {
		c.Node.Role = RoleApp
	}
	if c.Node.DataDir == "" {
		c.Node.DataDir = DefaultDataDir
	}
	if c.Cluster.Listen == "" {
		c.Cluster.Listen = "0.0.0.0:7946"
	}
	if c.Cluster.Advertise == "" {
		if ap, err := netip.ParseAddrPort(c.Cluster.Listen); err == nil && !ap.Addr().IsUnspecified() {
			c.Cluster.Advertise = c.Cluster.Listen
		}
	}
	if c.Cluster.Socket == "" {
		c.Cluster.Socket = "/run/tandem/tandem.sock"
	}
	if c.Metrics.Listen == "" && !set("metrics.listen") {
		// Loopback by default: the metrics name the node, its role and
		// version, and are served without authentication.
		c.Metrics.Listen = "127.0.0.1:9746"
	}
	if c.Hooks.Timeout == 0 {
		c.Hooks.Timeout = Duration(30 * time.Second)
	}
	if c.VIP.Provider == ProviderLinux {
		l := &c.VIP.Linux
		if l.GARPCount == 0 {
			l.GARPCount = 5
		}
		if l.GARPRepeat == 0 {
			l.GARPRepeat = Duration(2 * time.Second)
		}
		if l.GARPRefresh == 0 {
			l.GARPRefresh = Duration(60 * time.Second)
		}
	}
	if c.VIP.Exec.Timeout == 0 {
		c.VIP.Exec.Timeout = Duration(30 * time.Second)
	}
	f := &c.Failover
	if f.Cooloff == 0 {
		if c.VIP.Provider == ProviderLinux {
			f.Cooloff = Duration(5 * time.Second)
		} else {
			f.Cooloff = Duration(20 * time.Second)
		}
	}
	if f.FailureThreshold == 0 && !set("failover.failure_threshold") {
		f.FailureThreshold = 3
	}
	if f.FailureWindow == 0 && !set("failover.failure_window") {
		f.FailureWindow = Duration(10 * time.Minute)
	}
	if f.Lease == 0 {
		f.Lease = Duration(500 * time.Millisecond)
	}
	if f.HeartbeatTimeout == 0 {
		// The raft leader sends heartbeats ten to five times per timeout
		// and follower: at 1s they were a third of an idle witness's CPU
		// (each one wakes both processes, and a wakeup costs ~70us on a
		// small VM), at 2s still a fifth of a follower's. Leadership is
		// kept off the IP holder, so the longer election after a leader's
		// loss never delays a failover.
		f.HeartbeatTimeout = Duration(3 * time.Second)
	}
	if f.ProbeInterval == 0 {
		// Each message costs a write through the kernel's network stack
		// on one node and a wakeup and read on the other: at 50ms they
		// were half an idle agent's CPU. A lease of 500ms is still five
		// rounds, and a holder's death is declared lease+margin after
		// its last message whatever the interval; an app failure is
		// announced at once, not at the next round.
		f.ProbeInterval = Duration(100 * time.Millisecond)
	}
	if f.DrainTimeout == 0 {
		f.DrainTimeout = Duration(2 * time.Second)
	}
	d := &c.Deploy
	if d.Soak == 0 && !set("deploy.soak") {
		d.Soak = Duration(DefaultSoak)
	}
	if d.GateTimeout == 0 {
		d.GateTimeout = Duration(2 * time.Minute)
	}
	if d.Keep == 0 {
		d.Keep = 5
	}
	if d.MaxSize == 0 {
		d.MaxSize = 256 << 20
	}
	if d.PollInterval == 0 && !set("deploy.poll_interval") {
		d.PollInterval = Duration(5 * time.Minute)
	}
	if !set("deploy.auto") {
		d.Auto = true
	}
	if d.HookTimeout == 0 {
		d.HookTimeout = Duration(10 * time.Minute)
	}
	if c.Harden.SSHPort == 0 && !set("harden.ssh_port") {
		c.Harden.SSHPort = 22
	}
	if c.Harden.OpenPorts == nil && !set("harden.open_ports") {
		c.Harden.OpenPorts = []int{80, 443}
		if c.Node.Role == RoleWitness {
			c.Harden.OpenPorts = []int{} // a witness serves no site
		}
	}
	c.applyGuardDefaults(set)
	for i := range d.Sources {
		if d.Sources[i].Name == "" {
			d.Sources[i].Name = d.Sources[i].Type
		}
	}
	for i := range c.Health {
		h := &c.Health[i]
		if h.Name == "" {
			h.Name = fmt.Sprintf("%s-%d", h.Type, i)
		}
		if h.Interval == 0 {
			h.Interval = Duration(200 * time.Millisecond)
		}
		if h.Timeout == 0 {
			// Longer than the interval: a /healthz slowed by a busy app
			// must not move the IP, since the standby would get the same
			// load; a stopped app fails at once (connection refused).
			h.Timeout = Duration(min(10*time.Duration(h.Interval), time.Second))
		}
		if h.Rise == 0 {
			h.Rise = 3
		}
		if h.Fall == 0 {
			h.Fall = 2
		}
		if h.Type == "http" && h.Status == 0 {
			h.Status = 200
		}
	}
}

// Roles and providers.
const (
	RoleApp     = "app"
	RoleWitness = "witness"

	ProviderLinux        = "linux"
	ProviderDigitalOcean = "digitalocean"
	ProviderHetzner      = "hetzner"
	ProviderAWS          = "aws"
	ProviderExec         = "exec"
	ProviderNone         = "none"
)

var nodeName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (c *Config) validate() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if !nodeName.MatchString(c.Node.Name) {
		bad("node.name", "%q is not a valid node name; use lower-case letters, digits and '-' (like a hostname)", c.Node.Name)
	}
	if !slices.Contains([]string{RoleApp, RoleWitness}, c.Node.Role) {
		bad("node.role", "%q is not a role; use \"app\" or \"witness\"", c.Node.Role)
	}
	if !strings.HasPrefix(c.Node.DataDir, "/") {
		bad("node.data_dir", "%q must be an absolute path", c.Node.DataDir)
	}
	if _, err := netip.ParseAddrPort(c.Cluster.Listen); err != nil {
		bad("cluster.listen", "%q is not IP:PORT (for example \"0.0.0.0:7946\")", c.Cluster.Listen)
	}
	if c.Cluster.Advertise == "" {
		bad("cluster.advertise", "missing: cluster.listen is a wildcard, so set the IP:PORT peers should dial")
	} else if ap, err := netip.ParseAddrPort(c.Cluster.Advertise); err != nil || ap.Addr().IsUnspecified() {
		bad("cluster.advertise", "%q is not a concrete IP:PORT peers can dial", c.Cluster.Advertise)
	}
	if c.Metrics.Listen != "" && !strings.Contains(c.Metrics.Listen, ":") {
		bad("metrics.listen", "%q is not HOST:PORT (for example \":9746\")", c.Metrics.Listen)
	}
	if c.Node.Role == RoleApp {
		errs = append(errs, c.validateVIP()...)
	}
	names := map[string]bool{}
	for i, h := range c.Health {
		key := fmt.Sprintf("health[%d]", i)
		if names[h.Name] {
			bad(key+".name", "duplicate check name %q; names must be unique", h.Name)
		}
		names[h.Name] = true
		switch h.Type {
		case "http":
			if !strings.HasPrefix(h.Target, "http://") && !strings.HasPrefix(h.Target, "https://") {
				bad(key+".target", "%q must be an http:// or https:// URL", h.Target)
			}
			if (h.JSONPath == "") != (h.JSONWant == "") {
				bad(key+".json_path", "json_path and json_want go together; set both or neither")
			}
		case "tcp":
			if _, _, err := splitHostPort(h.Target); err != nil {
				bad(key+".target", "%q must be HOST:PORT", h.Target)
			}
		case "exec":
			if len(h.Command) == 0 {
				bad(key+".command", "missing: exec checks need a command, e.g. [\"/usr/local/bin/check\"]")
			}
		case "systemd":
			if h.Unit == "" {
				bad(key+".unit", "missing: systemd checks need a unit name, e.g. \"myapp.service\"")
			}
		default:
			bad(key+".type", "%q is not a check type; use http, tcp, exec or systemd", h.Type)
		}
		if h.Interval.D() < 10*time.Millisecond {
			bad(key+".interval", "%s is too short; use at least 10ms", h.Interval.D())
		}
		if h.Timeout.D() <= 0 || h.Timeout.D() > h.Interval.D()*10 {
			bad(key+".timeout", "%s must be positive and at most 10x the interval", h.Timeout.D())
		}
		if h.Rise < 1 || h.Fall < 1 {
			bad(key+".rise", "rise and fall must be at least 1")
		}
	}
	f := c.Failover
	if f.Cooloff.D() < 0 {
		bad("failover.cooloff", "must not be negative")
	}
	if f.Priority < -1000 || f.Priority > 1000 {
		bad("failover.priority", "%d is out of range; use -1000 to 1000 (higher wins with preempt = true; default 0)", f.Priority)
	}
	if f.FailureThreshold < 1 || f.FailureThreshold > 100 {
		bad("failover.failure_threshold", "%d is out of range; use 1 to 100 failures (default 3)", f.FailureThreshold)
	}
	if w := f.FailureWindow.D(); w < time.Second || w > 7*24*time.Hour {
		bad("failover.failure_window", "%s is out of range; use 1s to 168h (default 10m)", w)
	}
	if f.Lease.D() < 100*time.Millisecond {
		bad("failover.lease", "%s is too short; use at least 100ms", f.Lease.D())
	}
	if f.HeartbeatTimeout.D() < 50*time.Millisecond {
		bad("failover.heartbeat_timeout", "%s is too short; use at least 50ms", f.HeartbeatTimeout.D())
	}
	if f.ProbeInterval.D() < 10*time.Millisecond {
		bad("failover.probe_interval", "%s is too short; use at least 10ms", f.ProbeInterval.D())
	}
	if d := f.DrainTimeout.D(); d < 0 || d > time.Minute {
		bad("failover.drain_timeout", "%s is out of range; use 0s to 1m (clients whose new connections are held back retry after 1s, 3s, 7s)", d)
	}
	errs = append(errs, c.validateDeploy()...)
	errs = append(errs, c.validateFiles()...)
	errs = append(errs, c.validateGuard()...)
	errs = append(errs, c.validateHarden()...)
	return errs
}

var checkID = regexp.MustCompile(`^[a-z0-9]+(\.[a-z0-9-]+)+$`)

func (c *Config) validateHarden() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	h := c.Harden
	if h.SSHPort < 1 || h.SSHPort > 65535 {
		bad("harden.ssh_port", "%d is not a TCP port; use 1 to 65535 (default 22)", h.SSHPort)
	}
	seen := map[int]bool{}
	for i, p := range h.OpenPorts {
		key := fmt.Sprintf("harden.open_ports[%d]", i)
		switch {
		case p < 1 || p > 65535:
			bad(key, "%d is not a TCP port; use 1 to 65535", p)
		case p == h.SSHPort:
			bad(key, "%d is the SSH port, which is opened with a rate limit; remove it from open_ports", p)
		case seen[p]:
			bad(key, "%d is listed twice; list each port once", p)
		}
		seen[p] = true
	}
	for _, list := range []struct {
		key   string
		cidrs []string
	}{{"harden.admin_cidrs", h.AdminCIDRs}, {"harden.metrics_cidrs", h.MetricsCIDRs}, {"harden.join_cidrs", h.JoinCIDRs}} {
		for i, s := range list.cidrs {
			if _, err := parseCIDR(s); err != nil {
				bad(fmt.Sprintf("%s[%d]", list.key, i), "%q is not a network; write it like \"192.0.2.0/24\", \"2001:db8::/48\" or a single address", s)
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(h.Skip)) {
		key := "harden.skip." + id
		if !checkID.MatchString(id) {
			bad(key, "%q is not a check ID; 'tandem harden audit' lists them (e.g. \"ssh.port-not-22\")", id)
		} else if strings.TrimSpace(h.Skip[id]) == "" {
			bad(key, "a skipped check needs its reason, e.g. %q = \"the provider's console needs it\"", id)
		}
	}
	return errs
}

func (c *Config) validateFiles() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Files) > 0 && c.Node.Role == RoleWitness {
		bad("files", "a witness runs no app and receives no files; remove the [[files]] sections from this node")
		return errs
	}
	var clean []string
	for i, f := range c.Files {
		key := fmt.Sprintf("files[%d]", i)
		p := filepath.Clean(f.Path)
		switch {
		case f.Path == "":
			bad(key+".path", "missing: the directory to replicate, e.g. \"/var/lib/mysite/uploads\"")
			continue
		case !strings.HasPrefix(f.Path, "/"):
			bad(key+".path", "%q must be an absolute path", f.Path)
			continue
		case strings.ContainsAny(f.Path, "\n\x00"):
			bad(key+".path", "%q contains a newline or NUL; rename the directory", f.Path)
			continue
		case slices.Contains([]string{"/", "/etc", "/usr", "/var", "/var/lib", "/home", "/root", "/boot", "/proc", "/sys", "/dev", "/run", "/tmp"}, p):
			bad(key+".path", "%q is a system directory; name the application's own data directory, e.g. \"/var/lib/mysite/uploads\"", f.Path)
			continue
		case within(p, filepath.Clean(c.Node.DataDir)) || within(filepath.Clean(c.Node.DataDir), p):
			bad(key+".path", "%q overlaps node.data_dir (%s), which holds this node's own raft log and keys; replicate the application's directory instead", f.Path, c.Node.DataDir)
			continue
		}
		for j, o := range clean {
			if within(p, o) || within(o, p) {
				bad(key+".path", "%q overlaps files[%d].path (%s); declare each directory once, with excludes for what to leave out", f.Path, j, o)
			}
		}
		clean = append(clean, p)
		for k, e := range f.Exclude {
			if strings.TrimSpace(e) == "" || strings.ContainsAny(e, "\n\r\x00") {
				bad(fmt.Sprintf("%s.exclude[%d]", key, k), "%q is not an rsync pattern; write e.g. \"*.tmp\" or \"cache/\"", e)
			}
		}
		if f.BWLimit < 0 || f.BWLimit > 10<<20 {
			bad(key+".bwlimit", "%d is out of range; use 0 (no limit) to 10485760 KiB/s", f.BWLimit)
		}
	}
	return errs
}

// within reports whether p is dir or below it (both clean).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

var packageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
var sourceName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (c *Config) validateDeploy() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	d := c.Deploy
	for i, p := range d.Packages {
		if !packageName.MatchString(p) {
			bad(fmt.Sprintf("deploy.packages[%d]", i), "%q is not a Debian package name (lower-case letters, digits, + - .)", p)
		}
	}
	if !d.Enabled() {
		if len(d.Sources) > 0 {
			bad("deploy.packages", "missing: deploy.source is set, so name the packages the cluster runs, e.g. [\"mysite\"]")
		}
		return errs
	}
	if d.Listen != "" {
		if _, port, err := net.SplitHostPort(d.Listen); err != nil || port == "" {
			bad("deploy.listen", "%q is not HOST:PORT (for example \":8443\")", d.Listen)
		}
		switch {
		case d.InsecureHTTP && (d.TLSCert != "" || d.TLSKey != ""):
			bad("deploy.insecure_http", "set either tls_cert and tls_key, or insecure_http = true (behind a TLS proxy), not both")
		case !d.InsecureHTTP && (d.TLSCert == "" || d.TLSKey == ""):
			bad("deploy.tls_cert", "the webhook listener needs tls_cert and tls_key (your certificate for the floating IP's name), or insecure_http = true when a TLS proxy is in front")
		}
		for _, k := range []struct{ key, path string }{{"deploy.tls_cert", d.TLSCert}, {"deploy.tls_key", d.TLSKey}} {
			if k.path != "" && !strings.HasPrefix(k.path, "/") {
				bad(k.key, "%q must be an absolute path", k.path)
			}
		}
	}
	if d.Soak.D() < 0 || d.Soak.D() > time.Hour {
		bad("deploy.soak", "%s is out of range; use 0s to 1h (default 3s)", d.Soak.D())
	}
	if g := d.GateTimeout.D(); g < time.Second || g > time.Hour {
		bad("deploy.gate_timeout", "%s is out of range; use 1s to 1h (default 2m)", g)
	}
	if d.Keep < 2 || d.Keep > 100 {
		bad("deploy.keep", "%d is out of range; keep 2 to 100 releases (default 5), so a rollback target is always kept", d.Keep)
	}
	if d.MaxSize < 1<<20 || d.MaxSize > 8<<30 {
		bad("deploy.max_size", "%d bytes is out of range; use 1 MiB to 8 GiB (default 268435456)", d.MaxSize)
	}
	if p := d.PollInterval.D(); p != 0 && (p < 10*time.Second || p > 24*time.Hour) {
		bad("deploy.poll_interval", "%s is out of range; use 10s to 24h, or \"0s\" to turn polling off (default 5m)", p)
	}
	if d.HealthURL != "" && !strings.HasPrefix(d.HealthURL, "http://") && !strings.HasPrefix(d.HealthURL, "https://") {
		bad("deploy.health_url", "%q must be an http:// or https:// URL", d.HealthURL)
	}
	for i, u := range d.NotifyURLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			bad(fmt.Sprintf("deploy.notify_urls[%d]", i), "%q must be an http:// or https:// URL", u)
		}
	}
	if len(d.NotifyURLs) > 0 && d.NotifySecretFile == "" {
		bad("deploy.notify_secret_file", "missing: notifications are signed; name a file holding a whsec_ secret")
	}
	names := map[string]bool{}
	for i, s := range d.Sources {
		key := fmt.Sprintf("deploy.source[%d]", i)
		if !sourceName.MatchString(s.Name) {
			bad(key+".name", "%q is not a valid source name (lower-case letters, digits, - and _; it becomes the path /webhook/NAME)", s.Name)
		}
		if names[s.Name] {
			bad(key+".name", "duplicate source name %q", s.Name)
		}
		names[s.Name] = true
		if !slices.Contains(SourceTypes, s.Type) {
			bad(key+".type", "%q is not a source type; use one of %s", s.Type, strings.Join(SourceTypes, ", "))
			continue
		}
		if s.SecretFile == "" || !strings.HasPrefix(s.SecretFile, "/") {
			bad(key+".secret_file", "missing or relative: secrets are read from a file (absolute path), never written inline")
		}
		if s.Type != "generic" {
			if !strings.HasPrefix(s.APIURL, "http://") && !strings.HasPrefix(s.APIURL, "https://") {
				bad(key+".api_url", "%q must be the forge's API base URL, e.g. https://gitlab.example/api/v4", s.APIURL)
			}
			if s.APITokenFile == "" || !strings.HasPrefix(s.APITokenFile, "/") {
				bad(key+".api_token_file", "missing or relative: tandem downloads the build through the forge's API with this token (absolute path)")
			}
			if s.Project == "" {
				bad(key+".project", "missing: the project (GitLab \"group/name\" or id, GitHub/Gitea \"owner/repo\")")
			}
		}
		if len(s.Branches) == 0 && len(s.Tags) == 0 {
			bad(key+".branches", "no branch or tag may deploy; set branches = [\"main\"] and/or tags = [\"v*\"]")
		}
	}
	return errs
}

func (c *Config) validateVIP() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	v := c.VIP
	switch v.Provider {
	case ProviderLinux:
		if _, err := netip.ParsePrefix(v.Address); err != nil {
			bad("vip.address", "%q must be an address with its prefix length, e.g. \"10.0.0.100/24\"", v.Address)
		}
		if v.Linux.Interface == "" {
			bad("vip.linux.interface", "missing: name the interface the VIP goes on, e.g. \"eth0\"")
		}
	case ProviderDigitalOcean, ProviderHetzner, ProviderAWS, ProviderExec:
		if _, err := netip.ParseAddr(v.Address); err != nil {
			bad("vip.address", "%q must be a plain IP address, e.g. \"203.0.113.10\"", v.Address)
		}
	case ProviderNone:
	case "":
		bad("vip.provider", "missing: choose linux, digitalocean, hetzner, aws, exec or none")
	default:
		bad("vip.provider", "%q is not a provider; use linux, digitalocean, hetzner, aws, exec or none", v.Provider)
	}
	if v.DrainAddress != "" {
		switch v.Provider {
		case ProviderLinux:
			bad("vip.drain_address", "the linux provider drains vip.address itself; remove this key")
		case ProviderNone:
			bad("vip.drain_address", "there is no floating IP to drain with provider \"none\"; remove this key")
		default:
			if a, err := netip.ParseAddr(v.DrainAddress); err != nil || a.IsUnspecified() || a.IsMulticast() {
				bad("vip.drain_address", "%q must be the plain local IP address the floating IP's traffic arrives at, e.g. the droplet's anchor IP \"10.19.0.5\"", v.DrainAddress)
			}
		}
	}
	switch v.Provider {
	case ProviderDigitalOcean:
		if v.DigitalOcean.TokenFile == "" {
			bad("vip.digitalocean.token_file", "missing: a file holding a DigitalOcean API token with write scope")
		}
	case ProviderHetzner:
		if v.Hetzner.TokenFile == "" {
			bad("vip.hetzner.token_file", "missing: a file holding a Hetzner Cloud API token")
		}
		if v.Hetzner.FloatingIPID == 0 {
			bad("vip.hetzner.floating_ip_id", "missing: the floating IP's numeric ID (hcloud floating-ip list)")
		}
	case ProviderAWS:
		if v.AWS.AllocationID == "" {
			bad("vip.aws.allocation_id", "missing: the Elastic IP's allocation ID (eipalloc-...)")
		}
		if v.AWS.Region == "" {
			bad("vip.aws.region", "missing: the AWS region, e.g. \"eu-west-1\"")
		}
	case ProviderExec:
		if v.Exec.Acquire == "" || v.Exec.Release == "" || v.Exec.Holder == "" {
			bad("vip.exec", "acquire, release and holder scripts are all required")
		}
	}
	return errs
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndex(s, ":")
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("no port in %q", s)
	}
	return s[:i], s[i+1:], nil
}

// keyIndex maps dotted keys ("vip.linux.interface", "health[0].type") to the
// line they are set on.
type keyIndex map[string]int

func (k keyIndex) lineOf(key string) int {
	for key != "" {
		if l, ok := k[key]; ok {
			return l
		}
		// Fall back to the enclosing table for keys missing from the file.
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// find returns the key whose last segment appears in msg, preferring longer keys.
func (k keyIndex) find(msg string) (string, int) {
	keys := make([]string, 0, len(k))
	for key := range k {
		keys = append(keys, key)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, key := range keys {
		last := key[strings.LastIndexAny(key, ".]")+1:]
		if last != "" && strings.Contains(strings.ToLower(msg), strings.ToLower(strings.ReplaceAll(last, "_", ""))) {
			return key, k[key]
		}
	}
	return "", 0
}
