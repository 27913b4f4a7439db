package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// run executes a host command and returns its trimmed stdout; a failure
// carries the command and its stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = strings.TrimSpace(out.String())
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(out.String()), nil
}

// procStat returns a process's state letter, parent PID and start time (in
// clock ticks since boot) from /proc/PID/stat.
func procStat(pid int) (st byte, ppid int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	return parseStat(string(b))
}

// parseStat parses /proc/PID/stat; the command name may hold spaces and ')',
// so the fields are counted from the last ')'.
func parseStat(s string) (st byte, ppid int, start uint64, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, 0, fmt.Errorf("malformed stat %q", s)
	}
	f := strings.Fields(s[i+2:])
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return 0, 0, 0, fmt.Errorf("malformed stat %q", s)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, 0, fmt.Errorf("malformed stat ppid: %w", err)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("malformed stat start: %w", err)
	}
	return f[0][0], ppid, start, nil
}

// identify returns the procID of a live process.
func identify(pid int) (procID, error) {
	_, _, start, err := procStat(pid)
	if err != nil {
		return procID{}, err
	}
	return procID{PID: pid, Start: start}, nil
}

// alive reports whether the process still exists as the same process and is
// not a zombie.
func (p procID) alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, _, start, err := procStat(p.PID)
	return err == nil && start == p.Start && st != 'Z' && st != 'X'
}

// kill sends SIGKILL if the process is still the one recorded.
func (p procID) kill() {
	if p.alive() {
		_ = syscall.Kill(p.PID, syscall.SIGKILL)
	}
}

// pids lists every process on the host.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// childrenOf returns the live children of parent.
func childrenOf(parent int) []int {
	var out []int
	// /proc/PID/task/PID/children is cheap when the kernel has it.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent)); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				if st, _, _, err := procStat(pid); err == nil && st != 'Z' {
					out = append(out, pid)
				}
			}
		}
		return out
	}
	for _, pid := range pids() {
		if st, ppid, _, err := procStat(pid); err == nil && ppid == parent && st != 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// cmdline returns a process's argv.
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// nsInode returns the inode that identifies a namespace file such as
// /run/netns/x or /proc/PID/ns/net.
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// waitGone polls until every process is gone or the deadline passes.
func waitGone(ctx context.Context, d time.Duration, ps ...procID) error {
	deadline := time.Now().Add(d)
	for {
		left := 0
		for _, p := range ps {
			if p.alive() {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d process(es) still alive after %v", left, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// mountsUnder lists mount points at or below dir, deepest first so they can
// be unmounted in order.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return parseMountsUnder(string(b), dir), nil
}

func parseMountsUnder(mounts, dir string) []string {
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(mounts, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		mp := unescapeMount(f[1])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 etc.) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts everything below dir, falling back to a lazy unmount
// for a busy mount so teardown never gets stuck.
func unmountAll(dir string) error {
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, 0); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			if err2 := syscall.Unmount(mp, syscall.MNT_DETACH); err2 != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err2))
			}
		}
	}
	return errors.Join(errs...)
}
