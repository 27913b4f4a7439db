package rsync

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ALPN is the protocol of the streams that carry pulls between agents.
const ALPN = "tandem-files"

// maxHeader bounds a header line.
const maxHeader = 64 << 10

// helloPipe is what the pipe helper sends the agent first.
type helloPipe struct {
	Token string   `json:"token"`
	Argv  []string `json:"argv"`
}

// Request is what a receiver's agent asks a source's agent to serve.
type Request struct {
	Dir   string   `json:"dir"`
	Epoch uint64   `json:"epoch"`
	Argv  []string `json:"argv"`
	// Quarantine, when set, asks for the peer's quarantine of that epoch
	// beside Dir instead of Dir (the holder restoring what a returning
	// old holder kept).
	Quarantine uint64 `json:"quarantine,omitempty"`
}

// reply is the source's answer before the rsync stream starts.
type reply struct {
	Error string `json:"error,omitempty"`
}

// PullOptions says what to pull from which peer.
type PullOptions struct {
	Peer    string
	Epoch   uint64
	Dir     string
	Exclude []string // rsync patterns, relative to Dir
	Delete  bool
	BWLimit int    // KiB/s, 0: none
	Backup  string // where replaced and deleted files go ("" : nowhere)
	// FromQuarantine pulls the peer's quarantine of that epoch instead of
	// its copy; IgnoreExisting keeps every file this copy already has.
	FromQuarantine uint64
	IgnoreExisting bool
	// ChownTo ("UID:GID") owns what an IgnoreExisting pull adds; Pull
	// sets it to the directory's own owner.
	ChownTo string
}

// Stats is what a pull transferred.
type Stats struct {
	Files int64
	Bytes int64
}

// Transport runs pulls on a receiver and serves them on a source.
type Transport struct {
	// Rsync is the rsync binary ("rsync" on PATH when empty).
	Rsync string
	// Exe is the tandem binary that provides 'files pipe'.
	Exe string
	// Socket is the root-only unix socket the pipe helper connects to.
	Socket string
	// Dial opens a verified mTLS stream for this protocol to a peer.
	Dial func(ctx context.Context, peer string) (net.Conn, error)
	// Wrap, when set, changes the client's command line, e.g. to run it
	// outside a service's sandbox with systemd-run.
	Wrap func(dir string, argv []string) []string
	// Confine, when set, changes the serving rsync's command line so that
	// it can read only dir, the directory it serves: the peer sends it
	// filter rules, and a merge rule would have root's rsync open any
	// file and echo a line of it back.
	Confine func(dir string, argv []string) []string
	// IOTimeout aborts a transfer that moves no data for this long
	// (default 60s).
	IOTimeout time.Duration
	Logger    *slog.Logger

	mu      sync.Mutex
	pending map[string]*pending
}

type pending struct {
	o   PullOptions
	err error
}

func (t *Transport) log() *slog.Logger {
	if t.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Logger
}

func (t *Transport) rsync() string {
	if t.Rsync == "" {
		return "rsync"
	}
	return t.Rsync
}

// Check reports whether rsync can run here, with what to do if not.
func (t *Transport) Check() error {
	if _, err := exec.LookPath(t.rsync()); err != nil {
		return fmt.Errorf("file replication needs rsync: %w (apt-get install rsync)", err)
	}
	return nil
}

// Pull brings o.Dir up to date from o.Peer.
func (t *Transport) Pull(ctx context.Context, o PullOptions) (Stats, error) {
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)
	p := &pending{o: o}
	t.mu.Lock()
	if t.pending == nil {
		t.pending = map[string]*pending{}
	}
	t.pending[token] = p
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.pending, token)
		t.mu.Unlock()
	}()

	if o.IgnoreExisting && o.ChownTo == "" {
		if fi, err := os.Stat(o.Dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				o.ChownTo = fmt.Sprintf("%d:%d", st.Uid, st.Gid)
			}
		}
	}
	argv := t.clientArgs(o, token)
	if t.Wrap != nil {
		argv = t.Wrap(o.Dir, argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &limitWriter{w: &stderr, n: 8 << 10}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	t.mu.Lock()
	perr := p.err
	t.mu.Unlock()
	st := parseStats(stdout.String())
	var ee *exec.ExitError
	switch {
	case err == nil:
		return st, nil
	case errors.As(err, &ee) && ee.ExitCode() == 24:
		// Files vanished on the source during the transfer: they were
		// deleted meanwhile, which the next sync carries.
		return st, nil
	case perr != nil:
		return st, fmt.Errorf("pull %s from %s: %w", o.Dir, o.Peer, perr)
	case ctx.Err() != nil:
		return st, fmt.Errorf("pull %s from %s: %w", o.Dir, o.Peer, ctx.Err())
	}
	return st, fmt.Errorf("pull %s from %s: rsync: %w: %s", o.Dir, o.Peer, err, rsyncMessage(stderr.String()))
}

// rsyncMessage picks what rsync's stderr says went wrong: its first
// messages about a file or a connection rather than its closing summary
// ("some files/attrs were not transferred (see previous errors)"), which
// says nothing alone.
func rsyncMessage(stderr string) string {
	var specific, summary []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
		case strings.HasPrefix(l, "rsync error:"):
			summary = append(summary, l)
		default:
			specific = append(specific, l)
		}
	}
	if len(specific) == 0 && len(summary) > 0 {
		// The sending side's messages stay on the source.
		summary = append(summary, "the source's log names the files (journalctl -u tandem there)")
	}
	msg := strings.Join(append(specific[:min(len(specific), 2)], summary...), "; ")
	if len(msg) > 600 {
		msg = msg[:600] + "..."
	}
	return msg
}

