package guard

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The built-in filters. Each failregex is written for the messages of the
// software Debian 12 ships (OpenSSH 9.2, nginx 1.22, tandem itself) and is
// anchored at both ends where the program's own text is there, so that
// text an attacker controls (a user name, a URL, a disconnect reason) can
// never supply the host: in "Invalid user 10.0.0.5 from 203.0.113.7 port
// 22" the host is the one before the final " port N", which sshd wrote.

// modes of a built-in filter; "" is the default mode.
type builtinRule struct {
	modes []string // modes the rule belongs to
	re    string
}

type builtinFilter struct {
	programs []string // syslog identifiers; nil: any
	prefix   string   // a regex every rule starts with
	modes    []string // accepted modes, the first is the default
	rules    []builtinRule
	ignore   []string
	doc      string
}

const (
	modeNormal     = "normal"
	modeDDoS       = "ddos"
	modeExtra      = "extra"
	modeAggressive = "aggressive"
)

var (
	sshNormal = []string{modeNormal, modeAggressive}
	sshDDoS   = []string{modeDDoS, modeAggressive}
	sshExtra  = []string{modeExtra, modeAggressive}
)

// sshd's remote id in 9.2's packet.c: "[authenticating user U |invalid
// user U ]ADDR port N". The user part is greedy so the last " ADDR port
// N" before sshd's own suffix is the one taken.
const sshRemote = `(?:(?:authenticating|invalid) user .* )?<HOST> port \d+`

// probeRequest is a request line for a path bots probe for on any site.
const probeRequest = `(?:GET|POST|HEAD|PUT) /+(?:[^ "?]*/)?(?i:wp-login\.php|wp-admin|xmlrpc\.php|wp-content|wp-includes|wordpress|\.env|\.git|\.svn|\.aws|\.ds_store|phpmyadmin|pma|myadmin|mysqladmin|adminer\.php|admin\.php|cgi-bin|boaform|hnap1|actuator|vendor/phpunit|owa|autodiscover|setup\.php|shell\.php|config\.php|server-status|solr|jenkins|manager/html|console)(?:[/?.][^ "]*)? HTTP/\d(?:\.\d)?`

