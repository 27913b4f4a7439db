// Package files replicates the declared directories from the node that
// holds the floating IP to every other app node, following the committed
// holder and its epoch (see rules.go for who may send and what goes to
// quarantine).
//
// The source's controller watches its directories (Watcher), batches the
// changes briefly and, per receiving peer, asks the peer to catch up now
// (Peers.Sync). The receiver checks the request against its own committed
// state and pulls the source's tree (Transfer.Pull): a receiver writes only
// into its own copy, with options it chooses itself, and the source only
// ever reads. A periodic full scan catches lost events and queue overflows
// and finds SQLite databases, which are reported and left out rather than
// copied mid-write.
//
// The package decides; the engines are providers behind Transfer and
// Watcher (rsync carried over the cluster's mTLS, and inotify).
package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// ErrNotSource refuses a catch-up request from a node that is not the
// committed source of the epoch it claims.
var ErrNotSource = errors.New("not the source")

// ErrUnknownPath refuses a request about a directory this node does not
// declare.
var ErrUnknownPath = errors.New("directory not declared here")

// ErrBadRequest refuses a malformed catch-up request.
var ErrBadRequest = errors.New("bad sync request")

// maxSkip bounds the databases a request may leave out.
const maxSkip = 1024

// checkSkip accepts only what SkipPatterns makes: patterns anchored at the
// transfer's root. The receiver passes them to its own rsync as excludes,
// and rsync reads a leading "+ " as an include and "!" as "forget every
// exclude", which would lift the protection excluded files have from
// deletion.
func checkSkip(skip []string) error {
	if len(skip) > maxSkip {
		return fmt.Errorf("%w: %d paths to skip; at most %d", ErrBadRequest, len(skip), maxSkip)
	}
	for _, p := range skip {
		if len(p) < 2 || p[0] != '/' || strings.ContainsRune(p, 0) || len(p) > 4096 {
			return fmt.Errorf("%w: skip pattern %q is not anchored at the directory (the source runs an incompatible tandem)", ErrBadRequest, p)
		}
	}
	return nil
}

// Spec is one declared directory.
type Spec struct {
	Dir     string
	Exclude []string // rsync patterns
	Delete  bool     // the source's deletes propagate
	BWLimit int      // KiB/s per transfer, 0: none
}

// Pull is one catch-up of a receiver's copy from the source.
type Pull struct {
	From  string // the source node
	Epoch uint64 // its epoch of authority
	Spec  Spec
	// Skip are paths relative to Spec.Dir left out of the transfer on both
	// sides (live SQLite databases and their journals).
	Skip []string
	// Quarantine, when set, is where files the pull would delete or
	// replace go instead.
	Quarantine string
	// FromQuarantine, when set, pulls From's quarantine of that epoch
	// instead of its copy, adding only the files this copy lacks (never
	// replacing, never deleting): the holder restoring what a returning
	// old holder kept.
	FromQuarantine uint64
}

// PullResult says what a pull changed.
type PullResult struct {
	Files int64 // files transferred
	Bytes int64 // bytes transferred
}

// Transfer pulls a directory from a peer into this node's copy; the
// receiver writes each file to a temporary name and renames it.
type Transfer interface {
	Pull(ctx context.Context, p Pull) (PullResult, error)
}

// SyncRequest asks a receiver to catch up now; it returns when it has.
type SyncRequest struct {
	Dir   string   `json:"dir"`
	Epoch uint64   `json:"epoch"`
	Skip  []string `json:"skip,omitempty"`
}

// SyncReply is the receiver's answer.
type SyncReply struct {
	Files       int64 `json:"files"`
	Bytes       int64 `json:"bytes"`
	Quarantined bool  `json:"quarantined,omitempty"` // the pull quarantined instead of deleting
}

// Peers reaches the receivers (cluster.Node.Call in production).
type Peers interface {
	Sync(ctx context.Context, peer string, r SyncRequest) (SyncReply, error)
}

