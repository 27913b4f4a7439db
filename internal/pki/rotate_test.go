package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// reissued returns n's certificate re-signed by ca, for the same key.
func reissued(t *testing.T, n *Node, ca *CA) []byte {
	t.Helper()
	csr, err := n.CSR()
	if err != nil {
		t.Fatal(err)
	}
	return must(ca.SignCSR(csr, n.Name, time.Now()))
}

// TestTrustReloads: a listener and a dialer made once accept a peer from a
// new CA after SetTrust, and refuse it again once the CA is dropped.
func TestTrustReloads(t *testing.T) {
	oldCA, newCA := mustCA(t), mustCA(t)
	srv := mustNode(t, oldCA, "srv", "127.0.0.1")
	cli := mustNode(t, newCA, "cli")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	dial := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", ln.Addr().String(), cli.ClientConfig())
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read.
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		return nil
	}
	for _, step := range []struct {
		name     string
		srvTrust []*CA
		cliTrust []*CA
		ok       bool
	}{
		{"each trusts only its own CA", []*CA{oldCA}, []*CA{newCA}, false},
		{"the client trusts both", []*CA{oldCA}, []*CA{oldCA, newCA}, false},
		{"both trust both", []*CA{oldCA, newCA}, []*CA{oldCA, newCA}, true},
		{"the server drops the new CA", []*CA{oldCA}, []*CA{oldCA, newCA}, false},
	} {
		t.Run(step.name, func(t *testing.T) {
			srv.SetTrust(certsOf(step.srvTrust))
			cli.SetTrust(certsOf(step.cliTrust))
			if err := dial(); (err == nil) != step.ok {
				t.Errorf("handshake = %v; want ok=%v", err, step.ok)
			}
		})
	}
}

func certsOf(cas []*CA) []*x509.Certificate {
	var out []*x509.Certificate
	for _, ca := range cas {
		out = append(out, ca.Cert)
	}
	return out
}

func TestReplaceMovesToTheNewCA(t *testing.T) {
	oldCA, newCA, foreign := mustCA(t), mustCA(t), mustCA(t)
	n := mustNode(t, oldCA, "node1", "127.0.0.1")
	pin := Hash(n.Cert.Leaf)
	if err := n.Replace(reissued(t, n, newCA)); err == nil {
		t.Fatal("Replace with a certificate from a CA the node does not trust = nil; want refused")
	}
	n.Hold(newCA)
	n.SetTrust([]*x509.Certificate{oldCA.Cert, newCA.Cert})
	if err := n.Replace(reissued(t, n, foreign)); err == nil {
		t.Fatal("Replace with a certificate from a foreign CA = nil; want refused")
	}
	if err := n.Replace(reissued(t, n, newCA)); err != nil {
		t.Fatal(err)
	}
	cur := n.Current()
	if n.CA().Hash() != newCA.Hash() || !n.CanSign() || Hash(cur.Leaf) != pin || !slices.Equal(cur.Certificate[1], newCA.Cert.Raw) {
		t.Errorf("after Replace: CA %s sign=%v key %s; want the new CA with its key, the same key %s, the new CA in the chain",
			n.CA().Hash(), n.CanSign(), Hash(cur.Leaf), pin)
	}
	if got := n.KeyHashes(); !slices.Contains(got, oldCA.Hash()) || !slices.Contains(got, newCA.Hash()) {
		t.Errorf("KeyHashes = %v; want both CAs' until Forget", got)
	}
	n.Forget()
	if got := n.KeyHashes(); !slices.Equal(got, []string{newCA.Hash()}) {
		t.Errorf("KeyHashes after Forget = %v; want the new CA's only", got)
	}
}

// TestLoadMidRotation: whichever file a crash left behind, a node loads
// with the CA that issued its certificate and the CAs it trusted.
func TestLoadMidRotation(t *testing.T) {
	oldCA, newCA := mustCA(t), mustCA(t)
	for _, tt := range []struct {
		name    string
		app     bool
		moved   bool // node.crt is from the new CA
		next    bool // ca-next.* present
		trust   bool // trusted.pem holds both
		wantCA  *CA
		wantKey bool
	}{
		{"app, trusting both", true, false, true, true, oldCA, true},
		{"app, moved before ca.crt was rewritten", true, true, true, true, newCA, true},
		{"witness, moved before ca.crt was rewritten", false, true, false, true, newCA, false},
		{"witness, before the rotation", false, false, false, false, oldCA, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			n := mustNode(t, oldCA, "n", "127.0.0.1")
			if !tt.app {
				n.ca.Store(oldCA.WithoutKey())
			}
			if err := n.Save(dir); err != nil {
				t.Fatal(err)
			}
			if tt.next {
				if err := SaveNext(dir, newCA); err != nil {
					t.Fatal(err)
				}
			}
			if tt.trust {
				n.SetTrust([]*x509.Certificate{oldCA.Cert, newCA.Cert})
				if err := n.SaveTrust(dir); err != nil {
					t.Fatal(err)
				}
			}
			if tt.moved {
				n.SetTrust([]*x509.Certificate{oldCA.Cert, newCA.Cert})
				if err := n.Replace(reissued(t, n, newCA)); err != nil {
					t.Fatal(err)
				}
				if err := n.SaveCert(dir); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			if got.CA().Hash() != tt.wantCA.Hash() || got.CanSign() != tt.wantKey {
				t.Errorf("Load: CA %s sign=%v; want %s sign=%v", got.CA().Hash(), got.CanSign(), tt.wantCA.Hash(), tt.wantKey)
			}
			wantTrust := []string{oldCA.Hash()}
			if tt.trust {
				wantTrust = append(wantTrust, newCA.Hash())
			}
			slices.Sort(wantTrust)
			if !slices.Equal(got.TrustedHashes(), wantTrust) {
				t.Errorf("Load: trusts %v; want %v", got.TrustedHashes(), wantTrust)
			}
			if tt.next && !slices.Contains(got.KeyHashes(), newCA.Hash()) {
				t.Errorf("Load: holds keys %v; want the new CA's", got.KeyHashes())
			}
		})
	}
	// After the rotation the node trusts its CA only, and trusted.pem goes.
	dir := t.TempDir()
	n := mustNode(t, oldCA, "n")
	n.SetTrust([]*x509.Certificate{oldCA.Cert, newCA.Cert})
	if err := n.SaveTrust(dir); err != nil {
		t.Fatal(err)
	}
	n.SetTrust([]*x509.Certificate{oldCA.Cert})
	if err := n.SaveTrust(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, TrustFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trusted.pem after the rotation: %v; want removed", err)
	}
}