// clientArgs is the receiving rsync's command line.
func (t *Transport) clientArgs(o PullOptions, token string) []string {
	io := t.IOTimeout
	if io <= 0 {
		io = time.Minute
	}
	// --mkpath: a receiver whose directory's parents do not exist yet
	// (the app is not installed here yet) gets them instead of failing
	// every pull; rsync does not pass it on to the sending server.
	argv := []string{t.rsync(), "-rlptgoD", "--mkpath", "--stats", fmt.Sprintf("--timeout=%d", int(io.Seconds()))}
	if o.Delete {
		argv = append(argv, "--delete")
	}
	if o.IgnoreExisting {
		// A restore adds files and nothing else: the quarantine's
		// directories (root's, made by --backup-dir) must not lend their
		// owner, mode or time to the copy's existing ones, "." included,
		// or the app could no longer write its own directory. New files
		// get the copy's owner.
		argv = append(argv, "--ignore-existing", "--no-perms", "--omit-dir-times")
		if o.ChownTo != "" {
			argv = append(argv, "--chown="+o.ChownTo)
		}
	}
	if o.Backup != "" {
		argv = append(argv, "--backup", "--backup-dir="+o.Backup)
	}
	if o.BWLimit > 0 {
		argv = append(argv, fmt.Sprintf("--bwlimit=%d", o.BWLimit))
	}
	for _, e := range o.Exclude {
		argv = append(argv, "--exclude="+e)
	}
	rsh := fmt.Sprintf("%s files pipe --socket %s --token %s", shellQuote(t.Exe), shellQuote(t.Socket), token)
	dir := strings.TrimSuffix(filepath.Clean(o.Dir), "/") + "/"
	return append(argv, "-e", rsh, o.Peer+":"+dir, dir)
}

// shellQuote quotes s for rsync's -e splitting, which honours single and
// double quotes.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t'\"\\") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

var statLine = regexp.MustCompile(`(?m)^(Number of regular files transferred|Total transferred file size): ([0-9,.]+)`)

func parseStats(out string) Stats {
	var st Stats
	for _, m := range statLine.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseInt(strings.NewReplacer(",", "", ".", "").Replace(m[2]), 10, 64)
		if strings.HasPrefix(m[1], "Number") {
			st.Files = n
		} else {
			st.Bytes = n
		}
	}
	return st
}

