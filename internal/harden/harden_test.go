package harden

import (
	"context"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

type fakeArea struct {
	name    string
	results []check.Result
}

func (f fakeArea) Name() string                             { return f.name }
func (f fakeArea) Audit(context.Context) []check.Result     { return f.results }
func (f fakeArea) Plan(context.Context) (check.Plan, error) { return check.Plan{Area: f.name}, nil }

func TestAuditSkipsAndCounts(t *testing.T) {
	areas := []Area{
		fakeArea{"firewall", []check.Result{{ID: "fw.a", Status: check.Pass}, {ID: "fw.b", Status: check.Fail}, {ID: "fw.c", Status: check.Fail}}},
		fakeArea{"sshd", []check.Result{{ID: "ssh.a", Status: check.Error}, {ID: "ssh.b", Status: check.Pass}}},
		fakeArea{"updates", nil},
	}
	r := Audit(t.Context(), areas, map[string]string{"fw.c": "the provider filters it", "fw.typo": "x"})
	if r.Passed != 2 || r.Failed != 1 || r.Skipped != 1 || r.Errors != 1 {
		t.Errorf("counts = %d passed %d failed %d skipped %d errors; want 2 1 1 1", r.Passed, r.Failed, r.Skipped, r.Errors)
	}
	if f := r.Findings[2]; f.Status != check.Skipped || f.SkipReason != "the provider filters it" || f.Area != "firewall" {
		t.Errorf("skipped finding = %+v", f)
	}
	if len(r.UnknownSkips) != 1 || r.UnknownSkips[0] != "fw.typo" {
		t.Errorf("unknown skips = %v", r.UnknownSkips)
	}
	by := r.FailedByArea()
	if by["firewall"] != 1 || by["sshd"] != 0 || len(by) != 2 {
		t.Errorf("FailedByArea = %v; want firewall 1, sshd 0", by)
	}
}
