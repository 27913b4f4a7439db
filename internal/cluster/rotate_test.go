package cluster

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// TestCARotation rotates the CA of a cluster of two app nodes and a
// witness, started on the app node that did not found the cluster, with
// the witness down at the start: the rotation waits for it in its first
// phase, goes on once it is back, and ends with every node on the new CA,
// a certificate from the old CA refused (even for a member's pinned key),
// the outstanding tokens revoked and new ones pinning the new CA.
func TestCARotation(t *testing.T) {
	ctx := context.Background()
	c, oldCA, a := founded(t)
	tokW, _ := a.CreateToken(ctx, time.Hour, 1, state.RoleWitness)
	w, _ := c.join(a, tokW.String(), "w", state.RoleWitness)
	tokB, _ := a.CreateToken(ctx, time.Hour, 1, state.RoleApp)
	b, _ := c.join(a, tokB.String(), "b", state.RoleApp)
	eventually(t, 10*time.Second, "three voters", func() bool {
		servers, err := a.Servers(ctx)
		return err == nil && voters(servers) == 3 && len(a.Machine().View().Voters()) == 3
	})
	spare, err := a.CreateToken(ctx, time.Hour, 1, state.RoleApp)
	if err != nil {
		t.Fatal(err)
	}

	// The witness is down when the rotation starts.
	waddr := w.Addr()
	if err := w.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := b.RotateCA(ctx)
	if err != nil {
		t.Fatalf("RotateCA on b: %v", err)
	}
	if r.From != oldCA.Hash() || r.To == r.From || r.Phase != state.PhaseTrust || r.By != "b" {
		t.Fatalf("RotateCA = %+v; want from the old CA, by b, in phase trust", r)
	}
	eventually(t, 10*time.Second, "the rotation to wait for the witness alone", func() bool {
		v := a.Machine().View()
		return v.Rotation != nil && v.Rotation.Phase == state.PhaseTrust && slices.Equal(v.Waiting(v.Membership), []string{"w"})
	})
	if !slices.Contains(a.Credentials().KeyHashes(), r.To) {
		t.Errorf("a holds keys %v; want the new CA's %s", a.Credentials().KeyHashes(), r.To)
	}
	if _, ok := a.Machine().View().Tokens[spare.ID]; ok {
		t.Error("a join token from before the rotation is still valid; want it revoked")
	}
	if _, err := a.CreateToken(ctx, time.Hour, 1, state.RoleApp); !errors.Is(err, state.ErrRotating) {
		t.Errorf("CreateToken during the rotation = %v; want ErrRotating", err)
	}
	// Running it again (on any app node) resumes the same rotation.
	if again, err := a.RotateCA(ctx); err != nil || again.To != r.To {
		t.Errorf("RotateCA again on a = %+v, %v; want the rotation to %s", again, err, r.To)
	}

	// The witness comes back; the rotation goes on by itself.
	w = c.startAgain("w", waddr)
	nodes := []*Node{a, b, w}
	eventually(t, 20*time.Second, "the rotation to finish on every node", func() bool {
		for _, n := range nodes {
			v := n.Machine().View()
			if v.Rotation != nil || len(v.CAs) != 1 || v.CAs[0].Hash != r.To || n.Credentials().CA().Hash() != r.To ||
				!slices.Equal(n.Credentials().TrustedHashes(), []string{r.To}) {
				return false
			}
		}
		return true
	})
	if last := a.Machine().View().LastRotation; last == nil || last.To != r.To || last.Finished.IsZero() {
		t.Errorf("LastRotation = %+v; want the finished rotation to %s", last, r.To)
	}
	for _, n := range nodes {
		if got, want := pki.Hash(n.Credentials().Current().Leaf), n.ownKey(); got != want {
			t.Errorf("%s's key changed: %s, pinned %s", n.Name(), got, want)
		}
		// On disk: the new CA, nothing left of the rotation.
		dir := PKIDir(c.dirs[n.Name()])
		saved, err := pki.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if saved.CA().Hash() != r.To || saved.CanSign() != (n.role == state.RoleApp) {
			t.Errorf("%s's saved CA = %s (key %v); want %s", n.Name(), saved.CA().Hash(), saved.CanSign(), r.To)
		}
		for _, f := range []string{pki.NextCACertFile, pki.NextCAKeyFile, pki.TrustFile} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				t.Errorf("%s still has %s", n.Name(), f)
			}
		}
	}

	// A certificate from the old CA is refused, even one for w's own,
	// pinned key: the CA key of before is worth nothing now.
	wkey := w.Credentials().Current().PrivateKey.(crypto.Signer)
	csr, _ := pki.NewCSR(wkey, "w", nil)
	oldCert, err := oldCA.SignCSR(csr, "w", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	oldW := &tls.Certificate{Certificate: [][]byte{mustLeaf(t, oldCert).Raw, oldCA.Cert.Raw}, PrivateKey: wkey}
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpnH1},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return oldW, nil }}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 3 * time.Second}
	if resp, err := cl.Get("https://" + a.Addr() + "/v1/members"); err == nil {
		resp.Body.Close()
		t.Errorf("GET /v1/members with an old-CA certificate for w's key: HTTP %d; want the handshake refused", resp.StatusCode)
	}

	// The cluster works on new connections, restarts from its files, and
	// new tokens pin the new CA.
	for _, n := range nodes {
		n.Client().CloseIdleConnections()
	}
	if err := w.Apply(ctx, state.SetMemberPriority{Name: "w", Priority: 5}); err != nil {
		t.Fatalf("witness Apply after the rotation: %v", err)
	}
	a = c.restart("a")
	tok, err := a.CreateToken(ctx, time.Hour, 1, state.RoleApp)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != r.To {
		t.Errorf("a new token pins %s; want the new CA %s", tok.CAHash, r.To)
	}
	d, res := c.join(a, tok.String(), "d", state.RoleApp)
	if res.Credentials.CA().Hash() != r.To || !d.Credentials().CanSign() {
		t.Errorf("d joined with CA %s (key %v); want %s with its key", res.Credentials.CA().Hash(), d.Credentials().CanSign(), r.To)
	}
	eventually(t, 10*time.Second, "d to be a voter", func() bool {
		m, ok := a.Machine().View().Members["d"]
		return ok && !m.Pending
	})
}

