package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/pki"
)

// ALPN protocol names on the node's single TLS listener. A connection that
// negotiates ALPNRaft carries raft RPCs, one that negotiates a protocol
// registered with HandleConn goes to its handler; anything else is HTTP.
const (
	ALPNRaft = "tandem-raft"
	alpnH2   = "h2"
	alpnH1   = "http/1.1"
)

const handshakeTimeout = 10 * time.Second

// Limits on connections without a client certificate: only joins and the
// CA download come that way, one request each, so a few at a time for a
// short while is plenty, and a crowd of idle ones cannot exhaust the
// agent's descriptors and memory.
const (
	maxAnonymousConns     = 32
	maxAnonymousPerSource = 4 // so one address cannot take every slot
	anonymousConnLifetime = 30 * time.Second
)

// maxHandshakesPerSource bounds the connections one address may have in
// their TLS handshake at once. Until its handshake ends a connection is
// anyone's: without a bound, idle connections that never send a
// ClientHello (3000 in the lab) each held a descriptor and a goroutine for
// the whole handshake timeout. A member opens a few at a time (raft, API,
// probes, file streams), each handshake done in milliseconds.
const maxHandshakesPerSource = 32

// muxListener accepts TLS connections on one port and routes them by ALPN
// after the handshake: raft connections (which must carry a verified
// client certificate) to raft, the rest to the HTTP server.
type muxListener struct {
	ln   net.Listener
	raft *connListener // nil when raft runs on another transport (tests)
	http *connListener
	log  *slog.Logger

	// Handlers of other packages' stream protocols (HandleConn), and the
	// open raft and stream connections, which Close closes and revoke
	// checks again.
	smu      sync.Mutex
	handlers map[string]ConnHandler
	streams  map[*tls.Conn]bool // true for raft connections

	// mu orders the routers' wg.Add before Close's wg.Wait: an Add racing
	// a Wait at count zero could leave a router running after Close.
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup

	// raftPeer, when set, says whether a certificate name may open a raft
	// connection (see Node.raftPeers).
	raftPeer func(name string) bool
	// streamPeer, when set, says whether a certificate name may open a
	// stream (see Node.member).
	streamPeer func(name string) bool
	// raftAddr, when set, is a raft server's address by name: every RPC
	// on a raft connection must name the certificate's node at that
	// address (see guardRaft).
	raftAddr func(name string) (string, bool)

	hsMu       sync.Mutex
	hsBySource map[string]int // connections in their handshake, by address

	anon         chan struct{} // one token per open anonymous connection
	anonLifetime time.Duration
	anonMu       sync.Mutex
	anonBySource map[string]int
}

func newMux(ln net.Listener, advertise string, withRaft bool, log *slog.Logger) *muxListener {
	addr := advertiseAddr(advertise)
	m := &muxListener{ln: ln, http: newConnListener(addr), log: log,
		anon: make(chan struct{}, maxAnonymousConns), anonLifetime: anonymousConnLifetime, anonBySource: map[string]int{},
		hsBySource: map[string]int{}, handlers: map[string]ConnHandler{}, streams: map[*tls.Conn]bool{}}
	if withRaft {
		m.raft = newConnListener(addr)
	}
	return m
}

func (m *muxListener) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			return
		}
		m.wg.Add(1)
		m.mu.Unlock()
		source := remoteHost(c)
		if !m.startHandshake(source) {
			m.wg.Done()
			m.log.Debug("too many connections in their handshake from one address; refused", "remote", c.RemoteAddr())
			c.Close()
			continue
		}
		go func() {
			defer m.wg.Done()
			m.route(c, func() { m.endHandshake(source) })
		}()
	}
}

