// Package cluster runs tandem's raft node: consensus over the replicated
// state in internal/cluster/state, one mutual-TLS listener shared by raft
// and the cluster's HTTP API, command forwarding to the leader, and the
// join protocol that hands new nodes a certificate.
//
// # Wire
//
// Each node listens on one TCP port (Options.Listen) with TLS 1.3 and the
// cluster CA. After the handshake, connections that negotiated the ALPN
// protocol "tandem-raft" carry raft RPCs; all others are HTTP (h2 or
// http/1.1). The listener verifies a client certificate when one is given
// (a certificate from another CA fails the handshake) but lets clients
// without one through, because a joining node has none yet. Raft
// connections and every HTTP endpoint except /v1/join and /v1/ca then
// require a verified certificate; Handle enforces that for other packages'
// endpoints too. A certificate proves only that the CA key signed it, so
// the name on it must also be a current member (raft: a server of the raft
// configuration) and its key the one pinned for that member in the state
// (state.Member.Key), on both ends of every connection (see trust.go).
// Every RPC on a raft connection must name that node as its sender
// (raftguard.go). The trusted CAs are the committed ones (state.Trust),
// read at each handshake, so a CA rotation needs no restart (rotate.go).
//
//	GET  /v1/ca          the CA certificate (PEM); no client certificate needed
//	POST /v1/join        join with a token and a CSR; no client certificate needed
//	POST /v1/apply       apply an encoded state command on the leader; members only,
//	                     and refused when a member's state level is too old for it
//	                     or the caller may not propose it (state.Authorizer)
//	POST /v1/membership  raft membership change on the leader; members only
//	POST /v1/renew       sign a member's certificate renewal, for its own name
//	                     and pinned key only; members only, on app nodes
//	GET  /v1/members     the members and their pinned keys; members only (a freshly
//	                     joined node learns who may lead it)
//	POST /v1/ca/key      the key of a CA rotation's new CA; app members only, on
//	                     app nodes that hold it (see rotate.go)
//
// Errors come back as JSON {"error": message, "code": name}; the code names
// the sentinel error (state.ErrBadToken is "bad_token", ...) so errors.Is
// keeps working on the caller's side.
//
// # Disk
//
// DataDir/raft/raft.db holds the raft log and stable store (bbolt), and
// DataDir/raft/snapshots the state snapshots.
package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// Errors callers may test for with errors.Is. They cross the wire by name.
var (
	ErrNotLeader           = errors.New("this node is not the raft leader")
	ErrNoLeader            = errors.New("the cluster has no leader (no quorum?)")
	ErrAlreadyBootstrapped = errors.New("this node already has raft state; it is part of a cluster")
	ErrCannotSign          = errors.New("this node cannot sign join requests: it does not hold the cluster CA key (witnesses never do); join through an app node")
	ErrNameTaken           = errors.New("a member with this name already exists")
	ErrJoinRefused         = errors.New("join refused")
	ErrUnauthenticated     = errors.New("a client certificate from the cluster CA is required")
	ErrLastVoter           = errors.New("cannot remove the last voter")
)

// Timing holds raft's timers. Zero fields take the defaults, which are
// tuned for failover in about a second on a LAN.
type Timing struct {
	HeartbeatTimeout   time.Duration // default 500ms
	ElectionTimeout    time.Duration // default 500ms
	LeaderLeaseTimeout time.Duration // default 250ms
	CommitTimeout      time.Duration // default 20ms
	// ApplyTimeout bounds Apply and membership changes when the context has
	// no deadline, including the wait for a leader during an election.
	ApplyTimeout time.Duration // default 5s
}

func (t Timing) withDefaults() Timing {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.HeartbeatTimeout, 500*time.Millisecond)
	def(&t.ElectionTimeout, 500*time.Millisecond)
	def(&t.LeaderLeaseTimeout, 250*time.Millisecond)
	def(&t.CommitTimeout, 20*time.Millisecond)
	def(&t.ApplyTimeout, 5*time.Second)
	return t
}

