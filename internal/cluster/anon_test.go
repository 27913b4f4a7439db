package cluster

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAnonymousConnectionsAreBounded: connections without a certificate
// are capped, closed after one request and after a short lifetime, so
// idle ones cannot pile up (security review, finding 7).
func TestAnonymousConnectionsAreBounded(t *testing.T) {
	_, _, a := founded(t)
	// Long enough to dial them all under -race on a loaded machine.
	a.mux.anonLifetime = 4 * time.Second
	dial := func(protos ...string) (*tls.Conn, error) {
		return tls.Dial("tcp", a.Addr(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: protos})
	}
	// closed reports whether the server closed conn within d.
	closed := func(conn *tls.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := conn.Read(make([]byte, 1))
		return err == io.EOF || (err != nil && !strings.Contains(err.Error(), "timeout"))
	}

	// One request, then the server closes the connection.
	conn, err := dial("http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /v1/ca HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("anonymous GET /v1/ca = %d, close=%v; want 200 and the connection closed", resp.StatusCode, resp.Close)
	}
	conn.Close()

	// Anonymous HTTP/2 is refused: joins speak HTTP/1.1.
	if h2, err := dial("h2"); err == nil {
		if !closed(h2, 2*time.Second) {
			t.Error("an anonymous h2 connection stayed open")
		}
		h2.Close()
	}

	// Idle anonymous connections: at most maxAnonymousConns stay open, and
	// only for the lifetime.
	var idle []*tls.Conn
	for i := range maxAnonymousConns {
		// From as many addresses as it takes: each may hold only a few.
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i/maxAnonymousPerSource))}
		cn, err := tls.DialWithDialer(&net.Dialer{LocalAddr: src}, "tcp", a.Addr(),
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, cn)
	}
	// One address may hold only maxAnonymousPerSource of them. The server
	// routes them in its own time (a loaded CI machine takes a while).
	var held int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		a.mux.anonMu.Lock()
		held = a.mux.anonBySource["127.0.1.1"]
		a.mux.anonMu.Unlock()
		if held >= maxAnonymousPerSource || time.Now().After(deadline) {
			break
		}
	}
	if held != maxAnonymousPerSource {
		t.Errorf("127.0.1.1 holds %d anonymous connections; want %d", held, maxAnonymousPerSource)
	}
	extra, err := dial("http/1.1")
	if err == nil {
		if !closed(extra, 2*time.Second) {
			t.Errorf("connection %d beyond the cap of %d stayed open", maxAnonymousConns+1, maxAnonymousConns)
		}
		extra.Close()
	}
	for i, cn := range idle {
		if !closed(cn, 6*time.Second) {
			t.Errorf("idle anonymous connection %d outlived its lifetime", i)
		}
		cn.Close()
	}
	// The slots are free again.
	time.Sleep(100 * time.Millisecond)
	again, err := dial("http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := io.WriteString(again, "GET /v1/ca HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(again), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("after the idle ones were closed: %v %v; want 200", resp, err)
	}
	// Members are not limited: the node's own client still works.
	r, err := a.Client().Get("https://" + a.Addr() + "/v1/ca")
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("member request: %v %v", r, err)
	}
	r.Body.Close()
}
