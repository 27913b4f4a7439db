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

// StreamTransport probes peers over persistent mutual-TLS connections, one
// probe at a time per connection: a probe costs one small TLS record each
// way, with no per-probe handshake, headers or goroutines. It keeps up to
// maxInflight connections per peer, so one lost segment stalls one probe,
// not the next ones.
type StreamTransport struct {
	// TLS presents this node's certificate and trusts the cluster CA; its
	// NextProtos is replaced by ALPN.
	TLS *tls.Config
	// Verify, when set, checks the node that answered at addr once the
	// handshake has verified its chain: that it is the member known there,
	// with the key pinned for it (cluster.Node.VerifyPeerAt). A connection
	// it refuses is closed and the probe fails.
	Verify func(addr string, cs tls.ConnectionState) error

	once sync.Once
	cfg  *tls.Config
	mu   sync.Mutex
	idle map[string][]*clientConn
	done bool
}

type clientConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte // frames out and in, reused
}

// Probe implements Transport.
func (t *StreamTransport) Probe(ctx context.Context, addr string, deadline time.Time, req *Request) (Reply, error) {
	cc, err := t.get(ctx, addr, deadline)
	if err != nil {
		return Reply{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	reply, err := cc.roundTrip(deadline, req)
	if err != nil {
		cc.c.Close() // its state is unknown: a reply may still be on the way
		return Reply{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	t.put(addr, cc)
	return reply, nil
}

func (cc *clientConn) roundTrip(deadline time.Time, req *Request) (Reply, error) {
	if err := cc.c.SetDeadline(deadline); err != nil {
		return Reply{}, err
	}
	cc.buf = AppendRequest(cc.buf[:0], req)
	if _, err := cc.c.Write(cc.buf); err != nil {
		return Reply{}, err
	}
	body, err := readFrame(cc.r, cc.buf)
	if err != nil {
		return Reply{}, err
	}
	cc.buf = body
	return DecodeReply(body)
}

func (t *StreamTransport) get(ctx context.Context, addr string, deadline time.Time) (*clientConn, error) {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return nil, net.ErrClosed
	}
	if l := t.idle[addr]; len(l) > 0 {
		cc := l[len(l)-1]
		t.idle[addr] = l[:len(l)-1]
		t.mu.Unlock()
		return cc, nil
	}
	t.mu.Unlock()
	t.once.Do(func() {
		t.cfg = t.TLS.Clone()
		t.cfg.NextProtos = []string{ALPN}
	})
	d := &tls.Dialer{NetDialer: &net.Dialer{Deadline: deadline, KeepAlive: 5 * time.Second}, Config: t.cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cs := c.(*tls.Conn).ConnectionState()
	if p := cs.NegotiatedProtocol; p != ALPN {
		c.Close()
		return nil, fmt.Errorf("peer negotiated %q, not %q: it runs an older tandem; upgrade it", p, ALPN)
	}
	if t.Verify != nil {
		if err := t.Verify(addr, cs); err != nil {
			c.Close()
			return nil, err
		}
	}
	return &clientConn{c: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

func (t *StreamTransport) put(addr string, cc *clientConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done || len(t.idle[addr]) >= maxInflight {
		cc.c.Close()
		return
	}
	if t.idle == nil {
		t.idle = map[string][]*clientConn{}
	}
	t.idle[addr] = append(t.idle[addr], cc)
}

// Close closes the idle connections; probes after it fail.
func (t *StreamTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
	for _, l := range t.idle {
		for _, cc := range l {
			cc.c.Close()
		}
	}
	clear(t.idle)
	return nil
}

// ServeConn answers the probes that arrive on c from peer, the name its
// verified client certificate carries, until c fails or the mesh stops. A
// probe claiming another sender, or from a node that is not a member,
// ends the stream.
func (m *Mesh) ServeConn(c net.Conn, peer string) error {
	defer c.Close()
	if !m.track(c) {
		return net.ErrClosed
	}
	defer m.untrack(c)
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