// Options configure a Node.
type Options struct {
	Name string // node name; must equal the certificate's CN
	Role string // state.RoleApp or state.RoleWitness
	// DataDir holds the raft directory.
	DataDir string
	// Listen is the host:port of the TLS listener shared by raft and the
	// API, e.g. "0.0.0.0:7946" or "127.0.0.1:0".
	Listen string
	// Advertise is the host:port peers use to reach Listen. It defaults to
	// the listener's address when that is not a wildcard.
	Advertise string
	TLS       *pki.Node
	// Machine is the state raft drives; pass a fresh state.New(): raft
	// restores it from the snapshot and log on start.
	Machine *state.Machine
	Logger  *slog.Logger
	Timing  Timing
	// Priority is this node's placement priority ([failover] priority).
	// The node records it at bootstrap and, when it differs from the
	// member's, proposes it once running (see reportSelf).
	Priority int
	// JoinPolicy, when set, may refuse a join given the current members
	// and the joining one; its error is returned to the joining node.
	JoinPolicy func(current []state.Member, joining state.Member) error
	// Now stamps commands (token use, member join times); default time.Now.
	Now func() time.Time
	// StreamProtocols are further ALPN protocols the listener accepts, for
	// other packages' streams; serve them with HandleConn.
	StreamProtocols []string
	// JoinedPeers are the members (name to address) the cluster named when
	// this node joined. Raft talks only with members of the replicated
	// state; until a freshly joined node has applied any, these stand in.
	JoinedPeers map[string]string
	// JoinedKeys are those members' pinned keys (name to key hash), which
	// stand in for the state's in the same way.
	JoinedKeys map[string]string
	// PKIDir is where the node's credentials live (PKIDir(DataDir) for
	// the agent): a renewed certificate is saved there. Empty keeps
	// renewals in memory.
	PKIDir string

	// raftTransport replaces the TLS raft transport (tests use raft's
	// in-memory transport); the listener then serves HTTP only.
	raftTransport raft.Transport
	// noJoinDelay turns off the brake on refused joins (tests).
	noJoinDelay bool
	// certValidity is the validity of the certificates this node signs
	// and renews (default pki.NodeValidity; tests shorten it).
	certValidity time.Duration
}

