package firewall

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// nsRunner runs nft inside a network namespace; systemctl answers as if
// the unit were enabled (the unit is the host's, not the namespace's).
type nsRunner struct{ ns string }

func (r nsRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if argv[0] == "systemctl" {
		return []byte("enabled\n"), nil
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r.ns}, argv...)...)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, ee.Stderr)
		}
	}
	return out, err
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// pair makes a server and a client namespace joined by a veth pair
// (10.78.0.1 and 10.78.0.2), removed when the test ends; the host's
// network is never touched.
func pair(t *testing.T) (server, client string) {
	testenv.NeedRoot(t, "to create network namespaces for nftables")
	testenv.NeedCommand(t, "ip", "iproute2")
	testenv.NeedCommand(t, "nft", "nftables")
	n := rand.Uint32()
	server, client = fmt.Sprintf("tandem-fwt-%d-s", n), fmt.Sprintf("tandem-fwt-%d-c", n)
	for _, ns := range []string{server, client} {
		ipCmd(t, "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipCmd(t, "-n", server, "link", "add", "vs", "type", "veth", "peer", "name", "vc", "netns", client)
	ipCmd(t, "-n", server, "addr", "add", "10.78.0.1/24", "dev", "vs")
	ipCmd(t, "-n", client, "addr", "add", "10.78.0.2/24", "dev", "vc")
	for _, x := range [][2]string{{server, "vs"}, {client, "vc"}, {server, "lo"}, {client, "lo"}} {
		ipCmd(t, "-n", x[0], "link", "set", x[1], "up")
	}
	time.Sleep(200 * time.Millisecond) // the veth's qdisc comes up a moment late
	return server, client
}

// in runs fn with its thread in the named namespace; sockets it opens stay there.
func in(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.GetFromName(name)
		if err != nil {
			t.Errorf("netns %s: %v", name, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			t.Errorf("enter %s: %v", name, err)
			return
		}
		fn()
	}()
	<-done
}

// echo listens on port in the server namespace and echoes what it reads.
func echo(t *testing.T, ns string, port int) {
	in(t, ns, func() {
		l, err := net.Listen("tcp", fmt.Sprintf("10.78.0.1:%d", port))
		if err != nil {
			t.Fatalf("listen %d: %v", port, err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
	})
}

func dial(t *testing.T, ns string, port int) (net.Conn, error) {
	var c net.Conn
	var err error
	in(t, ns, func() { c, err = net.DialTimeout("tcp", fmt.Sprintf("10.78.0.1:%d", port), 700*time.Millisecond) })
	return c, err
}

func reachable(t *testing.T, ns string, port int) bool {
	c, err := dial(t, ns, port)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func roundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(c, buf)
	return err
}

func TestFirewallInNetns(t *testing.T) {
	server, client := pair(t)
	for _, p := range []int{22, 80, 7946, 9999} {
		echo(t, server, p)
	}
	// An SSH session opened while conntrack does not run yet in the
	// namespace (a fresh host) must survive the load: conntrack picks it
	// up mid-stream and the port is open.
	beforeSSH, err := dial(t, client, 22)
	if err != nil {
		t.Fatalf("dial before the firewall: %v", err)
	}
	defer beforeSSH.Close()
	// With conntrack running (any table using ct, as on most hosts), a
	// session to a port the policy closes survives too: established
	// traffic is accepted first.
	run := nsRunner{server}
	if _, err := run.Run(t.Context(), "nft", "add table inet warm; add chain inet warm c { type filter hook input priority 10; }; add rule inet warm c ct state new counter"); err != nil {
		t.Fatal(err)
	}
	before, err := dial(t, client, 9999)
	if err != nil {
		t.Fatalf("dial before the firewall: %v", err)
	}
	defer before.Close()

	dir := t.TempDir()
	o := Options{SSHPort: 22, OpenPorts: []int{80}, ClusterPort: 7946,
		Members: []netip.Addr{netip.MustParseAddr("10.78.0.9")},
		Script:  filepath.Join(dir, "firewall.nft"), MembersFile: filepath.Join(dir, "fw-members.nft"), Unit: filepath.Join(dir, "u.service")}
	a := New(o, run)
	if err := os.WriteFile(o.Script, a.Script(), 0o644); err != nil {
		t.Fatal(err)
	}
	// No members file yet (an agent never run): the script still loads.
	if _, err := run.Run(t.Context(), "nft", "-f", o.Script); err != nil {
		t.Fatalf("load without a members file: %v", err)
	}
	m := Members{File: o.MembersFile, Run: run}
	if err := m.Sync(t.Context(), o.Members); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(before); err != nil {
		t.Errorf("a session established before the load was cut: %v", err)
	}
	if err := roundTrip(beforeSSH); err != nil {
		t.Errorf("an SSH session opened before conntrack ran was cut: %v", err)
	}
	if !reachable(t, client, 80) {
		t.Error("the site's port 80 is closed")
	}
	if reachable(t, client, 9999) {
		t.Error("port 9999, not in the policy, is open")
	}
	if reachable(t, client, 7946) {
		t.Error("the cluster port is open to a non-member")
	}
	for _, r := range a.Audit(t.Context()) {
		if r.Status != check.Pass {
			t.Errorf("live audit: %s = %s (%s)", r.ID, r.Status, r.Current)
		}
	}

	// The members follow joins and removals.
	if err := m.Sync(t.Context(), []netip.Addr{netip.MustParseAddr("10.78.0.9"), netip.MustParseAddr("10.78.0.2")}); err != nil {
		t.Fatal(err)
	}
	if !reachable(t, client, 7946) {
		t.Error("the cluster port is closed to a member that joined")
	}
	if err := m.Sync(t.Context(), o.Members); err != nil {
		t.Fatal(err)
	}
	if reachable(t, client, 7946) {
		t.Error("the cluster port stays open to a removed member")
	}
	// Reloading the script (an apply, a boot) keeps the members.
	if _, err := run.Run(t.Context(), "nft", "-f", o.Script); err != nil {
		t.Fatal(err)
	}
	if out, _ := run.Run(t.Context(), "nft", "list", "set", "inet", Table, "members4"); !strings.Contains(string(out), "10.78.0.9") {
		t.Errorf("members set after a reload:\n%s", out)
	}

	// SSH: 5 new connections pass, the 6th within 30 s does not.
	passed := 0
	for range 7 {
		if reachable(t, client, 22) {
			passed++
		}
	}
	if passed != SSHBurst {
		t.Errorf("%d of 7 quick SSH connections passed; want %d", passed, SSHBurst)
	}
	if err := roundTrip(before); err != nil {
		t.Errorf("the established session was cut by the reload: %v", err)
	}
}
