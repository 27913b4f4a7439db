package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// prepareOverlay mounts the node's root: an overlay with the image below and
// the node's own upper directory on top. fresh discards the old upper
// directory (lab up); otherwise it is kept, like a disk after a power loss.
func (l *Lab) prepareOverlay(node, image string, fresh bool) error {
	nd := l.nodeDir(node)
	merged := filepath.Join(nd, "merged")
	if mps, _ := mountsUnder(merged); len(mps) > 0 {
		if !fresh {
			return nil
		}
		if err := unmountAll(merged); err != nil {
			return err
		}
	}
	if fresh {
		for _, d := range []string{"upper", "work"} {
			if err := os.RemoveAll(filepath.Join(nd, d)); err != nil {
				return fmt.Errorf("reset %s overlay: %w", node, err)
			}
		}
	}
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(nd, d), 0o755); err != nil {
			return fmt.Errorf("create %s overlay: %w", node, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", image, filepath.Join(nd, "upper"), filepath.Join(nd, "work"))
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount %s overlay (%s): %w", node, opts, err)
	}
	return nil
}

// writeNodeFiles gives a fresh node its identity: hostname, machine ID and a
// hosts file that names every lab member.
func (l *Lab) writeNodeFiles(node string, members []memberState) error {
	root := filepath.Join(l.nodeDir(node), "merged")
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, m := range members {
		fmt.Fprintf(&hosts, "%s\t%s\n", m.Addr, m.Name)
	}
	files := map[string]string{
		"etc/hostname":   node + "\n",
		"etc/machine-id": hex.EncodeToString(id) + "\n",
		"etc/hosts":      hosts.String(),
	}
	for rel, content := range files {
		if err := os.WriteFile(filepath.Join(root, rel), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s:/%s: %w", node, rel, err)
		}
	}
	return nil
}

// systemdIsInit reports whether systemd is PID 1 (sd_booted's test).
func systemdIsInit() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// cgroupRoots are the host's cgroup hierarchies nspawn uses: with a hybrid
// layout the named systemd v1 hierarchy and the unified v2 one.
func cgroupRoots() []string {
	var out []string
	for _, d := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"} {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err == nil {
			out = append(out, "/sys/fs/cgroup")
		}
	}
	return out
}

// cgroupDirs are the node's own cgroups. nspawn with --keep-unit puts its
// "payload" and "supervisor" cgroups below the cgroup it starts in; without a
// cgroup per node every container would share one.
func (l *Lab) cgroupDirs(node string) []string {
	var out []string
	for _, r := range cgroupRoots() {
		out = append(out, filepath.Join(r, "tandem", l.name, node))
	}
	return out
}