// Node is a running cluster member.
type Node struct {
	name, role string
	joined     atomic.Pointer[joinedSet] // see Options.JoinedPeers and learnPeers
	raftRef    atomic.Pointer[raft.Raft]
	advertise  string
	timing     Timing
	log        *slog.Logger
	now        func() time.Time
	policy     func([]state.Member, state.Member) error
	priority   int
	pkiDir     string
	// certValidity: see Options.certValidity.
	certValidity time.Duration

	creds   *pki.Node
	machine *state.Machine
	raft    *raft.Raft
	trans   raft.Transport
	store   *raftboltdb.BoltStore
	mux     *muxListener
	srv     *http.Server
	handler *http.ServeMux
	client  *http.Client

	observer *raft.Observer
	lmu      sync.Mutex
	lchanged chan struct{}
	rotKick  chan struct{} // wakes rotationLoop
	upToDate atomic.Bool   // see caughtUp
	certMu   sync.Mutex    // one renewal or reissue at a time
	joinMu   sync.Mutex
	joinGate *joinGate
	// joinDelay is how long a refused join waits before its answer.
	joinDelay time.Duration

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New opens the node's stores, starts its listener and raft. A node with
// existing raft state rejoins its cluster; a new node waits to be
// bootstrapped (Bootstrap) or added by a leader (after Join).
func New(ctx context.Context, opts Options) (*Node, error) {
	if err := pki.ValidName(opts.Name); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if opts.Role != state.RoleApp && opts.Role != state.RoleWitness {
		return nil, fmt.Errorf("cluster: role %q: want %q or %q", opts.Role, state.RoleApp, state.RoleWitness)
	}
	if opts.TLS == nil || opts.Machine == nil || opts.DataDir == "" || opts.Listen == "" {
		return nil, errors.New("cluster: Options need TLS, Machine, DataDir and Listen")
	}
	if opts.TLS.Name != opts.Name {
		return nil, fmt.Errorf("cluster: certificate is for %q but the node is named %q", opts.TLS.Name, opts.Name)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	n := &Node{
		name: opts.Name, role: opts.Role, timing: opts.Timing.withDefaults(),
		log: opts.Logger.With("node", opts.Name), now: opts.Now, policy: opts.JoinPolicy, priority: opts.Priority,
		creds: opts.TLS, machine: opts.Machine, lchanged: make(chan struct{}), rotKick: make(chan struct{}, 1),
		joinDelay: joinRefusalDelay, joinGate: newJoinGate(),
		pkiDir: opts.PKIDir, certValidity: cmp.Or(opts.certValidity, pki.NodeValidity),
	}
	if opts.noJoinDelay {
		n.joinDelay = 0
	}
	if err := n.start(ctx, opts); err != nil {
		n.closeAll()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context, opts Options) error {
	// Listener first: Advertise may come from the port it got.
	tcp, err := (&net.ListenConfig{}).Listen(ctx, "tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("cluster: listen %s: %w", opts.Listen, err)
	}
	n.advertise = opts.Advertise
	if n.advertise == "" {
		host, _, _ := net.SplitHostPort(tcp.Addr().String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			tcp.Close()
			return fmt.Errorf("cluster: listening on %s: set Advertise to the address peers should dial", tcp.Addr())
		}
		n.advertise = tcp.Addr().String()
	}
	if _, port, err := net.SplitHostPort(n.advertise); err != nil || port == "0" {
		tcp.Close()
		return fmt.Errorf("cluster: advertise address %q: want host:port", n.advertise)
	}
	tcfg := n.creds.JoinServerConfig()
	tcfg.VerifyConnection = n.verifyClient
	tcfg.NextProtos = slices.Concat([]string{ALPNRaft}, opts.StreamProtocols, []string{alpnH2, alpnH1})
	n.mux = newMux(tls.NewListener(tcp, tcfg), n.advertise, opts.raftTransport == nil, n.log)

	n.client = n.newClient()
	n.handler = http.NewServeMux()
	n.routes()
	n.srv = &http.Server{
		Handler:           oneRequestForAnonymous(n.handler),
		ReadHeaderTimeout: 10 * time.Second,
		// Bodies are small and members reconnect at will: a slow or idle
		// client is dropped rather than kept.
		ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		Protocols:   new(http.Protocols),
	}
	n.srv.Protocols.SetHTTP1(true)
	n.srv.Protocols.SetHTTP2(true)

	dir := filepath.Join(opts.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return fmt.Errorf("cluster: open raft store: %w", err)
	}
	logs, err := raft.NewLogCache(512, n.store)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	hlog := newHclog(n.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		return fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	n.trans = opts.raftTransport
	if n.trans == nil {
		n.joined.Store(&joinedSet{peers: opts.JoinedPeers, keys: opts.JoinedKeys})
		n.mux.raftPeer = n.raftPeer
		n.mux.raftAddr = func(name string) (string, bool) {
			addr, ok := n.raftPeers()[name]
			return addr, ok
		}
		n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  newStreamLayer(n.mux.raft, n.creds, n.raftPeerAt, n.checkPin),
			MaxPool: 3,
			Timeout: 2 * time.Second,
			Logger:  hlog.Named("transport"),
		})
	}

	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(n.name)
	conf.HeartbeatTimeout = n.timing.HeartbeatTimeout
	conf.ElectionTimeout = n.timing.ElectionTimeout
	conf.LeaderLeaseTimeout = n.timing.LeaderLeaseTimeout
	conf.CommitTimeout = n.timing.CommitTimeout
	conf.Logger = hlog
	if err := raft.ValidateConfig(conf); err != nil {
		return fmt.Errorf("cluster: raft timing: %w", err)
	}
	n.raft, err = raft.NewRaft(conf, fsm{n.machine, n.log}, logs, n.store, snaps, n.trans)
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raftRef.Store(n.raft)
	obs := make(chan raft.Observation, 64)
	n.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(n.observer)

	bg, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.mux.streamPeer = n.isKnown
	n.wg.Add(9)
	go func() { defer n.wg.Done(); n.mux.serve() }()
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(n.mux.http); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	go func() { defer n.wg.Done(); n.watchLeadership(bg, obs) }()
	go func() { defer n.wg.Done(); n.promoteSelf(bg) }()
	go func() { defer n.wg.Done(); n.reportSelf(bg) }()
	go func() { defer n.wg.Done(); n.watchTrust(bg) }()
	go func() { defer n.wg.Done(); n.renewLoop(bg) }()
	go func() { defer n.wg.Done(); n.rotationLoop(bg) }()
	go func() {
		defer n.wg.Done()
		if n.joined.Load() != nil {
			n.learnPeers(bg)
		}
	}()
	n.log.Info("cluster node started", "advertise", n.advertise, "role", n.role)
	return nil
}

// raftPeers are the nodes raft may talk with: the servers of the latest
// raft configuration (committed or not, as raft itself uses it), or, on a
// freshly joined node whose log holds none yet, the members it was told of
// when it joined. A certificate from the cluster CA is not enough: a
// removed node, or one that never joined, is refused (security review,
// finding 1).
func (n *Node) raftPeers() map[string]string {
	if r := n.raftRef.Load(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil && len(f.Configuration().Servers) > 0 {
			out := map[string]string{}
			for _, sv := range f.Configuration().Servers {
				out[string(sv.ID)] = string(sv.Address)
			}
			return out
		}
	}
	if j := n.joined.Load(); j != nil {
		return j.peers
	}
	return nil
}

// raftPeer reports whether the certificate name may open a raft connection.
func (n *Node) raftPeer(name string) bool {
	_, ok := n.raftPeers()[name]
	return ok && name != n.name
}

// raftPeerAt names the member raft dials at addr.
func (n *Node) raftPeerAt(addr string) (string, bool) {
	for name, a := range n.raftPeers() {
		if a == addr && name != n.name {
			return name, true
		}
	}
	return "", false
}

// ownKey is this node's key pin (see state.Member.Key).
func (n *Node) ownKey() string { return pki.Hash(n.creds.Cert.Leaf) }

// Name returns the node's name.
func (n *Node) Name() string { return n.name }

// Addr returns the address peers dial (Options.Advertise or the listener's).
func (n *Node) Addr() string { return n.advertise }

// Credentials returns the node's PKI credentials.
func (n *Node) Credentials() *pki.Node { return n.creds }

// Machine returns the replicated state machine this node drives.
func (n *Node) Machine() *state.Machine { return n.machine }

// Bootstrapped reports whether the node has raft state (it was bootstrapped
// or has joined a cluster and received its log).
func (n *Node) Bootstrapped() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// Bootstrap makes this node a cluster of one and records it as a member.
// It fails with ErrAlreadyBootstrapped on a node that has raft state.
func (n *Node) Bootstrap(ctx context.Context) error {
	if n.Bootstrapped() {
		return ErrAlreadyBootstrapped
	}
	cfg := raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: raft.ServerID(n.name), Address: n.trans.LocalAddr(),
	}}}
	if err := n.raft.BootstrapCluster(cfg).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return ErrAlreadyBootstrapped
		}
		return fmt.Errorf("bootstrap: %w", err)
	}
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	// A cluster of one need not wait out a heartbeat timeout (seconds, for
	// an idle leader's sake) to elect itself: lowering the timeout makes
	// raft's follower loop check for a leader at once, and with none it
	// stands. The lowest value raft accepts is the leader lease.
	normal := n.raft.ReloadableConfig()
	quick := normal
	quick.HeartbeatTimeout = min(normal.HeartbeatTimeout, n.timing.LeaderLeaseTimeout)
	if quick.HeartbeatTimeout < normal.HeartbeatTimeout {
		if err := n.raft.ReloadConfig(quick); err != nil {
			n.log.Warn("bootstrap: electing at once failed; waiting for raft's heartbeat timeout", "err", err)
		} else {
			defer func() {
				if err := n.raft.ReloadConfig(normal); err != nil {
					n.log.Error("bootstrap: restoring raft's heartbeat timeout", "err", err)
				}
			}()
		}
	}
	for !n.IsLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bootstrap: waiting for leadership: %w", ctx.Err())
		case <-n.LeadershipChanged():
		case <-time.After(20 * time.Millisecond):
		}
	}
	m := state.Member{Name: n.name, Role: n.role, Address: n.advertise, Joined: n.now(), Priority: n.priority, Level: n.machine.Level(),
		Key: n.ownKey()}
	if err := n.Apply(ctx, state.AddMember{Member: m}); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// Term returns raft's current term; cheaper than RaftStats, for callers
