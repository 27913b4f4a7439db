package updates

import (
	"context"
	"os"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// TestRealDebian audits and plans a real Debian root read-only (the lab's
// base image, which lacks unattended-upgrades), with commands run by
// chroot: TANDEM_UPDATES_ROOT=/var/cache/tandem/lab/bookworm-XXXX. It runs
// only when asked.
func TestRealDebian(t *testing.T) {
	root := os.Getenv("TANDEM_UPDATES_ROOT")
	if root == "" {
		t.Skip("set TANDEM_UPDATES_ROOT to a Debian root")
	}
	a := New(Options{Root: root, Run: func(ctx context.Context, argv ...string) ([]byte, error) {
		return hostrun.Exec(ctx, append([]string{"chroot", root}, argv...)...)
	}})
	for _, r := range a.Audit(context.Background()) {
		t.Logf("%-29s %-5s %s", r.ID, r.Status, r.Current)
		if r.Status == check.Error {
			t.Errorf("%s could not run: %s", r.ID, r.Current)
		}
	}
	p, err := a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan: files %d validate %q reload %q", len(p.Files), p.Validate, p.Reload)
}

// TestRealApply applies the plan to a throwaway Debian root
// (TANDEM_UPDATES_APPLY_ROOT, for example an overlay over the lab's base
// image in a private mount namespace: testdata/real-apply.sh) as apply
// does, the install included, and checks that the audit then passes and a
// second plan is empty. It runs only when asked; the install needs the
// root's apt sources to be reachable.
func TestRealApply(t *testing.T) {
	root := os.Getenv("TANDEM_UPDATES_APPLY_ROOT")
	if root == "" {
		t.Skip("set TANDEM_UPDATES_APPLY_ROOT to a throwaway Debian root")
	}
	run := func(ctx context.Context, argv ...string) ([]byte, error) {
		return hostrun.Exec(ctx, append([]string{"chroot", root}, argv...)...)
	}
	a := New(Options{Root: root, Run: run})
	ctx := context.Background()
	p, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Files {
		if err := os.WriteFile(hostrun.Under(root, f.Path), f.Content, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range append(p.Validate, p.Reload...) {
		if out, err := run(ctx, cmd...); err != nil {
			t.Fatalf("%q: %v\n%s", cmd, err, out)
		}
	}
	for _, r := range a.Audit(ctx) {
		t.Logf("%-29s %-5s %s", r.ID, r.Status, r.Current)
		if r.Status != check.Pass {
			t.Errorf("%s: %s after apply", r.ID, r.Status)
		}
	}
	if p2, err := a.Plan(ctx); err != nil || !p2.Empty() {
		t.Errorf("second plan %+v, %v; want empty", p2, err)
	}
}
