package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Netem degrades the link of a member (see type Netem). Calling it again
// replaces the previous values.
//
// While netem is on, the member's bridge port ve-<m> leaves the bridge; a
// forwarder process (the tandem binary's hidden "lab netem-forward" command,
// in the bridge namespace) relays frames between ve-<m> and a second veth
// pair vq-<m>/vp-<m> whose vp end joins the bridge in its place.
func (l *Lab) Netem(ctx context.Context, node string, n Netem) error {
	if err := n.Validate(); err != nil {
		return err
	}
	unlock, s, m, err := l.lockMember(node)
	if err != nil {
		return err
	}
	defer unlock()
	return l.applyNetem(ctx, s, m, n)
}

// applyNetem (re)starts the forwarder of m with n and records it; the lab
// lock must be held.
func (l *Lab) applyNetem(ctx context.Context, s *state, m *memberState, n Netem) error {
	node := m.Name
	m.Forwarder.kill()
	if err := waitGone(ctx, 2*time.Second, m.Forwarder); err != nil {
		return fmt.Errorf("stop old netem forwarder of %s: %w", node, err)
	}
	br := BridgeNetns(l.name)
	var steps [][]string
	if !linkExists(ctx, br, netemPortIf(node)) {
		steps = append(steps,
			[]string{"link", "add", netemPortIf(node), "type", "veth", "peer", "name", netemTapIf(node)},
			[]string{"link", "set", netemPortIf(node), "master", bridgeName, "up"},
			[]string{"link", "set", netemTapIf(node), "up"})
	}
	// The member's port leaves the bridge; only the forwarder relays it.
	steps = append(steps, []string{"link", "set", portIf(node), "nomaster"})
	for _, st := range steps {
		if err := ipIn(ctx, br, st...); err != nil {
			return fmt.Errorf("netem %s: %w", node, err)
		}
	}
	var err error
	exe := l.exe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("netem %s: find tandem binary: %w", node, err)
		}
	}
	if err := os.MkdirAll(l.nodeDir(node), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(l.nodeDir(node), "netem.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("netem %s: %w", node, err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+netnsPath(br), "--", exe, "lab", "netem-forward",
		"--port", portIf(node), "--tap", netemTapIf(node),
		"--delay", n.Delay.String(), "--jitter", n.Jitter.String(),
		"--loss", fmt.Sprintf("%g", n.Loss))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("netem %s: start forwarder: %w", node, err)
	}
	go func() { _ = cmd.Wait() }()
	id, err := identify(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("netem %s: start forwarder: %w", node, err)
	}
	m.Forwarder, m.Netem = id, &n
	if err := saveState(l.statePath(), s); err != nil {
		id.kill()
		return err
	}
	// Wait for "ready" so the degradation is in force when we return.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), forwarderReady) {
			return nil
		}
		if !id.alive() || time.Now().After(deadline) {
			id.kill()
			return fmt.Errorf("netem %s: forwarder did not start (is %s a tandem binary?): %s", node, exe, strings.TrimSpace(string(b)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ClearNetem removes the degradation and puts the member's port back on the
// bridge.
func (l *Lab) ClearNetem(ctx context.Context, node string) error {
	unlock, s, m, err := l.lockMember(node)
	if err != nil {
		return err
	}
	defer unlock()
	m.Forwarder.kill()
	if err := waitGone(ctx, 2*time.Second, m.Forwarder); err != nil {
		return fmt.Errorf("stop netem forwarder of %s: %w", node, err)
	}
	br := BridgeNetns(l.name)
	if linkExists(ctx, br, netemPortIf(node)) {
		if err := ipIn(ctx, br, "link", "delete", netemPortIf(node)); err != nil {
			return fmt.Errorf("clear netem of %s: %w", node, err)
		}
	}
	if err := ipIn(ctx, br, "link", "set", portIf(node), "master", bridgeName, "up"); err != nil {
		return fmt.Errorf("clear netem of %s: %w", node, err)
	}
	m.Forwarder, m.Netem = procID{}, nil
	return saveState(l.statePath(), s)
}

// forwarderReady is what the forwarder prints once its sockets are open.
const forwarderReady = "netem forwarder ready"

// ForwarderConfig configures RunForwarder.
type ForwarderConfig struct {
	Port  string // the member's bridge-side veth end (ve-<m>)
	Tap   string // the forwarder's end of the extra pair (vq-<m>)
	Netem Netem
}

// virtio-net header that PACKET_VNET_HDR prepends: it carries the GSO and
// checksum offload state, so large TCP segments pass through unchanged.
const vnetHdrLen = 10

// RunForwarder relays frames between cfg.Port and cfg.Tap until ctx ends,
// degrading those towards the member (Tap to Port) as cfg.Netem says. It
// must run in the lab's bridge namespace; it prints forwarderReady to ready
// once relaying.
func RunForwarder(ctx context.Context, cfg ForwarderConfig, ready io.Writer) error {
	if err := cfg.Netem.Validate(); err != nil {
		return err
	}
	port, err := openPacket(cfg.Port)
	if err != nil {
		return err
	}
	defer unix.Close(port)
	tap, err := openPacket(cfg.Tap)
	if err != nil {
		return err
	}
	defer unix.Close(tap)
	fmt.Fprintln(ready, forwarderReady)
	if f, ok := ready.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	// From the member: straight through.
	go func() { errc <- relay(ctx, port, tap, nil) }()
	// Towards the member: through the delay line.
	type frame struct {
		due time.Time
		b   []byte
	}
	line := make(chan frame, 4096)
	go func() {
		for {
			select {
			case <-ctx.Done():
				errc <- nil
				return
			case f := <-line:
				if d := time.Until(f.due); d > 0 {
					time.Sleep(d)
				}
				_, _ = unix.Write(port, f.b)
			}
		}
	}()
	var last time.Time
	n := cfg.Netem
	go func() {
		errc <- relay(ctx, tap, -1, func(b []byte) {
			if n.Loss > 0 && rand.Float64()*100 < n.Loss {
				return
			}
			d := n.Delay
			if n.Jitter > 0 {
				d += time.Duration((rand.Float64()*2 - 1) * float64(n.Jitter))
			}
			due := time.Now().Add(d)
			if due.Before(last) { // keep frames in order, like a FIFO link
				due = last
			}
			last = due
			select {
			case line <- frame{due: due, b: append([]byte(nil), b...)}:
			default: // queue full: drop, as a real queue would
			}
		})
	}()
	err = <-errc
	cancel()
	return err
}

// openPacket opens a raw packet socket on ifname with virtio-net headers,
// promiscuous, ignoring the frames it sends itself.
func openPacket(ifname string) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, fmt.Errorf("forwarder: %w", err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("forwarder: packet socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("forwarder: %s on %s: %w", what, ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("vnet header", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("ignore outgoing", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	mreq := &unix.PacketMreq{Ifindex: int32(ifi.Index), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		return fail("promiscuous mode", err)
	}
	tv := unix.Timeval{Usec: 200_000} // wake up to notice ctx
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("receive timeout", err)
	}
	return fd, nil
}

// relay reads frames from src; each goes to dst, or to fn when it is set.
func relay(ctx context.Context, src, dst int, fn func([]byte)) error {
	buf := make([]byte, vnetHdrLen+65536)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(src, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("forwarder: read: %w", err)
		}
		if fn != nil {
			fn(buf[:n])
			continue
		}
		_, _ = unix.Write(dst, buf[:n])
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
