package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/guard"
)

func TestGuardDefaults(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if !c.GuardEnabled() {
		t.Error("guard off on an app node by default")
	}
	g := c.GuardEngine()
	want := guard.JailConfig{Name: "sshd", Filter: "sshd", JournalIdentifiers: []string{"sshd", "sshd-session"},
		MaxRetry: 5, FindTime: 10 * time.Minute, BanTime: 10 * time.Minute, BanTimeMax: 7 * 24 * time.Hour, BanTimeFactor: 2}
	if len(g.Jails) != 1 || !jailEqual(g.Jails[0], want) {
		t.Fatalf("jails = %+v; want only %+v", g.Jails, want)
	}
	if _, err := guard.New(g, nil); err != nil {
		t.Errorf("the default guard does not build an engine: %v", err)
	}
	w, err := Parse("w.toml", []byte("[node]\nname = \"witness\"\nrole = \"witness\"\n[cluster]\nlisten = \"10.0.0.10:7946\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w.GuardEnabled() {
		t.Error("guard on on a witness by default")
	}
}

func jailEqual(a, b guard.JailConfig) bool {
	return a.Name == b.Name && a.Filter == b.Filter && a.Mode == b.Mode && strings.Join(a.JournalIdentifiers, ",") == strings.Join(b.JournalIdentifiers, ",") &&
		strings.Join(a.JournalUnits, ",") == strings.Join(b.JournalUnits, ",") && strings.Join(a.Files, ",") == strings.Join(b.Files, ",") &&
		a.MaxRetry == b.MaxRetry && a.FindTime == b.FindTime && a.BanTime == b.BanTime && a.BanTimeMax == b.BanTimeMax && a.BanTimeFactor == b.BanTimeFactor
}

func TestGuardJails(t *testing.T) {
	doc := minimal + `
[harden]
admin_cidrs = ["192.0.2.0/28"]

[guard]
ignore = ["198.51.100.0/24", "2001:db8::1"]

[[guard.jail]]
name = "sshd"
mode = "aggressive"
maxretry = 3
bantime = "1h"
bantime_max = "0s"

[[guard.jail]]
name = "nginx-http-auth"

[[guard.jail]]
name = "app"
filter = "myapp"
files = ["/var/log/myapp.log"]
enabled = false

[[guard.filter]]
name = "myapp"
failregex = ['^Login failed for .* from <HOST>$']
ignoreregex = ['test user']
`
	c, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	g := c.GuardEngine()
	if len(g.Jails) != 2 {
		t.Fatalf("jails = %+v; want sshd and nginx-http-auth (app is disabled)", g.Jails)
	}
	sshd := guard.JailConfig{Name: "sshd", Filter: "sshd", Mode: "aggressive", JournalIdentifiers: []string{"sshd", "sshd-session"},
		MaxRetry: 3, FindTime: 10 * time.Minute, BanTime: time.Hour, BanTimeFactor: 2}
	nginx := guard.JailConfig{Name: "nginx-http-auth", Filter: "nginx-http-auth", Files: []string{"/var/log/nginx/error.log"},
		MaxRetry: 5, FindTime: 10 * time.Minute, BanTime: 10 * time.Minute, BanTimeMax: 7 * 24 * time.Hour, BanTimeFactor: 2}
	if !jailEqual(g.Jails[0], sshd) || !jailEqual(g.Jails[1], nginx) {
		t.Errorf("jails = %+v\nwant %+v\nand  %+v", g.Jails, sshd, nginx)
	}
	// [harden] admin_cidrs are never banned either.
	if len(g.Ignore) != 3 || g.Ignore[0] != netip.MustParsePrefix("192.0.2.0/28") || g.Ignore[2] != netip.MustParsePrefix("2001:db8::1/128") {
		t.Errorf("ignore = %v; want admin_cidrs then guard.ignore", g.Ignore)
	}
	if len(g.Filters) != 1 || g.Filters[0].Name != "myapp" {
		t.Errorf("filters = %+v", g.Filters)
	}
	if _, err := guard.New(g, nil); err != nil {
		t.Errorf("engine: %v", err)
	}
}

func TestGuardErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantKey  string
		wantLine int
		wantMsg  string
	}{
		{"regex without HOST", "[[guard.filter]]\nname = \"a\"\nfailregex = ['^Login failed']\n", "guard.filter[0].failregex[0]", 13, "<HOST>"},
		{"invalid RE2", "[[guard.filter]]\nname = \"a\"\nfailregex = ['^x from <HOST>$', '(?=look)<HOST>']\n", "guard.filter[0].failregex[1]", 13, "not a valid RE2"},
		{"ignoreregex with HOST", "[[guard.filter]]\nname = \"a\"\nfailregex = ['<HOST>']\nignoreregex = ['<HOST>']\n", "guard.filter[0].ignoreregex[0]", 14, "no <HOST>"},
		{"unknown filter", "[[guard.jail]]\nname = \"web\"\nfilter = \"apache-auth\"\nfiles = [\"/var/log/x\"]\n", "guard.jail[0].filter", 13, "no filter \"apache-auth\""},
		{"unknown mode", "[[guard.jail]]\nname = \"sshd\"\nmode = \"paranoid\"\n", "guard.jail[0].mode", 13, "no mode \"paranoid\""},
		{"mode on a user filter", "[[guard.jail]]\nname = \"a\"\nmode = \"ddos\"\nfiles = [\"/x\"]\n[[guard.filter]]\nname = \"a\"\nfailregex = ['<HOST>']\n", "guard.jail[0].mode", 13, "remove mode"},
		{"no source", "[[guard.jail]]\nname = \"app\"\nfilter = \"a\"\n[[guard.filter]]\nname = \"a\"\nfailregex = ['<HOST>']\n", "guard.jail[0].files", 11, "no source"},
		{"relative file", "[[guard.jail]]\nname = \"nginx-botsearch\"\nfiles = [\"access.log\"]\n", "guard.jail[0].files[0]", 13, "absolute"},
		{"bad ignore", "[guard]\nignore = [\"10.0.0.300\"]\n", "guard.ignore[0]", 12, "not an IP address or CIDR"},
		{"maxretry", "[[guard.jail]]\nname = \"sshd\"\nmaxretry = -1\n", "guard.jail[0].maxretry", 13, "out of range"},
		{"bantime_max below bantime", "[[guard.jail]]\nname = \"sshd\"\nbantime = \"1h\"\nbantime_max = \"10m\"\n", "guard.jail[0].bantime_max", 14, "out of range"},
		{"factor below 1", "[[guard.jail]]\nname = \"sshd\"\nbantime_factor = 0.5\n", "guard.jail[0].bantime_factor", 13, "out of range"},
		{"duplicate jail", "[[guard.jail]]\nname = \"sshd\"\n[[guard.jail]]\nname = \"sshd\"\n", "guard.jail[1].name", 14, "duplicate"},
		{"bad findtime", "[[guard.jail]]\nname = \"sshd\"\nfindtime = \"1w\"\n", "guard.jail.findtime", 13, "not a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(minimal+tt.doc))
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Parse() = %v; want config.Errors", err)
			}
			e := errs[0]
			if e.Key != tt.wantKey || e.Line != tt.wantLine || !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("error = %q (key %q line %d); want key %q line %d containing %q", e.Error(), e.Key, e.Line, tt.wantKey, tt.wantLine, tt.wantMsg)
			}
		})
	}
}
