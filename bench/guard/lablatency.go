package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/nft"
)

// The lab half of issue 12's latency goal: a failure line written to a
// log file that node1's guard follows, until the address is in the
// nftables ban set of every app node. The bench writes the line from the
// host through node1's overlay (so the write's time is exact) and watches
// both nodes' sets through netlink in their namespaces every millisecond.
//
// fail2ban is measured in the same topology: Debian's package installed on
// node1 only (it has no cluster), its nftables action and a jail on its
// own log file; the time is until the address is in its set on node1.

const (
	benchLog    = "/var/log/bench-guard.log"
	f2bLog      = "/var/log/bench-f2b.log"
	f2bTable    = "f2b-table"
	f2bJail     = "bench"
	benchJailTO = `
[[guard.jail]]
name = "bench"
filter = "sshd"
files = ["` + benchLog + `"]
maxretry = 1
findtime = "10m"
bantime = "10m"
`
)

// benchAddr is the i-th source of the bench: in 198.18.0.0/15, the
// benchmarking range, far from the lab's addresses.
func benchAddr(i, offset int) netip.Addr {
	n := i + offset
	return netip.AddrFrom4([4]byte{198, 18 + byte(n/62500), byte(n / 250 % 250), byte(1 + n%250)})
}

func sshdLine(addr netip.Addr) string {
	return fmt.Sprintf("%s node1 sshd[4242]: Failed password for root from %s port 50022 ssh2\n", time.Now().Format(time.Stamp), addr)
}

