package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const guardTestLog = `Nov 28 21:00:01 web1 sshd[1]: Failed password for root from 203.0.113.7 port 52214 ssh2
Nov 28 21:00:02 web1 sshd[2]: Invalid user 10.0.0.5 from 203.0.113.7 port 40022
Nov 28 21:00:03 web1 sshd[3]: Accepted publickey for deploy from 198.51.100.9 port 50000 ssh2: ED25519 SHA256:x
Nov 28 21:00:04 web1 sshd[4]: Connection closed by 2001:db8::9 port 40526 [preauth]
Nov 28 21:00:05 web1 sshd[5]: Invalid user x` + "\xff\x00" + ` from 2001:db8::8 port 1
`

func TestGuardTestCommand(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "auth.log")
	if err := os.WriteFile(logPath, []byte(guardTestLog), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "tandem.toml")
	cfg := "[node]\nname = \"n1\"\n[cluster]\nlisten = \"10.0.0.1:7946\"\n[vip]\nprovider = \"none\"\n" +
		"[[guard.filter]]\nname = \"closed\"\nfailregex = ['^Connection closed by <HOST> port']\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                   string
		args                   []string
		lines, matched, missed uint64
		hosts                  []string
	}{
		{"built-in normal", []string{"sshd", logPath}, 5, 3, 2, []string{"203.0.113.7", "2001:db8::8"}},
		{"built-in ddos", []string{"sshd", logPath, "--mode", "ddos"}, 5, 1, 4, []string{"2001:db8::9"}},
		{"regex", []string{"^Accepted \\S+ for \\S+ from <HOST> port", logPath}, 5, 1, 4, []string{"198.51.100.9"}},
		{"configured filter", []string{"--config", conf, "closed", logPath}, 5, 1, 4, []string{"2001:db8::9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"guard", "test", "--json"}, tt.args...)
			if code := Main(args, nil, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var r guardTestReport
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("%v: %s", err, out.String())
			}
			var hosts []string
			for _, h := range r.Hosts {
				hosts = append(hosts, h.Addr)
			}
			if r.Lines != tt.lines || r.Matched != tt.matched || r.Missed != tt.missed || strings.Join(hosts, ",") != strings.Join(tt.hosts, ",") {
				t.Errorf("report %+v; want %d lines, %d matched, %d missed, hosts %v", r, tt.lines, tt.matched, tt.missed, tt.hosts)
			}
		})
	}
	// Text output from standard input, with the matched lines.
	var out, errb bytes.Buffer
	if code := Main([]string{"guard", "test", "sshd", "-", "--print-matched"}, strings.NewReader(guardTestLog), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"Lines: 5 read, 3 matched, 2 missed, 0 ignored", "matched: Nov 28 21:00:02", "203.0.113.7", "Hosts: 2"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}

// TestGuardTestRefuses checks the usage errors: each names what is wrong.
func TestGuardTestRefuses(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "auth.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown filter", []string{"--config", "/nonexistent.toml", "apache", logPath}, "neither a built-in filter"},
		{"bad mode", []string{"sshd", logPath, "--mode", "paranoid"}, `no mode "paranoid"`},
		{"mode on a regex", []string{"x <HOST>", logPath, "--mode", "ddos"}, "--mode applies to built-in filters"},
		{"invalid regex", []string{"(?=x)<HOST>", logPath}, "not a valid RE2"},
		{"missing log", []string{"sshd", logPath + ".missing"}, "open log"},
		{"one argument", []string{"sshd"}, "accepts 2 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(append([]string{"guard", "test"}, tt.args...), nil, &out, &errb)
			if code != ExitUsage || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errb.String(), ExitUsage, tt.want)
			}
		})
	}
}