// remoteHost is the address (without the port) a connection comes from.
func remoteHost(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// startHandshake takes one of source's handshake slots; false when it has
// none left.
func (m *muxListener) startHandshake(source string) bool {
	m.hsMu.Lock()
	defer m.hsMu.Unlock()
	if m.hsBySource[source] >= maxHandshakesPerSource {
		return false
	}
	m.hsBySource[source]++
	return true
}

func (m *muxListener) endHandshake(source string) {
	m.hsMu.Lock()
	defer m.hsMu.Unlock()
	if m.hsBySource[source]--; m.hsBySource[source] <= 0 {
		delete(m.hsBySource, source)
	}
}

// route finishes c's handshake, calls handshakeDone, and hands c on by
// its ALPN protocol.
func (m *muxListener) route(c net.Conn, handshakeDone func()) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		handshakeDone()
		c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	handshakeDone()
	if err != nil {
		// Foreign certificates end here; debug only, since port scanners
		// would otherwise fill the log.
		m.log.Debug("tls handshake refused", "remote", c.RemoteAddr(), "err", err)
		tc.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == ALPNRaft {
		if m.raft == nil || pki.PeerName(&cs) == "" {
			m.log.Debug("raft connection without a client certificate refused", "remote", c.RemoteAddr())
			tc.Close()
			return
		}
		if peer := pki.PeerName(&cs); m.raftPeer != nil && !m.raftPeer(peer) {
			m.log.Warn("raft connection from a node that is not a member refused", "peer", peer, "remote", c.RemoteAddr())
			tc.Close()
			return
		}
		m.smu.Lock()
		m.streams[tc] = true
		m.smu.Unlock()
		var conn net.Conn = tc
		if m.raftAddr != nil {
			conn = guardRaft(tc, pki.PeerName(&cs), m.raftAddr, m.log)
		}
		m.raft.deliver(&trackedConn{Conn: conn, tc: tc, m: m})
		return
	}
	m.smu.Lock()
	h, ok := m.handlers[cs.NegotiatedProtocol]
	if ok {
		m.streams[tc] = false
	}
	m.smu.Unlock()
	switch {
	case ok:
		m.serveStream(tc, &cs, h)
	case cs.NegotiatedProtocol != "" && cs.NegotiatedProtocol != alpnH2 && cs.NegotiatedProtocol != alpnH1:
		tc.Close() // a stream protocol whose handler is not registered yet
	case pki.PeerName(&cs) == "":
		m.deliverAnonymous(tc, cs.NegotiatedProtocol)
	default:
		m.http.deliver(tc)
	}
}

// ConnHandler serves one connection of a protocol registered with
// HandleConn; peer is the name on its verified client certificate. It
// returns when the connection ends.
type ConnHandler func(c net.Conn, peer string) error

func (m *muxListener) handle(proto string, h ConnHandler) {
	m.smu.Lock()
	defer m.smu.Unlock()
	m.handlers[proto] = h
}

func (m *muxListener) serveStream(tc *tls.Conn, cs *tls.ConnectionState, h ConnHandler) {
	defer func() {
		m.smu.Lock()
		delete(m.streams, tc)
		m.smu.Unlock()
		tc.Close()
	}()
	peer := pki.PeerName(cs)
	if peer == "" {
		m.log.Debug("stream without a client certificate refused", "protocol", cs.NegotiatedProtocol, "remote", tc.RemoteAddr())
		return
	}
	if m.streamPeer != nil && !m.streamPeer(peer) {
		m.log.Warn("stream from a node that is not a member refused", "protocol", cs.NegotiatedProtocol, "peer", peer, "remote", tc.RemoteAddr())
		return
	}
	if err := h(tc, peer); err != nil {
		m.log.Debug("stream ended", "protocol", cs.NegotiatedProtocol, "peer", peer, "err", err)
	}
}

// trackedConn is a raft connection the mux tracks until raft closes it.
type trackedConn struct {
	net.Conn // what raft reads: tc, or its guard (which closes tc)
	tc       *tls.Conn
	m        *muxListener
}

func (c *trackedConn) Close() error {
	c.m.smu.Lock()
	delete(c.m.streams, c.tc)
	c.m.smu.Unlock()
	return c.Conn.Close()
}

// revoke closes the open raft and stream connections whose peer allowed
// no longer admits (a member removed, or its pin changed since the
// connection was accepted).
func (m *muxListener) revoke(allowed func(raft bool, cert *x509.Certificate) error) {
	m.smu.Lock()
	defer m.smu.Unlock()
	for tc, isRaft := range m.streams {
		cs := tc.ConnectionState()
		if len(cs.VerifiedChains) == 0 {
			continue
		}
		if err := allowed(isRaft, cs.VerifiedChains[0][0]); err != nil {
			m.log.Warn("connection closed: its peer is no longer admitted", "peer", pki.PeerName(&cs), "remote", tc.RemoteAddr(), "err", err)
			tc.Close()
			delete(m.streams, tc)
		}
	}
}

// deliverAnonymous hands a connection without a client certificate to the
// HTTP server within the anonymous limits: HTTP/1.1 only (Join speaks it),
// at most maxAnonymousConns at once and maxAnonymousPerSource from one
// address, each closed after anonLifetime and
// after its one request (see oneRequestForAnonymous).
func (m *muxListener) deliverAnonymous(tc *tls.Conn, proto string) {
	if proto == alpnH2 {
		m.log.Debug("anonymous HTTP/2 connection refused", "remote", tc.RemoteAddr())
		tc.Close()
		return
	}
	source := remoteHost(tc)
	m.anonMu.Lock()
	full := m.anonBySource[source] >= maxAnonymousPerSource
	if !full {
		select {
		case m.anon <- struct{}{}:
			m.anonBySource[source]++
		default:
			full = true
		}
	}
	m.anonMu.Unlock()
	if full {
		m.log.Debug("too many anonymous connections; refused", "remote", tc.RemoteAddr())
		tc.Close()
		return
	}
	release := func() {
		m.anonMu.Lock()
		if m.anonBySource[source]--; m.anonBySource[source] <= 0 {
			delete(m.anonBySource, source)
		}
		m.anonMu.Unlock()
		<-m.anon
	}
	c := &anonConn{Conn: tc, release: release, done: make(chan struct{})}
	// A timer, not a deadline: the HTTP server sets its own deadlines.
	go func(lifetime time.Duration) {
		t := time.NewTimer(lifetime)
		defer t.Stop()
		select {
		case <-t.C:
			c.Close()
		case <-c.done:
		}
	}(m.anonLifetime)
	m.http.deliver(c)
}

// anonConn is an anonymous connection; closing it frees its slot. It hides
// the *tls.Conn from the HTTP server, so its requests carry no TLS state and
// every member-only endpoint refuses them.
type anonConn struct {
	net.Conn
	once    sync.Once
	release func()
	done    chan struct{} // closed on Close: stops the lifetime timer
}

func (c *anonConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.release()
	})
	return c.Conn.Close()
}

