package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// leftovers names what remains of the lab on the system: namespaces, mounts,
// processes, cgroups. Up refuses to start over them; the e2e suite checks
// that Down leaves none.
func (l *Lab) leftovers() []string {
	var out []string
	for _, ns := range l.ownedNetnses() {
		out = append(out, "netns "+ns)
	}
	if mps, _ := mountsUnder(l.dir); len(mps) > 0 {
		for _, mp := range mps {
			out = append(out, "mount "+mp)
		}
	}
	for _, pid := range l.labProcesses(nil) {
		out = append(out, fmt.Sprintf("process %d (%s)", pid, strings.Join(cmdline(pid), " ")))
	}
	for _, r := range cgroupRoots() {
		d := filepath.Join(r, "tandem", l.name)
		if _, err := os.Stat(d); err == nil {
			out = append(out, "cgroup "+d)
		}
	}
	return out
}

// Leftovers lists everything of the lab still on the system; empty after a
// clean Down.
func (l *Lab) Leftovers() []string { return l.leftovers() }

// labProcesses finds the lab's processes by what they are, not by what the
// state file says: nspawn processes with one of the lab's machine names, and
// every process inside one of the lab's network namespaces (container
// payloads, commands run in the client, netem forwarders).
func (l *Lab) labProcesses(nsInodes map[uint64]bool) []int {
	if nsInodes == nil {
		nsInodes = map[uint64]bool{}
		for _, ns := range l.ownedNetnses() {
			if ino, err := nsInode(netnsPath(ns)); err == nil {
				nsInodes[ino] = true
			}
		}
	}
	self := os.Getpid()
	prefix := "--machine=tandem-" + l.name + "-"
	var out []int
	for _, pid := range pids() {
		if pid == self {
			continue
		}
		if st, _, _, err := procStat(pid); err != nil || st == 'Z' {
			continue
		}
		if ino, err := nsInode(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && nsInodes[ino] {
			out = append(out, pid)
			continue
		}
		for _, a := range cmdline(pid) {
			if m, ok := strings.CutPrefix(a, prefix); ok && validMember(m) {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// down tears the lab down; s may be nil (lost or unreadable state file).
func (l *Lab) down(ctx context.Context, s *state) error {
	var errs []error
	// 1. Processes: the recorded ones, then whatever the scan finds, until
	// none is left (a dying nspawn may still be reaping its payload).
	var ids []procID
	if s != nil {
		for _, m := range s.Members {
			ids = append(ids, m.Forwarder)
			if pid := initPID(m.Nspawn); pid > 0 {
				if id, err := identify(pid); err == nil {
					ids = append(ids, id)
				}
			}
			ids = append(ids, m.Nspawn)
		}
	}
	for _, id := range ids {
		id.kill()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := l.labProcesses(nil)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("processes still alive: %v", left))
			break
		}
		for _, pid := range left {
			if id, err := identify(pid); err == nil {
				ids = append(ids, id)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := waitGone(ctx, 5*time.Second, ids...); err != nil {
		errs = append(errs, err)
	}
	// 2. Mounts: the overlays (and anything below the lab's directory).
	if err := unmountAll(l.dir); err != nil {
		errs = append(errs, err)
	}
	// 3. Namespaces; deleting the bridge namespace removes the bridge and
	// every veth with it.
	names := l.ownedNetnses()
	br := BridgeNetns(l.name)
	for _, ns := range append(slices.DeleteFunc(names, func(n string) bool { return n == br }), br) {
		if err := deleteNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	// 4. Cgroups and nspawn's per-machine runtime files.
	for _, r := range cgroupRoots() {
		if err := removeCgroupTree(filepath.Join(r, "tandem", l.name)); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroups: %w", err))
		}
		_ = os.Remove(filepath.Join(r, "tandem")) // only if no other lab uses it
	}
	props, _ := filepath.Glob("/run/systemd/nspawn/propagate/tandem-" + l.name + "-*")
	for _, p := range props {
		if validMember(strings.TrimPrefix(filepath.Base(p), "tandem-"+l.name+"-")) {
			_ = os.RemoveAll(p)
		}
	}
	// 5. Files: only once nothing is mounted below, so removal can never
	// reach through a mount.
	if mps, _ := mountsUnder(l.dir); len(mps) > 0 {
		errs = append(errs, fmt.Errorf("not removing %s: still mounted: %v", l.dir, mps))
	} else if err := os.RemoveAll(l.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", l.dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s down: %w", l.name, err)
	}
	l.log.Debug("lab down")
	return nil
}
