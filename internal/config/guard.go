package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/guard"
)

// Guard is the [guard] section: the cluster-wide ban daemon's jails,
// filters and ignore list (see README, Guard).
type Guard struct {
	// Enabled turns the guard on (default: true on app nodes, false on a
	// witness).
	Enabled *bool `toml:"enabled"`
	// Ignore lists addresses and networks never banned (admin CIDRs); the
	// cluster's members and loopback are always ignored.
	Ignore  []string      `toml:"ignore"`
	Jails   []GuardJail   `toml:"jail"`
	Filters []GuardFilter `toml:"filter"`
}

// GuardJail is one [[guard.jail]].
type GuardJail struct {
	Name               string   `toml:"name"`
	Enabled            *bool    `toml:"enabled"` // default true
	Filter             string   `toml:"filter"`  // default: the jail's name
	Mode               string   `toml:"mode"`    // a built-in filter's mode (sshd: normal, ddos, extra, aggressive)
	JournalUnits       []string `toml:"journal_units"`
	JournalIdentifiers []string `toml:"journal_identifiers"`
	Files              []string `toml:"files"`
	MaxRetry           int      `toml:"maxretry"`
	FindTime           Duration `toml:"findtime"`
	BanTime            Duration `toml:"bantime"`
	BanTimeMax         Duration `toml:"bantime_max"`
	BanTimeFactor      float64  `toml:"bantime_factor"`
}

// GuardFilter is one [[guard.filter]]: regexes in Go's RE2 syntax with a
// <HOST> placeholder, matched from the start of the message.
type GuardFilter struct {
	Name        string   `toml:"name"`
	FailRegex   []string `toml:"failregex"`
	IgnoreRegex []string `toml:"ignoreregex"`
}

// GuardEnabled reports whether the guard runs on this node.
func (c *Config) GuardEnabled() bool { return c.Guard.Enabled != nil && *c.Guard.Enabled }

// Guard defaults: fail2ban's (5 failures in 10 minutes ban for 10
// minutes), with a repeat offender's ban doubling up to a week.
const (
	DefaultGuardMaxRetry   = 5
	DefaultGuardFindTime   = 10 * time.Minute
	DefaultGuardBanTime    = 10 * time.Minute
	DefaultGuardBanTimeMax = 7 * 24 * time.Hour
	DefaultGuardFactor     = 2.0
)

// defaultSources are the sources of a jail that names none, by filter.
var defaultSources = map[string]GuardJail{
	"sshd":            {JournalIdentifiers: []string{"sshd", "sshd-session"}},
	"tandem-webhook":  {JournalIdentifiers: []string{"tandem"}},
	"nginx-http-auth": {Files: []string{"/var/log/nginx/error.log"}},
	"nginx-botsearch": {Files: []string{"/var/log/nginx/access.log"}},
}

func (c *Config) applyGuardDefaults(set func(key string) bool) {
	g := &c.Guard
	if g.Enabled == nil {
		on := c.Node.Role == RoleApp
		g.Enabled = &on
	}
	if !slices.ContainsFunc(g.Jails, func(j GuardJail) bool { return j.Name == "sshd" }) {
		// The sshd jail is on unless a [[guard.jail]] named sshd says otherwise.
		g.Jails = append([]GuardJail{{Name: "sshd"}}, g.Jails...)
		c.guardSSHDefault = true
	}
	for i := range g.Jails {
		j := &g.Jails[i]
		key := c.jailKey(i)
		if j.Enabled == nil {
			on := true
			j.Enabled = &on
		}
		if j.Filter == "" {
			j.Filter = j.Name
		}
		if len(j.JournalUnits)+len(j.JournalIdentifiers)+len(j.Files) == 0 {
			if d, ok := defaultSources[j.Filter]; ok {
				j.JournalIdentifiers, j.Files = d.JournalIdentifiers, d.Files
			}
		}
		if j.MaxRetry == 0 {
			j.MaxRetry = DefaultGuardMaxRetry
		}
		if j.FindTime == 0 {
			j.FindTime = Duration(DefaultGuardFindTime)
		}
		if j.BanTime == 0 {
			j.BanTime = Duration(DefaultGuardBanTime)
		}
		if j.BanTimeMax == 0 && !set(key+".bantime_max") {
			j.BanTimeMax = Duration(max(DefaultGuardBanTimeMax, j.BanTime.D()))
		}
		if j.BanTimeFactor == 0 && !set(key+".bantime_factor") {
			j.BanTimeFactor = DefaultGuardFactor
		}
	}
}

// jailKey names guard.Jails[i] as the file does: the built-in sshd jail
// added by the defaults is not in the file, so it is "guard".
func (c *Config) jailKey(i int) string {
	if c.guardSSHDefault {
		if i == 0 {
			return "guard"
		}
		i--
	}
	return fmt.Sprintf("guard.jail[%d]", i)
}

