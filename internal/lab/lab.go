// Package lab runs a throwaway cluster of real Debian 12 nodes on one machine:
// each node is a systemd-nspawn container booted from an overlay on a cached
// debootstrap image, in its own network namespace linked to a bridge that
// lives in a namespace of the lab's own. The host's network namespace is never
// touched. It also injects faults: power loss (kill), partitions and link
// degradation (netem).
//
// Every call reads the lab's state file, so separate processes (the CLI, the
// end-to-end tests, benchmarks) drive the same lab.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Default locations.
const (
	DefaultStateDir = "/var/lib/tandem/lab"
	DefaultCacheDir = "/var/cache/tandem/lab"
)

// Options configure a Lab handle.
type Options struct {
	Name     string // lab name; DefaultName when empty
	StateDir string // per-lab state, overlays and logs; DefaultStateDir when empty
	CacheDir string // base image cache; DefaultCacheDir when empty
	Mirror   string // Debian mirror for the image; the host's apt mirror when empty
	// Exe is a tandem binary; Netem runs its hidden "lab netem-forward"
	// command. Defaults to the running executable.
	Exe    string
	Logger *slog.Logger // nil discards
}

// Lab is a handle on one named lab. It holds no live state of its own, so
// any number of handles (in any number of processes) may drive one lab.
type Lab struct {
	name     string
	dir      string
	cacheDir string
	mirror   string
	exe      string
	log      *slog.Logger
}

// New returns a handle on the lab named in opts; the lab need not be up.
func New(opts Options) (*Lab, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if err := ValidateName(opts.Name); err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Lab{
		name:     opts.Name,
		dir:      filepath.Join(opts.StateDir, opts.Name),
		cacheDir: opts.CacheDir,
		mirror:   opts.Mirror,
		exe:      opts.Exe,
		log:      opts.Logger.With("lab", opts.Name),
	}, nil
}

// Open returns a handle on the lab called name with default locations.
func Open(name string) (*Lab, error) { return New(Options{Name: name}) }

// Name returns the lab's name.
func (l *Lab) Name() string { return l.name }

// Dir returns the lab's state directory.
func (l *Lab) Dir() string { return l.dir }

func (l *Lab) statePath() string          { return filepath.Join(l.dir, "lab.json") }
func (l *Lab) nodeDir(node string) string { return filepath.Join(l.dir, node) }

// LogPath returns the file that holds a node's systemd-nspawn output (its
// console, since nspawn runs with --console=passive).
func (l *Lab) LogPath(node string) string { return filepath.Join(l.nodeDir(node), "nspawn.log") }

// lock serializes changes to one lab across processes. The lock file sits
// beside the lab's directory so Down can remove the directory while locked.
func (l *Lab) lock() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(l.dir), 0o755); err != nil {
		return nil, fmt.Errorf("lock lab: %w", err)
	}
	f, err := os.OpenFile(l.dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock lab: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock lab: %w", err)
	}
	return func() { f.Close() }, nil
}

func (l *Lab) load() (*state, error) {
	s, err := loadState(l.statePath())
	if errors.Is(err, ErrNoLab) {
		return nil, fmt.Errorf("lab %s is not up: run 'tandem lab up --name %s': %w", l.name, l.name, ErrNoLab)
	}
	return s, err
}

