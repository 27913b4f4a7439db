package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestCheckSender(t *testing.T) {
	addrOf := func(name string) (string, bool) {
		a, ok := map[string]string{"a": "10.0.0.1:7946", "w": "10.0.0.3:7946"}[name]
		return a, ok
	}
	hdr := func(id, addr string) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: 3, ID: []byte(id), Addr: []byte(addr)}
	}
	for _, tt := range []struct {
		name string
		hdr  raft.RPCHeader
		peer string
		want error
	}{
		{"itself", hdr("w", "10.0.0.3:7946"), "w", nil},
		{"another member's name", hdr("a", "10.0.0.1:7946"), "w", errImpersonation},
		{"its name, another's address", hdr("w", "10.0.0.1:7946"), "w", errImpersonation},
		{"its name, no address (raft would read the legacy field)", hdr("w", ""), "w", errImpersonation},
		{"no name", hdr("", "10.0.0.3:7946"), "w", errImpersonation},
		{"not a raft server", hdr("x", "10.0.0.9:7946"), "x", ErrUnauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkSender(tt.hdr, tt.peer, addrOf); !errors.Is(err, tt.want) {
				t.Errorf("checkSender = %v; want %v", err, tt.want)
			}
		})
	}
}

// TestRaftRPCNamesItsSender: a member (here the witness, with its own
// valid certificate) that writes the leader's name into a raft heartbeat
// with a higher term is cut off, and the follower neither takes the term
// nor the forged leader; the same member's honest RPCs are answered.
func TestRaftRPCNamesItsSender(t *testing.T) {
	ctx := context.Background()
	c, _, a := founded(t)
	tok, _ := a.CreateToken(ctx, time.Hour, 2, "")
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	eventually(t, 10*time.Second, "three voters", func() bool {
		servers, err := a.Servers(ctx)
		return err == nil && voters(servers) == 3 && len(a.Machine().View().Voters()) == 3
	})
	leader, _ := c.nodes["a"].Leader()
	target := b
	if leader == "b" {
		target = a
	}
	lnode := c.nodes[leader]

	send := func(req raft.AppendEntriesRequest) (raft.AppendEntriesResponse, error) {
		cfg := w.Credentials().ClientConfig()
		cfg.NextProtos = []string{ALPNRaft}
		conn, err := tls.Dial("tcp", target.Addr(), cfg)
		if err != nil {
			return raft.AppendEntriesResponse{}, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		bw := bufio.NewWriter(conn)
		_ = bw.WriteByte(rpcAppendEntries)
		if err := codec.NewEncoder(bw, &codec.MsgpackHandle{}).Encode(&req); err != nil {
			return raft.AppendEntriesResponse{}, err
		}
		if err := bw.Flush(); err != nil {
			return raft.AppendEntriesResponse{}, err
		}
		dec := codec.NewDecoder(bufio.NewReader(conn), &codec.MsgpackHandle{})
		var rpcErr string
		var resp raft.AppendEntriesResponse
		if err := dec.Decode(&rpcErr); err != nil {
			return resp, err
		}
		if rpcErr != "" {
			return resp, errors.New(rpcErr)
		}
		return resp, dec.Decode(&resp)
	}

	// Honest, with a stale term: answered (and refused by raft).
	term := target.Term()
	resp, err := send(raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("w"), Addr: []byte(w.Addr())},
		Term:      1,
	})
	if err != nil || resp.Success || resp.Term < term {
		t.Fatalf("an honest stale heartbeat from w = %+v, %v; want an answer refusing it", resp, err)
	}

	// Forged: w names the leader, with a higher term.
	_, err = send(raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte(leader), Addr: []byte(lnode.Addr())},
		Term:      term + 10,
	})
	if err == nil {
		t.Fatal("a heartbeat from w naming the leader was answered; want the connection closed")
	}
	time.Sleep(200 * time.Millisecond)
	if got := target.Term(); got >= term+10 {
		t.Errorf("%s took the forged term %d (was %d)", target.Name(), got, term)
	}
	if _, id := target.raft.LeaderWithID(); string(id) != leader {
		t.Errorf("%s follows %q; want %q", target.Name(), id, leader)
	}
	// The cluster still works.
	if err := w.Apply(ctx, state.SetMemberPriority{Name: "w", Priority: 2}); err != nil {
		t.Errorf("Apply after the forged RPC: %v", err)
	}
}