// labLatency runs the lab measurement.
func labLatency(ctx context.Context, o options, tandem string, out io.Writer) (*latencyFigures, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root: run it as root")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := lab.New(lab.Options{Name: o.labName, Exe: tandem, Logger: logger})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "bench-guard: lab %q for the ban latency (%d bans)\n", o.labName, o.labTrials)
	if err := l.Up(ctx, lab.UpOptions{Nodes: 2, Witness: true, Progress: out}); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := l.Down(dctx); err != nil {
			fmt.Fprintf(out, "lab down: %v\n", err)
		}
	}()
	for _, n := range []string{"node1", "node2"} {
		if err := os.WriteFile(filepath.Join(l.Dir(), n, "merged", benchLog), nil, 0o640); err != nil {
			return nil, err
		}
	}
	if err := labcluster.Provision(ctx, l, labcluster.Options{Exe: tandem, Progress: out, Logger: logger, Config: benchJailTO}); err != nil {
		return nil, fmt.Errorf("provision tandem: %w", err)
	}
	b := &labBench{l: l, tandem: tandem, name: o.labName}
	defer b.close()
	for _, n := range []string{"node1", "node2"} {
		c, err := b.open(n)
		if err != nil {
			return nil, err
		}
		b.conns = append(b.conns, c)
	}
	v4 := nft.AddrSet{Table: "tandem-guard", Name: "bans4", Timeout: true}
	if err := b.waitSet(ctx, v4, 60*time.Second); err != nil {
		return nil, err
	}
	time.Sleep(time.Second) // the jail's follower opens the file
	ms, err := b.series(ctx, "node1", benchLog, o.labTrials, 0, func(a netip.Addr) (bool, error) {
		for _, c := range b.conns {
			els, err := c.Timed(v4)
			if err != nil {
				return false, err
			}
			if !slices.ContainsFunc(els, func(e nft.Element) bool { return e.Addr == a }) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("tandem: %w", err)
	}
	fig := figures(ms)
	fmt.Fprintf(out, "ban latency, tandem (line written on node1 -> address in the set of node1 AND node2): n=%d p50 %s p99 %s max %s\n",
		fig.N, fmtMs(fig.P50), fmtMs(fig.P99), fmtMs(fig.Max))

	if !o.skipF2B {
		f2b, err := b.fail2ban(ctx, o, out)
		if err != nil {
			fmt.Fprintf(out, "ban latency, fail2ban: not measured: %v\n", err)
		} else {
			fmt.Fprintf(out, "ban latency, fail2ban %s (line written on node1 -> address in its set on node1 only): n=%d p50 %s p99 %s max %s\n",
				f2b.version, f2b.fig.N, fmtMs(f2b.fig.P50), fmtMs(f2b.fig.P99), fmtMs(f2b.fig.Max))
			fmt.Fprintf(out, "ban latency ratio fail2ban/tandem: p50 %.1fx, p99 %.1fx\n", f2b.fig.P50/fig.P50, f2b.fig.P99/fig.P99)
		}
	}
	return fig, nil
}

type labBench struct {
	l      *lab.Lab
	tandem string
	name   string
	conns  []*nft.Conn
	fds    []netns.NsHandle
}

func (b *labBench) open(node string) (*nft.Conn, error) {
	h, err := netns.GetFromPath(b.l.NetnsPath(node))
	if err != nil {
		return nil, fmt.Errorf("%s's namespace: %w", node, err)
	}
	b.fds = append(b.fds, h)
	return nft.Open(int(h))
}

func (b *labBench) close() {
	for _, h := range b.fds {
		h.Close()
	}
}

func (b *labBench) sh(ctx context.Context, node, script string) (string, error) {
	cmd := exec.CommandContext(ctx, b.tandem, "lab", "exec", "--name", b.name, node, "--", "sh", "-c", script)
	outp, err := cmd.CombinedOutput()
	if err != nil {
		return string(outp), fmt.Errorf("%s: %s: %w: %s", node, script, err, outp)
	}
	return string(outp), nil
}

// waitSet waits until every node's agent has made its ban set.
func (b *labBench) waitSet(ctx context.Context, s nft.AddrSet, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ok := true
		for _, c := range b.conns {
			if _, err := c.Timed(s); err != nil {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s set in every node after %v", s.Name, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// series writes n failure lines, one new address each, to path on node
// (from the host, through the node's overlay), and times each until
// banned(addr) holds, polling every millisecond.
func (b *labBench) series(ctx context.Context, node, path string, n, offset int, banned func(netip.Addr) (bool, error)) ([]float64, error) {
	f, err := os.OpenFile(filepath.Join(b.l.Dir(), node, "merged", path), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []float64
	for i := range n {
		a := benchAddr(i, offset)
		start := time.Now()
		if _, err := f.WriteString(sshdLine(a)); err != nil {
			return nil, err
		}
		for {
			ok, err := banned(a)
			if err != nil {
				return nil, err
			}
			if ok {
				break
			}
			if time.Since(start) > 10*time.Second {
				return nil, fmt.Errorf("%v not banned within 10s of its line", a)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		time.Sleep(time.Duration(20+i%30) * time.Millisecond)
	}
	return ms, nil
}

type f2bResult struct {
	version string
	fig     *latencyFigures
}

// fail2ban installs Debian's fail2ban on node1 (the .deb fetched on the
// host with apt-get download; the lab has no network), with a jail on its
// own log file and its nftables action, and times its bans there.
func (b *labBench) fail2ban(ctx context.Context, o options, out io.Writer) (*f2bResult, error) {
	dl, err := os.MkdirTemp("", "bench-guard-f2b-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dl)
	cmd := exec.CommandContext(ctx, "apt-get", "download", "fail2ban")
	cmd.Dir = dl
	if outp, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download fail2ban: %w: %s", err, outp)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "fail2ban_*.deb"))
	if len(debs) == 0 {
		return nil, errors.New("apt-get download fail2ban left no .deb")
	}
	deb := debs[len(debs)-1]
	// Not /tmp: the node mounts a tmpfs there, which hides what the host
	// writes into the overlay.
	in := filepath.Join(b.l.Dir(), "node1", "merged", "var", "tmp", filepath.Base(deb))
	data, err := os.ReadFile(deb)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(in, data, 0o644); err != nil {
		return nil, err
	}
	jail := fmt.Sprintf(`[DEFAULT]
banaction = nftables-allports
[sshd]
enabled = false
[%s]
enabled = true
filter = sshd
logpath = %s
backend = auto
maxretry = 1
findtime = 10m
bantime = 10m
`, f2bJail, f2bLog)
	script := fmt.Sprintf(`set -e
touch %s
mkdir -p /etc/fail2ban/jail.d
cat > /etc/fail2ban/jail.d/zz-bench.local <<'EOF'
%sEOF
DEBIAN_FRONTEND=noninteractive dpkg -i /var/tmp/%s >/dev/null 2>&1 || true
systemctl restart fail2ban
for i in $(seq 1 100); do fail2ban-client status %s >/dev/null 2>&1 && break; sleep 0.2; done
fail2ban-client status %s >/dev/null`, f2bLog, jail, filepath.Base(deb), f2bJail, f2bJail)
	if _, err := b.sh(ctx, "node1", script); err != nil {
		return nil, fmt.Errorf("install and start fail2ban on node1: %w", err)
	}
	defer func() { _, _ = b.sh(context.Background(), "node1", "systemctl stop fail2ban") }()
	fmt.Fprintf(out, "bench-guard: fail2ban %s runs on node1 (jail %s, backend auto, nftables action)\n", filepath.Base(deb), f2bJail)
	set := nft.AddrSet{Table: f2bTable, Name: "addr-set-" + f2bJail}
	n := o.labTrials
	// fail2ban creates its table and set at its first ban: the first
	// line primes it and is not timed.
	first := true
	ms, err := b.series(ctx, "node1", f2bLog, n+1, 100000, func(a netip.Addr) (bool, error) {
		addrs, err := b.conns[0].Addrs(set)
		if err != nil {
			if strings.Contains(err.Error(), "no table") || strings.Contains(err.Error(), "no such file") || first {
				return false, nil
			}
			return false, err
		}
		first = false
		return slices.Contains(addrs, a), nil
	})
	if err != nil {
		return nil, err
	}
	return &f2bResult{version: strings.TrimSuffix(filepath.Base(deb), ".deb"), fig: figures(ms[1:])}, nil
}