var builtins = map[string]builtinFilter{
	"sshd": {
		programs: []string{"sshd", "sshd-session"},
		// sshd's log.c writes "error: " or "fatal: " before messages of
		// those levels on some paths (the monitor relaying its child).
		prefix: `(?:(?:error|fatal): )?`,
		modes:  []string{modeNormal, modeDDoS, modeExtra, modeAggressive},
		doc:    "OpenSSH's sshd (journal identifier sshd); modes normal, ddos, extra, aggressive as in fail2ban",
		rules: []builtinRule{
			// auth2.c auth_log: every failed attempt of a method but
			// publickey (a client offers its keys in turn; those count
			// in aggressive mode only, as fail2ban's publickey=nofail).
			{sshNormal, `Failed (?:password|keyboard-interactive/pam|keyboard-interactive|none|hostbased|gssapi-with-mic) for .* from <HOST> port \d+ ssh2$`},
			{[]string{modeAggressive}, `Failed publickey for .* from <HOST> port \d+ ssh2(?:: \S+ \S+)?$`},
			// auth2.c input_userauth_request: an unknown user name.
			{sshNormal, `Invalid user .* from <HOST> port \d+$`},
			// auth.c allowed_user: AllowUsers/DenyUsers/AllowGroups/DenyGroups
			// (the user is an existing account's name).
			{sshNormal, `User \S+ from <HOST> not allowed because (?:not listed in AllowUsers|listed in DenyUsers|not in any group|a group is listed in DenyGroups|none of user's groups are listed in AllowGroups)$`},
			// auth-pam.c: PAM refused (keyboard-interactive through PAM).
			{sshNormal, `PAM: (?:Authentication failure|User not known to the underlying authentication module|Maximum number of tries exceeded|Authentication token is no longer valid; new one required|User account has expired|Permission denied) for .* from <HOST>$`},
			// auth.c auth_maxtries_exceeded.
			{sshNormal, `maximum authentication attempts exceeded for .* from <HOST> port \d+ ssh2 \[preauth\]$`},
			// A client that gives up with an authentication error (jsch's "Auth fail").
			{sshNormal, `Received disconnect from <HOST> port \d+:3: .*Auth fail(?:ed)?(?: \[preauth\])?$`},
			// ddos: connections that never get to authenticate.
			{sshDDoS, `Connection (?:closed|reset) by ` + sshRemote + `(?: \[preauth\])?$`},
			{sshDDoS, `Timeout before authentication for <HOST> port \d+$`},
			{sshDDoS, `(?:banner exchange|ssh_dispatch_run_fatal|kex_protocol_error|send_error): Connection from ` + sshRemote + `: .*$`},
			{sshDDoS, `Did not receive identification string from <HOST>(?: port \d+)?$`},
			{sshDDoS, `Disconnected from ` + sshRemote + ` \[preauth\]$`},
			// extra: a client that cannot or will not negotiate.
			{sshExtra, `Unable to negotiate with ` + sshRemote + `: no matching \S+(?: \S+)* found\.(?: Their offer: .*)?$`},
			{sshExtra, `Received disconnect from <HOST> port \d+:14: .*$`},
			{[]string{modeExtra}, `Disconnected from invalid user .* <HOST> port \d+ \[preauth\]$`},
		},
	},
	"nginx-http-auth": {
		modes: []string{modeNormal, modeAggressive},
		doc:   "nginx basic-auth failures in error.log; aggressive also counts requests without credentials",
		rules: []builtinRule{
			// A Basic-auth user name cannot contain ':', so the user part
			// cannot forge ", client: "; the host is the first client.
			{[]string{modeNormal, modeAggressive}, `\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] \d+#\d+: \*\d+ user "[^:]*"(?::? password mismatch| was not found in "[^"]*"), client: <HOST>, server: `},
			{[]string{modeAggressive}, `\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] \d+#\d+: \*\d+ no user/password was provided for basic authentication, client: <HOST>, server: `},
		},
	},
	"nginx-botsearch": {
		modes: []string{modeNormal, modeAggressive},
		doc:   "requests for well-known probe paths answered 4xx in nginx's access.log (combined format); aggressive counts every 404",
		rules: []builtinRule{
			// $remote_addr starts the line: nothing the client sends comes first.
			{[]string{modeNormal}, `<HOST> - .* "` + probeRequest + `" 4\d\d `},
			{[]string{modeAggressive}, `<HOST> - .* "(?:` + probeRequest + `" 4\d\d|[A-Z]+ [^ "]* HTTP/\d(?:\.\d)?" 404) `},
		},
	},
	"tandem-webhook": {
		programs: []string{"tandem"},
		modes:    []string{modeNormal},
		doc:      "tandem's webhook listener refusing a bad signature or token (401)",
		rules: []builtinRule{
			// internal/deploy's "webhook refused" line (slog text): the
			// attributes before remote= are tandem's own and unquoted; the
			// attacker-influenced err="..." comes after.
			{[]string{modeNormal}, `(?:time=\S+ )?level=WARN msg="webhook refused"(?: [a-z_]+=[^ "=]*)* status=401 remote=\[?<HOST>\]?:\d+(?: |$)`},
		},
	},
}

// BuiltinNames returns the names of the built-in filters, sorted.
func BuiltinNames() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// BuiltinModes returns the modes of a built-in filter, the default first,
// or nil when there is no such filter.
func BuiltinModes(name string) []string {
	return slices.Clone(builtins[name].modes)
}

// IsBuiltin reports whether name is a built-in filter.
func IsBuiltin(name string) bool { _, ok := builtins[name]; return ok }

// Builtin compiles a built-in filter in a mode ("" for its default).
func Builtin(name, mode string) (*Filter, error) {
	b, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("no built-in filter %q; the built-in filters are %s", name, strings.Join(BuiltinNames(), ", "))
	}
	if mode == "" {
		mode = b.modes[0]
	}
	if !slices.Contains(b.modes, mode) {
		return nil, fmt.Errorf("filter %s has no mode %q; use one of %s", name, mode, strings.Join(b.modes, ", "))
	}
	f := &Filter{name: name, mode: mode, programs: b.programs}
	for _, r := range b.rules {
		if !slices.Contains(r.modes, mode) {
			continue
		}
		c, err := compileFail(b.prefix + r.re)
		if err != nil {
			panic(fmt.Sprintf("built-in filter %s: %q: %v", name, r.re, err)) // a bug caught by the tests
		}
		f.rules = append(f.rules, c)
	}
	for _, src := range b.ignore {
		c, err := compileIgnore(src)
		if err != nil {
			panic(fmt.Sprintf("built-in filter %s: %q: %v", name, src, err))
		}
		f.ignore = append(f.ignore, c)
	}
	return f, nil
}