// BenchmarkRaftGuard measures the guard's cost per heartbeat-sized and
// entry-carrying AppendEntries.
func BenchmarkRaftGuard(b *testing.B) {
	addrOf := func(string) (string, bool) { return "10.0.0.3:7946", true }
	for _, tt := range []struct {
		name    string
		entries []*raft.Log
	}{
		{"heartbeat", nil},
		{"one entry", []*raft.Log{{Index: 7, Term: 3, Type: raft.LogCommand, Data: make([]byte, 200), AppendedAt: time.Now()}}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			var buf bytes.Buffer
			req := raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("w"), Addr: []byte("10.0.0.3:7946")},
				Term: 3, Entries: tt.entries}
			enc := codec.NewEncoder(&buf, &codec.MsgpackHandle{})
			for range b.N {
				buf.WriteByte(rpcAppendEntries)
				if err := enc.Encode(&req); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			if _, err := io.Copy(io.Discard, newRaftRequests(&buf, "w", addrOf)); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestRaftGuardPassesRPCsThrough: what the guard passes on decodes as
// what was sent, a snapshot's bytes included, in order.
func TestRaftGuardPassesRPCsThrough(t *testing.T) {
	hdr := raft.RPCHeader{ProtocolVersion: 3, ID: []byte("w"), Addr: []byte("10.0.0.3:7946")}
	addrOf := func(string) (string, bool) { return "10.0.0.3:7946", true }
	var in bytes.Buffer
	enc := codec.NewEncoder(&in, &codec.MsgpackHandle{})
	in.WriteByte(rpcInstallSnapshot)
	_ = enc.Encode(&raft.InstallSnapshotRequest{RPCHeader: hdr, Term: 4, LastLogIndex: 99, Size: 5})
	in.WriteString("hello")
	in.WriteByte(rpcAppendEntries)
	_ = enc.Encode(&raft.AppendEntriesRequest{RPCHeader: hdr, Term: 4, Entries: []*raft.Log{{Index: 100, Term: 4, Data: []byte("cmd")}}})
	in.WriteByte(rpcRequestVote)
	_ = enc.Encode(&raft.RequestVoteRequest{RPCHeader: hdr, Term: 5, LastLogIndex: 100})

	var out bytes.Buffer
	if _, err := io.Copy(&out, newRaftRequests(&in, "w", addrOf)); err != nil {
		t.Fatalf("reading the guarded RPCs: %v; want their end", err)
	}
	r := bufio.NewReader(&out)
	dec := codec.NewDecoder(r, &codec.MsgpackHandle{})
	if typ, _ := r.ReadByte(); typ != rpcInstallSnapshot {
		t.Fatalf("first RPC type %d; want InstallSnapshot", typ)
	}
	var snap raft.InstallSnapshotRequest
	if err := dec.Decode(&snap); err != nil || snap.LastLogIndex != 99 || snap.Size != 5 || string(snap.ID) != "w" {
		t.Fatalf("snapshot request = %+v, %v", snap, err)
	}
	data := make([]byte, 5)
	if _, err := io.ReadFull(r, data); err != nil || string(data) != "hello" {
		t.Fatalf("snapshot bytes = %q, %v", data, err)
	}
	if typ, _ := r.ReadByte(); typ != rpcAppendEntries {
		t.Fatalf("second RPC type %d; want AppendEntries", typ)
	}
	var ae raft.AppendEntriesRequest
	if err := dec.Decode(&ae); err != nil || len(ae.Entries) != 1 || string(ae.Entries[0].Data) != "cmd" {
		t.Fatalf("append entries = %+v, %v", ae, err)
	}
	if typ, _ := r.ReadByte(); typ != rpcRequestVote {
		t.Fatalf("third RPC type %d; want RequestVote", typ)
	}
	var rv raft.RequestVoteRequest
	if err := dec.Decode(&rv); err != nil || rv.Term != 5 {
		t.Fatalf("request vote = %+v, %v", rv, err)
	}
}

// FuzzRaftGuard feeds the guard arbitrary bytes from a member: it must not
// panic, and whatever it passes on names the member as the sender.
func FuzzRaftGuard(f *testing.F) {
	for _, id := range []string{"w", "a"} {
		var b bytes.Buffer
		b.WriteByte(rpcAppendEntries)
		_ = codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(&raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte(id), Addr: []byte("10.0.0.3:7946")}, Term: 2})
		f.Add(b.Bytes())
	}
	f.Add([]byte{rpcInstallSnapshot, 0x80})
	addrOf := func(string) (string, bool) { return "10.0.0.3:7946", true }
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		_, _ = io.Copy(&out, newRaftRequests(bytes.NewReader(data), "w", addrOf))
		r := bufio.NewReader(&out)
		dec := codec.NewDecoder(r, &codec.MsgpackHandle{})
		for {
			typ, err := r.ReadByte()
			if err != nil {
				return
			}
			var hdr raft.RPCHeader
			switch typ {
			case rpcAppendEntries:
				var a raft.AppendEntriesRequest
				err, hdr = dec.Decode(&a), a.RPCHeader
			case rpcRequestVote:
				var v raft.RequestVoteRequest
				err, hdr = dec.Decode(&v), v.RPCHeader
			case rpcTimeoutNow:
				var tn raft.TimeoutNowRequest
				err, hdr = dec.Decode(&tn), tn.RPCHeader
			case rpcRequestPreVote:
				var pv raft.RequestPreVoteRequest
				err, hdr = dec.Decode(&pv), pv.RPCHeader
			default:
				return // a snapshot's bytes follow; checked above by the unit test
			}
			if err != nil {
				t.Fatalf("the guard passed on an RPC that does not decode: %v", err)
			}
			if string(hdr.ID) != "w" || string(hdr.Addr) != "10.0.0.3:7946" {
				t.Fatalf("the guard passed on an RPC from %q at %q", hdr.ID, hdr.Addr)
			}
		}
	})
}

