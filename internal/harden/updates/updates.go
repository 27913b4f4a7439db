// Package updates is the automatic updates area of `tandem harden`:
// unattended-upgrades installed, apt's periodic update and upgrade turned
// on (/etc/apt/apt.conf.d/20auto-upgrades), the Debian security origin
// among the ones it upgrades from, and apt's daily timers enabled.
//
// Audit reads apt's effective configuration (`apt-config dump`), never the
// files' text, so a later file that overrides 20auto-upgrades is seen.
package updates

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// Files the area writes.
const (
	// AutoUpgrades has the content unattended-upgrades' own postinst
	// writes when its debconf question is answered yes, so installing the
	// package after it never prompts about a changed file.
	AutoUpgrades = "/etc/apt/apt.conf.d/20auto-upgrades"
	// SecurityOrigin adds Debian's security origin when the effective
	// configuration lacks it (Origins-Pattern is a list: files add to it).
	SecurityOrigin = "/etc/apt/apt.conf.d/52tandem-security-origin"
)

const autoUpgradesContent = `APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
`

const securityOriginContent = `// Written by ` + "`tandem harden apply`" + `: security updates are installed unattended.
Unattended-Upgrade::Origins-Pattern {
	"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
};
`

// Timers are apt's systemd timers that run the periodic jobs.
var Timers = []string{"apt-daily.timer", "apt-daily-upgrade.timer"}

// Package is the Debian package that installs updates unattended.
const Package = "unattended-upgrades"

// Options configures the area. The zero value audits and plans for the
// real host.
type Options struct {
	// Root is where host paths are read ("" is /); tests use a temp tree.
	Root string
	// Run runs apt-config, dpkg-query and systemctl; nil runs the real
	// commands.
	Run hostrun.Func
	// Log receives what the area decides; nil discards.
	Log *slog.Logger
}

// Area is the updates area.
type Area struct {
	root string
	run  hostrun.Func
	log  *slog.Logger
}

// New returns the updates area for opts.
func New(opts Options) *Area {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Area{root: opts.Root, run: hostrun.OrExec(opts.Run), log: log}
}

// Name implements the area interface.
func (a *Area) Name() string { return "updates" }

// state is what Audit and Plan read from the host.
type state struct {
	installed    bool
	installedErr error
	conf         AptConfig
	confErr      error
	timers       map[string]string // unit -> systemctl is-enabled's answer
	timersErr    error
}

func (a *Area) read(ctx context.Context) state {
	var st state
	st.installed, st.installedErr = a.packageInstalled(ctx)
	out, err := a.run(ctx, "apt-config", "dump")
	if err != nil {
		st.confErr = fmt.Errorf("reading apt's configuration: %w", err)
	} else {
		st.conf, st.confErr = ParseAptConfig(out)
	}
	st.timers, st.timersErr = a.timerStates(ctx)
	return st
}