// Listen serves the pipe helpers of this node's pulls on t.Socket until
// ctx ends.
func (t *Transport) Listen(ctx context.Context) error {
	_ = os.Remove(t.Socket)
	if err := os.MkdirAll(filepath.Dir(t.Socket), 0o750); err != nil {
		return fmt.Errorf("files socket: %w", err)
	}
	ln, err := net.Listen("unix", t.Socket)
	if err != nil {
		return fmt.Errorf("files socket: %w", err)
	}
	if err := os.Chmod(t.Socket, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("files socket: %w", err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			t.log().Warn("files socket accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go t.bridge(ctx, c)
	}
}

// bridge carries one helper's stream to the source.
func (t *Transport) bridge(ctx context.Context, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var h helloPipe
	if err := readJSONLine(br, &h); err != nil {
		t.log().Debug("files pipe: bad hello", "err", err)
		return
	}
	t.mu.Lock()
	p := t.pending[h.Token]
	t.mu.Unlock()
	if p == nil {
		t.log().Warn("files pipe: unknown token; only this agent's own pulls may use the socket")
		return
	}
	fail := func(err error) {
		t.mu.Lock()
		p.err = err
		t.mu.Unlock()
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	peer, err := t.Dial(dctx, p.o.Peer)
	cancel()
	if err != nil {
		fail(fmt.Errorf("connect to %s: %w", p.o.Peer, err))
		return
	}
	defer peer.Close()
	if err := writeJSONLine(peer, Request{Dir: p.o.Dir, Epoch: p.o.Epoch, Argv: h.Argv, Quarantine: p.o.FromQuarantine}); err != nil {
		fail(fmt.Errorf("send request to %s: %w", p.o.Peer, err))
		return
	}
	pr := bufio.NewReader(peer)
	_ = peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	var rep reply
	if err := readJSONLine(pr, &rep); err != nil {
		fail(fmt.Errorf("read answer from %s: %w", p.o.Peer, err))
		return
	}
	_ = peer.SetReadDeadline(time.Time{})
	if rep.Error != "" {
		fail(fmt.Errorf("%s refused: %s", p.o.Peer, rep.Error))
		return
	}
	splice(c, br, peer, pr)
}

// splice copies both ways until both directions end, passing half-closes
// on.
func splice(a net.Conn, ar io.Reader, b net.Conn, br io.Reader) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(b, ar)
		closeWrite(b)
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(a, br)
		closeWrite(a)
	}()
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// Authorize decides whether this node serves r (its Dir cleaned) to peer,
// and returns the local directory to serve (r.Dir itself, or the
// quarantine r names, in production); while serving, still is asked every
// 100ms and the transfer is cut when it turns false (the node lost the
// role that let it serve).
type Authorize func(peer string, r Request) (local string, still func() bool, err error)

// ServeConn serves one pull on a source: c is a verified mTLS stream from
// peer.
func (t *Transport) ServeConn(c net.Conn, peer string, auth Authorize) error {
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	if err := readJSONLine(br, &req); err != nil {
		return fmt.Errorf("files: read request from %s: %w", peer, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	refuse := func(err error) error {
		_ = writeJSONLine(c, reply{Error: err.Error()})
		return err
	}
	req.Dir = filepath.Clean(req.Dir)
	local, still, err := auth(peer, req)
	if err != nil {
		return refuse(err)
	}
	argv, err := ServerArgs(req.Argv, local)
	if err != nil {
		return refuse(err)
	}
	if fi, err := os.Stat(local); err != nil || !fi.IsDir() {
		// rsync would say only "some files were not transferred".
		return refuse(fmt.Errorf("%s does not exist on the source yet (the app creates it, or mkdir it); nothing is sent or deleted until it does", req.Dir))
	}
	argv[0] = t.rsync()
	if t.Confine != nil {
		argv = t.Confine(local, argv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr bytes.Buffer
	// rsync's stdin is fed by a copy Wait does not wait for: the client
	// closes its side only once this side has finished.
	inR, inW, err := os.Pipe()
	if err != nil {
		return refuse(err)
	}
	defer inW.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, c, &limitWriter{w: &stderr, n: 4 << 10}
	cmd.WaitDelay = 2 * time.Second
	if err := writeJSONLine(c, reply{}); err != nil {
		inR.Close()
		return err
	}
	err = cmd.Start()
	inR.Close()
	if err != nil {
		return fmt.Errorf("files: start rsync: %w", err)
	}
	go func() {
		_, _ = io.Copy(inW, br)
		inW.Close()
	}()
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if !still() {
					t.log().Warn("files: this node is no longer the source; cutting a transfer", "peer", peer, "dir", req.Dir)
					cancel()
					c.Close()
					return
				}
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	closeWrite(c)
	if err != nil {
		return fmt.Errorf("files: serve %s to %s: %w: %s", req.Dir, peer, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Pipe is 'tandem files pipe': rsync's -e command on a receiver. It hands
// rsync's stream (in, out) to the agent at socket, with argv, the remote
// command rsync asked for.
func Pipe(ctx context.Context, socket, token string, argv []string, in io.Reader, out io.Writer) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("files pipe: %w (is the agent running?)", err)
	}
	defer c.Close()
	if err := writeJSONLine(c, helloPipe{Token: token, Argv: argv}); err != nil {
		return fmt.Errorf("files pipe: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, in)
		closeWrite(c)
		errc <- err
	}()
	_, err = io.Copy(out, c)
	return err
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func readJSONLine(r *bufio.Reader, v any) error {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return err
		}
		line = append(line, chunk...)
		if len(line) > maxHeader {
			return errors.New("header too long")
		}
		if !isPrefix {
			break
		}
	}
	return json.Unmarshal(line, v)
}

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		_, _ = l.w.Write(p[:k])
	}
	return len(p), nil
}