// Change is one batch of file events under a declared directory.
type Change struct {
	// Path is the changed file ("" when unknown).
	Path  string
	At    time.Time
	Bytes int64 // size of the changed files, when known
	// Overflow says events were lost: only a full sync is safe.
	Overflow bool
}

// Watcher reports changes under dir until ctx ends.
type Watcher interface {
	Watch(ctx context.Context, dir string, changed func(Change)) error
}

// Options configures a Controller.
type Options struct {
	Name    string
	Specs   []Spec
	Machine *state.Machine
	// Held reports what failover has configured here.
	Held     func() Held
	Transfer Transfer
	Peers    Peers
	Watcher  Watcher // nil: only full scans find changes
	// StateDir keeps the receivers' marks (which source and epoch each
	// directory last caught up with) across restarts.
	StateDir string
	// Batch is how long changes are collected before a sync (default
	// 50ms); FullScan is the period of full scans (default 1m).
	Batch    time.Duration
	FullScan time.Duration
	// Now is time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// Controller runs replication on one node.
type Controller struct {
	o     Options
	log   *slog.Logger
	paths map[string]*dirState
	order []string

	mu       sync.Mutex
	sending  bool
	epoch    uint64 // the epoch sent in, while sending
	lastFact encodedFact
	wakeMain chan struct{}
}

type dirState struct {
	spec  Spec
	recv  sync.Mutex // one pull at a time
	links map[string]*link

	// guarded by Controller.mu
	gen        uint64
	lastScan   time.Time
	scanErr    string
	watchErr   string
	sqlite     []string
	skip       []string
	mark       Mark
	lastPull   time.Time
	pullFrom   string
	pullErr    string
	pullTook   time.Duration
	quarantine []Quarantine
}

// Quarantine is one epoch's quarantine beside a directory.
type Quarantine struct {
	Dir   string `json:"dir"`
	Epoch uint64 `json:"epoch"`
	Files int    `json:"files"`
}

type link struct {
	peer string
	wake chan struct{}
	stop context.CancelFunc

	// guarded by Controller.mu
	dirty         bool
	flush         bool
	dirtySince    time.Time
	dirtyBytes    int64
	inflightSince time.Time
	inflightBytes int64
	acked         uint64
	ackCh         chan struct{} // closed at every successful sync
	lastOK        time.Time
	lastErr       string
	syncs, fails  int
}

// New returns a controller; Run starts it.
func New(o Options) (*Controller, error) {
	if o.Machine == nil || o.Held == nil || o.Transfer == nil || o.Peers == nil {
		return nil, errors.New("files: Options need Machine, Held, Transfer and Peers")
	}
	if o.Batch <= 0 {
		o.Batch = 50 * time.Millisecond
	}
	if o.FullScan <= 0 {
		o.FullScan = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{o: o, log: o.Logger, paths: map[string]*dirState{}, wakeMain: make(chan struct{}, 1)}
	for _, s := range o.Specs {
		s.Dir = filepath.Clean(s.Dir)
		if _, dup := c.paths[s.Dir]; dup {
			return nil, fmt.Errorf("files: %s is declared twice", s.Dir)
		}
		c.paths[s.Dir] = &dirState{spec: s, links: map[string]*link{}}
		c.order = append(c.order, s.Dir)
	}
	c.loadMarks()
	return c, nil
}

// Run replicates until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if len(c.paths) == 0 {
		<-ctx.Done()
		return nil
	}
	if c.o.Watcher != nil {
		for _, dir := range c.order {
			go func() {
				err := c.o.Watcher.Watch(ctx, dir, func(ch Change) { c.touch(dir, ch) })
				if err != nil && ctx.Err() == nil {
					c.log.Warn("watching a replicated directory failed; full scans still find changes", "dir", dir, "err", err)
					c.mu.Lock()
					c.paths[dir].watchErr = err.Error()
					c.mu.Unlock()
				}
			}()
		}
	}
	c.scan()
	scan := time.NewTicker(c.o.FullScan)
	defer scan.Stop()
	for {
		c.reconcile(ctx)
		select {
		case <-ctx.Done():
			c.stopLinks()
			return nil
		case <-c.o.Machine.Changed(state.FailoverDomain):
		case <-c.o.Machine.Changed(state.MembershipDomain):
		case <-c.wakeMain:
		case <-scan.C:
			c.scan()
			c.markAll()
		case <-time.After(missedKick): // in case a Kick was missed
		}
	}
}

