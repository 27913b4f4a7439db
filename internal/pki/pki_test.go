package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustNode(t *testing.T, ca *CA, name string, ips ...string) *Node {
	t.Helper()
	var addrs []netip.Addr
	for _, ip := range ips {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	n, err := ca.Issue(name, addrs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCA(t *testing.T) {
	ca := mustCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA cert: IsCA=%v KeyUsage=%v; want a signing CA", c.IsCA, c.KeyUsage)
	}
	if got := c.NotAfter.Sub(now); got < 3649*24*time.Hour {
		t.Errorf("CA validity = %v; want 10 years", got)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key = %T; want ECDSA P-256", c.PublicKey)
	}
	h := ca.Hash()
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Errorf("Hash() = %q; want sha256:<64 hex>", h)
	}
	if !MatchesPin(c, h) || !MatchesPin(c, "sha256:"+strings.ToUpper(h[7:])) {
		t.Errorf("MatchesPin(own hash) = false")
	}
	if MatchesPin(mustCA(t).Cert, h) {
		t.Errorf("MatchesPin(other CA) = true")
	}
}

func TestIssue(t *testing.T) {
	ca := mustCA(t)
	n := mustNode(t, ca, "node1", "10.0.0.1", "fd00::1")
	leaf := n.Cert.Leaf
	if leaf.Subject.CommonName != "node1" || !slices.Equal(leaf.DNSNames, []string{"node1"}) {
		t.Errorf("CN=%q DNS=%v; want node1", leaf.Subject.CommonName, leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) || !leaf.IPAddresses[1].Equal(net.ParseIP("fd00::1")) {
		t.Errorf("IPs = %v; want [10.0.0.1 fd00::1]", leaf.IPAddresses)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("ExtKeyUsage = %v; want server and client auth", leaf.ExtKeyUsage)
	}
	if n.Name != "node1" || !n.CanSign() {
		t.Errorf("Name=%q CanSign=%v", n.Name, n.CanSign())
	}
	if len(n.Cert.Certificate) != 2 {
		t.Errorf("chain length = %d; want node + CA", len(n.Cert.Certificate))
	}
}

func csrPEM(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	key, _ := NewKey()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSRRejects(t *testing.T) {
	ca := mustCA(t)
	key, _ := NewKey()
	good, err := NewCSR(key, "node2", nil)
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(strings.Replace(string(good), "A", "B", 5))
	tests := []struct {
		name string
		ca   *CA
		csr  []byte
		node string
		want error
	}{
		{"no CA key", ca.WithoutKey(), good, "node2", ErrNoCAKey},
		{"CN mismatch", ca, good, "node3", ErrInvalidCSR},
		{"bad node name", ca, good, "-bad", ErrInvalidName},
		{"not PEM", ca, []byte("hello"), "node2", ErrInvalidCSR},
		{"tampered", ca, tampered, "node2", ErrInvalidCSR},
		{"extra DNS name", ca, csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node2"}, DNSNames: []string{"node2", "www.example.com"}}), "node2", ErrInvalidCSR},
		{"email", ca, csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node2"}, EmailAddresses: []string{"a@b.c"}}), "node2", ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ca.SignCSR(tt.csr, tt.node, now)
			if !errors.Is(err, tt.want) {
				t.Errorf("SignCSR() error = %v; want %v", err, tt.want)
			}
		})
	}
	if _, err := ca.SignCSR(good, "node2", now); err != nil {
		t.Errorf("SignCSR(good) = %v", err)
	}
}

func TestSaveLoad(t *testing.T) {
	ca := mustCA(t)
	for _, tt := range []struct {
		name    string
		ca      *CA
		wantKey bool
	}{{"app", ca, true}, {"witness", ca.WithoutKey(), false}} {
		t.Run(tt.name, func(t *testing.T) {
			n := mustNode(t, ca, "n-"+tt.name, "127.0.0.1")
			n.ca.Store(tt.ca)
			dir := filepath.Join(t.TempDir(), "pki")
			if Exists(dir) {
				t.Fatal("Exists before Save")
			}
			if err := n.Save(dir); err != nil {
				t.Fatal(err)
			}
			if !Exists(dir) {
				t.Error("Exists after Save = false")
			}
			perms := map[string]os.FileMode{CACertFile: 0o644, NodeCertFile: 0o644, NodeKeyFile: 0o600}
			if tt.wantKey {
				perms[CAKeyFile] = 0o600
			}
			for f, want := range perms {
				st, err := os.Stat(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != want {
					t.Errorf("%s mode = %v; want %v", f, st.Mode().Perm(), want)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); tt.wantKey == errors.Is(err, os.ErrNotExist) {
				t.Errorf("ca.key present = %v; want %v", err == nil, tt.wantKey)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != len(perms) {
				t.Errorf("dir has %d entries; want %d (temp files left?)", len(ents), len(perms))
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != n.Name || got.CanSign() != tt.wantKey || !got.Cert.Leaf.Equal(n.Cert.Leaf) || got.CA().Hash() != ca.Hash() {
				t.Errorf("Load() = %q sign=%v; want %q sign=%v", got.Name, got.CanSign(), n.Name, tt.wantKey)
			}
		})
	}
}

func TestLoadRejectsForeignNodeCert(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	n := mustNode(t, other, "node1")
	n.ca.Store(ca) // node cert from another CA, with this CA's files
	dir := t.TempDir()
	if err := n.Save(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not valid under the cluster CA") {
		t.Errorf("Load() error = %v; want not valid under the cluster CA", err)
	}
	if _, err := ParseCA(ca.CertPEM(), must(other.KeyPEM())); err == nil {
		t.Error("ParseCA(cert, other key) = nil error")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// handshake runs a TLS handshake over an in-memory pipe and returns the
// errors seen by each side and the server's view of the connection.
func handshake(t *testing.T, server, client *tls.Config) (cs tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := tls.Server(a, server)
		serverErr = sc.Handshake()
		cs = sc.ConnectionState()
		if serverErr != nil {
			a.Close()
		} else {
			// TLS 1.3 reports client-cert failures to the client on its
			// first read; make the server read so the client sees them.
			_, _ = sc.Write([]byte("x"))
		}
	}()
	cc := tls.Client(b, client)
	clientErr = cc.Handshake()
	if clientErr == nil {
		buf := make([]byte, 1)
		_, clientErr = cc.Read(buf)
	}
	b.Close()
	<-done
	return cs, serverErr, clientErr
}

func TestMutualTLS(t *testing.T) {
	ca, foreign := mustCA(t), mustCA(t)
	srv := mustNode(t, ca, "srv")
	cli := mustNode(t, ca, "cli")
	evil := mustNode(t, foreign, "cli")
	noCert := cli.ClientConfig()
	noCert.GetClientCertificate = nil
	tests := []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		ok         bool
		wantPeer   string
		wantInMsgs string
	}{
		{"members", srv.ServerConfig(), cli.ClientConfig(), true, "cli", ""},
		{"foreign client cert", srv.ServerConfig(), evil.ClientConfig(), false, "", "certificate"},
		{"foreign server cert", evil.ServerConfig(), cli.ClientConfig(), false, "", "not from the cluster CA"},
		{"no client cert", srv.ServerConfig(), noCert, false, "", "certificate"},
		{"join listener, no client cert", srv.JoinServerConfig(), noCert, true, "", ""},
		{"join listener, member", srv.JoinServerConfig(), cli.ClientConfig(), true, "cli", ""},
		{"join listener, foreign client cert", srv.JoinServerConfig(), evil.ClientConfig(), false, "", "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, serr, cerr := handshake(t, tt.server, tt.client)
			if tt.ok {
				if serr != nil || cerr != nil {
					t.Fatalf("handshake: server %v, client %v; want success", serr, cerr)
				}
				if got := PeerName(&cs); got != tt.wantPeer {
					t.Errorf("PeerName = %q; want %q", got, tt.wantPeer)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("handshake succeeded; want rejection")
			}
			msg := ""
			if serr != nil {
				msg += serr.Error()
			}
			if cerr != nil {
				msg += " " + cerr.Error()
			}
			if !strings.Contains(msg, tt.wantInMsgs) {
				t.Errorf("errors %q; want them to mention %q", msg, tt.wantInMsgs)
			}
		})
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := NewKey()
	good, _ := NewCSR(key, "node1", []netip.Addr{netip.MustParseAddr("10.0.0.1")})
	f.Add(good, "node1")
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), "node1")
	f.Add([]byte{}, "")
	f.Fuzz(func(t *testing.T, b []byte, name string) {
		csr, err := ParseCSR(b, name)
		if err != nil {
			return
		}
		if csr.Subject.CommonName != name || ValidName(name) != nil {
			t.Fatalf("ParseCSR accepted CN %q for name %q", csr.Subject.CommonName, name)
		}
		for _, d := range csr.DNSNames {
			if d != name {
				t.Fatalf("ParseCSR accepted DNS name %q for %q", d, name)
			}
		}
	})
}

func TestRenewal(t *testing.T) {
	ca, foreign := mustCA(t), mustCA(t)
	n := mustNode(t, ca, "node1", "10.0.0.1")
	srvCfg := n.ServerConfig() // made before the renewal: must serve the new certificate
	for _, tt := range []struct {
		left time.Duration
		want bool
	}{{NodeValidity, false}, {NodeValidity/3 + time.Minute, false}, {NodeValidity/3 - time.Minute, true}, {-time.Hour, true},
		{NodeValidity + time.Hour, false}, {CAValidity, true}} {
		at := n.Current().Leaf.NotAfter.Add(-tt.left)
		if got := n.NeedsRenewal(at, NodeValidity); got != tt.want {
			t.Errorf("NeedsRenewal with %v left = %v; want %v", tt.left, got, tt.want)
		}
	}
	csr, err := n.CSR()
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	renewed, err := ca.SignCSRFor(csr, "node1", later, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Refusals first: each leaves the certificate in use as it was.
	other := mustNode(t, ca, "node1")            // same name, another key
	stranger := mustNode(t, ca, "node2")         // another name
	foreignCopy := mustNode(t, foreign, "node1") // another CA
	for name, pemBytes := range map[string][]byte{
		"another key":  certPEM(other.Cert.Leaf.Raw),
		"another name": certPEM(stranger.Cert.Leaf.Raw),
		"another CA":   certPEM(foreignCopy.Cert.Leaf.Raw),
		"garbage":      []byte("nope"),
	} {
		if err := n.Replace(pemBytes); err == nil {
			t.Errorf("Replace(%s) = nil; want refused", name)
		}
	}
	if n.Current().Leaf != n.Cert.Leaf {
		t.Fatal("a refused Replace changed the certificate in use")
	}
	if err := n.Replace(renewed); err != nil {
		t.Fatal(err)
	}
	cur := n.Current().Leaf
	if !cur.NotAfter.Equal(later.Add(time.Hour).Truncate(time.Second)) || Hash(cur) != Hash(n.Cert.Leaf) || len(cur.IPAddresses) != 1 || !cur.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("renewed certificate: not after %v, key %s (was %s), IPs %v", cur.NotAfter, Hash(cur), Hash(n.Cert.Leaf), cur.IPAddresses)
	}
	// Configurations made before the renewal present the renewed one.
	if got, _ := srvCfg.GetCertificate(nil); got.Leaf.SerialNumber.Cmp(cur.SerialNumber) != 0 {
		t.Errorf("server config made before the renewal serves serial %v; want the renewed %v", got.Leaf.SerialNumber, cur.SerialNumber)
	}
	if got, _ := n.ClientConfig().GetClientCertificate(nil); got.Leaf.SerialNumber.Cmp(cur.SerialNumber) != 0 {
		t.Errorf("client config presents serial %v; want the renewed %v", got.Leaf.SerialNumber, cur.SerialNumber)
	}
	cli := mustNode(t, ca, "cli")
	if _, serr, cerr := handshake(t, srvCfg, cli.ClientConfig()); serr != nil || cerr != nil {
		t.Fatalf("handshake after renewal: %v, %v", serr, cerr)
	}
	dir := t.TempDir()
	if err := n.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := n.SaveCert(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(dir)
	if err != nil || loaded.Cert.Leaf.SerialNumber.Cmp(cur.SerialNumber) != 0 {
		t.Errorf("Load after SaveCert = %v; want the renewed certificate", err)
	}
}