// imageInUse reports whether any lab under the state directory boots from
// image, or an overlay on it is still mounted (a lab whose state is gone).
func (l *Lab) imageInUse(image string) bool {
	states, _ := filepath.Glob(filepath.Join(filepath.Dir(l.dir), "*", "lab.json"))
	for _, path := range states {
		s, err := loadState(path)
		if err != nil || s.Image == image {
			return true // unreadable: keep the image rather than guess
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	return err != nil || strings.Contains(string(mounts), "lowerdir="+image+",")
}

// member loads the state and finds node in it.
func (l *Lab) member(node string) (*state, *memberState, error) {
	s, err := l.load()
	if err != nil {
		return nil, nil, err
	}
	m, err := s.member(node)
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

// lockMember takes the lab lock, then loads the state and finds node in it,
// for commands that change the node and save the state. On success the
// caller must call unlock; on error the lock is already released.
func (l *Lab) lockMember(node string) (unlock func(), s *state, m *memberState, err error) {
	unlock, err = l.lock()
	if err != nil {
		return nil, nil, nil, err
	}
	s, m, err = l.member(node)
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return unlock, s, m, nil
}

// UpOptions shape a new lab.
type UpOptions struct {
	Nodes    int       // app nodes, node1..nodeN
	Witness  bool      // add a witness node
	Progress io.Writer // stage lines while building and booting; may be nil
	// BootTimeout bounds the wait for every node to reach a running system;
	// 2 minutes when zero.
	BootTimeout time.Duration
}

// ErrExists is returned by Up when the lab is already up.
var ErrExists = errors.New("lab already exists")

// Up builds the base image if needed, creates the network and boots every
// node from a fresh overlay, in parallel, until systemd reports the system
// running. On failure it removes whatever it made.
func (l *Lab) Up(ctx context.Context, o UpOptions) (err error) {
	members, err := Plan(o.Nodes, o.Witness)
	if err != nil {
		return err
	}
	if err := CheckPrereqs(!imageReady(ImagePath(l.cacheDir))); err != nil {
		return err
	}
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(l.statePath()); err == nil {
		return fmt.Errorf("lab %s is already up (run 'tandem lab down --name %s' first): %w", l.name, l.name, ErrExists)
	}
	if left := l.leftovers(); len(left) > 0 {
		return fmt.Errorf("lab %s has leftovers of an earlier run (%v): run 'tandem lab down --name %s' first: %w", l.name, left, l.name, ErrExists)
	}
	start := time.Now()
	p := &stageWriter{w: o.Progress, start: start}
	image, err := EnsureImage(ctx, l.cacheDir, l.mirror, o.Progress, l.imageInUse)
	if err != nil {
		return err
	}
	p.start = time.Now()
	s := &state{Name: l.name, Image: image, Created: time.Now().UTC()}
	for _, m := range members {
		s.Members = append(s.Members, memberState{Name: m.Name, Role: m.Role, Addr: m.Addr.String()})
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("create lab dir: %w", err)
	}
	// Record the plan before making anything so a crash can be cleaned up.
	if err := saveState(l.statePath(), s); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			l.log.Warn("lab up failed; removing what it made", "err", err)
			if derr := l.down(context.WithoutCancel(ctx), s); derr != nil {
				err = errors.Join(err, fmt.Errorf("clean up after failed up: %w", derr))
			}
		}
	}()
	p.stage("creating the lab network (bridge in netns %s, %s)", BridgeNetns(l.name), Subnet)
	if err := l.setupNetwork(ctx, members); err != nil {
		return err
	}
	timeout := o.BootTimeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	bootCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	g, gctx := errgroup.WithContext(bootCtx)
	for i := range s.Members {
		m := &s.Members[i]
		if m.Role == RoleClient {
			continue
		}
		g.Go(func() error {
			t0 := time.Now()
			p.stage("%s: booting (%s)", m.Name, m.Addr)
			if err := l.prepareOverlay(m.Name, image, true); err != nil {
				return err
			}
			if err := l.writeNodeFiles(m.Name, s.Members); err != nil {
				return err
			}
			id, err := l.spawn(gctx, m.Name, image)
			if err != nil {
				return err
			}
			m.Nspawn = id
			st, err := l.waitRunning(gctx, m.Name, id)
			if err != nil {
				return fmt.Errorf("%s did not boot (console log %s: %s): %w", m.Name, l.LogPath(m.Name), tailFile(l.LogPath(m.Name), 3), err)
			}
			p.stage("%s: %s after %.1fs", m.Name, st, time.Since(t0).Seconds())
			return nil
		})
	}
	gerr := g.Wait()
	if serr := saveState(l.statePath(), s); serr != nil && gerr == nil {
		gerr = serr
	}
	if gerr != nil {
		return gerr
	}
	w := ""
	if o.Witness {
		w = " + witness"
	}
	p.stage("lab %s is up: %d node(s)%s, client %s", l.name, o.Nodes, w, ClientAddr)
	return nil
}

// NodeStatus describes one member as the system shows it now.
type NodeStatus struct {
	Name    string `json:"name"`
	Role    string `json:"role"`    // app, witness or client
	State   string `json:"state"`   // running, stopped or partitioned
	Address string `json:"address"` // lab address, e.g. 10.77.0.11
	InitPID int    `json:"init_pid"`
	Netem   string `json:"netem,omitempty"` // link degradation in force
}

// States reported by Status.
const (
	StateRunning     = "running"
	StateStopped     = "stopped"
	StatePartitioned = "partitioned"
)

// Status reports every member: running (with its init's host PID), stopped,
// or partitioned (running but cut off). The client is running while its
// namespace exists.
func (l *Lab) Status(ctx context.Context) ([]NodeStatus, error) {
	s, err := l.load()
	if err != nil {
		return nil, err
	}
	parted, perr := l.partitioned(ctx)
	out := make([]NodeStatus, 0, len(s.Members))
	for _, m := range s.Members {
		ns := NodeStatus{Name: m.Name, Role: m.Role, Address: m.Addr, State: StateStopped}
		if m.Netem != nil {
			ns.Netem = m.Netem.String()
		}
		if m.Role == RoleClient {
			if _, err := os.Stat(netnsPath(NetnsName(l.name, m.Name))); err == nil {
				ns.State = StateRunning
			}
		} else if pid := initPID(m.Nspawn); pid > 0 {
			ns.State, ns.InitPID = StateRunning, pid
		}
		if ns.State == StateRunning && parted[portIf(m.Name)] {
			ns.State = StatePartitioned
		}
		out = append(out, ns)
	}
	if perr != nil {
		return out, perr
	}
	return out, nil
}

// Members returns the planned members of the lab (no system calls besides
// reading the state file).
func (l *Lab) Members() ([]NodeStatus, error) {
	s, err := l.load()
	if err != nil {
		return nil, err
	}
	var out []NodeStatus
	for _, m := range s.Members {
		out = append(out, NodeStatus{Name: m.Name, Role: m.Role, Address: m.Addr})
	}
	return out, nil
}

// Kill sends SIGKILL to the node's container init and its nspawn: a power
// loss. The disk (the overlay's upper directory) is kept for Start.
func (l *Lab) Kill(ctx context.Context, node string) error {
	unlock, _, m, err := l.lockMember(node)
	if err != nil {
		return err
	}
	defer unlock()
	if m.Role == RoleClient {
		return fmt.Errorf("the client is a bare network namespace and cannot be killed; use partition")
	}
	ids := []procID{m.Nspawn}
	if pid := initPID(m.Nspawn); pid > 0 {
		if id, err := identify(pid); err == nil {
			ids = append([]procID{id}, ids...)
		}
	}
	// Init first: when a PID namespace's init dies the kernel kills every
	// process in it at once, so nothing in the node runs a single step more.
	for _, id := range ids {
		id.kill()
	}
	if err := waitGone(ctx, 2*time.Second, ids...); err != nil {
		return fmt.Errorf("kill %s: %w", node, err)
	}
	// A powered-off machine answers nothing and keeps no network state:
	// without this its namespace would still answer for its addresses.
	m.Forwarder.kill() // its port goes away; Start restarts it
	if err := l.scrubNetns(ctx, node); err != nil {
		return err
	}
	l.log.Debug("killed node", "node", node)
	return nil
}

// Start boots a stopped node again on its existing disk and waits until
// systemd reports the system running.
func (l *Lab) Start(ctx context.Context, node string) error {
	unlock, s, m, err := l.lockMember(node)
	if err != nil {
		return err
	}
	defer unlock()
	if m.Role == RoleClient {
		return fmt.Errorf("the client is a bare network namespace and is always up")
	}
	if initPID(m.Nspawn) > 0 {
		return fmt.Errorf("%s is already running", node)
	}
	if _, err := os.Stat(netnsPath(NetnsName(l.name, node))); err != nil {
		return fmt.Errorf("%s's network namespace is gone: run 'tandem lab down' and 'tandem lab up': %w", node, err)
	}
	if !linkExists(ctx, NetnsName(l.name, node), hostIf) {
		addr, err := netip.ParseAddr(m.Addr)
		if err != nil {
			return fmt.Errorf("%s's address in the lab state: %w", node, err)
		}
		if err := l.plugMember(ctx, node, addr, m.Netem == nil); err != nil {
			return err
		}
		if m.Netem != nil {
			if err := l.applyNetem(ctx, s, m, *m.Netem); err != nil {
				return err
			}
		}
	}
	if err := l.prepareOverlay(node, s.Image, false); err != nil {
		return err
	}
	id, err := l.spawn(ctx, node, s.Image)
	if err != nil {
		return err
	}
	m.Nspawn = id
	if err := saveState(l.statePath(), s); err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := l.waitRunning(bctx, node, id); err != nil {
		return fmt.Errorf("%s did not boot (console log %s): %w", node, l.LogPath(node), err)
	}
	return nil
}

// WaitRunning waits until systemd in the node reports running or degraded
// and returns that state.
func (l *Lab) WaitRunning(ctx context.Context, node string) (string, error) {
	_, m, err := l.member(node)
	if err != nil {
		return "", err
	}
	if m.Role == RoleClient {
		return StateRunning, nil
	}
	return l.waitRunning(ctx, node, m.Nspawn)
}

// Down removes every process, mount, overlay, namespace, cgroup and file the
// lab made. It works from the state file and also from scanning the system,
// so it cleans up after a crash or a lost state file. It is idempotent.
func (l *Lab) Down(ctx context.Context) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	s, _ := loadState(l.statePath()) // best effort: the scan finds the rest
	err = l.down(ctx, s)
	unlock()
	if err == nil {
		_ = os.Remove(l.dir + ".lock")
	}
	return err
}
