package firewall_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/harden"
	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/firewall"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// nsHost runs the transaction's commands for real, with nft inside a
// namespace; systemd-run and systemctl are recorded (systemctl is-enabled
// answers "enabled"), so the host's systemd and network are never touched.
type nsHost struct {
	ns   string
	mu   sync.Mutex
	cmds [][]string
}

func (h *nsHost) Run(ctx context.Context, argv ...string) ([]byte, error) {
	h.mu.Lock()
	h.cmds = append(h.cmds, argv)
	h.mu.Unlock()
	switch argv[0] {
	case "systemd-run":
		return nil, nil
	case "systemctl":
		return []byte("enabled\n"), nil
	case "nft":
		argv = append([]string{"ip", "netns", "exec", h.ns}, argv...)
	}
	return harden.ExecRunner{}.Run(ctx, argv...)
}

func (h *nsHost) timerCommand() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.cmds {
		if c[0] == "systemd-run" {
			return c[slices.Index(c, "/bin/sh"):]
		}
	}
	return nil
}

func (h *nsHost) loaded() bool {
	return exec.Command("ip", "netns", "exec", h.ns, "nft", "list", "table", "inet", firewall.Table).Run() == nil
}

// The whole apply of the firewall area with real nftables: the firewall
// loads, the revert timer's command, run alone as if tandem had been
// killed, removes it and its files; applied again and confirmed, a second
// apply has nothing to change.
func TestFirewallTransaction(t *testing.T) {
	testenv.NeedRoot(t, "to create a network namespace for nftables")
	testenv.NeedCommand(t, "nft", "nftables")
	testenv.NeedCommand(t, "flock", "util-linux")
	ns := fmt.Sprintf("tandem-fwtx-%d", rand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	dir := t.TempDir()
	run := &nsHost{ns: ns}
	o := firewall.Options{SSHPort: 22, OpenPorts: []int{80, 443}, ClusterPort: 7946,
		Members:     []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		Script:      filepath.Join(dir, "etc/tandem/firewall.nft"),
		Unit:        filepath.Join(dir, "etc/systemd/system/tandem-firewall.service"),
		MembersFile: filepath.Join(dir, "var/lib/tandem/harden/fw-members.nft"),
		PendingDir:  filepath.Join(dir, "var/lib/tandem/harden/pending"),
		Nft:         "ip netns exec " + ns + " nft", Systemctl: "true",
	}
	host := &harden.Host{Root: "/", StateDir: filepath.Join(dir, "var/lib/tandem/harden"), Run: run}
	apply := func() harden.ApplyResult {
		t.Helper()
		p, err := firewall.New(o, run).Plan(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		res, err := host.Apply(t.Context(), []check.Plan{p}, harden.ApplyOptions{Confirm: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	res := apply()
	if res.Pending == "" || len(res.Changes) != 3 || !run.loaded() {
		t.Fatalf("apply = %+v, table loaded %v; want a pending apply of 3 files with the table loaded", res, run.loaded())
	}
	argv := run.timerCommand()
	if argv == nil {
		t.Fatal("no revert timer was scheduled")
	}
	// tandem is killed here; the timer fires and runs its command alone.
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("the timer's command: %v\n%s", err, out)
	}
	if run.loaded() {
		t.Error("the firewall is still loaded after the revert")
	}
	for _, f := range []string{o.Script, o.Unit, o.MembersFile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived the revert (%v)", f, err)
		}
	}

	run.cmds = nil
	res = apply()
	if _, err := host.Confirm(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !run.loaded() {
		t.Fatal("no firewall after a confirmed apply")
	}
	if again := apply(); !again.Nothing {
		t.Errorf("second apply = %+v; want nothing to change", again)
	}
	// Hand-flushed live table, files intact: apply reloads without writing.
	exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", firewall.Table).Run()
	fix := apply()
	if fix.Nothing || len(fix.Changes) != 0 || !run.loaded() {
		t.Errorf("apply after a flush = %+v (loaded %v); want a reload without file changes", fix, run.loaded())
	}
	if _, err := host.Confirm(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(run.timerCommand(), " "), "revert.sh") {
		t.Errorf("timer command = %v", run.timerCommand())
	}
}
