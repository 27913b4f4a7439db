package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/confine"
	"github.com/tandem-ha/tandem/internal/files"
	"github.com/tandem-ha/tandem/internal/files/inotify"
	"github.com/tandem-ha/tandem/internal/files/rsync"
	"github.com/tandem-ha/tandem/internal/ops"
	"github.com/tandem-ha/tandem/internal/pki"
)

// FilesPipe is 'tandem files pipe', rsync's -e command on a receiver:
// it hands rsync's stream to this node's agent (see internal/files/rsync).
func FilesPipe(ctx context.Context, socket, token string, argv []string) error {
	return rsync.Pipe(ctx, socket, token, argv, os.Stdin, os.Stdout)
}

// FilesConfine is 'tandem files confine': it replaces this process with
// argv, the rsync serving dir to a peer, able to read only dir.
func FilesConfine(dir string, argv []string) error {
	return confine.Exec(dir, argv)
}

// confineServing wraps the serving rsync's command line in 'tandem files
// confine'; on a kernel without Landlock it says once that the rsync runs
// with root's reading rights.
func confineServing(exe string, log *slog.Logger) func(dir string, argv []string) []string {
	if confine.Supported() == 0 {
		log.Warn("files: this kernel has no Landlock, so the rsync serving files to peers can read any file as root; a compromised peer could read a line of any file through its filter rules (enable Landlock: lsm=landlock,... on the kernel's command line)")
	}
	return func(dir string, argv []string) []string {
		return append([]string{exe, "files", "confine", "--read", dir, "--"}, argv...)
	}
}

// filesSocket is where the pipe helper reaches the agent.
func filesSocket(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.Cluster.Socket), "files.sock")
}

// buildFiles wires file replication on an app node with [[files]].
func (a *Agent) buildFiles(creds *pki.Node) (*files.Controller, *rsync.Transport, error) {
	cfg := a.cfg
	if cfg.Node.Role != config.RoleApp || len(cfg.Files) == 0 {
		return nil, nil, nil
	}
	log := a.log.With("component", "files")
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("files: %w", err)
	}
	tr := &rsync.Transport{Exe: exe, Socket: filesSocket(cfg), Logger: log,
		Dial: streamDialer(a.node, creds), Wrap: outsideSandbox(log), Confine: confineServing(exe, log)}
	if err := tr.Check(); err != nil {
		return nil, nil, err
	}
	specs := make([]files.Spec, 0, len(cfg.Files))
	for _, f := range cfg.Files {
		specs = append(specs, files.Spec{Dir: f.Path, Exclude: f.Exclude, Delete: f.DeletesPropagate(), BWLimit: f.BWLimit})
	}
	ctrl, err := files.New(files.Options{
		Name: cfg.Node.Name, Specs: specs, Machine: a.machine,
		Held: func() files.Held {
			if a.fo == nil {
				return files.Held{}
			}
			h, e := a.fo.Held()
			return files.Held{Holding: h, Epoch: e}
		},
		Transfer: transfer{tr}, Peers: peers{a.node}, Watcher: watcher{inotify.Watcher{Logger: log}},
		StateDir: filepath.Join(cfg.Node.DataDir, "files"), Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	a.node.Handle("POST "+files.SyncPath, ctrl.Handler(cluster.PeerName))
	a.node.HandleConn(rsync.ALPN, func(c net.Conn, peer string) error {
		err := tr.ServeConn(c, peer, func(peer string, r rsync.Request) (string, func() bool, error) {
			if r.Quarantine != 0 {
				return ctrl.ServeQuarantine(peer, r.Dir, r.Quarantine)
			}
			still, err := ctrl.Serve(peer, r.Dir, r.Epoch)
			return r.Dir, still, err
		})
		if err != nil {
			// The receiver sees only rsync's summary; the files are named here.
			log.Warn("serving a pull failed", "peer", peer, "err", err)
		}
		return err
	})
	if err := a.metrics.reg.Register(filesCollector{ctrl}); err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return ctrl, tr, nil
}

// streamDialer opens verified mTLS streams of the files protocol.
func streamDialer(n *cluster.Node, creds *pki.Node) func(ctx context.Context, peer string) (net.Conn, error) {
	cfg := creds.ClientConfig()
	cfg.NextProtos = []string{rsync.ALPN}
	return func(ctx context.Context, peer string) (net.Conn, error) {
		m, ok := n.Machine().View().Members[peer]
		if !ok || m.Address == "" {
			return nil, fmt.Errorf("%q is not a member with an address", peer)
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}, Config: cfg}
		c, err := d.DialContext(ctx, "tcp", m.Address)
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn)
		cs := tc.ConnectionState()
		if cs.NegotiatedProtocol != rsync.ALPN {
			tc.Close()
			return nil, fmt.Errorf("%s negotiated %q, not %q: it runs an older tandem; upgrade it", peer, cs.NegotiatedProtocol, rsync.ALPN)
		}
		if err := n.VerifyPeerAt(m.Address, cs); err != nil {
			tc.Close()
			return nil, err
		}
		return tc, nil
	}
}

// outsideSandbox runs the receiving rsync as a transient unit when the
// agent's own sandbox (ProtectSystem=strict) makes the directory
// read-only and the agent runs under systemd; otherwise as is.
func outsideSandbox(log interface{ Debug(string, ...any) }) func(dir string, argv []string) []string {
	underSystemd := os.Getenv("INVOCATION_ID") != ""
	return func(dir string, argv []string) []string {
		if !underSystemd || writable(dir) {
			return argv
		}
		log.Debug("pulling outside the sandbox (add the directory to ReadWritePaths= to save a systemd-run per pull)", "dir", dir)
		return append([]string{"systemd-run", "--wait", "--pipe", "--collect", "--quiet", "--service-type=exec",
			"--description=tandem files pull", "--"}, argv...)
	}
}