// that ask many times a second.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's name and raft address, or empty
// strings when there is none.
func (n *Node) Leader() (name, addr string) {
	a, id := n.raft.LeaderWithID()
	return string(id), string(a)
}

// LeadershipChanged returns a channel that is closed at the next change of
// this node's raft state or of the leader it knows. Changes may coalesce:
// read IsLeader and Leader after it fires, in a reconcile loop.
func (n *Node) LeadershipChanged() <-chan struct{} {
	n.lmu.Lock()
	defer n.lmu.Unlock()
	return n.lchanged
}

func (n *Node) watchLeadership(ctx context.Context, obs <-chan raft.Observation) {
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-obs:
			if l, ok := o.Data.(raft.LeaderObservation); ok {
				n.log.Info("raft leader", "leader", string(l.LeaderID), "addr", string(l.LeaderAddr))
			}
			n.lmu.Lock()
			close(n.lchanged)
			n.lchanged = make(chan struct{})
			n.lmu.Unlock()
		}
	}
}

// VerifyLeader confirms with a quorum that this node is still the leader.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if err := wait(ctx, n.raft.VerifyLeader()); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("verify leader: %w: %v", ErrNotLeader, err)
		}
		return fmt.Errorf("verify leader: %w", err)
	}
	return nil
}

// TransferLeadership hands leadership to the named voter, or to the most
// up-to-date one when to is "". It must run on the leader.
func (n *Node) TransferLeadership(ctx context.Context, to string) error {
	if !n.IsLeader() {
		return fmt.Errorf("transfer leadership: %w", ErrNotLeader)
	}
	var f raft.Future
	if to == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		servers, err := n.Servers(ctx)
		if err != nil {
			return fmt.Errorf("transfer leadership: %w", err)
		}
		i := slices.IndexFunc(servers, func(s Server) bool { return s.Name == to })
		if i < 0 || servers[i].Suffrage != "voter" {
			return fmt.Errorf("transfer leadership: %w: %q is not a voter", state.ErrUnknownMember, to)
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(to), raft.ServerAddress(servers[i].Addr))
	}
	if err := wait(ctx, f); err != nil {
		return fmt.Errorf("transfer leadership to %q: %w", to, err)
	}
	return nil
}

