// Package e2e holds tandem's end-to-end tests. They drive a real lab (see
// internal/lab) through the tandem binary, so the CLI is what gets tested.
// They need root; without it, or without -tandem-bin, the suite skips.
//
// The helpers here (Labctl, HostNetwork, Leaks, Observe) are for every
// scenario in this package: failover scenarios exec in nodes, copy files in
// and run a split-brain observer the same way.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labprobe"
)

// Labctl drives one lab through the tandem binary.
type Labctl struct {
	Bin  string // path to the tandem binary
	Name string // lab name (--name)
	// Log, when set, receives every command line and its result.
	Log func(format string, args ...any)
}

// Result is what one tandem invocation did.
type Result struct {
	Args    []string
	Stdout  string
	Stderr  string
	Code    int
	Elapsed time.Duration
}

// Err returns nil for exit status 0 and otherwise an error naming the
// command, its status and stderr.
func (r Result) Err() error {
	if r.Code == 0 {
		return nil
	}
	return fmt.Errorf("tandem %s: exit %d: %s", strings.Join(r.Args, " "), r.Code, strings.TrimSpace(r.Stderr))
}

// Run runs `tandem lab ARGS... --name NAME` with stdin (may be nil). err is
// set only when the binary could not run; a non-zero status is in Code.
func (c *Labctl) Run(ctx context.Context, stdin io.Reader, args ...string) (Result, error) {
	full := append([]string{"lab"}, args...)
	// --name goes before a "--" so exec's command never sees it.
	if i := slices.Index(full, "--"); i >= 0 {
		full = slices.Insert(full, i, "--name", c.Name)
	} else {
		full = append(full, "--name", c.Name)
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, c.Bin, full...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	t0 := time.Now()
	err := cmd.Run()
	r := Result{Args: full, Stdout: out.String(), Stderr: errb.String(), Elapsed: time.Since(t0)}
	if ee, ok := err.(*exec.ExitError); ok && ee.Exited() {
		r.Code, err = ee.ExitCode(), nil
	}
	if c.Log != nil {
		c.Log("tandem %s -> exit %d in %v", strings.Join(full, " "), r.Code, r.Elapsed.Round(time.Millisecond))
	}
	return r, err
}

// do runs a command that must succeed.
func (c *Labctl) do(ctx context.Context, args ...string) (Result, error) {
	r, err := c.Run(ctx, nil, args...)
	if err != nil {
		return r, err
	}
	return r, r.Err()
}

// Up boots the lab: `tandem lab up --nodes N --witness=W`.
func (c *Labctl) Up(ctx context.Context, nodes int, witness bool) (Result, error) {
	return c.do(ctx, "up", "--nodes", fmt.Sprint(nodes), fmt.Sprintf("--witness=%v", witness))
}

// Down removes the lab.
func (c *Labctl) Down(ctx context.Context) (Result, error) { return c.do(ctx, "down") }

// Status returns `tandem lab status --json`.
func (c *Labctl) Status(ctx context.Context) ([]lab.NodeStatus, error) {
	r, err := c.do(ctx, "status", "--json")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Name  string           `json:"name"`
		Nodes []lab.NodeStatus `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		return nil, fmt.Errorf("parse status --json: %w: %s", err, r.Stdout)
	}
	return doc.Nodes, nil
}

// Node returns one member's status.
func (c *Labctl) Node(ctx context.Context, name string) (lab.NodeStatus, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return lab.NodeStatus{}, err
	}
	for _, n := range st {
		if n.Name == name {
			return n, nil
		}
	}
	return lab.NodeStatus{}, fmt.Errorf("no node %q in status", name)
}

// Exec runs argv in node; a non-zero exit status is in the Result, not err.
func (c *Labctl) Exec(ctx context.Context, node string, argv ...string) (Result, error) {
	return c.Run(ctx, nil, append([]string{"exec", node, "--"}, argv...)...)
}

// Sh runs a shell script in node and returns its stdout; a non-zero exit
// status is an error.
func (c *Labctl) Sh(ctx context.Context, node, script string) (string, error) {
	r, err := c.Exec(ctx, node, "sh", "-c", script)
	if err != nil {
		return "", err
	}
	return r.Stdout, r.Err()
}

// CopyIn copies a host file into node at dst.
func (c *Labctl) CopyIn(ctx context.Context, src, node, dst string) error {
	_, err := c.do(ctx, "cp", src, node+":"+dst)
	return err
}

// Kill powers node off (SIGKILL to the whole container).
func (c *Labctl) Kill(ctx context.Context, node string) error {
	_, err := c.do(ctx, "kill", node)
	return err
}

// Start boots node again on its existing disk.
func (c *Labctl) Start(ctx context.Context, node string) error {
	_, err := c.do(ctx, "start", node)
	return err
}

// Partition cuts node off the lab network.
func (c *Labctl) Partition(ctx context.Context, node string) error {
	_, err := c.do(ctx, "partition", node)
	return err
}

// Heal reconnects node.
func (c *Labctl) Heal(ctx context.Context, node string) error {
	_, err := c.do(ctx, "heal", node)
	return err
}

// Netem degrades node's link, e.g. Netem(ctx, "node1", "--delay", "100ms").
func (c *Labctl) Netem(ctx context.Context, node string, flags ...string) error {
	_, err := c.do(ctx, append([]string{"netem", node}, flags...)...)
	return err
}

// NetnsPath is the network namespace of a member, for netlink or nsenter.
func (c *Labctl) NetnsPath(node string) string {
	return filepath.Join("/run/netns", lab.NetnsName(c.Name, node))
}

// Ping reports whether from reaches addr: it sends an ICMP echo every
// 200 ms until one is answered, for at most 2 s.
func (c *Labctl) Ping(ctx context.Context, from, addr string) bool {
	r, err := c.Exec(ctx, from, "ping", "-c", "1", "-w", "2", "-i", "0.2", "-n", "-q", addr)
	return err == nil && r.Code == 0
}

// Observe starts a split-brain observer on vip over the named nodes,
// sampling every interval (10 ms or less for the invariant checks) until ctx
// ends. Read its Report() when done.
func (c *Labctl) Observe(ctx context.Context, vip netip.Addr, nodes []string, every time.Duration) (*labprobe.Observer, <-chan error) {
	paths := map[string]string{}
	for _, n := range nodes {
		paths[n] = c.NetnsPath(n)
	}
	o := labprobe.NewObserver(vip, paths, every)
	errc := make(chan error, 1)
	go func() { errc <- o.Run(ctx) }()
	return o, errc
}

// MustExec is Exec that fails the test when the command cannot run (a
// non-zero exit status is returned, not fatal).
func (c *Labctl) MustExec(t testing.TB, ctx context.Context, node string, argv ...string) Result {
	t.Helper()
	r, err := c.Exec(ctx, node, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// MustSh is Sh that fails the test on any error or non-zero exit status.
func (c *Labctl) MustSh(t testing.TB, ctx context.Context, node, script string) string {
	t.Helper()
	out, err := c.Sh(ctx, node, script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// MustNode is Node that fails the test on error.
func (c *Labctl) MustNode(t testing.TB, ctx context.Context, name string) lab.NodeStatus {
	t.Helper()
	n, err := c.Node(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// MustStatus is Status that fails the test on error.
func (c *Labctl) MustStatus(t testing.TB, ctx context.Context) []lab.NodeStatus {
	t.Helper()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// HostNetwork returns the host's addresses and routes (`ip -j addr` and
// `ip -j route`) with the fields that change on their own (address
// lifetimes) removed, so two snapshots compare equal when nothing was
// configured in between.
func HostNetwork(ctx context.Context) (string, error) {
	var parts []string
	for _, args := range [][]string{{"-j", "addr"}, {"-j", "route"}, {"-j", "-6", "route"}} {
		out, err := exec.CommandContext(ctx, "ip", args...).Output()
		if err != nil {
			return "", fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		var v any
		if err := json.Unmarshal(out, &v); err != nil {
			return "", fmt.Errorf("parse ip %s: %w", strings.Join(args, " "), err)
		}
		stripVolatile(v)
		b, _ := json.MarshalIndent(v, "", " ")
		parts = append(parts, string(b))
	}
	return strings.Join(parts, "\n"), nil
}

func stripVolatile(v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range []string{"valid_life_time", "preferred_life_time", "expires"} {
			delete(x, k)
		}
		for _, e := range x {
			stripVolatile(e)
		}
	case []any:
		for _, e := range x {
			stripVolatile(e)
		}
	}
}

// Leaks lists what remains of lab name on the system: its namespaces (in
// `ip netns list`), its mounts (in findmnt's view, /proc/self/mountinfo),
// its processes, cgroups and state directory. Empty means a clean teardown.
func Leaks(ctx context.Context, name string) []string {
	var out []string
	l, err := lab.New(lab.Options{Name: name})
	if err != nil {
		return []string{err.Error()}
	}
	out = append(out, l.Leftovers()...)
	if b, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "tandem-"+name+"-") {
				out = append(out, "ip netns list: "+line)
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, l.Dir()+"/") || strings.Contains(line, "tandem-"+name+"-") {
				out = append(out, "mount: "+line)
			}
		}
	}
	if _, err := os.Stat(l.Dir()); err == nil {
		out = append(out, "state directory "+l.Dir())
	}
	props, _ := filepath.Glob("/run/systemd/nspawn/propagate/tandem-" + name + "-*")
	for _, p := range props {
		out = append(out, "nspawn runtime dir "+p)
	}
	return out
}

// run runs a host command and returns its stdout.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// mustRun is run that fails the test on error.
func mustRun(t testing.TB, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := run(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