// oneRequestForAnonymous closes an anonymous connection after its request.
func oneRequestForAnonymous(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func (m *muxListener) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	err := m.ln.Close()
	m.smu.Lock()
	for c := range m.streams {
		c.Close()
	}
	m.smu.Unlock()
	m.http.Close()
	if m.raft != nil {
		m.raft.Close()
	}
	m.wg.Wait()
	return err
}

// connListener is a net.Listener fed by the mux.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// advertiseAddr is the address raft announces as this node's: raft takes it
// from the stream layer's Addr, and peers dial it.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// streamLayer is raft's view of the mux: it accepts the raft connections
// and dials peers with mTLS and the raft ALPN.
type streamLayer struct {
	*connListener
	tls *tls.Config
	// peerAt names the member expected at an address; the dialled node's
	// certificate must carry that name.
	peerAt func(addr string) (string, bool)
	// pin refuses a certificate whose key is not the one pinned for its
	// name (Node.checkPin).
	pin func(*x509.Certificate) error
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(l *connListener, creds *pki.Node, peerAt func(addr string) (string, bool), pin func(*x509.Certificate) error) *streamLayer {
	cfg := creds.ClientConfig()
	cfg.NextProtos = []string{ALPNRaft}
	return &streamLayer{connListener: l, tls: cfg, peerAt: peerAt, pin: pin}
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.tls}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("dial raft %s: %w", address, err)
	}
	tc := c.(*tls.Conn)
	cs := tc.ConnectionState()
	if p := cs.NegotiatedProtocol; p != ALPNRaft {
		tc.Close()
		return nil, fmt.Errorf("dial raft %s: peer negotiated %q, not %q", address, p, ALPNRaft)
	}
	if s.peerAt != nil {
		want, ok := s.peerAt(string(address))
		// The handshake verified the chain (ClientConfig's VerifyConnection),
		// so the leaf's name is the peer's.
		got := ""
		if len(cs.PeerCertificates) > 0 {
			got = cs.PeerCertificates[0].Subject.CommonName
		}
		if !ok || got != want {
			tc.Close()
			return nil, fmt.Errorf("dial raft %s: the node there is %q, but the members name %q at that address", address, got, want)
		}
	}
	if s.pin != nil {
		if err := s.pin(cs.PeerCertificates[0]); err != nil {
			tc.Close()
			return nil, fmt.Errorf("dial raft %s: %w", address, err)
		}
	}
	return tc, nil
}