// TestRaftRequestsStopAtALie: the RPCs before an impersonating one are
// read whole; the lie itself never is, and the error stays.
func TestRaftRequestsStopAtALie(t *testing.T) {
	addrOf := func(name string) (string, bool) {
		a, ok := map[string]string{"w": "10.0.0.3:7946", "a": "10.0.0.1:7946"}[name]
		return a, ok
	}
	honest := raft.RPCHeader{ProtocolVersion: 3, ID: []byte("w"), Addr: []byte("10.0.0.3:7946")}
	forged := raft.RPCHeader{ProtocolVersion: 3, ID: []byte("a"), Addr: []byte("10.0.0.1:7946")}
	var in bytes.Buffer
	enc := codec.NewEncoder(&in, &codec.MsgpackHandle{})
	in.WriteByte(rpcAppendEntries)
	_ = enc.Encode(&raft.AppendEntriesRequest{RPCHeader: honest, Term: 4})
	in.WriteByte(rpcAppendEntries)
	_ = enc.Encode(&raft.AppendEntriesRequest{RPCHeader: forged, Term: 9})

	r := newRaftRequests(&in, "w", addrOf)
	got, err := io.ReadAll(r)
	if !errors.Is(err, errImpersonation) {
		t.Fatalf("read = %v; want the impersonation", err)
	}
	dec := codec.NewDecoder(bytes.NewReader(got[1:]), &codec.MsgpackHandle{})
	var ae raft.AppendEntriesRequest
	if got[0] != rpcAppendEntries || dec.Decode(&ae) != nil || ae.Term != 4 {
		t.Fatalf("passed on %q; want only the honest heartbeat of term 4", got)
	}
	if n, err := r.Read(make([]byte, 64)); n != 0 || !errors.Is(err, errImpersonation) {
		t.Errorf("read after the lie = %d, %v; want 0 and the same error", n, err)
	}
}

// TestRaftRequestsTruncatedSnapshot: a snapshot cut short is an error,
// not a clean end raft would take for the whole snapshot.
func TestRaftRequestsTruncatedSnapshot(t *testing.T) {
	addrOf := func(string) (string, bool) { return "10.0.0.3:7946", true }
	var in bytes.Buffer
	in.WriteByte(rpcInstallSnapshot)
	_ = codec.NewEncoder(&in, &codec.MsgpackHandle{}).Encode(&raft.InstallSnapshotRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("w"), Addr: []byte("10.0.0.3:7946")}, Size: 10})
	in.WriteString("short")
	if _, err := io.ReadAll(newRaftRequests(&in, "w", addrOf)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read = %v; want io.ErrUnexpectedEOF", err)
	}
}