// TestCARotationRefused: a witness, and a removed member, may neither start
// a rotation nor report for another node; tokens or joins during one are
// refused.
func TestCARotationRefused(t *testing.T) {
	ctx := context.Background()
	c, oldCA, a := founded(t)
	tok, _ := a.CreateToken(ctx, time.Hour, 3, "")
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	x, _ := c.join(a, tok.String(), "x", state.RoleApp)
	eventually(t, 10*time.Second, "four voters", func() bool {
		return len(a.Machine().View().Voters()) == 4
	})
	if err := a.RemoveServer(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	newCA, _ := pki.NewCA(time.Now())
	start := func(by string) state.StartRotation {
		return state.StartRotation{By: by, At: time.Now(),
			Old: state.TrustedCA{Hash: oldCA.Hash(), Cert: string(oldCA.CertPEM())},
			New: state.TrustedCA{Hash: newCA.Hash(), Cert: string(newCA.CertPEM())}}
	}
	encoded := func(cmd state.Command) []byte {
		b, err := state.Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	report := state.ReportCA{Name: "a", Report: state.CAReport{Trusts: []string{newCA.Hash()}, Cert: newCA.Hash()}}
	for _, tt := range []struct {
		name string
		call func() error
		want []error // any of them
	}{
		{"the witness runs ca rotate", func() error { _, err := w.RotateCA(ctx); return err }, []error{state.ErrForbidden}},
		{"the witness proposes a rotation", func() error { return w.Apply(ctx, start("w")) }, []error{state.ErrForbidden}},
		{"the witness proposes one in b's name", func() error { return w.Apply(ctx, start("b")) }, []error{state.ErrForbidden}},
		{"b proposes one in a's name", func() error { return b.Apply(ctx, start("a")) }, []error{state.ErrForbidden}},
		{"the witness reports for a", func() error { return w.Apply(ctx, report) }, []error{state.ErrForbidden}},
		// x may not have applied its own removal: then the leader refuses it.
		{"the removed x runs ca rotate", func() error { _, err := x.RotateCA(ctx); return err }, []error{state.ErrForbidden, ErrUnauthenticated, ErrNoLeader}},
		{"the removed x proposes a rotation", func() error {
			return postJSON(ctx, x.Client(), a.Addr(), "/v1/apply", encoded(start("x")), nil)
		}, []error{ErrUnauthenticated}},
		{"the removed x asks for a CA key", func() error {
			return postJSON(ctx, x.Client(), a.Addr(), "/v1/ca/key", []byte(`{"ca":"`+newCA.Hash()+`"}`), nil)
		}, []error{ErrUnauthenticated}},
		{"the witness asks for a CA key", func() error {
			return postJSON(ctx, w.Client(), a.Addr(), "/v1/ca/key", []byte(`{"ca":"`+newCA.Hash()+`"}`), nil)
		}, []error{state.ErrForbidden}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !slices.ContainsFunc(tt.want, func(want error) bool { return errors.Is(err, want) }) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
	if v := a.Machine().View(); v.Rotation != nil || len(v.CAs) != 0 {
		t.Fatalf("after the refusals the state has rotation %+v, CAs %v; want none", v.Rotation, v.CAs)
	}

	// During a rotation (held in its first phase by a member that is down)
	// no token is created and no one joins, even with a token from before.
	late, _ := a.CreateToken(ctx, time.Hour, 1, state.RoleApp)
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateCA(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, a.Addr(), late.String(), JoinRequest{Name: "y", Role: state.RoleApp, Advertise: freeAddr(t)}); err == nil {
		t.Error("a join during the rotation, with a token from before it, succeeded; want refused")
	} else if !errors.Is(err, state.ErrBadToken) && !errors.Is(err, pki.ErrCAMismatch) {
		t.Errorf("join during the rotation = %v; want the token refused", err)
	}
	if _, err := a.RotateCA(ctx); err != nil {
		t.Errorf("RotateCA during its own rotation = %v; want the rotation in progress", err)
	}
	if !strings.Contains(a.Machine().View().Rotation.Phase, state.PhaseTrust) {
		t.Errorf("phase %q; want trust while b is down", a.Machine().View().Rotation.Phase)
	}

	// Held in its trust phase, it can be called off (not by the witness):
	// every node trusts the old CA alone again and drops the new one.
	if _, err := w.AbortRotation(ctx); !errors.Is(err, state.ErrForbidden) {
		t.Errorf("AbortRotation on the witness = %v; want ErrForbidden", err)
	}
	if _, err := a.AbortRotation(ctx); err != nil {
		t.Fatalf("AbortRotation = %v", err)
	}
	eventually(t, 10*time.Second, "a and w to trust the old CA alone", func() bool {
		for _, n := range []*Node{a, w} {
			v := n.Machine().View()
			if v.Rotation != nil || !slices.Equal(n.Credentials().TrustedHashes(), []string{oldCA.Hash()}) ||
				!slices.Equal(n.Credentials().KeyHashes(), keysOf(n)) {
				return false
			}
		}
		_, err := os.Stat(filepath.Join(PKIDir(c.dirs["a"]), pki.NextCAKeyFile))
		return errors.Is(err, os.ErrNotExist)
	})
	if l := a.Machine().View().LastRotation; l == nil || !l.Aborted {
		t.Errorf("LastRotation = %+v; want the aborted one", l)
	}
	if _, err := a.AbortRotation(ctx); !errors.Is(err, state.ErrInvalid) {
		t.Errorf("AbortRotation with none in progress = %v; want ErrInvalid", err)
	}
}

// keysOf is the CA key a node holds outside a rotation: its CA's, on app
// nodes.
func keysOf(n *Node) []string {
	if n.role != state.RoleApp {
		return nil
	}
	return []string{n.Credentials().CA().Hash()}
}

func mustLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCARotationResumesAfterRestarts: the node that started a rotation
// restarts before any other app node has fetched the new key, and the
// other app node was down all along: the initiator serves the key from its
// disk after the restart, and the rotation finishes once both are up.
func TestCARotationResumesAfterRestarts(t *testing.T) {
	ctx := context.Background()
	c, _, a := founded(t)
	tok, _ := a.CreateToken(ctx, time.Hour, 2, "")
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	eventually(t, 10*time.Second, "three voters", func() bool {
		servers, err := a.Servers(ctx)
		return err == nil && voters(servers) == 3 && len(a.Machine().View().Voters()) == 3
	})
	aaddr := a.Addr()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := b.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b = c.restart("b")
	if got := b.Credentials().KeyHashes(); !slices.Contains(got, r.To) {
		t.Fatalf("b after its restart holds keys %v; want the new CA's %s from ca-next.key", got, r.To)
	}
	a = c.startAgain("a", aaddr)
	nodes := []*Node{a, b, w}
	eventually(t, 20*time.Second, "the rotation to finish on every node", func() bool {
		for _, n := range nodes {
			v := n.Machine().View()
			if v.Rotation != nil || len(v.CAs) != 1 || v.CAs[0].Hash != r.To || n.Credentials().CA().Hash() != r.To {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		n.Client().CloseIdleConnections()
	}
	if err := w.Apply(ctx, state.SetMemberPriority{Name: "w", Priority: 4}); err != nil {
		t.Fatalf("Apply after the rotation: %v", err)
	}
}