// packageInstalled asks dpkg-query whether unattended-upgrades is
// installed; a package dpkg never heard of is not installed, not an error.
func (a *Area) packageInstalled(ctx context.Context) (bool, error) {
	out, err := a.run(ctx, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", Package)
	if err != nil {
		if strings.Contains(err.Error(), "no packages found") {
			return false, nil
		}
		return false, fmt.Errorf("asking dpkg whether %s is installed: %w", Package, err)
	}
	return strings.TrimSpace(string(out)) == "ii", nil
}

// timerStates runs systemctl is-enabled on the timers. It exits non-zero
// when one is not enabled but still prints one state per unit.
func (a *Area) timerStates(ctx context.Context) (map[string]string, error) {
	out, err := a.run(ctx, append([]string{"systemctl", "is-enabled"}, Timers...)...)
	lines := strings.Fields(string(out))
	if len(lines) != len(Timers) {
		if err == nil {
			err = fmt.Errorf("systemctl is-enabled printed %q", out)
		}
		return nil, fmt.Errorf("asking systemd about apt's timers: %w", err)
	}
	states := map[string]string{}
	for i, t := range Timers {
		states[t] = lines[i]
	}
	return states, nil
}

// periodicKeys are the APT::Periodic settings the area wants at "1"
// (every day).
var periodicKeys = []string{"APT::Periodic::Update-Package-Lists", "APT::Periodic::Unattended-Upgrade"}

// daily reports whether an APT::Periodic value runs the job every day.
// apt.systemd.daily reads it as days, or with a unit suffix.
func daily(v string) bool { return v == "1" || v == "1d" || v == "always" }

// hasSecurityOrigin reports whether unattended-upgrades' origins include
// Debian's security archive, in the current (Origins-Pattern) or the
// legacy (Allowed-Origins) form.
func hasSecurityOrigin(c AptConfig) bool {
	for _, p := range c.Values("Unattended-Upgrade::Origins-Pattern") {
		if strings.Contains(p, "label=Debian-Security") || strings.Contains(p, "-security") {
			return true
		}
	}
	for _, p := range c.Values("Unattended-Upgrade::Allowed-Origins") {
		if strings.Contains(p, "-security") {
			return true
		}
	}
	return false
}

// Audit checks the updates area.
func (a *Area) Audit(ctx context.Context) []check.Result {
	st := a.read(ctx)
	var res []check.Result

	inst := check.Result{
		ID: "updates.unattended-installed", Title: "unattended-upgrades is installed, so security fixes land without a login",
		Wanted: Package + " installed", Fix: "tandem harden apply installs it with apt-get (needs a working apt source)",
	}
	switch {
	case st.installedErr != nil:
		inst.Status, inst.Current = check.Error, st.installedErr.Error()
	case st.installed:
		inst.Status, inst.Current = check.Pass, "installed"
	default:
		inst.Status, inst.Current = check.Fail, "not installed"
	}
	res = append(res, inst)

	periodic := check.Result{
		ID: "updates.periodic", Title: "apt refreshes its lists and runs unattended-upgrade every day",
		Wanted: `Update-Package-Lists "1", Unattended-Upgrade "1"`, Fix: "tandem harden apply writes " + AutoUpgrades,
	}
	origin := check.Result{
		ID: "updates.security-origin", Title: "unattended-upgrades installs from Debian's security archive",
		Wanted: "an origin pattern with label=Debian-Security",
		Fix:    "tandem harden apply adds it in " + SecurityOrigin,
	}
	if st.confErr != nil {
		periodic.Status, periodic.Current = check.Error, st.confErr.Error()
		origin.Status, origin.Current = check.Error, st.confErr.Error()
	} else {
		var cur []string
		ok := true
		for _, k := range periodicKeys {
			v, _ := st.conf.Get(k)
			ok = ok && daily(v)
			cur = append(cur, fmt.Sprintf("%s %q", strings.TrimPrefix(k, "APT::Periodic::"), v))
		}
		periodic.Status, periodic.Current = passIf(ok), strings.Join(cur, ", ")
		pats := st.conf.Values("Unattended-Upgrade::Origins-Pattern")
		origin.Status, origin.Current = passIf(hasSecurityOrigin(st.conf)), strings.Join(pats, "; ")
		if len(pats) == 0 {
			origin.Current = "no origin patterns"
			if !st.installed {
				origin.Current += " (" + Package + " is not installed; its default configuration has the security origin)"
			}
		}
	}
	res = append(res, periodic, origin)

	timers := check.Result{
		ID: "updates.timers", Title: "apt's daily timers are enabled, so the periodic jobs run",
		Wanted: strings.Join(Timers, ", ") + " enabled", Fix: "tandem harden apply enables them with systemctl enable --now",
	}
	if st.timersErr != nil {
		timers.Status, timers.Current = check.Error, st.timersErr.Error()
	} else {
		var cur []string
		ok := true
		for _, t := range Timers {
			ok = ok && st.timers[t] == "enabled"
			cur = append(cur, t+" "+st.timers[t])
		}
		timers.Status, timers.Current = passIf(ok), strings.Join(cur, ", ")
	}
	res = append(res, timers)
	return res
}

// Plan returns what makes the host comply: the files first, then the
// package install as the validation step (a failed install takes the files
// back at once), and the timers enabled as the load step. It is empty when
// every check passes.
func (a *Area) Plan(ctx context.Context) (check.Plan, error) {
	plan := check.Plan{Area: a.Name()}
	st := a.read(ctx)
	for _, err := range []error{st.installedErr, st.confErr, st.timersErr} {
		if err != nil {
			return plan, err
		}
	}
	periodicOK := true
	for _, k := range periodicKeys {
		v, _ := st.conf.Get(k)
		periodicOK = periodicOK && daily(v)
	}
	if !periodicOK {
		if err := a.addFile(&plan, AutoUpgrades, autoUpgradesContent); err != nil {
			return plan, err
		}
	}
	// Before the install, the package's default configuration (which has
	// the security origin) is not there to read: add ours only when the
	// installed package lacks it.
	if st.installed && !hasSecurityOrigin(st.conf) {
		if err := a.addFile(&plan, SecurityOrigin, securityOriginContent); err != nil {
			return plan, err
		}
	}
	if !st.installed {
		plan.Validate = append(plan.Validate, []string{
			"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
			"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", Package,
		})
	}
	var disabled []string
	for _, t := range Timers {
		if st.timers[t] != "enabled" {
			disabled = append(disabled, t)
		}
	}
	if len(disabled) > 0 {
		plan.Reload = append(plan.Reload, append([]string{"systemctl", "enable", "--now"}, disabled...))
	}
	return plan, nil
}

// addFile adds a file to the plan unless it already has that content (a
// later file may override it: the plan cannot fix that by rewriting it).
func (a *Area) addFile(plan *check.Plan, path, content string) error {
	old, err := os.ReadFile(hostrun.Under(a.root, path))
	switch {
	case err == nil && string(old) == content:
		a.log.Warn("apt's effective configuration overrides tandem's file", "file", path)
		return nil
	case err != nil && !os.IsNotExist(err):
		return fmt.Errorf("reading %s: %w", path, err)
	}
	plan.Files = append(plan.Files, check.File{Path: path, Content: []byte(content), Mode: 0o644})
	return nil
}

func passIf(ok bool) check.Status {
	if ok {
		return check.Pass
	}
	return check.Fail
}

// AptConfig is `apt-config dump`'s output: each option's values in order.
// A list option (Origins-Pattern) prints its items as "Name:: value".
type AptConfig map[string][]string

// maxAptConfig bounds the dump ParseAptConfig accepts.
const maxAptConfig = 4 << 20

// ParseAptConfig parses `apt-config dump`: lines of `Name "value";`, where
// a list item's name ends in "::". The value is unquoted as apt prints it
// (apt escapes nothing; a quote inside a value cannot occur).
func ParseAptConfig(out []byte) (AptConfig, error) {
	if len(out) > maxAptConfig {
		return nil, fmt.Errorf("apt-config dump output is %d bytes, more than the %d expected", len(out), maxAptConfig)
	}
	conf := AptConfig{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), maxAptConfig)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		if !ok || name == "" || !strings.HasPrefix(rest, `"`) || !strings.HasSuffix(rest, `";`) || len(rest) < 3 {
			return nil, fmt.Errorf("apt-config dump line %d: %q is not `Name \"value\";`", n, line)
		}
		for strings.HasSuffix(name, "::") {
			name = strings.TrimSuffix(name, "::")
		}
		if name == "" {
			return nil, fmt.Errorf("apt-config dump line %d: %q has no option name", n, line)
		}
		conf[name] = append(conf[name], rest[1:len(rest)-2])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading apt-config dump: %w", err)
	}
	return conf, nil
}

// Get returns an option's last value (apt keeps the last one set) and
// whether it is set.
func (c AptConfig) Get(name string) (string, bool) {
	v := c[name]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// Values returns a list option's items, without the empty value apt
// prints for the list itself.
func (c AptConfig) Values(name string) []string {
	return slices.DeleteFunc(slices.Clone(c[name]), func(v string) bool { return v == "" })
}
