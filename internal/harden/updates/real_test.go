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