// missedKick bounds how long the loops sleep without a wakeup, as a
// backstop: every change they act on wakes them. It is long because an idle
// agent's CPU goes mostly to its wakeups.
const missedKick = 5 * time.Second

// Kick makes the controller look at the state and at what failover holds
// now: failover calls it (through its events) when it configures or
// releases the IP, which changes who may send without a commit.
func (c *Controller) Kick() { poke(c.wakeMain) }

// Promote, Demote and Fault make the controller a failover.Events
// subscriber.
func (c *Controller) Promote(uint64)       { c.Kick() }
func (c *Controller) Demote(uint64)        { c.Kick() }
func (c *Controller) Fault(uint64, string) { c.Kick() }

// reconcile follows the committed state: which peers receive, and whether
// this node sends.
func (c *Controller) reconcile(ctx context.Context) {
	s := c.o.Machine.View()
	epoch, send := MaySend(c.o.Name, s.Holder, c.o.Held())
	var peers []string
	for name, m := range s.Members {
		if name != c.o.Name && m.Role == state.RoleApp && !m.Pending {
			peers = append(peers, name)
		}
	}
	c.mu.Lock()
	started := send && (!c.sending || c.epoch != epoch)
	if send != c.sending || epoch != c.epoch {
		c.log.Info("file replication direction", "sending", send, "epoch", epoch, "holder", s.Holder.Node)
	}
	c.sending, c.epoch = send, epoch
	for _, dir := range c.order {
		p := c.paths[dir]
		for name, l := range p.links {
			if !slices.Contains(peers, name) {
				l.stop()
				delete(p.links, name)
			}
		}
		for _, name := range peers {
			if _, ok := p.links[name]; ok {
				continue
			}
			lctx, stop := context.WithCancel(ctx)
			l := &link{peer: name, wake: make(chan struct{}, 1), stop: stop, ackCh: make(chan struct{})}
			p.links[name] = l
			if send {
				c.markLocked(l, c.o.Now(), 0)
			}
			go c.runLink(lctx, p, l)
		}
	}
	c.mu.Unlock()
	if started {
		// A new source starts with a full sync to everyone.
		c.markAll()
	}
	if send {
		c.mu.Lock()
		for _, p := range c.paths {
			for _, l := range p.links {
				poke(l.wake)
			}
		}
		c.mu.Unlock()
	}
}

