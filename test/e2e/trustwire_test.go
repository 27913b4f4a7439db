package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/tandem-ha/tandem/internal/cluster"
	"github.com/tandem-ha/tandem/internal/labprobe"
	"github.com/tandem-ha/tandem/internal/liveness"
	"github.com/tandem-ha/tandem/internal/pki"
)

// The trust scenarios speak the cluster port's protocols themselves, as an
// attacker on a lab node would: raft RPCs and liveness probes over mutual
// TLS, dialled from inside a node's network namespace so that they come
// from its address.

// errRefused marks a connection the agent closed (or answered with a TLS
// alert) after the handshake instead of answering the request on it: with
// TLS 1.3 the client's handshake completes before the server has judged
// its certificate, so a refusal shows on the first read.
var errRefused = errors.New("refused: the agent closed the connection instead of answering")

// nodeCreds reads a lab node's own credentials: its CA certificate, its
// certificate and its key.
func nodeCreds(t *testing.T, ctx context.Context, c *Labctl, node string) *pki.Node {
	t.Helper()
	caPEM := c.MustSh(t, ctx, node, "cat "+labPKI+"/"+pki.CACertFile)
	crt := c.MustSh(t, ctx, node, "cat "+labPKI+"/"+pki.NodeCertFile)
	key := c.MustSh(t, ctx, node, "cat "+labPKI+"/"+pki.NodeKeyFile)
	caCert, err := pki.ParseCertPEM([]byte(caPEM))
	if err != nil {
		t.Fatal(err)
	}
	n, err := pki.NewNode(&pki.CA{Cert: caCert}, []byte(crt), []byte(key))
	if err != nil {
		t.Fatalf("%s's credentials: %v", node, err)
	}
	return n
}

// tlsDial opens a TLS connection negotiating alpn from node's network
// namespace to addr, presenting creds' certificate (none when nil). The
// server's certificate is not checked: the attacker does not care.
func tlsDial(ctx context.Context, c *Labctl, node, addr string, creds *pki.Node, alpn string) (*tls.Conn, error) {
	raw, err := labprobe.Dial(ctx, c.NetnsPath(node), "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if creds != nil {
		cfg = creds.ClientConfig()
	}
	cfg.NextProtos = []string{alpn}
	tc := tls.Client(raw, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpn {
		tc.Close()
		return nil, fmt.Errorf("%s negotiated %q, not %q", addr, p, alpn)
	}
	return tc, nil
}

// Raft's RPC type bytes (hashicorp/raft's net_transport.go).
const (
	raftAppendEntries uint8 = 0
	raftRequestVote   uint8 = 1
)

// raftRPC sends one raft RPC in raft's wire format (a type byte, then the
// msgpack request; the answer is an error string, then the msgpack
// response) from node to the raft server at addr, and decodes the answer
// into resp. An answer the agent never gave is errRefused.
func raftRPC(ctx context.Context, c *Labctl, node, addr string, creds *pki.Node, typ uint8, req, resp any) error {
	tc, err := tlsDial(ctx, c, node, addr, creds, cluster.ALPNRaft)
	if err != nil {
		return err
	}
	defer tc.Close()
	w := bufio.NewWriter(tc)
	if err := w.WriteByte(typ); err != nil {
		return err
	}
	if err := codec.NewEncoder(w, &codec.MsgpackHandle{}).Encode(req); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%w (%v)", errRefused, err)
	}
	dec := codec.NewDecoder(bufio.NewReader(tc), &codec.MsgpackHandle{})
	var rpcErr string
	if err := dec.Decode(&rpcErr); err != nil {
		return fmt.Errorf("%w (%v)", errRefused, err)
	}
	if rpcErr != "" {
		return fmt.Errorf("raft answered with an error: %s", rpcErr)
	}
	return dec.Decode(resp)
}

// raftHeader names the sender of an RPC, as raft reads it.
func raftHeader(name, addr string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(name), Addr: []byte(addr)}
}

// probe sends one liveness message from node to addr in the mesh's
// protocol (ALPN tandem-liveness/2), carrying req's sender and facts and
// asking for an answer, and returns the agent's message that acknowledges
// it, as a Reply; a connection the agent closes or never answers on is
// errRefused.
func probe(ctx context.Context, c *Labctl, node, addr string, creds *pki.Node, req liveness.Request) (liveness.Reply, error) {
	tc, err := tlsDial(ctx, c, node, addr, creds, liveness.ALPN)
	if err != nil {
		return liveness.Reply{}, err
	}
	defer tc.Close()
	const id = 1
	msg := liveness.Message{From: req.From, ID: id, Answer: true, Facts: req.Facts}
	if _, err := tc.Write(liveness.AppendMessage(nil, &msg)); err != nil {
		return liveness.Reply{}, fmt.Errorf("%w (%v)", errRefused, err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(tc)
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return liveness.Reply{}, fmt.Errorf("%w (%v)", errRefused, err)
		}
		if n > liveness.MaxFrame {
			return liveness.Reply{}, fmt.Errorf("message frame of %d bytes", n)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return liveness.Reply{}, fmt.Errorf("%w (%v)", errRefused, err)
		}
		m, err := liveness.DecodeMessage(body)
		if err != nil {
			return liveness.Reply{}, err
		}
		// The agent speaks first when a stream opens; its answer to ours
		// acknowledges our message's ID.
		if m.Ack == id {
			return liveness.Reply{Node: m.From, HeardMs: m.HeardMs, Facts: m.Facts}, nil
		}
	}
}

// curlPost POSTs body to https://addr/path from node with the certificate
// /tmp/NAME.{crt,key} there and returns the HTTP code ("000": the TLS
// handshake was refused) and the reply.
func curlPost(t *testing.T, ctx context.Context, c *Labctl, node, name, addr, path string, body []byte) (string, string) {
	t.Helper()
	installFile(t, ctx, c, node, "/tmp/e2e-body.json", body)
	r, err := c.Exec(ctx, node, "curl", "-sk", "--max-time", "10", "--cert", "/tmp/"+name+".crt", "--key", "/tmp/"+name+".key",
		"-H", "Content-Type: application/json", "--data-binary", "@/tmp/e2e-body.json",
		"-o", "/tmp/e2e-reply.json", "-w", "%{http_code}", "https://"+addr+path)
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := c.Sh(ctx, node, "cat /tmp/e2e-reply.json 2>/dev/null; rm -f /tmp/e2e-reply.json")
	return strings.TrimSpace(r.Stdout), strings.TrimSpace(reply)
}

// installFile writes data to path in node (mode 0600).
func installFile(t *testing.T, ctx context.Context, c *Labctl, node, path string, data []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.CopyIn(ctx, f, node, path); err != nil {
		t.Fatal(err)
	}
}

// refused reports whether err is the agent refusing a connection after
// the handshake (errRefused) or during it (a TLS alert).
func refused(err error) bool {
	return errors.Is(err, errRefused) || (err != nil && strings.Contains(err.Error(), "remote error: tls"))
}