// Server is one entry of the raft configuration.
type Server struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // "voter", "nonvoter" or "staging"
	Leader   bool   `json:"leader"`
}

// Servers returns the latest raft configuration this node knows, sorted by
// name.
func (n *Node) Servers(ctx context.Context) ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := wait(ctx, f); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	_, leader := n.raft.LeaderWithID()
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{
			Name: string(s.ID), Addr: string(s.Address),
			Suffrage: suffrage(s.Suffrage), Leader: s.ID == leader,
		})
	}
	slices.SortFunc(out, func(a, b Server) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

func suffrage(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	default:
		return "staging"
	}
}

// Stats is a summary of this node's raft state.
type Stats struct {
	State        string    `json:"state"` // Follower, Candidate, Leader, Shutdown
	Term         uint64    `json:"term"`
	Leader       string    `json:"leader"`
	LastContact  time.Time `json:"last_contact"` // last contact with the leader; zero on the leader
	CommitIndex  uint64    `json:"commit_index"`
	AppliedIndex uint64    `json:"applied_index"`
	LastLogIndex uint64    `json:"last_log_index"`
	NumPeers     int       `json:"num_peers"`
}

// RaftStats returns a summary of this node's raft state.
func (n *Node) RaftStats() Stats {
	_, leader := n.raft.LeaderWithID()
	st := Stats{
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		Leader:       string(leader),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
	}
	if !n.IsLeader() {
		st.LastContact = n.raft.LastContact()
	}
	st.NumPeers, _ = strconv.Atoi(n.raft.Stats()["num_peers"])
	return st
}

