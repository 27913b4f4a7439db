package e2e

import (
	"context"
	"crypto"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/pki"
)

// The lab nodes keep their credentials here (cluster.PKIDir of the
// default data directory).
const labPKI = "/var/lib/tandem/pki"

// memberAddr returns a member's cluster address from a status.
func memberAddr(t *testing.T, st localapi.Status, name string) string {
	t.Helper()
	for _, m := range st.Members {
		if m.Name == name {
			return m.Address
		}
	}
	t.Fatalf("no member %s in %+v", name, st.Members)
	return ""
}

// labCA reads the cluster CA, with its key, from an app node: what an
// attacker who owns that node holds.
func labCA(t *testing.T, ctx context.Context, c *Labctl, node string) *pki.CA {
	t.Helper()
	crt := c.MustSh(t, ctx, node, "cat "+labPKI+"/"+pki.CACertFile)
	key := c.MustSh(t, ctx, node, "cat "+labPKI+"/"+pki.CAKeyFile)
	ca, err := pki.ParseCA([]byte(crt), []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// installCert copies a certificate and key into node's /tmp as NAME.crt and
// NAME.key.
func installCert(t *testing.T, ctx context.Context, c *Labctl, node, name string, certPEM, keyPEM []byte) {
	t.Helper()
	dir := t.TempDir()
	for ext, b := range map[string][]byte{".crt": certPEM, ".key": keyPEM} {
		f := filepath.Join(dir, name+ext)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.CopyIn(ctx, f, node, "/tmp/"+name+ext); err != nil {
			t.Fatal(err)
		}
	}
}

// curlMembers asks addr's members-only GET /v1/members from node with the
// certificate /tmp/NAME.{crt,key} there, and returns the HTTP code, or
// "000" when the TLS handshake was refused.
func curlMembers(t *testing.T, ctx context.Context, c *Labctl, node, name, addr string) string {
	t.Helper()
	r, err := c.Exec(ctx, node, "curl", "-sk", "--max-time", "5", "--cert", "/tmp/"+name+".crt", "--key", "/tmp/"+name+".key",
		"-o", "/dev/null", "-w", "%{http_code}", "https://"+addr+"/v1/members")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(r.Stdout)
}

// TestForgedCertificateRefused is the attack of issue 10, finding 4, in
// the lab: whoever holds an app node's CA key mints a certificate named
// node1 with a key of its own. Every member refuses it, while node1's own
// certificate gets through.
func TestForgedCertificateRefused(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 3*time.Minute)
	st := ready(t, ctx, c)
	ca := labCA(t, ctx, c, "node2")
	forged, err := ca.Issue("node1", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fkey, err := pki.EncodeKeyPEM(forged.Cert.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	installCert(t, ctx, c, "node2", "forged", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: forged.Cert.Leaf.Raw}), fkey)
	c.MustSh(t, ctx, "node2", "cp "+labPKI+"/node.crt /tmp/own.crt && cp "+labPKI+"/node.key /tmp/own.key")
	for _, target := range []string{"node1", "witness"} {
		addr := memberAddr(t, st, target)
		if got := curlMembers(t, ctx, c, "node2", "own", addr); got != "200" {
			t.Fatalf("node2's own certificate at %s (%s): HTTP %s; want 200 (the check must be able to pass)", target, addr, got)
		}
		if got := curlMembers(t, ctx, c, "node2", "forged", addr); got == "200" {
			t.Errorf("a certificate for node1 minted with the CA key got through at %s (%s); want refused", target, addr)
		} else {
			t.Logf("forged node1 certificate at %s: refused (HTTP %s)", target, got)
		}
	}
	if after := ready(t, ctx, c); after.Holder.Node == "" {
		t.Errorf("the cluster lost its holder after the attack: %+v", after.Holder)
	}
}

// TestCARotationInLab rotates the CA while the client requests the site
// every 10 ms: no request fails, the IP does not move, and afterwards a
// certificate from the old CA is refused, even for a member's own key.
func TestCARotationInLab(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	st := ready(t, ctx, c)
	oldCA := labCA(t, ctx, c, "node1")
	// The witness may not start one.
	if r := c.MustExec(t, ctx, "witness", "tandem", "ca", "rotate", "--no-wait"); r.Code == 0 || !strings.Contains(r.Stderr, "app node") {
		t.Errorf("tandem ca rotate on the witness: exit %d, %q; want refused, naming the app nodes", r.Code, r.Stderr)
	}
	tr := startTrial(t, ctx, c, 5*time.Second)
	start := time.Now()
	r := c.MustExec(t, ctx, "node2", "tandem", "ca", "rotate", "--timeout", "2m")
	t.Logf("tandem ca rotate:\n%s%s", r.Stdout, r.Stderr)
	if r.Code != 0 {
		t.Fatalf("tandem ca rotate failed: %s", r.Stderr)
	}
	time.Sleep(6 * time.Second) // let every request started meanwhile finish
	sent := 0
	for _, res := range tr.client.Results() {
		if res.Start.After(start.Add(-time.Second)) {
			sent++
		}
	}
	n := tr.failures(start.Add(-time.Second), time.Now())
	t.Logf("client requests from 1 s before the rotation until 6 s after it: %d, %d failed", sent, n)
	if n > 0 {
		t.Errorf("%d requests failed during the rotation; want none", n)
	}
	stableFor(t, tr, st.Holder.Node, time.Second)
	tr.finish(0)

	var cas localapi.CAStatus
	out := c.MustSh(t, ctx, "witness", "tandem ca status --json")
	if err := json.Unmarshal([]byte(out), &cas); err != nil {
		t.Fatal(err)
	}
	if cas.Rotation != nil || len(cas.CAs) != 1 || cas.CAs[0].Hash == oldCA.Hash() || cas.LastRotation == nil {
		t.Fatalf("ca status after the rotation = %s; want one new CA and a finished rotation", out)
	}
	for _, m := range cas.Members {
		if m.CertCA != cas.CAs[0].Hash {
			t.Errorf("%s is on CA %s; want %s", m.Name, m.CertCA, cas.CAs[0].Hash)
		}
	}

	// node2's own key, certified by the old CA: refused now.
	keyPEM := c.MustSh(t, ctx, "node2", "cat "+labPKI+"/"+pki.NodeKeyFile)
	key, err := pki.ParseKeyPEM([]byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "node2", nil)
	if err != nil {
		t.Fatal(err)
	}
	oldCert, err := oldCA.SignCSR(csr, "node2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	installCert(t, ctx, c, "node2", "oldca", oldCert, []byte(keyPEM))
	c.MustSh(t, ctx, "node2", "cp "+labPKI+"/node.crt /tmp/own.crt && cp "+labPKI+"/node.key /tmp/own.key")
	addr := memberAddr(t, st, "node1")
	if got := curlMembers(t, ctx, c, "node2", "own", addr); got != "200" {
		t.Fatalf("node2's renewed certificate at node1: HTTP %s; want 200", got)
	}
	if got := curlMembers(t, ctx, c, "node2", "oldca", addr); got == "200" {
		t.Error("a certificate from the old CA, for node2's own pinned key, got through after the rotation; want refused")
	}
}