var jailName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (c *Config) validateGuard() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	g := c.Guard
	for i, s := range g.Ignore {
		if _, err := parsePrefix(s); err != nil {
			bad(fmt.Sprintf("guard.ignore[%d]", i), "%q is not an IP address or CIDR; write e.g. \"198.51.100.0/24\" or \"2001:db8::/48\"", s)
		}
	}
	specs := make([]guard.FilterSpec, 0, len(g.Filters))
	filters := map[string]bool{}
	for i, f := range g.Filters {
		key := fmt.Sprintf("guard.filter[%d]", i)
		if !jailName.MatchString(f.Name) {
			bad(key+".name", "%q is not a valid filter name (lower-case letters, digits, - and _)", f.Name)
		}
		if filters[f.Name] {
			bad(key+".name", "duplicate filter name %q", f.Name)
		}
		filters[f.Name] = true
		spec := guard.FilterSpec{Name: f.Name, FailRegex: f.FailRegex, IgnoreRegex: f.IgnoreRegex}
		if _, err := guard.NewFilter(spec); err != nil {
			if re, ok := err.(*guard.RegexError); ok {
				bad(fmt.Sprintf("%s.%s[%d]", key, re.Field, re.Index), "%v", re.Err)
			} else {
				bad(key+".failregex", "%v", err)
			}
			continue
		}
		specs = append(specs, spec)
	}
	names := map[string]bool{}
	for i, j := range g.Jails {
		key := c.jailKey(i)
		if !jailName.MatchString(j.Name) {
			bad(key+".name", "%q is not a valid jail name (lower-case letters, digits, - and _)", j.Name)
		}
		if names[j.Name] {
			bad(key+".name", "duplicate jail name %q", j.Name)
		}
		names[j.Name] = true
		if !filters[j.Filter] && !guard.IsBuiltin(j.Filter) {
			bad(key+".filter", "no filter %q: use a built-in one (%s) or define it in a [[guard.filter]]", j.Filter, strings.Join(guard.BuiltinNames(), ", "))
		} else if _, err := guard.ResolveFilter(j.Filter, j.Mode, specs); err != nil && !filters[j.Filter] {
			bad(key+".mode", "%v", err)
		} else if filters[j.Filter] && j.Mode != "" {
			bad(key+".mode", "filter %s is a [[guard.filter]]; only built-in filters have modes: remove mode", j.Filter)
		}
		if len(j.JournalUnits)+len(j.JournalIdentifiers)+len(j.Files) == 0 {
			bad(key+".files", "no source: set journal_units, journal_identifiers or files (absolute paths)")
		}
		for k, f := range j.Files {
			if !strings.HasPrefix(f, "/") || strings.ContainsAny(f, "\n\x00") {
				bad(fmt.Sprintf("%s.files[%d]", key, k), "%q must be an absolute path", f)
			}
		}
		for k, u := range append(slices.Clone(j.JournalUnits), j.JournalIdentifiers...) {
			if u == "" || strings.ContainsAny(u, " =+\n\x00") {
				bad(fmt.Sprintf("%s.journal_units[%d]", key, k), "%q is not a unit name or syslog identifier", u)
			}
		}
		if j.MaxRetry < 1 || j.MaxRetry > 1000 {
			bad(key+".maxretry", "%d is out of range; use 1 to 1000 failures (default 5)", j.MaxRetry)
		}
		if d := j.FindTime.D(); d < time.Second || d > 30*24*time.Hour {
			bad(key+".findtime", "%s is out of range; use 1s to 720h (default 10m)", d)
		}
		if d := j.BanTime.D(); d < time.Second || d > 365*24*time.Hour {
			bad(key+".bantime", "%s is out of range; use 1s to 8760h (default 10m)", d)
		}
		if m := j.BanTimeMax.D(); m != 0 && (m < j.BanTime.D() || m > 365*24*time.Hour) {
			bad(key+".bantime_max", "%s is out of range; use bantime (%s) to 8760h, or \"0s\" for bans that never grow (default 168h)", m, j.BanTime.D())
		}
		if f := j.BanTimeFactor; j.BanTimeMax != 0 && (f < 1 || f > 100) {
			bad(key+".bantime_factor", "%g is out of range; use 1 to 100 (default 2: each repeat ban doubles)", f)
		}
	}
	return errs
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// GuardEngine maps the [guard] section onto the engine's configuration:
// the enabled jails and the user filters. The ignore list also holds
// [harden] admin_cidrs: an admin who mistypes a password is never banned.
func (c *Config) GuardEngine() guard.Config {
	g := c.Guard
	var cfg guard.Config
	cfg.Ignore = append(cfg.Ignore, c.Harden.AdminPrefixes()...)
	for _, s := range g.Ignore {
		if p, err := parsePrefix(s); err == nil {
			cfg.Ignore = append(cfg.Ignore, p)
		}
	}
	for _, f := range g.Filters {
		cfg.Filters = append(cfg.Filters, guard.FilterSpec{Name: f.Name, FailRegex: f.FailRegex, IgnoreRegex: f.IgnoreRegex})
	}
	for _, j := range g.Jails {
		if j.Enabled != nil && !*j.Enabled {
			continue
		}
		cfg.Jails = append(cfg.Jails, guard.JailConfig{
			Name: j.Name, Filter: j.Filter, Mode: j.Mode,
			JournalUnits: j.JournalUnits, JournalIdentifiers: j.JournalIdentifiers, Files: j.Files,
			MaxRetry: j.MaxRetry, FindTime: j.FindTime.D(), BanTime: j.BanTime.D(),
			BanTimeMax: j.BanTimeMax.D(), BanTimeFactor: j.BanTimeFactor,
		})
	}
	return cfg
}
