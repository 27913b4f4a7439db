package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// nodeEnv is the environment of commands run in a node: a clean login-like
// one, not the host's.
var nodeEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
	"LANG=C.UTF-8",
	"TERM=dumb",
}

// execIn runs argv inside every namespace of the container whose init has
// the given host PID, with the container's root and working directory. It
// returns the command's exit status; err is set only when it could not run.
func execIn(ctx context.Context, initPID int, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	args := append([]string{
		"--target", strconv.Itoa(initPID),
		"--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
		"--root", "--wd", "--",
	}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = nodeEnv
	return runExit(cmd, true, stdin, stdout, stderr)
}

// runExit runs cmd and returns its exit status. When ctx ends first, the
// command and everything it started get SIGTERM, then SIGKILL after
// stopGrace: nsenter forks the command into the node's PID namespace and
// killing nsenter alone would leave it running there.
//
// forks says cmd is such an nsenter, waiting for the command it forked. It
// is then left to exit by itself once it has reaped the command: killed
// first, it would orphan the command to the host's init, and the node's
// init cannot finish dying (lab kill) until that init reaps it.
func runExit(cmd *exec.Cmd, forks bool, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	var tree []int // pidfds of the command's process tree, once cancelled
	cmd.Cancel = func() error {
		tree = openTree(cmd.Process.Pid)
		if forks && len(tree) > 1 {
			signalAll(tree[1:], unix.SIGTERM)
		} else {
			signalAll(tree, unix.SIGTERM)
		}
		return nil
	}
	cmd.WaitDelay = stopGrace
	err := cmd.Run()
	if tree != nil {
		signalAll(tree, unix.SIGKILL) // whatever ignored SIGTERM
		for _, fd := range tree {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("%s: interrupted; the command was stopped", strings.Join(cmd.Args, " "))
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("run %s: %w", strings.Join(cmd.Args, " "), err)
	}
	return 0, nil
}

// stopGrace is how long an interrupted command has to exit after SIGTERM.
const stopGrace = 3 * time.Second

// openTree returns pidfds for pid and all its descendants, found through
// /proc/PID/task/TID/children. Pidfds keep a later signal from reaching an
// unrelated process that reused a PID.
func openTree(pid int) []int {
	type proc struct{ pid, parent int }
	var fds []int
	for todo := []proc{{pid, 0}}; len(todo) > 0; todo = todo[1:] {
		p := todo[0]
		fd, err := unix.PidfdOpen(p.pid, 0)
		if err != nil {
			continue // already gone
		}
		// A child that exited before the open may have left its PID to
		// another process; the one we opened must still be the child.
		if p.parent != 0 && parentOf(p.pid) != p.parent {
			unix.Close(fd)
			continue
		}
		fds = append(fds, fd)
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", p.pid))
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, field := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(field); err == nil {
					todo = append(todo, proc{c, p.pid})
				}
			}
		}
	}
	return fds
}

// parentOf returns the parent PID of pid from /proc, or 0.
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses; fields restart
	// after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// signalAll sends sig through every pidfd, ignoring processes already gone.
func signalAll(pidfds []int, sig unix.Signal) {
	for _, fd := range pidfds {
		_ = unix.PidfdSendSignal(fd, sig, nil, 0)
	}
}

// Exec runs argv in a node and passes through stdin, stdout, stderr and the
// exit status. For "client" it runs on the host's file system inside the
// client's network namespace; for a container it enters all the container's
// namespaces, so it sees the node's processes, mounts and hostname.
func (l *Lab) Exec(ctx context.Context, node string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(argv) == 0 {
		return -1, fmt.Errorf("exec in %s: no command given", node)
	}
	_, m, err := l.member(node)
	if err != nil {
		return -1, err
	}
	if m.Role == RoleClient {
		args := append([]string{"--net=" + netnsPath(NetnsName(l.name, node)), "--"}, argv...)
		// Without --pid, nsenter execs the command itself.
		return runExit(exec.CommandContext(ctx, "nsenter", args...), false, stdin, stdout, stderr)
	}
	pid := initPID(m.Nspawn)
	if pid == 0 {
		return -1, fmt.Errorf("%s is stopped: run 'tandem lab start %s'", node, node)
	}
	return execIn(ctx, pid, argv, stdin, stdout, stderr)
}

// copyScript writes stdin to $1 (or into the directory $1 as $3) with mode $2.
const copyScript = `d="$1"; if [ -d "$d" ]; then d="$d/$3"; fi; cat > "$d" && chmod "$2" "$d"`

// CopyIn copies the regular file src from the host to dst in node. When dst
// is a directory the file keeps its name. The mode is kept.
func (l *Lab) CopyIn(ctx context.Context, src, node, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("copy %s: only regular files can be copied", src)
	}
	if dst == "" {
		return fmt.Errorf("copy %s: empty destination path", src)
	}
	mode := fmt.Sprintf("%o", fi.Mode().Perm())
	var errb strings.Builder
	code, err := l.Exec(ctx, node, []string{"sh", "-c", copyScript, "sh", dst, mode, filepath.Base(src)}, f, io.Discard, &errb)
	if err != nil {
		return fmt.Errorf("copy %s to %s:%s: %w", src, node, dst, err)
	}
	if code != 0 {
		return fmt.Errorf("copy %s to %s:%s: %s", src, node, dst, strings.TrimSpace(errb.String()))
	}
	return nil
}

// ParseCopyTarget splits the "NODE:DST" argument of `tandem lab cp`.
func ParseCopyTarget(arg string) (node, dst string, err error) {
	node, dst, ok := strings.Cut(arg, ":")
	if !ok || node == "" || dst == "" {
		return "", "", fmt.Errorf("destination %q must be NODE:PATH, e.g. node1:/root/app.deb", arg)
	}
	if !validMember(node) || node == "br" {
		return "", "", fmt.Errorf("destination %q names no lab node (use client, witness or nodeN)", arg)
	}
	if !strings.HasPrefix(dst, "/") {
		return "", "", fmt.Errorf("destination path %q must be absolute", dst)
	}
	return node, dst, nil
}
