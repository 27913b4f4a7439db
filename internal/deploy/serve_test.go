package deploy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// selfSigned writes a certificate and key for 127.0.0.1, as an operator's
// certificate for the floating IP's name would be.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "site.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"site.example"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "webhook.crt"), filepath.Join(dir, "webhook.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeTLS: with tls_cert and tls_key the listener speaks only TLS
// with the operator's certificate; without them (insecure_http, behind a
// proxy) plain HTTP. Either way a delivery without a signature gets 401.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := NewIntake(IntakeOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Sources: []Source{{Name: "gh", Kind: webhook.GitHub, Rules: webhook.Rules{Branches: []string{"main"}}, SecretFile: secret}}})
	post := func(c *http.Client, url string) (int, error) {
		resp, err := c.Post(url, "application/json", strings.NewReader(`{}`))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	serve := func(t *testing.T, cert, key string) string {
		addr := freeAddr(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- in.Serve(ctx, addr, cert, key) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve = %v", err)
			}
		})
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return addr
			}
			if time.Now().After(deadline) {
				t.Fatal("the listener did not come up")
			}
		}
	}
	t.Run("tls", func(t *testing.T) {
		addr := serve(t, certFile, keyFile)
		trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		if code, err := post(trusting, "https://"+addr+"/webhook/gh"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("over TLS: %d, %v; want 401", code, err)
		}
		if code, err := post(http.DefaultClient, "http://"+addr+"/webhook/gh"); err == nil && code != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS listener answered %d; want it refused", code)
		}
		if _, err := post(&http.Client{}, "https://"+addr+"/webhook/gh"); err == nil {
			t.Error("a client that does not trust the operator's certificate connected")
		}
	})
	t.Run("a renewed certificate is served without a restart", func(t *testing.T) {
		dir := t.TempDir()
		cert, key, oldPool := selfSigned(t, dir)
		addr := serve(t, cert, key)
		trusts := func(pool *x509.CertPool) *http.Client {
			return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
		}
		if code, err := post(trusts(oldPool), "https://"+addr+"/webhook/gh"); err != nil || code != http.StatusUnauthorized {
			t.Fatalf("before the renewal: %d, %v; want 401", code, err)
		}
		// A renewal writes new files in place (a second apart, so the
		// modification times differ on any file system).
		time.Sleep(1100 * time.Millisecond)
		_, _, newPool := selfSigned(t, dir)
		if code, err := post(trusts(newPool), "https://"+addr+"/webhook/gh"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("after the renewal, trusting the new certificate: %d, %v; want 401", code, err)
		}
		if _, err := post(trusts(oldPool), "https://"+addr+"/webhook/gh"); err == nil {
			t.Error("after the renewal the old certificate is still served")
		}
		// A half-written renewal (the key not matching) keeps the last good pair.
		time.Sleep(1100 * time.Millisecond)
		if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, err := post(trusts(newPool), "https://"+addr+"/webhook/gh"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("with a broken key file: %d, %v; want the previous certificate served", code, err)
		}
	})
	t.Run("a certificate that does not load", func(t *testing.T) {
		if err := in.Serve(context.Background(), freeAddr(t), keyFile, certFile); err == nil || !strings.Contains(err.Error(), "deploy.tls_cert") {
			t.Errorf("Serve with the files swapped = %v; want an error naming deploy.tls_cert", err)
		}
	})
	t.Run("plain, behind a proxy", func(t *testing.T) {
		addr := serve(t, "", "")
		if code, err := post(http.DefaultClient, "http://"+addr+"/webhook/gh"); err != nil || code != http.StatusUnauthorized {
			t.Errorf("plain: %d, %v; want 401", code, err)
		}
	})
	t.Run("a port in use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := in.Serve(context.Background(), ln.Addr().String(), "", ""); err == nil || !strings.Contains(err.Error(), "deploy.listen") {
			t.Errorf("Serve on a busy port = %v; want an error naming deploy.listen", err)
		}
	})
}
