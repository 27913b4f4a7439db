package liveness

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// StreamTransport dials the mesh's persistent mutual-TLS streams. Each pair
// of nodes shares one stream, which the node with the smaller name dials:
// both ends send their messages on it, a message costs one small TLS record
// and one write, and TCP's acknowledgements ride on the messages going the
// other way. It also offers ALPNv1, which a node of an older version
// negotiates during a rolling upgrade (see Mesh.ServeConnV1).
type StreamTransport struct {
	// TLS presents this node's certificate and trusts the cluster CA; its
	// NextProtos is replaced by ALPN.
	TLS *tls.Config
	// Verify, when set, checks the node that answered at addr once the
	// handshake has verified its chain: that it is the member known there,
	// with the key pinned for it (cluster.Node.VerifyPeerAt). A connection
	// it refuses is closed and the dial fails.
	Verify func(addr string, cs tls.ConnectionState) error

	once sync.Once
	cfg  *tls.Config
}

// Dial implements Transport.
func (t *StreamTransport) Dial(ctx context.Context, addr string, deadline time.Time) (net.Conn, error) {
	t.once.Do(func() {
		t.cfg = t.TLS.Clone()
		t.cfg.NextProtos = []string{ALPN, ALPNv1}
	})
	d := &tls.Dialer{NetDialer: &net.Dialer{Deadline: deadline, KeepAlive: 5 * time.Second}, Config: t.cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cs := c.(*tls.Conn).ConnectionState()
	if p := cs.NegotiatedProtocol; p != ALPN && p != ALPNv1 {
		c.Close()
		return nil, fmt.Errorf("dial %s: peer negotiated %q, not %q or %q", addr, p, ALPN, ALPNv1)
	}
	if t.Verify != nil {
		if err := t.Verify(addr, cs); err != nil {
			c.Close()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
	}
	return c, nil
}

// link is the stream to one peer.
type link struct {
	// sem serialises writes and guards the fields. It is a channel rather
	// than a mutex because a write may block (until its deadline) and, in
	// tests under testing/synctest, a goroutine waiting for a mutex would
	// stop the bubble's clock.
	sem     chan struct{}
	c       net.Conn // nil while there is none
	dialing bool
	buf     []byte
	// older: the peer runs a version that speaks only ALPNv1 (it probed
	// this node so), so this node dials it whatever their names, to probe
	// it the old way (asV1), until a dial negotiates ALPN.
	older bool
	asV1  bool // c speaks ALPNv1: this node sends requests, the peer replies
	// pending holds, in order, the IDs of the requests on c that await
	// their replies.
	pmu     sync.Mutex
	pending []uint64
}

func (l *link) lock()   { l.sem <- struct{}{} }
func (l *link) unlock() { <-l.sem }

// attach makes c the link's stream, speaking ALPNv1 when v1, and closes
// the stream it replaces; detach closes c and lets go of it if it is still
// the link's stream. The protocol is set with the stream: a stream of
// this version that replaced an ALPNv1 one (an old peer upgraded and
// dialled before its old stream ended) once kept asV1, so this node sent
// it requests it refused, on every stream after.
func (l *link) attach(c net.Conn, v1 bool) (detach func()) {
	l.lock()
	old := l.c
	l.c, l.asV1 = c, v1
	l.pmu.Lock()
	l.pending = l.pending[:0]
	l.pmu.Unlock()
	l.unlock()
	if old != nil {
		old.Close()
	}
	return func() {
		c.Close() // first: a write blocked on c returns and lets go of the link
		l.lock()
		if l.c == c {
			l.c, l.asV1 = nil, false
		}
		l.unlock()
	}
}

func (m *Mesh) link(peer string) *link {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	l := m.links[peer]
	if l == nil {
		l = &link{sem: make(chan struct{}, 1)}
		m.links[peer] = l
	}
	return l
}

// send writes msg, acknowledging the latest message from peer, on the
// stream to peer. Without a stream, the node that dials starts a dial and
// the message is dropped: the stream's first message asks for an answer.
func (m *Mesh) send(peer, addr string, msg Message) {
	m.mu.Lock()
	msg.Ack = m.lastIn[peer]
	m.mu.Unlock()
	l := m.link(peer)
	l.lock()
	defer l.unlock()
	if l.c == nil {
		m.cmu.Lock()
		ctx := m.ctx
		m.cmu.Unlock()
		if (m.self < peer || l.older) && !l.dialing && ctx != nil {
			l.dialing = true
			m.spawn(func() { m.dial(ctx, peer, addr, l) })
		}
		return
	}
	if l.asV1 {
		// Listed before the write: the reply may come back before Write
		// returns.
		l.pmu.Lock()
		if len(l.pending) >= sentRing {
			l.pending = l.pending[1:]
		}
		l.pending = append(l.pending, msg.ID)
		l.pmu.Unlock()
		l.buf = AppendRequest(l.buf[:0], &Request{From: msg.From, Announce: msg.Announce, Facts: msg.Facts})
	} else {
		l.buf = AppendMessage(l.buf[:0], &msg)
	}
	// The deadline only guards against a peer that stopped reading; it is
	// pushed forward by every message, so its timer never fires.
	if err := l.c.SetWriteDeadline(time.Now().Add(m.lease)); err == nil {
		_, err = l.c.Write(l.buf)
		if err == nil {
			return
		}
	}
	l.c.Close() // its reader sees the error and lets go of it
	l.c = nil
}

func (m *Mesh) dial(ctx context.Context, peer, addr string, l *link) {
	c, err := m.tr.Dial(ctx, addr, time.Now().Add(m.lease))
	l.lock()
	l.dialing = false
	l.unlock()
	if err != nil {
		m.log.Debug("liveness stream", "peer", peer, "err", err)
		return
	}
	if tc, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok && tc.ConnectionState().NegotiatedProtocol == ALPNv1 {
		err = m.probeV1(c, peer, l)
	} else {
		l.lock()
		l.older = false
		l.unlock()
		err = m.serve(c, peer)
	}
	if err != nil {
		m.log.Debug("liveness stream ended", "peer", peer, "err", err)
	}
}

// probeV1 makes c, a stream to a peer of an older version (ALPNv1), the
// stream to peer: this node's messages go out as requests, and each reply
// counts as the peer's message acknowledging the request it answers, so
// the older peer extends this node's lease and its facts reach the
// subscribers as they would from a peer of this version.
func (m *Mesh) probeV1(c net.Conn, peer string, l *link) error {
	defer c.Close()
	if !m.track(c) {
		return net.ErrClosed
	}
	defer m.untrack(c)
	defer l.attach(c, true)()
	m.spawn(func() { m.sendNow(peer, true) })
	return m.readFrames(c, func(body []byte) error {
		reply, err := DecodeReply(body)
		if err != nil {
			return fmt.Errorf("reply from %s: %w", peer, err)
		}
		if reply.Node != peer {
			return fmt.Errorf("reply claims to be from %q but the stream is %q's", reply.Node, peer)
		}
		if !m.IsMember(peer) {
			return fmt.Errorf("reply from %q, which is not a member", peer)
		}
		l.pmu.Lock()
		if len(l.pending) == 0 {
			l.pmu.Unlock()
			return fmt.Errorf("reply from %s to no request", peer)
		}
		id := l.pending[0]
		l.pending = l.pending[1:]
		l.pmu.Unlock()
		m.Receive(peer, &Message{From: peer, Ack: id, HeardMs: reply.HeardMs, Facts: reply.Facts})
		return nil
	})
}

// readFrames hands each frame read from c to handle until c ends (nil), a
// lease passes without a frame, or handle fails.
func (m *Mesh) readFrames(c net.Conn, handle func(body []byte) error) error {
	r := bufio.NewReaderSize(c, 4096)
	var in []byte
	for {
		if err := c.SetReadDeadline(time.Now().Add(m.lease)); err != nil {
			return err
		}
		body, err := readFrame(r, in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		in = body
		if err := handle(body); err != nil {
			return err
		}
	}
}

// ServeConn runs a stream a peer dialled, whose verified client certificate
// names peer, until it fails or the mesh stops. A message claiming another
// sender, or from a node that is not a member, ends it.
func (m *Mesh) ServeConn(c net.Conn, peer string) error { return m.serve(c, peer) }

// serve makes c the stream to peer and reads peer's messages from it. The
// stream ends after a lease without a message: the peer is gone, or the
// stream is broken and the dialling end must dial again.
func (m *Mesh) serve(c net.Conn, peer string) error {
	defer c.Close()
	if !m.track(c) {
		return net.ErrClosed
	}
	defer m.untrack(c)
	defer m.link(peer).attach(c, false)()
	// A first message that asks for an answer, so both ends hear each
	// other now rather than at their next rounds.
	m.spawn(func() { m.sendNow(peer, true) })
	return m.readFrames(c, func(body []byte) error {
		msg, err := DecodeMessage(body)
		if err != nil {
			return fmt.Errorf("message from %s: %w", peer, err)
		}
		if msg.From != peer {
			return fmt.Errorf("message claims to be from %q but the stream is %q's", msg.From, peer)
		}
		if !m.IsMember(peer) {
			return fmt.Errorf("message from %q, which is not a member", peer)
		}
		m.Receive(peer, &msg)
		return nil
	})
}

// ServeConnV1 answers the probes of a node running the older protocol
// (ALPNv1) that arrive on c from peer, the name its verified client
// certificate carries, until c fails or the mesh stops. A probe claiming
// another sender, or from a node that is not a member, ends the stream.
func (m *Mesh) ServeConnV1(c net.Conn, peer string) error {
	defer c.Close()
	if !m.track(c) {
		return net.ErrClosed
	}
	defer m.untrack(c)
	if m.IsMember(peer) {
		// Its requests prove this node alive to it, but only this node's
		// own probes, answered, extend this node's lease and bring the
		// peer's facts: dial it too.
		l := m.link(peer)
		l.lock()
		l.older = true
		l.unlock()
	}
	r := bufio.NewReaderSize(c, 4096)
	var in, out []byte
	for {
		body, err := readFrame(r, in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		in = body
		req, err := DecodeRequest(body)
		if err != nil {
			return fmt.Errorf("probe from %s: %w", peer, err)
		}
		if req.From != peer {
			return fmt.Errorf("probe claims to be from %q but its certificate names %q", req.From, peer)
		}
		if !m.IsMember(peer) {
			return fmt.Errorf("probe from %q, which is not a member", peer)
		}
		reply := m.HandleProbe(peer, &req)
		out = AppendReply(out[:0], &reply)
		if _, err := c.Write(out); err != nil {
			return err
		}
	}
}

type closer interface{ Close() error }

// track registers a stream so Run's end closes it; false when the mesh has
// stopped.
func (m *Mesh) track(c closer) bool {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Mesh) untrack(c closer) {
	m.cmu.Lock()
	delete(m.conns, c)
	m.cmu.Unlock()
}

// spawn runs fn on a goroutine that Run's end waits for; not once the mesh
// has stopped.
func (m *Mesh) spawn(fn func()) {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	if m.closed {
		return
	}
	m.wg.Go(fn)
}

func (m *Mesh) closeConns() {
	m.cmu.Lock()
	defer m.cmu.Unlock()
	m.closed = true
	for c := range m.conns {
		c.Close()
	}
	clear(m.conns)
}
