// Package harden runs the host baseline: the audit of every area's checks
// (firewall, sshd, updates, integrity) and the apply of their plans as one
// transaction that backs up what it replaces, validates, reloads, and for
// risky changes reverts by itself unless confirmed in time. The areas are
// built by the caller (cli or agent) from the policy; this package knows
// them only through Area.
package harden

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// Area is one part of the baseline: its checks and what apply changes.
type Area interface {
	Name() string
	// Audit reads the live host (effective values, not files) and
	// returns one result per check.
	Audit(ctx context.Context) []check.Result
	// Plan is what apply would change; empty when the host complies.
	Plan(ctx context.Context) (check.Plan, error)
}

// Runner runs a command and returns its standard output; the error of a
// failed command carries its standard error. Tests pass a fake.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// ExecRunner runs commands on this host.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run: empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if len(msg) > 2000 {
			msg = msg[:2000] + "…"
		}
		if msg != "" {
			return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return stdout.Bytes(), nil
}

// Finding is one check's result in an audit, with its area and, when the
// policy skips it, the policy's reason.
type Finding struct {
	Area string `json:"area"`
	check.Result
	SkipReason string `json:"skip_reason,omitempty"`
}

// Report is a whole audit. Its JSON form is what 'tandem harden audit
// --json' prints; field names are stable.
type Report struct {
	Findings []Finding `json:"checks"`
	Passed   int       `json:"passed"`
	Failed   int       `json:"failed"`
	Skipped  int       `json:"skipped"`
	Errors   int       `json:"errors"`
	// UnknownSkips are harden.skip keys that name no check: a typo
	// would otherwise silently skip nothing.
	UnknownSkips []string `json:"unknown_skips,omitempty"`
}

// FailedByArea counts the failing checks of each area (every area named,
// zero included), for the metric.
func (r Report) FailedByArea() map[string]int {
	out := map[string]int{}
	for _, f := range r.Findings {
		if _, ok := out[f.Area]; !ok {
			out[f.Area] = 0
		}
		if f.Status == check.Fail {
			out[f.Area]++
		}
	}
	return out
}

// Audit runs every area's checks and applies the policy's skips (check ID
// to reason).
func Audit(ctx context.Context, areas []Area, skip map[string]string) Report {
	var r Report
	seen := map[string]bool{}
	for _, a := range areas {
		for _, res := range a.Audit(ctx) {
			f := Finding{Area: a.Name(), Result: res}
			seen[res.ID] = true
			if reason, ok := skip[res.ID]; ok {
				f.Status, f.SkipReason = check.Skipped, reason
			}
			switch f.Status {
			case check.Pass:
				r.Passed++
			case check.Fail:
				r.Failed++
			case check.Skipped:
				r.Skipped++
			default:
				r.Errors++
			}
			r.Findings = append(r.Findings, f)
		}
	}
	for id := range skip {
		if !seen[id] {
			r.UnknownSkips = append(r.UnknownSkips, id)
		}
	}
	slices.Sort(r.UnknownSkips)
	return r
}