// Client returns an HTTP client that presents this node's certificate and
// accepts only servers with a certificate from the cluster CA. Use it for
// peer calls to https://<member address>/...
func (n *Node) Client() *http.Client { return n.client }

// Handle registers an HTTP handler on the node's listener. Requests reach
// it only from a current member, with a verified client certificate from
// the cluster CA that carries the member's pinned key; use PeerName to
// learn which node is calling.
func (n *Node) Handle(pattern string, h http.Handler) {
	n.handler.Handle(pattern, n.requireMember(h))
}

// HandleConn serves the connections that negotiate proto, one of
// Options.StreamProtocols, with h. Like raft's, they must carry a verified
// client certificate from the cluster CA with the key pinned for its name
// (checked in the handshake); h learns the caller's name and should check
// that it is a member.
// Connections that arrive before HandleConn are closed.
func (n *Node) HandleConn(proto string, h ConnHandler) {
	n.mux.handle(proto, h)
}

// PeerName returns the name of the node that made r (its certificate's CN),
// or "" when r carries no verified client certificate.
func PeerName(r *http.Request) string { return pki.PeerName(r.TLS) }

// Leave removes this node from the cluster (handing off leadership first
// when it leads) and shuts it down.
func (n *Node) Leave(ctx context.Context) error {
	if n.IsLeader() {
		servers, err := n.Servers(ctx)
		if err != nil {
			return fmt.Errorf("leave: %w", err)
		}
		if voters(servers) <= 1 {
			return fmt.Errorf("leave: %w: %s is the only voter", ErrLastVoter, n.name)
		}
		if err := n.TransferLeadership(ctx, ""); err != nil {
			return fmt.Errorf("leave: %w", err)
		}
	}
	if err := n.RemoveServer(ctx, n.name); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return n.Shutdown(ctx)
}

func voters(servers []Server) int {
	c := 0
	for _, s := range servers {
		if s.Suffrage == "voter" {
			c++
		}
	}
	return c
}

// Shutdown hands leadership to another voter when this node leads, then
// stops raft, the listener and the stores. It is safe to call twice.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		if n.IsLeader() {
			if servers, err := n.Servers(ctx); err == nil && voters(servers) > 1 {
				if err := n.TransferLeadership(ctx, ""); err != nil {
					n.log.Warn("shutdown: leadership transfer failed", "err", err)
				}
			}
		}
		n.stopErr = n.closeAll()
	})
	return n.stopErr
}

func (n *Node) closeAll() error {
	var errs []error
	if n.raft != nil {
		n.raft.DeregisterObserver(n.observer)
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	if n.cancel != nil {
		n.cancel()
	}
	if n.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := n.srv.Shutdown(ctx); err != nil {
			n.srv.Close()
		}
		cancel()
	}
	if n.mux != nil {
		n.mux.Close()
	}
	if c, ok := n.trans.(interface{ Close() error }); ok && n.raft != nil {
		c.Close()
	}
	if n.client != nil {
		n.client.CloseIdleConnections()
	}
	n.wg.Wait()
	if n.store != nil {
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// withTimeout applies the default ApplyTimeout when ctx has no deadline.
func (n *Node) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, n.timing.ApplyTimeout)
}

// wait waits for a raft future or the context.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