func (c *Controller) stopLinks() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.paths {
		for _, l := range p.links {
			l.stop()
		}
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// touch records a change under dir; only the source replicates its own
// changes (a receiver's changes are its pulls).
func (c *Controller) touch(dir string, ch Change) {
	// A database found by its event is left out before the sync that the
	// event triggers, not only from the next full scan on.
	db, isDB := "", false
	if ch.Path != "" {
		db, isDB = SQLiteFile(dir, ch.Path)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.paths[dir]
	if p == nil {
		return
	}
	if isDB && !slices.Contains(p.sqlite, db) {
		p.sqlite = append(slices.Clone(p.sqlite), db)
		slices.Sort(p.sqlite)
		p.skip = SkipPatterns(p.sqlite)
		c.log.Warn("a SQLite database in a replicated directory is not copied: a copy taken mid-write is corrupt; keep it outside the directory and back it up with its own tools",
			"dir", dir, "database", db)
	}
	if !c.sending {
		return
	}
	p.gen++
	for _, l := range p.links {
		c.markLocked(l, ch.At, ch.Bytes)
	}
}

// markAll makes every link of a source due for a full sync.
func (c *Controller) markAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sending {
		return
	}
	now := c.o.Now()
	for _, p := range c.paths {
		p.gen++
		for _, l := range p.links {
			c.markLocked(l, now, 0)
		}
	}
}

func (c *Controller) markLocked(l *link, at time.Time, bytes int64) {
	if at.IsZero() {
		at = c.o.Now()
	}
	if l.dirtySince.IsZero() || at.Before(l.dirtySince) {
		l.dirtySince = at
	}
	l.dirty = true
	l.dirtyBytes += bytes
	poke(l.wake)
}

// runLink keeps one peer's copy of one directory caught up while this
// node is the source.
func (c *Controller) runLink(ctx context.Context, p *dirState, l *link) {
	var backoff time.Duration
	for {
		var epoch uint64
		var flush bool
		for {
			c.mu.Lock()
			due, send := l.dirty, c.sending
			epoch, flush = c.epoch, l.flush
			c.mu.Unlock()
			if due && send {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
			case <-time.After(missedKick):
			}
		}
		if !flush {
			// Collect the rest of a burst of events into one sync.
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.o.Batch):
			}
		}
		c.mu.Lock()
		if !c.sending || c.epoch != epoch {
			c.mu.Unlock()
			continue
		}
		gen := p.gen
		l.inflightSince, l.inflightBytes = l.dirtySince, l.dirtyBytes
		l.dirty, l.flush, l.dirtySince, l.dirtyBytes = false, false, time.Time{}, 0
		req := SyncRequest{Dir: p.spec.Dir, Epoch: epoch, Skip: slices.Clone(p.skip)}
		c.mu.Unlock()

		_, err := c.o.Peers.Sync(ctx, l.peer, req)

		c.mu.Lock()
		if err != nil {
			l.fails++
			l.lastErr = err.Error()
			if l.dirtySince.IsZero() || (!l.inflightSince.IsZero() && l.inflightSince.Before(l.dirtySince)) {
				l.dirtySince = l.inflightSince
			}
			l.dirtyBytes += l.inflightBytes
			l.dirty = true
		} else {
			l.syncs++
			l.lastErr = ""
			l.lastOK = c.o.Now()
			if gen > l.acked {
				l.acked = gen
			}
			close(l.ackCh)
			l.ackCh = make(chan struct{})
		}
		l.inflightSince, l.inflightBytes = time.Time{}, 0
		c.mu.Unlock()
		if err == nil {
			backoff = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		c.log.Debug("sync failed; retrying", "dir", p.spec.Dir, "peer", l.peer, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// Flush catches node to up with everything this node, the source, has
// now, and returns when it has, or when ctx ends. A planned move calls it
// after the connections have drained and before the IP moves, so the
// lag at the move is zero. Other receivers are synced too, but not waited
// for.
func (c *Controller) Flush(ctx context.Context, to string) error {
	type wait struct {
		dir    string
		l      *link
		target uint64
	}
	var waits []wait
	c.mu.Lock()
	if !c.sending {
		c.mu.Unlock()
		return nil // nothing to send from here
	}
	now := c.o.Now()
	for _, dir := range c.order {
		p := c.paths[dir]
		p.gen++
		for name, l := range p.links {
			c.markLocked(l, now, 0)
			l.flush = true
			if name == to {
				waits = append(waits, wait{dir, l, p.gen})
			}
		}
	}
	c.mu.Unlock()
	start := time.Now()
	for _, w := range waits {
		for {
			c.mu.Lock()
			done, ch, lastErr := w.l.acked >= w.target, w.l.ackCh, w.l.lastErr
			c.mu.Unlock()
			if done {
				break
			}
			select {
			case <-ctx.Done():
				if lastErr != "" {
					return fmt.Errorf("flush %s to %s: %w (last error: %s)", w.dir, to, ctx.Err(), lastErr)
				}
				return fmt.Errorf("flush %s to %s: %w", w.dir, to, ctx.Err())
			case <-ch:
			}
		}
	}
	if len(waits) > 0 {
		c.log.Info("flushed file replication before the planned move", "to", to, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// SyncAll makes every directory due for a full sync now (tandem files
// sync --full); on a receiver it has nothing to do.
func (c *Controller) SyncAll() bool {
	c.scan()
	c.mu.Lock()
	sending := c.sending
	c.mu.Unlock()
	c.markAll()
	return sending
}

// ErrNotHolder refuses a restore on a node that is not the source.
var ErrNotHolder = errors.New("not the holder")

// Restore, on the holder, adds to dir what the quarantine of epoch on
// node from holds and this copy lacks (files it has are kept), then
// replicates them: 'tandem files restore'. It returns how many files came
// back.
func (c *Controller) Restore(ctx context.Context, from, dir string, epoch uint64) (int64, error) {
	p := c.paths[filepath.Clean(dir)]
	if p == nil {
		return 0, fmt.Errorf("%w: %q (the [[files]] paths here: %v)", ErrUnknownPath, dir, c.order)
	}
	c.mu.Lock()
	sending, cur := c.sending, c.epoch
	c.mu.Unlock()
	if !sending {
		return 0, fmt.Errorf("%w: restore into the copy that replicates: run this on the holder (%s)", ErrNotHolder, c.o.Machine.View().Holder.Node)
	}
	if from == c.o.Name {
		return 0, fmt.Errorf("the quarantine is on this node, the holder: rsync -a --ignore-existing %s/ %s/", QuarantineDir(p.spec.Dir, epoch), p.spec.Dir)
	}
	if m, ok := c.o.Machine.View().Members[from]; !ok || m.Role != state.RoleApp {
		return 0, fmt.Errorf("%q is not an app node of this cluster", from)
	}
	if err := checkLinks(p.spec.Dir); err != nil {
		return 0, err
	}
	res, err := c.o.Transfer.Pull(ctx, Pull{From: from, Epoch: cur, Spec: p.spec, FromQuarantine: epoch})
	if err != nil {
		return 0, fmt.Errorf("restore %s from %s's quarantine of epoch %d: %w", p.spec.Dir, from, epoch, err)
	}
	c.log.Info("restored quarantined files into the holder's copy", "dir", p.spec.Dir, "from", from, "epoch", epoch, "files", res.Files)
	c.touch(p.spec.Dir, Change{At: c.o.Now(), Bytes: res.Bytes})
	return res.Files, nil
}

// Receive handles a source's request to catch up: it checks the request
// against this node's committed state and pulls. Quarantine applies to
// the first catch-up from a source in an epoch (see QuarantineFor).
func (c *Controller) Receive(ctx context.Context, from string, r SyncRequest) (SyncReply, error) {
	p := c.paths[filepath.Clean(r.Dir)]
	if p == nil {
		return SyncReply{}, fmt.Errorf("%w: %q (declare it in [[files]] on every app node)", ErrUnknownPath, r.Dir)
	}
	if err := checkSkip(r.Skip); err != nil {
		return SyncReply{}, err
	}
	if err := MayReceive(c.o.Name, from, r.Epoch, c.o.Machine.View().Holder); err != nil {
		return SyncReply{}, err
	}
	p.recv.Lock()
	defer p.recv.Unlock()
	// Checked again: the state may have moved on while this waited.
	if err := MayReceive(c.o.Name, from, r.Epoch, c.o.Machine.View().Holder); err != nil {
		return SyncReply{}, err
	}
	c.mu.Lock()
	q := QuarantineFor(p.spec.Dir, p.mark, from, r.Epoch)
	c.mu.Unlock()
	for _, path := range []string{p.spec.Dir, q} {
		if path == "" {
			continue
		}
		if err := checkLinks(path); err != nil {
			c.log.Warn("not writing into a replicated directory: a symlink on the way to it could point root's rsync anywhere", "dir", p.spec.Dir, "err", err)
			c.mu.Lock()
			p.lastPull, p.pullFrom, p.pullErr = c.o.Now(), from, err.Error()
			c.mu.Unlock()
			return SyncReply{}, err
		}
	}
	start := c.o.Now()
	res, err := c.o.Transfer.Pull(ctx, Pull{From: from, Epoch: r.Epoch, Spec: p.spec, Skip: r.Skip, Quarantine: q})
	c.mu.Lock()
	p.lastPull, p.pullFrom, p.pullTook = c.o.Now(), from, c.o.Now().Sub(start)
	if err != nil {
		p.pullErr = err.Error()
		c.mu.Unlock()
		return SyncReply{}, err
	}
	p.pullErr = ""
	changed := p.mark != Mark{Source: from, Epoch: r.Epoch}
	p.mark = Mark{Source: from, Epoch: r.Epoch}
	c.mu.Unlock()
	if changed {
		c.saveMarks()
	}
	if q != "" {
		c.log.Info("caught up from a new source; what only this node had is in quarantine", "dir", p.spec.Dir, "from", from, "epoch", r.Epoch, "quarantine", q)
		c.countQuarantine(p)
	}
	return SyncReply{Files: res.Files, Bytes: res.Bytes, Quarantined: q != ""}, nil
}

// scan walks every directory: SQLite databases and quarantines.
func (c *Controller) scan() {
	for _, dir := range c.order {
		p := c.paths[dir]
		dbs, err := FindSQLite(dir)
		c.mu.Lock()
		p.lastScan = c.o.Now()
		p.scanErr = ""
		if err != nil {
			p.scanErr = err.Error()
		}
		if !slices.Equal(dbs, p.sqlite) && len(dbs) > 0 {
			c.log.Warn("SQLite databases in a replicated directory are not copied: a copy taken mid-write is corrupt; keep them outside the directory and replicate them with their own tools (or move to a database server)",
				"dir", dir, "databases", dbs)
		}
		p.sqlite = dbs
		p.skip = SkipPatterns(dbs)
		c.mu.Unlock()
		c.countQuarantine(p)
	}
}

func (c *Controller) countQuarantine(p *dirState) {
	root := QuarantineRoot(p.spec.Dir)
	ents, err := os.ReadDir(root)
	var qs []Quarantine
	if err == nil {
		for _, e := range ents {
			var epoch uint64
			if _, err := fmt.Sscanf(e.Name(), "epoch-%d", &epoch); err != nil || !e.IsDir() {
				continue
			}
			dir := filepath.Join(root, e.Name())
			n := 0
			_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					n++
				}
				return nil
			})
			if n > 0 {
				qs = append(qs, Quarantine{Dir: dir, Epoch: epoch, Files: n})
			}
		}
	}
	sort.Slice(qs, func(i, j int) bool { return qs[i].Epoch < qs[j].Epoch })
	c.mu.Lock()
	p.quarantine = qs
	c.mu.Unlock()
}

const marksFile = "marks.json"

func (c *Controller) loadMarks() {
	if c.o.StateDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(c.o.StateDir, marksFile))
	if err != nil {
		return
	}
	var m map[string]Mark
	if json.Unmarshal(b, &m) != nil {
		c.log.Warn("files: ignoring an unreadable marks file; the next catch-up quarantines instead of deleting", "file", filepath.Join(c.o.StateDir, marksFile))
		return
	}
	for dir, mk := range m {
		if p := c.paths[dir]; p != nil {
			p.mark = mk
		}
	}
}

func (c *Controller) saveMarks() {
	if c.o.StateDir == "" {
		return
	}
	c.mu.Lock()
	m := map[string]Mark{}
	for dir, p := range c.paths {
		m[dir] = p.mark
	}
	c.mu.Unlock()
	b, _ := json.Marshal(m)
	if err := os.MkdirAll(c.o.StateDir, 0o700); err != nil {
		c.log.Warn("files: could not save marks", "err", err)
		return
	}
	tmp := filepath.Join(c.o.StateDir, marksFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		c.log.Warn("files: could not save marks", "err", err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(c.o.StateDir, marksFile)); err != nil {
		c.log.Warn("files: could not save marks", "err", err)
	}
}
