package sshd

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// TestRealSSHD runs the area against a real Debian system's sshd: the
// tree at TANDEM_SSHD_ROOT (a Debian 12 root whose /etc/ssh and /home the
// caller made writable, for example tmpfs mounts over a lab image in a
// private mount namespace), with commands run by chroot. It writes the
// plan's drop-in there, checks it with the real sshd -t, and audits the
// effective values sshd -T then prints. It runs only when asked, through
// testdata/real-sshd.sh.
func TestRealSSHD(t *testing.T) {
	root := os.Getenv("TANDEM_SSHD_ROOT")
	if root == "" {
		t.Skip("set TANDEM_SSHD_ROOT to a prepared Debian root")
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
	if len(p.Files) != 1 {
		t.Fatalf("plan %+v", p)
	}
	t.Logf("drop-in:\n%s", p.Files[0].Content)
	if err := os.WriteFile(filepath.Join(root, p.Files[0].Path), p.Files[0].Content, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range p.Validate {
		if out, err := run(ctx, cmd...); err != nil {
			t.Fatalf("%q: %v\n%s", cmd, err, out)
		}
	}
	for _, r := range a.Audit(ctx) {
		t.Logf("%-26s %-5s %s", r.ID, r.Status, r.Current)
		if r.Status != check.Pass {
			t.Errorf("%s: %s (%s)", r.ID, r.Status, r.Current)
		}
	}
	if p2, err := a.Plan(ctx); err != nil || !p2.Empty() {
		t.Errorf("second plan %+v, %v; want empty", p2, err)
	}
}