// writable reports whether dir (or, when missing, its nearest parent) is
// on a writable mount here.
func writable(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		err := unix.Access(d, unix.W_OK)
		switch {
		case err == nil:
			// The quarantine lives beside dir: its parent must be
			// writable too.
			return d != dir || unix.Access(filepath.Dir(dir), unix.W_OK) == nil
		case errors.Is(err, unix.ENOENT) && d != "/":
			continue
		default:
			return false
		}
	}
}

type transfer struct{ tr *rsync.Transport }

func (t transfer) Pull(ctx context.Context, p files.Pull) (files.PullResult, error) {
	excl := append(append([]string{}, p.Spec.Exclude...), p.Skip...)
	st, err := t.tr.Pull(ctx, rsync.PullOptions{Peer: p.From, Epoch: p.Epoch, Dir: p.Spec.Dir, Exclude: excl,
		Delete: p.Spec.Delete && p.FromQuarantine == 0, BWLimit: p.Spec.BWLimit, Backup: p.Quarantine,
		FromQuarantine: p.FromQuarantine, IgnoreExisting: p.FromQuarantine != 0})
	return files.PullResult{Files: st.Files, Bytes: st.Bytes}, err
}

type peers struct{ n *cluster.Node }

func (p peers) Sync(ctx context.Context, peer string, r files.SyncRequest) (files.SyncReply, error) {
	var rep files.SyncReply
	err := p.n.Call(ctx, peer, "POST", files.SyncPath, r, &rep)
	return rep, err
}

type watcher struct{ w inotify.Watcher }

func (w watcher) Watch(ctx context.Context, dir string, changed func(files.Change)) error {
	return w.w.Watch(ctx, dir, func(path string, at time.Time, size int64, overflow bool) {
		changed(files.Change{Path: path, At: at, Bytes: size, Overflow: overflow})
	})
}

// filesCollector exports replication lag and quarantine.
type filesCollector struct{ c *files.Controller }

var (
	filesLagDesc = prometheus.NewDesc("tandem_files_lag_seconds",
		"How long the oldest change not yet on a receiver has waited (0: caught up); exported by the source.", []string{"path", "node"}, nil)
	filesPendingDesc = prometheus.NewDesc("tandem_files_pending_bytes",
		"Size of the changed files not yet on a receiver; exported by the source.", []string{"path", "node"}, nil)
	filesSyncsDesc = prometheus.NewDesc("tandem_files_syncs_total",
		"Catch-ups of a receiver this node drove as the source, by outcome.", []string{"path", "node", "outcome"}, nil)
	filesQuarantineDesc = prometheus.NewDesc("tandem_files_quarantined_files",
		"Files in this node's quarantine beside a replicated path (see 'tandem files status').", []string{"path"}, nil)
	filesSQLiteDesc = prometheus.NewDesc("tandem_files_sqlite_databases",
		"SQLite databases found in a replicated path and left out.", []string{"path"}, nil)
	filesSendingDesc = prometheus.NewDesc("tandem_files_sending",
		"1 while this node is the replication source.", nil, nil)
)

func (filesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{filesLagDesc, filesPendingDesc, filesSyncsDesc, filesQuarantineDesc, filesSQLiteDesc, filesSendingDesc} {
		ch <- d
	}
}

func (f filesCollector) Collect(ch chan<- prometheus.Metric) {
	st := f.c.Status()
	sending := 0.0
	if st.Sending {
		sending = 1
	}
	ch <- prometheus.MustNewConstMetric(filesSendingDesc, prometheus.GaugeValue, sending)
	for _, p := range st.Paths {
		for _, peer := range p.Peers {
			ch <- prometheus.MustNewConstMetric(filesLagDesc, prometheus.GaugeValue, peer.Lag.Seconds(), p.Dir, peer.Node)
			ch <- prometheus.MustNewConstMetric(filesPendingDesc, prometheus.GaugeValue, float64(peer.PendingBytes), p.Dir, peer.Node)
			ch <- prometheus.MustNewConstMetric(filesSyncsDesc, prometheus.CounterValue, float64(peer.Syncs), p.Dir, peer.Node, "ok")
			ch <- prometheus.MustNewConstMetric(filesSyncsDesc, prometheus.CounterValue, float64(peer.Failures), p.Dir, peer.Node, "error")
		}
		n := 0
		for _, q := range p.Quarantine {
			n += q.Files
		}
		ch <- prometheus.MustNewConstMetric(filesQuarantineDesc, prometheus.GaugeValue, float64(n), p.Dir)
		ch <- prometheus.MustNewConstMetric(filesSQLiteDesc, prometheus.GaugeValue, float64(len(p.SQLite)), p.Dir)
	}
}

// filesOps is file replication's part of the operations (status, sync).
func (a *Agent) filesOps() *ops.Files {
	f := &ops.Files{Name: a.cfg.Node.Name, Machine: a.machine}
	if a.files == nil {
		return f
	}
	f.Local, f.SyncAll, f.Restore = a.files.Status, a.files.SyncAll, a.files.Restore
	f.HolderFact = func(holder string) ([]byte, bool) {
		p, ok := a.mesh.Peer(holder)
		if !ok {
			return nil, false
		}
		return p.Facts.Get(files.FactName)
	}
	return f
}
