package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// FuzzPeerEndpoints sends arbitrary bodies to the POST endpoints of a
// node's port: the join (anonymous), and as a member the renewal, the CA
// key of a rotation and a state command. Nothing may panic, and nothing an
// anonymous caller sends reaches the raft log.
func FuzzPeerEndpoints(f *testing.F) {
	ctx := context.Background()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	creds, err := ca.Issue("a", []netip.Addr{netip.MustParseAddr("127.0.0.1")}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	n, err := New(ctx, Options{Name: "a", Role: state.RoleApp, DataDir: f.TempDir(), Listen: "127.0.0.1:0",
		TLS: creds, Machine: state.New(), noJoinDelay: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Shutdown(ctx) })
	if err := n.Bootstrap(ctx); err != nil {
		f.Fatal(err)
	}
	tok, err := n.CreateToken(ctx, time.Hour, 1, state.RoleApp)
	if err != nil {
		f.Fatal(err)
	}
	csr, _ := creds.CSR()
	member := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{creds.Cert.Leaf},
		VerifiedChains: [][]*x509.Certificate{{creds.Cert.Leaf, ca.Cert}}}
	paths := []string{"/v1/join", "/v1/renew", "/v1/ca/key", "/v1/apply"}

	f.Add(uint8(0), []byte(fmt.Sprintf(`{"token_id":%q,"token_secret":"x","ca_hash":%q,"name":"b","role":"app","advertise":"127.0.0.1:1","csr":"x"}`, tok.ID, ca.Hash())))
	f.Add(uint8(0), []byte(`{"name":"b"`))
	f.Add(uint8(1), []byte(fmt.Sprintf(`{"csr":%q}`, csr)))
	f.Add(uint8(1), []byte(fmt.Sprintf(`{"csr":%q,"ca":"sha256:00"}`, csr)))
	f.Add(uint8(2), []byte(`{"ca":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}`))
	f.Add(uint8(3), []byte(`{"type":"report_ca","data":{"name":"a","report":{"trusts":[],"cert":"x"}}}`))
	calls := 0
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := paths[int(which)%len(paths)]
		calls++
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:4000", calls>>16&255, calls>>8&255, calls&255)
		anonymous := path == "/v1/join"
		if !anonymous {
			r.TLS = member
		}
		before := n.Machine().View().Index
		w := httptest.NewRecorder()
		n.handler.ServeHTTP(w, r)
		if anonymous && w.Code != http.StatusOK {
			if after := n.Machine().View().Index; after != before {
				t.Fatalf("a refused anonymous join (%d: %s) moved the log from %d to %d", w.Code, w.Body, before, after)
			}
		}
	})
}
