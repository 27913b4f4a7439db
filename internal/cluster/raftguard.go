package cluster

import (
	"bufio"
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
// address) before it is passed on. Closing it closes tc.
func guardRaft(tc net.Conn, peer string, addrOf func(string) (string, bool), log *slog.Logger) net.Conn {
	inner, outer := net.Pipe()
	g := &guardedConn{Conn: inner, tc: tc}
	go func() {
		err := pumpRaftRequests(tc, outer, peer, addrOf)
		if errors.Is(err, errImpersonation) {
			log.Warn("raft connection closed: an RPC impersonates another member", "peer", peer, "remote", tc.RemoteAddr(), "err", err)
		} else if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
			log.Debug("raft connection ended", "peer", peer, "err", err)
		}
		g.Close()
	}()
	go func() {
		_, _ = io.Copy(tc, outer) // the responses, unchanged
		g.Close()
	}()
	return g
}

// guardedConn is raft's end of a guarded connection; it reports the TLS
// connection's addresses.
type guardedConn struct {
	net.Conn // raft's end of the pipe
	tc       net.Conn
	once     sync.Once
}

func (g *guardedConn) RemoteAddr() net.Addr { return g.tc.RemoteAddr() }
func (g *guardedConn) LocalAddr() net.Addr  { return g.tc.LocalAddr() }

func (g *guardedConn) Close() error {
	g.once.Do(func() {
		g.tc.Close()
		g.Conn.Close()
	})
	return nil
}

// pumpRaftRequests copies checked RPCs from src to dst until an error.
func pumpRaftRequests(src io.Reader, dst io.WriteCloser, peer string, addrOf func(string) (string, bool)) error {
	defer dst.Close()
	r := bufio.NewReaderSize(src, 64<<10)
	dec := codec.NewDecoder(r, &codec.MsgpackHandle{})
	w := bufio.NewWriterSize(dst, 64<<10)
	enc := codec.NewEncoder(w, &codec.MsgpackHandle{})
	for {
		typ, err := r.ReadByte()
		if err != nil {
			return err
		}
		var (
			req  any
			hdr  raft.RPCHeader
			size int64 // snapshot bytes after the request
		)
		switch typ {
		case rpcAppendEntries:
			var a raft.AppendEntriesRequest
			err = dec.Decode(&a)
			req, hdr = &a, a.RPCHeader
		case rpcRequestVote:
			var v raft.RequestVoteRequest
			err = dec.Decode(&v)
			req, hdr = &v, v.RPCHeader
		case rpcInstallSnapshot:
			var s raft.InstallSnapshotRequest
			err = dec.Decode(&s)
			req, hdr, size = &s, s.RPCHeader, s.Size
		case rpcTimeoutNow:
			var tn raft.TimeoutNowRequest
			err = dec.Decode(&tn)
			req, hdr = &tn, tn.RPCHeader
		case rpcRequestPreVote:
			var pv raft.RequestPreVoteRequest
			err = dec.Decode(&pv)
			req, hdr = &pv, pv.RPCHeader
		default:
			return fmt.Errorf("unknown raft RPC type %d", typ)
		}
		if err != nil {
			return fmt.Errorf("decode raft RPC: %w", err)
		}
		if err := checkSender(hdr, peer, addrOf); err != nil {
			return err
		}
		if err := w.WriteByte(typ); err != nil {
			return err
		}
		if err := enc.Encode(req); err != nil {
			return err
		}
		if size > 0 {
			if _, err := io.CopyN(w, r, size); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
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
