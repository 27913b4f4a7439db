// Package sshd is the SSH daemon's area of `tandem harden`: a drop-in
// under /etc/ssh/sshd_config.d/ that turns root and password logins off and
// allows only modern algorithms (post-quantum hybrid key exchange first,
// AEAD ciphers or encrypt-then-MAC, ed25519 and RSA-SHA2 host keys).
//
// Audit reads the effective values from `sshd -T`, never the file text,
// and the configuration text only to find what would keep the drop-in from
// taking effect (an earlier file or a Match block). Password logins stay on
// while no login user has an authorized key, so applying never locks the
// admin out. Algorithm names are checked against `ssh -Q` so a list never
// holds a name the installed OpenSSH does not know.
package sshd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// Paths on the host.
const (
	MainConfig = "/etc/ssh/sshd_config"
	// DropIn is read before every other drop-in Debian and cloud images
	// ship (50-cloud-init.conf, ...): Debian's sshd_config includes
	// sshd_config.d/*.conf at its top, in lexical order, and the first
	// value of a keyword wins.
	DropIn     = "/etc/ssh/sshd_config.d/00-tandem.conf"
	sshdBinary = "/usr/sbin/sshd"
)

// Options configures the area. The zero value audits and plans for the
// real host.
type Options struct {
	// Port, when non-zero, is the only port sshd should listen on.
	Port int
	// Root is where host paths are read ("" is /); tests use a temp tree.
	Root string
	// Run runs sshd -T, ssh -Q; nil runs the real commands.
	Run hostrun.Func
	// Log receives what the area decides and why; nil discards.
	Log *slog.Logger
}

// Area is the sshd area.
type Area struct {
	port int
	root string
	run  hostrun.Func
	log  *slog.Logger
}

// New returns the sshd area for opts.
func New(opts Options) *Area {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Area{port: opts.Port, root: opts.Root, run: hostrun.OrExec(opts.Run), log: log}
}

// Name implements the area interface.
func (a *Area) Name() string { return "sshd" }

// algorithm is one name of a policy list; optional names (newer than
// Debian 12's OpenSSH 9.2) are used only when `ssh -Q` lists them.
type algorithm struct {
	name     string
	optional bool
}

// policy is one algorithm keyword: the list the drop-in writes, in order
// of preference, and the extra names the audit accepts (aliases).
type policy struct {
	id, keyword, directive, query, title string
	names                                []algorithm
	alsoAccepted                         []string
}

// policies follow ssh-audit's hardening policy for Debian 12: key exchange
// with the post-quantum hybrid first and no NIST curves or SHA-1; AEAD
// ciphers first and CTR ones only with encrypt-then-MAC MACs; ed25519 and
// RSA with SHA-2 host keys. Group exchange is left out so the moduli file
// does not matter.
var policies = []policy{
	{
		id: "ssh.kex", keyword: "kexalgorithms", directive: "KexAlgorithms", query: "kex",
		title: "key exchange is post-quantum hybrid first, with no NIST curves or SHA-1",
		names: []algorithm{
			{"mlkem768x25519-sha256", true},
			{"sntrup761x25519-sha512@openssh.com", false},
			{"curve25519-sha256", false},
			{"curve25519-sha256@libssh.org", false},
			{"diffie-hellman-group16-sha512", false},
			{"diffie-hellman-group18-sha512", false},
		},
		alsoAccepted: []string{"sntrup761x25519-sha512", "diffie-hellman-group-exchange-sha256"},
	},
	{
		id: "ssh.ciphers", keyword: "ciphers", directive: "Ciphers", query: "cipher",
		title: "ciphers are AEAD, or CTR with encrypt-then-MAC only",
		names: []algorithm{
			{"chacha20-poly1305@openssh.com", false},
			{"aes256-gcm@openssh.com", false},
			{"aes128-gcm@openssh.com", false},
			{"aes256-ctr", false},
			{"aes192-ctr", false},
			{"aes128-ctr", false},
		},
	},
	{
		id: "ssh.macs", keyword: "macs", directive: "MACs", query: "mac",
		title: "MACs are encrypt-then-MAC with SHA-2 or UMAC-128 only",
		names: []algorithm{
			{"hmac-sha2-512-etm@openssh.com", false},
			{"hmac-sha2-256-etm@openssh.com", false},
			{"umac-128-etm@openssh.com", false},
		},
	},
	{
		id: "ssh.host-key-algorithms", keyword: "hostkeyalgorithms", directive: "HostKeyAlgorithms", query: "HostKeyAlgorithms",
		title: "host keys are ed25519 or RSA signed with SHA-2",
		names: []algorithm{
			{"ssh-ed25519", false},
			{"rsa-sha2-512", false},
			{"rsa-sha2-256", false},
		},
	},
}

