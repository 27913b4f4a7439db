package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// A raft RPC names its sender in its header (ID and address), and raft
// believes it: a heartbeat whose header names the leader is the leader's.
// The listener admits a raft connection only from a current member with
// its pinned key, but that member could still write another member's name
// into its RPCs. So every RPC on an accepted raft connection passes
// through a guard that decodes it (raft's wire format: a type byte, then
// the msgpack request, then, for a snapshot, its bytes), checks that the
// header's ID is the name on the connection's certificate and its address
// that member's raft address, and only then hands it on to raft. A
// connection that lies is closed.

// Raft's RPC type bytes (net_transport.go).
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// errImpersonation is an RPC whose header names another node than the
// connection's certificate.
var errImpersonation = errors.New("raft RPC names another sender than the connection's certificate")

// guardRaft returns the connection raft reads: tc's RPCs, each checked
// against peer (the name on tc's certificate) and addrOf(peer) (its raft
// address) before raft reads it. The check runs in raft's own reads, so a
// guarded connection costs no goroutine, pipe or copy of its own: raft's
// heartbeats are most of an idle agent's traffic.
func guardRaft(tc net.Conn, peer string, addrOf func(string) (string, bool), log *slog.Logger) net.Conn {
	return &guardedConn{Conn: tc, rpcs: newRaftRequests(tc, peer, addrOf), peer: peer, log: log}
}

// guardedConn is raft's end of a guarded connection: it reads checked RPCs
// and writes raft's responses to the TLS connection unchanged.
type guardedConn struct {
	net.Conn // the TLS connection
	rpcs     *raftRequests
	peer     string
	log      *slog.Logger
	logged   sync.Once
}

func (g *guardedConn) Read(p []byte) (int, error) {
	n, err := g.rpcs.Read(p)
	if err != nil && n == 0 {
		g.logged.Do(func() { g.report(err) })
	}
	return n, err
}

// report logs why the connection ends; a lie closes it at once.
func (g *guardedConn) report(err error) {
	switch {
	case errors.Is(err, errImpersonation):
		g.log.Warn("raft connection closed: an RPC impersonates another member", "peer", g.peer, "remote", g.RemoteAddr(), "err", err)
		g.Conn.Close()
	case errors.Is(err, ErrUnauthenticated):
		g.log.Warn("raft connection closed", "peer", g.peer, "remote", g.RemoteAddr(), "err", err)
		g.Conn.Close()
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		g.log.Debug("raft connection ended", "peer", g.peer, "err", err)
	}
}

// raftRequests reads raft's wire format from src (a type byte, then the
// msgpack request, then, for a snapshot, its bytes) and yields each RPC
// only once it decoded and named its sender truly. It yields the request
// as it re-encoded it, not the bytes received, so raft reads exactly what
// was checked. After an error it yields only that error.
type raftRequests struct {
	src    *bufio.Reader
	dec    *codec.Decoder
	enc    *codec.Encoder
	out    bytes.Buffer // the current request, re-encoded, not yet read
	snap   int64        // bytes of the current snapshot not yet read
	peer   string
	addrOf func(string) (string, bool)
	err    error
}

func newRaftRequests(src io.Reader, peer string, addrOf func(string) (string, bool)) *raftRequests {
	r := &raftRequests{src: bufio.NewReaderSize(src, 32<<10), peer: peer, addrOf: addrOf}
	r.dec = codec.NewDecoder(r.src, &codec.MsgpackHandle{})
	r.enc = codec.NewEncoder(&r.out, &codec.MsgpackHandle{})
	return r
}

func (r *raftRequests) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.out.Len() == 0 && r.snap == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.err = r.next(); r.err != nil {
			return 0, r.err
		}
	}
	if r.out.Len() > 0 {
		return r.out.Read(p)
	}
	n, err := r.src.Read(p[:min(int64(len(p)), r.snap)])
	r.snap -= int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("snapshot: %w", io.ErrUnexpectedEOF)
		}
		r.err, r.snap = err, 0
	}
	return n, err
}

// next decodes and checks the next RPC into r.out.
func (r *raftRequests) next() error {
	typ, err := r.src.ReadByte()
	if err != nil {
		return err // io.EOF between RPCs is the connection's clean end
	}
	var (
		req  any
		hdr  raft.RPCHeader
		size int64 // snapshot bytes after the request
	)
	switch typ {
	case rpcAppendEntries:
		var a raft.AppendEntriesRequest
		err = r.dec.Decode(&a)
		req, hdr = &a, a.RPCHeader
	case rpcRequestVote:
		var v raft.RequestVoteRequest
		err = r.dec.Decode(&v)
		req, hdr = &v, v.RPCHeader
	case rpcInstallSnapshot:
		var s raft.InstallSnapshotRequest
		err = r.dec.Decode(&s)
		req, hdr, size = &s, s.RPCHeader, s.Size
	case rpcTimeoutNow:
		var tn raft.TimeoutNowRequest
		err = r.dec.Decode(&tn)
		req, hdr = &tn, tn.RPCHeader
	case rpcRequestPreVote:
		var pv raft.RequestPreVoteRequest
		err = r.dec.Decode(&pv)
		req, hdr = &pv, pv.RPCHeader
	default:
		return fmt.Errorf("unknown raft RPC type %d", typ)
	}
	if err != nil {
		return fmt.Errorf("decode raft RPC: %w", err)
	}
	if err := checkSender(hdr, r.peer, r.addrOf); err != nil {
		return err
	}
	r.out.Reset()
	r.out.WriteByte(typ)
	if err := r.enc.Encode(req); err != nil {
		return fmt.Errorf("encode raft RPC: %w", err)
	}
	r.snap = max(size, 0)
	return nil
}

// checkSender accepts an RPC header that names peer, at its raft address.
// Raft reads the sender from the header whenever its address is set (the
// deprecated Leader and Candidate fields only when it is not), and here it
// must be.
func checkSender(hdr raft.RPCHeader, peer string, addrOf func(string) (string, bool)) error {
	if string(hdr.ID) != peer {
		return fmt.Errorf("%w: it names %q, the certificate %q", errImpersonation, hdr.ID, peer)
	}
	addr, ok := addrOf(peer)
	if !ok {
		return fmt.Errorf("%w: %q is no raft server of this cluster", ErrUnauthenticated, peer)
	}
	if string(hdr.Addr) != addr {
		return fmt.Errorf("%w: %q sends from address %q, but the cluster knows it at %s", errImpersonation, peer, hdr.Addr, addr)
	}
	return nil
}
