package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

// buildPysite packages examples/pysite on the host at version v with the
// tandem binary under test.
func buildPysite(t *testing.T, ctx context.Context, out, v string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, *tandemBin, "package", "../../examples/pysite", "--version", v, "--out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tandem package --version %s: %v\n%s", v, err, b)
	}
	return filepath.Join(out, "pysite_"+v+"_all.deb")
}

// waitHealth polls /healthz in node until it reports version.
func waitHealth(t *testing.T, ctx context.Context, c *Labctl, node, version string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := c.Sh(ctx, node, "curl -fsS --max-time 2 http://127.0.0.1:8000/healthz")
		if err == nil {
			var h map[string]string
			if json.Unmarshal([]byte(out), &h) == nil && h["version"] == version {
				return h
			}
		}
		last = out
		time.Sleep(300 * time.Millisecond)
	}
	st, _ := c.Sh(ctx, node, "systemctl status --no-pager pysite; journalctl -u pysite --no-pager -n 30")
	t.Fatalf("%s: /healthz never reported version %s (last %q)\n%s", node, version, last, st)
	return nil
}

// TestPackageLifecycle installs, upgrades, removes and purges the example's
// package in a lab node, as an operator (or tandem's delivery) would.
func TestPackageLifecycle(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	if err := exec.Command("/usr/bin/python3", "-c", "import setuptools, wheel, gunicorn, venv").Run(); err != nil {
		testenv.Missing(t, "building the example needs python3-setuptools, python3-wheel, python3-gunicorn and python3-venv on the host")
	}
	const node = "node2"
	out := t.TempDir()
	v1 := buildPysite(t, ctx, out, "1.0.0")
	v2 := buildPysite(t, ctx, out, "1.1.0")
	for _, deb := range []string{v1, v2} {
		if err := c.CopyIn(ctx, deb, node, "/tmp/"+filepath.Base(deb)); err != nil {
			t.Fatal(err)
		}
	}
	// The cluster's site runs on the node: put that very release back at
	// the end (it is in the node's release store), so the tests after this
	// one find the site they expect, even when a step failed.
	was := strings.TrimSpace(c.MustSh(t, ctx, node, "dpkg-query -W -f='${Version}' pysite"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = c.Sh(ctx, node, "dpkg --purge pysite >/dev/null 2>&1; rm -f /tmp/pysite_*.deb")
		restore := `for f in /var/lib/tandem/releases/sha256/*.deb; do
  if [ "$(dpkg-deb -f "$f" Package)" = pysite ] && [ "$(dpkg-deb -f "$f" Version)" = "` + was + `" ]; then
    DEBIAN_FRONTEND=noninteractive dpkg --force-confold -i "$f" >/dev/null && exit 0
  fi
done
echo "no stored release of pysite ` + was + `" >&2; exit 1`
		if _, err := c.Sh(ctx, node, restore); err != nil {
			t.Errorf("could not put the cluster's pysite %s back on %s: %v", was, node, err)
			return
		}
		upstream, _, _ := strings.Cut(was[strings.Index(was, ":")+1:], "-")
		waitHealth(t, ctx, c, node, upstream)
	})

	// Install: the unit is enabled and active, /healthz answers.
	c.MustSh(t, ctx, node, "dpkg -i /tmp/pysite_1.0.0_all.deb")
	if got := strings.TrimSpace(c.MustSh(t, ctx, node, "systemctl is-enabled pysite")); got != "enabled" {
		t.Errorf("after install pysite is %q, want enabled", got)
	}
	h := waitHealth(t, ctx, c, node, "1.0.0")
	if h["status"] != "ok" || h["node"] != node {
		t.Errorf("/healthz = %v, want status ok on %s", h, node)
	}
	if got := strings.TrimSpace(c.MustSh(t, ctx, node, "systemctl is-active pysite")); got != "active" {
		t.Errorf("after install pysite is %q, want active", got)
	}
	// It runs as its own user, sandboxed, and can write only its data dir.
	user := strings.TrimSpace(c.MustSh(t, ctx, node, "ps -o user= -p $(systemctl show -P MainPID pysite)"))
	if user != "pysite" {
		t.Errorf("service runs as %q, want pysite", user)
	}
	c.MustSh(t, ctx, node, "echo hello > /tmp/up.txt && curl -fsS -o /dev/null -F file=@/tmp/up.txt http://127.0.0.1:8000/upload")
	if got := c.MustSh(t, ctx, node, "stat -c '%U %s' /var/lib/pysite/up.txt"); strings.TrimSpace(got) != "pysite 6" {
		t.Errorf("uploaded file: %q, want owned by pysite, 6 bytes", got)
	}
	if page := c.MustSh(t, ctx, node, "curl -fsS http://127.0.0.1:8000/"); !strings.Contains(page, ">"+node+"<") || !strings.Contains(page, "up.txt") {
		t.Errorf("index page does not show the node and the upload:\n%s", page)
	}
	if got := strings.TrimSpace(c.MustSh(t, ctx, node, "stat -c '%a %U' /etc/pysite/pysite.env")); got != "600 root" {
		t.Errorf("environment file is %q, want 600 root (it may hold secrets)", got)
	}
	// Bytecode is compiled on install (the .deb ships none), in Debian
	// policy's place for a package's private files.
	if _, err := c.Sh(ctx, node, "ls /usr/lib/pysite/lib/python3.11/site-packages/pysite/__pycache__/app.cpython-311.pyc"); err != nil {
		t.Error("postinst did not byte-compile the venv")
	}

	// Upgrade: the service restarts on the new version; data stays.
	pid1 := strings.TrimSpace(c.MustSh(t, ctx, node, "systemctl show -P MainPID pysite"))
	c.MustSh(t, ctx, node, "dpkg -i /tmp/pysite_1.1.0_all.deb")
	waitHealth(t, ctx, c, node, "1.1.0")
	if pid2 := strings.TrimSpace(c.MustSh(t, ctx, node, "systemctl show -P MainPID pysite")); pid2 == pid1 {
		t.Errorf("MainPID %s unchanged after the upgrade", pid1)
	}
	c.MustSh(t, ctx, node, "test -f /var/lib/pysite/up.txt")

	// Remove: stopped, but configuration, data and user stay.
	c.MustSh(t, ctx, node, "dpkg -r pysite")
	if got, _ := c.Sh(ctx, node, "systemctl is-active pysite"); strings.TrimSpace(got) == "active" {
		t.Error("pysite still active after dpkg -r")
	}
	if _, err := c.Sh(ctx, node, "curl -fsS --max-time 2 http://127.0.0.1:8000/healthz"); err == nil {
		t.Error("/healthz still answers after dpkg -r")
	}
	c.MustSh(t, ctx, node, "test -f /etc/pysite/pysite.env && test -f /var/lib/pysite/up.txt && getent passwd pysite && test ! -e /usr/lib/pysite")

	// Purge: configuration, data, user, group and unit state are gone.
	c.MustSh(t, ctx, node, "dpkg --purge pysite")
	for _, check := range []string{
		"test ! -e /etc/pysite", "test ! -e /var/lib/pysite", "! getent passwd pysite", "! getent group pysite",
		"test ! -e /etc/systemd/system/multi-user.target.wants/pysite.service", "test ! -e /usr/lib/pysite", "test -d /opt",
		"! dpkg -s pysite 2>/dev/null | grep -q '^Status: .*installed'",
	} {
		if _, err := c.Sh(ctx, node, check); err != nil {
			t.Errorf("after purge: %s failed", check)
		}
	}
	if _, err := os.Stat(v1); err != nil {
		t.Error(err)
	}
}
