package cli

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/harden"
	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// Every harden command refuses a caller that is not root, before it
// reads or changes anything.
func TestHardenRefusesNonRoot(t *testing.T) {
	for _, args := range [][]string{
		{"harden", "audit"}, {"harden", "audit", "--json"}, {"harden", "apply", "--dry-run"},
		{"harden", "apply", "--confirm", "60s"}, {"harden", "confirm"}, {"harden", "revert"},
	} {
		var out, errb bytes.Buffer
		e := &env{stdout: &out, stderr: &errb, stdin: strings.NewReader(""), geteuid: func() int { return 1000 },
			configPath: "/nonexistent/tandem.toml"}
		e.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		root := newRootCmd(e)
		root.SetArgs(args)
		root.SetOut(&out)
		root.SetErr(&errb)
		err := root.Execute()
		if code := exitCode(err); code != ExitNotReady || !strings.Contains(err.Error(), "needs root") {
			t.Errorf("%v as uid 1000: exit %d (%v); want %d naming root", args, code, err, ExitNotReady)
		}
		if out.Len() > 0 {
			t.Errorf("%v printed %q before refusing", args, out.String())
		}
	}
}

func TestPrintAudit(t *testing.T) {
	r := harden.Report{Findings: []harden.Finding{
		{Area: "firewall", Result: check.Result{ID: "fw.default-deny", Title: "t", Status: check.Fail, Current: "policy accept", Wanted: "policy drop", Fix: "apply"}},
		{Area: "firewall", Result: check.Result{ID: "fw.icmp-needed", Status: check.Skipped}, SkipReason: "our router drops it anyway"},
	}, Failed: 1, Skipped: 1, UnknownSkips: []string{"fw.typo"}}
	var b bytes.Buffer
	printAudit(&b, r)
	for _, want := range []string{"FAIL", "fw.default-deny", "policy accept", "skipped: our router drops it anyway", "fix: apply", `"fw.typo", which is no check`, "1 failed, 1 skipped"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("audit output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestPrintApply(t *testing.T) {
	var b bytes.Buffer
	printApply(&b, harden.ApplyResult{Nothing: true})
	if !strings.Contains(b.String(), "nothing to change") {
		t.Errorf("idempotent apply says %q", b.String())
	}
	b.Reset()
	printApply(&b, harden.ApplyResult{Changes: []harden.FileChange{{Area: "firewall", Path: "/etc/tandem/firewall.nft", Diff: "+x\n"}},
		Pending: "id", Deadline: time.Now().Add(time.Minute)})
	if !strings.Contains(b.String(), "tandem harden confirm") || !strings.Contains(b.String(), "/etc/tandem/firewall.nft") {
		t.Errorf("risky apply output:\n%s", b.String())
	}
	b.Reset()
	printHardenStatus(&b, &localapi.HardenStatus{Failed: 2, Failing: []string{"fw.default-deny", "ssh.root-login"}})
	if !strings.Contains(b.String(), "2 failing") || !strings.Contains(b.String(), "ssh.root-login") {
		t.Errorf("status line: %q", b.String())
	}
}