// pqFirst are the post-quantum hybrids the key exchange list must start with.
var pqFirst = []string{"mlkem768x25519-sha256", "sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512"}

func (p policy) accepted() []string {
	out := slices.Clone(p.alsoAccepted)
	for _, n := range p.names {
		out = append(out, n.name)
	}
	return out
}

func (p policy) wantedText() string {
	var names []string
	for _, n := range p.names {
		if !n.optional {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// state is what Audit and Plan both read from the host.
type state struct {
	eff     Effective
	keys    keyHolders
	keysErr error
}

func (a *Area) installed() bool {
	_, err := os.Stat(hostrun.Under(a.root, sshdBinary))
	return err == nil
}

func (a *Area) read(ctx context.Context) (state, error) {
	var st state
	out, err := a.run(ctx, "sshd", "-T")
	if err != nil {
		if strings.Contains(err.Error(), "privilege separation directory") {
			// ssh.service makes /run/sshd when it starts.
			return st, fmt.Errorf("reading sshd's effective configuration: %w (is ssh.service running? systemctl start ssh)", err)
		}
		return st, fmt.Errorf("reading sshd's effective configuration: %w", err)
	}
	if st.eff, err = ParseEffective(out); err != nil {
		return st, err
	}
	if _, ok := st.eff.Get("permitrootlogin"); !ok {
		return st, fmt.Errorf("sshd -T printed no permitrootlogin line: not sshd's effective configuration")
	}
	st.keys, st.keysErr = findKeyHolders(a.root, st.eff)
	return st, nil
}

// overrides reads the configuration as sshd would with the drop-in d in
// place and says what keeps its values from taking effect: a main
// configuration that never includes it, an earlier line, a Match block.
func (a *Area) overrides(d dropIn) ([]string, error) {
	settings, err := scanConfig(a.root, MainConfig, map[string][]byte{DropIn: d.render()})
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(settings, func(s setting) bool { return s.File == DropIn }) {
		return []string{MainConfig + " does not include " + DropIn + ": add `Include /etc/ssh/sshd_config.d/*.conf` as its first line"}, nil
	}
	var out []string
	for _, c := range conflicts(settings, DropIn, d.values()) {
		out = append(out, c.String())
	}
	return out, nil
}

// auditIDs are the checks Audit always returns, in order.
var auditIDs = []string{
	"ssh.admin-has-key", "ssh.root-login", "ssh.password-auth", "ssh.kbd-interactive",
	"ssh.kex", "ssh.ciphers", "ssh.macs", "ssh.host-key-algorithms", "ssh.drop-in-effective",
}

// Audit checks sshd's effective configuration.
func (a *Area) Audit(ctx context.Context) []check.Result {
	if !a.installed() {
		return a.allError("openssh-server is not installed (no " + sshdBinary + ")")
	}
	st, err := a.read(ctx)
	if err != nil {
		return a.allError(err.Error())
	}
	fixApply := "tandem harden apply writes it to " + DropIn
	var res []check.Result

	// The lockout guard first: the password checks refer to it.
	keysCur, keyStatus := st.keys.String(), check.Pass
	switch {
	case st.keysErr != nil:
		// Nobody counts as having a key: passwords stay on.
		keysCur, keyStatus = "cannot read the users: "+st.keysErr.Error(), check.Error
	case len(st.keys.Users) == 0:
		keyStatus = check.Fail
	}
	res = append(res, check.Result{
		ID: "ssh.admin-has-key", Title: "an admin user other than root can log in with a key, so passwords can go",
		Status: keyStatus, Current: keysCur, Wanted: "a login user other than root with an authorized key",
		Fix: "add a key for an admin user (ssh-copy-id USER@HOST), then run tandem harden apply again",
	})

	rootLogin := firstOr(st.eff, "permitrootlogin", "")
	res = append(res, check.Result{
		ID: "ssh.root-login", Title: "root cannot log in over SSH; admins log in as themselves",
		Status: passIf(rootLogin == "no"), Current: rootLogin, Wanted: "no",
		Fix: a.guardedFix(st.keys, len(st.keys.Users) > 0, fixApply),
	})
	for _, c := range []struct{ id, keyword, title string }{
		{"ssh.password-auth", "passwordauthentication", "password logins are off, so passwords cannot be guessed"},
		{"ssh.kbd-interactive", "kbdinteractiveauthentication", "keyboard-interactive (PAM password) logins are off"},
	} {
		cur := firstOr(st.eff, c.keyword, "")
		res = append(res, check.Result{
			ID: c.id, Title: c.title, Status: passIf(cur == "no"), Current: cur, Wanted: "no",
			Fix: a.guardedFix(st.keys, st.keys.any(), fixApply),
		})
	}

	for _, p := range policies {
		cur := st.eff.List(p.keyword)
		bad := notIn(cur, p.accepted())
		ok := len(cur) > 0 && len(bad) == 0
		if p.id == "ssh.kex" && ok && !slices.Contains(pqFirst, cur[0]) {
			ok = false
			bad = []string{cur[0] + " comes before a post-quantum hybrid"}
		}
		current := strings.Join(cur, ",")
		if len(bad) > 0 {
			current += " (not allowed: " + strings.Join(bad, ", ") + ")"
		}
		res = append(res, check.Result{ID: p.id, Title: p.title, Status: passIf(ok), Current: current, Wanted: p.wantedText(), Fix: fixApply})
	}

	if a.port != 0 {
		ports := st.eff["port"]
		want := strconv.Itoa(a.port)
		res = append(res, check.Result{
			ID: "ssh.port", Title: "sshd listens on the policy's port only",
			Status: passIf(len(ports) == 1 && ports[0] == want), Current: strings.Join(ports, ","), Wanted: want,
			Fix: fixApply + " (open the port in the firewall first)",
		})
	}

	eff := check.Result{
		ID: "ssh.drop-in-effective", Title: "no earlier file or Match block overrides tandem's sshd drop-in",
		Status: check.Pass, Wanted: "nothing overrides " + DropIn,
		Fix: "remove or change the lines named, or move them below the Include of sshd_config.d, then run tandem harden apply again",
	}
	if over, err := a.overrides(a.dropInSettings(ctx, st)); err != nil {
		eff.Status, eff.Current = check.Error, err.Error()
	} else {
		eff.Current = "nothing overrides it"
		if len(over) > 0 {
			eff.Status, eff.Current = check.Fail, strings.Join(over, "; ")
		}
	}
	res = append(res, eff)
	return res
}

// guardedFix is the fix of a login check the lockout guard may hold back.
func (a *Area) guardedFix(k keyHolders, allowed bool, fix string) string {
	if allowed {
		return fix
	}
	return "add a key for an admin user, then apply again (tandem leaves this on while " + k.String() + ")"
}

func (a *Area) allError(why string) []check.Result {
	ids := slices.Clone(auditIDs)
	if a.port != 0 {
		ids = append(ids, "ssh.port")
	}
	res := make([]check.Result, 0, len(ids))
	for _, id := range ids {
		res = append(res, check.Result{ID: id, Title: "sshd's effective configuration", Status: check.Error, Current: why,
			Fix: "install openssh-server or make `sshd -T` work, then audit again"})
	}
	return res
}

func passIf(ok bool) check.Status {
	if ok {
		return check.Pass
	}
	return check.Fail
}

// notIn returns the names of have that are not in allowed.
func notIn(have, allowed []string) []string {
	var out []string
	for _, h := range have {
		if !slices.Contains(allowed, h) {
			out = append(out, h)
		}
	}
	return out
}

// line is one directive of the drop-in, or a comment saying why a
// directive is left out.
type line struct {
	directive, value, note string
}

type dropIn []line

// values maps each written directive's sshd -T keyword to its value.
func (d dropIn) values() map[string]string {
	out := map[string]string{}
	for _, l := range d {
		if l.directive != "" {
			out[strings.ToLower(l.directive)] = l.value
		}
	}
	return out
}

func (d dropIn) render() []byte {
	var b strings.Builder
	b.WriteString("# Written by `tandem harden apply`; edits are replaced by the next apply.\n")
	b.WriteString("# sshd_config includes sshd_config.d/*.conf at its top and keeps the first\n")
	b.WriteString("# value of a keyword, so these settings override the main file.\n")
	for _, l := range d {
		if l.note != "" {
			b.WriteString("# " + l.note + "\n")
		}
		if l.directive != "" {
			b.WriteString(l.directive + " " + l.value + "\n")
		}
	}
	return []byte(b.String())
}

// dropInSettings decides the drop-in's lines from the host's state.
func (a *Area) dropInSettings(ctx context.Context, st state) dropIn {
	var d dropIn
	switch {
	case len(st.keys.Users) > 0:
		d = append(d, line{directive: "PermitRootLogin", value: "no"})
	case st.keys.Root:
		d = append(d, line{directive: "PermitRootLogin", value: "prohibit-password",
			note: "root keeps key logins: no other login user has an authorized key yet"})
	default:
		d = append(d, line{note: "PermitRootLogin, PasswordAuthentication and KbdInteractiveAuthentication are left as they are: " + st.keys.String()})
	}
	if st.keys.any() {
		d = append(d, line{directive: "PasswordAuthentication", value: "no"},
			line{directive: "KbdInteractiveAuthentication", value: "no"})
	}
	for _, p := range policies {
		names, note := a.supported(ctx, p), ""
		if p.id == "ssh.host-key-algorithms" && !hasModernHostKey(a.root, st.eff) {
			names, note = nil, "HostKeyAlgorithms is left as it is: sshd has no ed25519 or RSA host key"
		}
		if len(names) == 0 {
			if note == "" {
				note = p.directive + " is left as it is: ssh -Q " + p.query + " lists none of the policy's names"
			}
			d = append(d, line{note: note})
			continue
		}
		d = append(d, line{directive: p.directive, value: strings.Join(names, ","), note: note})
	}
	if a.port != 0 {
		d = append(d, line{directive: "Port", value: strconv.Itoa(a.port)})
	}
	return d
}

// supported returns the policy's names the installed OpenSSH knows, as
// `ssh -Q` lists them. When the query fails it keeps the names Debian 12's
// OpenSSH 9.2 knows (sshd -t checks them before any reload).
func (a *Area) supported(ctx context.Context, p policy) []string {
	out, err := a.run(ctx, "ssh", "-Q", p.query)
	known := map[string]bool{}
	if err == nil {
		for _, f := range strings.Fields(string(out)) {
			known[f] = true
		}
	}
	var names []string
	for _, n := range p.names {
		switch {
		case err != nil && !n.optional, err == nil && known[n.name]:
			names = append(names, n.name)
		}
	}
	if err != nil {
		a.log.Warn("cannot list the algorithms OpenSSH supports; using the ones OpenSSH 9.2 has", "query", p.query, "err", err)
	}
	return names
}

// hasModernHostKey reports whether one of sshd's host keys (sshd -T's
// hostkey lines) is ed25519 or RSA, read from its .pub file.
func hasModernHostKey(root string, eff Effective) bool {
	for _, path := range eff["hostkey"] {
		data, err := os.ReadFile(hostrun.Under(root, path+".pub"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 && (f[0] == "ssh-ed25519" || f[0] == "ssh-rsa") {
			return true
		}
	}
	return false
}

// Plan returns the drop-in to write, checked with sshd -t and loaded with
// a reload of ssh.service. It is empty when the drop-in already has this
// content, so a second apply changes nothing.
func (a *Area) Plan(ctx context.Context) (check.Plan, error) {
	plan := check.Plan{Area: a.Name()}
	if !a.installed() {
		a.log.Info("sshd is not installed; nothing to harden", "binary", sshdBinary)
		return plan, nil
	}
	st, err := a.read(ctx)
	if err != nil {
		return plan, err
	}
	if st.keysErr != nil {
		return plan, fmt.Errorf("finding the users who can log in with a key: %w", st.keysErr)
	}
	d := a.dropInSettings(ctx, st)
	content := d.render()
	if over, err := a.overrides(d); err != nil {
		return plan, err
	} else if len(over) > 0 {
		// Written anyway: the drop-in still sets what nothing overrides,
		// and ssh.drop-in-effective fails until the admin removes the
		// override.
		a.log.Warn("sshd settings override tandem's drop-in", "first", over[0], "count", len(over))
	}
	old, err := os.ReadFile(hostrun.Under(a.root, DropIn))
	if err == nil && string(old) == string(content) {
		return plan, nil
	}
	plan.Files = []check.File{{Path: DropIn, Content: content, Mode: 0o644}}
	plan.Validate = [][]string{{"sshd", "-t"}}
	plan.Reload = [][]string{{"systemctl", "reload", "ssh"}}
	plan.Risky = true
	return plan, nil
}
