package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// TestHandleConnRoutesByALPN: a connection that negotiates a registered
// stream protocol reaches its handler with the caller's name; one without
// a client certificate, or before the handler is registered, is closed;
// HTTP keeps working beside it; Shutdown closes the streams it serves.
func TestHandleConnRoutesByALPN(t *testing.T) {
	const proto = "test-stream/1"
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, tr := raft.NewInmemTransport("")
	n, err := New(context.Background(), Options{
		Name: "n1", Role: state.RoleApp, DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		TLS: issue(t, ca, "n1"), Machine: state.New(), Logger: testLogger(t),
		raftTransport: tr, StreamProtocols: []string{proto},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	client := issue(t, ca, "n2")
	// Streams are for members with their pinned keys.
	if err := n.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	n2 := state.Member{Name: "n2", Role: state.RoleApp, Address: "127.0.0.1:1", Key: pki.Hash(client.Cert.Leaf)}
	if err := n.Apply(context.Background(), state.AddMember{Member: n2}); err != nil {
		t.Fatal(err)
	}

	dial := func(creds *pki.Node) (*tls.Conn, error) {
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		if creds != nil {
			cfg = creds.ClientConfig()
		}
		cfg.NextProtos = []string{proto}
		return tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", n.Addr(), cfg)
	}
	// echo answers "name\n" with the caller's name.
	readName := func(c *tls.Conn) (string, error) {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("name\n")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}

	c, err := dial(client)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readName(c); err == nil {
		t.Errorf("before HandleConn, the stream answered %q; want it closed", got)
	}
	c.Close()

	n.HandleConn(proto, func(c net.Conn, peer string) error {
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return err
			}
			if _, err := c.Write([]byte(peer + "\n")); err != nil {
				return err
			}
		}
	})
	c, err = dial(client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := readName(c); err != nil || got != "n2\n" {
		t.Errorf("stream answered %q, %v; want the caller's name n2", got, err)
	}
	for _, other := range []*pki.Node{issue(t, ca, "stranger"), issue(t, ca, "n2")} {
		if s, err := dial(other); err == nil {
			if got, err := readName(s); err == nil {
				t.Errorf("a stream from %s with a key not pinned for it answered %q; want it closed", other.Name, got)
			}
			s.Close()
		}
	}
	if anon, err := dial(nil); err == nil {
		if got, err := readName(anon); err == nil {
			t.Errorf("a stream without a client certificate answered %q; want it closed", got)
		}
		anon.Close()
	}
	resp, err := n.Client().Get("https://" + n.Addr() + "/v1/ca")
	if err != nil {
		t.Fatalf("HTTP beside the stream: %v", err)
	}
	resp.Body.Close()

	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := readName(c); err == nil {
		t.Errorf("after Shutdown the stream answered %q; want it closed", got)
	}
}
