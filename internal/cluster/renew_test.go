package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// issueFor issues credentials valid for validity from now.
func issueFor(t *testing.T, ca *pki.CA, name string, validity time.Duration) *pki.Node {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	crt, err := ca.SignCSRFor(csr, name, time.Now(), validity)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	n, err := pki.NewNode(ca, crt, kp)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCertificatesRenew runs a cluster whose certificates live 3 s: the
// app node renews its own, the witness through the app node, both with the
// same key, and the cluster keeps working with new connections after the
// first certificates have expired.
func TestCertificatesRenew(t *testing.T) {
	const validity = 3 * time.Second
	ctx := context.Background()
	c := &tlsCluster{t: t, nodes: map[string]*Node{}, certValidity: validity}
	ca, _ := pki.NewCA(time.Now())
	a := c.start(issueFor(t, ca, "a", validity), state.RoleApp, "127.0.0.1:0")
	if err := a.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	tok, err := a.CreateToken(ctx, time.Hour, 1, state.RoleWitness)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	first := map[string]*Node{"a": a, "w": w}
	expiry := time.Time{}
	serials := map[string]string{}
	for name, n := range first {
		leaf := n.Credentials().Current().Leaf
		serials[name] = leaf.SerialNumber.String()
		if leaf.NotAfter.After(expiry) {
			expiry = leaf.NotAfter
		}
	}
	eventually(t, 10*time.Second, "both nodes to renew with their own keys", func() bool {
		for name, n := range first {
			cur := n.Credentials().Current().Leaf
			if cur.SerialNumber.String() == serials[name] || pki.Hash(cur) != n.ownKey() {
				return false
			}
		}
		return true
	})
	// Past the first certificates' expiry, new connections both ways.
	time.Sleep(time.Until(expiry) + 500*time.Millisecond)
	a.Client().CloseIdleConnections()
	w.Client().CloseIdleConnections()
	if err := w.Apply(ctx, state.SetMemberPriority{Name: "w", Priority: 3}); err != nil {
		t.Fatalf("witness Apply through a after the first certificates expired: %v", err)
	}
	resp, err := a.Client().Get("https://" + w.Addr() + "/v1/ca")
	if err != nil {
		t.Fatalf("a to w after the first certificates expired: %v", err)
	}
	resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0]; !got.NotAfter.After(expiry) {
		t.Errorf("w presents a certificate valid until %v; want a renewed one", got.NotAfter)
	}

	// The renewal endpoint signs only the caller's own name and key.
	other := issue(t, ca, "w") // w's name, another key
	otherCSR, _ := other.CSR()
	aCSR, _ := a.Credentials().CSR()
	for _, tt := range []struct {
		name string
		csr  []byte
		want error
	}{
		{"another key", otherCSR, state.ErrForbidden},
		{"another name", aCSR, pki.ErrInvalidCSR},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(renewBody{CSR: string(tt.csr)})
			err := postJSON(ctx, w.Client(), a.Addr(), "/v1/renew", body, &renewReply{})
			if !errors.Is(err, tt.want) {
				t.Errorf("renew = %v; want %v", err, tt.want)
			}
		})
	}
	// And a witness signs nothing.
	csr, _ := a.Credentials().CSR()
	body, _ := json.Marshal(renewBody{CSR: string(csr)})
	if err := postJSON(ctx, a.Client(), w.Addr(), "/v1/renew", body, &renewReply{}); !errors.Is(err, ErrCannotSign) {
		t.Errorf("renew through the witness = %v; want ErrCannotSign", err)
	}
}