// removeCgroupTree removes empty cgroup directories below and including dir.
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// spawn starts systemd-nspawn for a node, detached from the caller (its own
// session, no terminal, output to the node's log) so it outlives the CLI, and
// returns once the container's init exists.
func (l *Lab) spawn(ctx context.Context, node, image string) (procID, error) {
	// Under a systemd PID 1, nspawn asks systemd for a scope of its own
	// (machine.slice), which systemd also cleans up after a kill. Without one
	// (a plain container host, a sandbox, CI), nspawn must keep its caller's
	// unit and the lab gives each node a cgroup of its own.
	underSystemd := systemdIsInit()
	var cgs []string
	for _, d := range l.cgroupDirs(node) {
		if underSystemd {
			break
		}
		_ = removeCgroupTree(d) // leftovers of a killed run
		if err := os.MkdirAll(d, 0o755); err != nil {
			return procID{}, fmt.Errorf("create %s cgroup: %w", node, err)
		}
		cgs = append(cgs, d)
	}
	logf, err := os.OpenFile(l.LogPath(node), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return procID{}, fmt.Errorf("open %s log: %w", node, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- %s: tandem lab starting %s\n", time.Now().UTC().Format(time.RFC3339), node)
	args := []string{
		"--boot",
		"--register=no", // machined may be absent; the lab tracks its nodes itself
	}
	if !underSystemd {
		args = append(args, "--keep-unit") // no systemd to create a scope: stay in our cgroup
	}
	args = append(args,
		"--machine="+MachineName(l.name, node),
		"--hostname="+node,
		"--network-namespace-path="+netnsPath(NetnsName(l.name, node)),
		// The node owns its network namespace, as a VM owns its NICs: tandem
		// moves addresses and manages nftables in it.
		"--capability=CAP_NET_ADMIN",
		// As on a VM: nspawn's own seccomp filter lacks Landlock, which
		// tandem confines the rsync serving replicated files with.
		"--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self",
		"--console=passive", // works with no terminal
		"--link-journal=no",
		"--resolv-conf=off",
		"--timezone=off",
		"-D", filepath.Join(l.nodeDir(node), "merged"),
	)
	// A tiny shell moves itself into the node's cgroups and then becomes
	// nspawn, so nspawn starts there and never in the caller's cgroup.
	script := `for c in $TANDEM_CGROUPS; do echo $$ > "$c/cgroup.procs" || exit 97; done; exec systemd-nspawn "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Env = append(os.Environ(),
		"TANDEM_CGROUPS="+strings.Join(cgs, " "),
		"SYSTEMD_NSPAWN_LOCK=0", // no lock files to leave behind on SIGKILL
	)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return procID{}, fmt.Errorf("start %s: %w", node, err)
	}
	id, err := identify(cmd.Process.Pid)
	// Reap it if it dies while we live; after we exit, init reaps it.
	go func() { _ = cmd.Wait() }()
	if err != nil {
		return procID{}, fmt.Errorf("start %s: %w", node, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for initPID(id) == 0 {
		if !id.alive() {
			return procID{}, fmt.Errorf("systemd-nspawn for %s exited: %s", node, tailFile(l.LogPath(node), 3))
		}
		if time.Now().After(deadline) {
			id.kill()
			return procID{}, fmt.Errorf("systemd-nspawn for %s started no init within 15s: %s", node, tailFile(l.LogPath(node), 3))
		}
		select {
		case <-ctx.Done():
			id.kill()
			return procID{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	l.log.Debug("started node", "node", node, "nspawn_pid", id.PID, "init_pid", initPID(id))
	return id, nil
}

// initPID returns the host PID of the container's init: the child of nspawn
// that lives in another PID namespace (nspawn's short-lived intermediate
// child shares nspawn's). Zero when the node is not running.
func initPID(nspawn procID) int {
	if !nspawn.alive() {
		return 0
	}
	own, err := nsInode(fmt.Sprintf("/proc/%d/ns/pid", nspawn.PID))
	if err != nil {
		return 0
	}
	for _, pid := range childrenOf(nspawn.PID) {
		if ino, err := nsInode(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ino != own {
			return pid
		}
	}
	return 0
}

// waitRunning polls `systemctl is-system-running --wait` in the node until it
// answers running or degraded.
func (l *Lab) waitRunning(ctx context.Context, node string, nspawn procID) (string, error) {
	last := ""
	for {
		pid := initPID(nspawn)
		if pid == 0 {
			return "", fmt.Errorf("%s is not running", node)
		}
		var out bytes.Buffer
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		code, err := execIn(actx, pid, []string{"systemctl", "is-system-running", "--wait"}, nil, &out, &out)
		cancel()
		st := strings.TrimSpace(out.String())
		if err == nil && (st == "running" || st == "degraded") {
			if st == "degraded" {
				var failed bytes.Buffer
				_, _ = execIn(ctx, pid, []string{"systemctl", "--failed", "--no-legend", "--plain"}, nil, &failed, &failed)
				l.log.Warn("node is degraded", "node", node, "failed_units", strings.TrimSpace(failed.String()))
			}
			return st, nil
		}
		last = fmt.Sprintf("exit %d: %s", code, st)
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for %s to boot (last answer %q): %w", node, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
