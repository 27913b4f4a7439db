package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestPrintBans(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	l := localapi.BanList{GeneratedAt: now, Bans: []localapi.BanInfo{
		{Addr: "203.0.113.7", Jail: "sshd", By: "node1", At: now.Add(-time.Minute), Until: now.Add(9 * time.Minute), Offence: 2, Enforced: true,
			Line: "Failed password for invalid user \x1b]0;owned\x07evil from 203.0.113.7 port 22 ssh2 " + strings.Repeat("é", 40)},
		{Addr: "192.0.2.2", Jail: "manual", By: "node2", At: now, Until: now.Add(time.Hour), Offence: 1, Protected: "192.0.2.2 is the address of cluster member node2"},
	}}
	var b bytes.Buffer
	printBans(&b, l)
	out := b.String()
	for _, want := range []string{"ADDRESS", "203.0.113.7", "9m0s", "yes", "protected", "..."} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("terminal control characters from a log line reached the output: %q", out)
	}
	b.Reset()
	printBans(&b, localapi.BanList{KernelError: "no table tandem-guard"})
	if out := b.String(); !strings.Contains(out, "no bans in force") || !strings.Contains(out, "WARNING") {
		t.Errorf("empty list output = %q", out)
	}
}

func TestPrintStatusGuardLine(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, localapi.Status{Node: "node1", Role: "app", Guard: &localapi.GuardStatus{Active: 3, IPv4: 2, IPv6: 1, Enforced: 3}})
	if !strings.Contains(b.String(), "guard:   3 bans in force (2 IPv4, 1 IPv6), 3 in this node's kernel") {
		t.Errorf("status lacks the guard line:\n%s", b.String())
	}
}
