package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// Node certificates are short-lived (pki.NodeValidity) and renewed, with
// the same key so that the pin holds, once a third of their validity is
// left: an app node signs its own with the CA key it holds, a witness asks
// an app node (POST /v1/renew), which signs only the caller's own name and
// pinned key. The TLS configurations read the certificate in use at each
// handshake, so a renewal needs no restart.

// renewBody is the JSON body of POST /v1/renew.
type renewBody struct {
	CSR string `json:"csr"` // PEM, for the caller's own name and key
	// CA, when set, is the hash of the CA to sign with: a CA rotation's
	// new CA, in its reissue phase. Default: the signer's own CA.
	CA string `json:"ca,omitempty"`
}

// renewReply is the JSON reply of POST /v1/renew.
type renewReply struct {
	Cert string `json:"cert"` // PEM
}

// renewLoop renews this node's certificate when it is due, checking at
// start (a node that was down for long renews at once) and then every
// tenth of the validity, at most hourly.
func (n *Node) renewLoop(ctx context.Context) {
	t := time.NewTicker(min(time.Hour, n.certValidity/10))
	defer t.Stop()
	for {
		if n.creds.NeedsRenewal(n.now(), n.certValidity) {
			if err := n.renewCert(ctx); err != nil {
				n.log.Warn("renewing this node's certificate failed; will retry",
					"not_after", n.creds.Current().Leaf.NotAfter, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renewCert renews this node's certificate, puts it in use and saves it.
func (n *Node) renewCert(ctx context.Context) error {
	n.certMu.Lock()
	defer n.certMu.Unlock()
	csr, err := n.creds.CSR()
	if err != nil {
		return err
	}
	var cert []byte
	if n.creds.CanSign() {
		cert, err = n.creds.CA().SignCSRFor(csr, n.name, n.now(), n.certValidity)
	} else {
		cert, err = n.renewThroughApp(ctx, csr, "")
	}
	if err != nil {
		return err
	}
	if err := n.creds.Replace(cert); err != nil {
		return err
	}
	if n.pkiDir != "" {
		if err := n.creds.SaveCert(n.pkiDir); err != nil {
			// In use until the next restart, which renews again.
			n.log.Warn("the renewed certificate is in use but could not be saved", "err", err)
		}
	}
	n.log.Info("renewed this node's certificate", "not_after", n.creds.Current().Leaf.NotAfter)
	return nil
}

// renewThroughApp asks the app members, one after another, to sign csr
// (with the CA of hash ca, unless "").
func (n *Node) renewThroughApp(ctx context.Context, csr []byte, ca string) ([]byte, error) {
	body, err := json.Marshal(renewBody{CSR: string(csr), CA: ca})
	if err != nil {
		return nil, err
	}
	view := n.machine.View()
	var errs []error
	for _, name := range view.Apps() {
		if name == n.name {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var reply renewReply
		err := postJSON(actx, n.client, view.Members[name].Address, "/v1/renew", body, &reply)
		cancel()
		if err == nil {
			return []byte(reply.Cert), nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: no app node to renew this node's certificate through", ErrCannotSign)
	}
	return nil, fmt.Errorf("renew through the app nodes: %w", errors.Join(errs...))
}

// handleRenew signs a member's renewal request, for the caller's own name
// and its pinned key only (the key of the certificate it presents, when
// it has no pin yet), and for no IP address that certificate lacks: a
// renewal extends an identity, it never makes a new one.
func (n *Node) handleRenew(w http.ResponseWriter, r *http.Request) {
	caller := n.machine.View().Members[PeerName(r)]
	if !n.creds.CanSign() {
		writeError(w, fmt.Errorf("%w (%s is a %s)", ErrCannotSign, n.name, n.role))
		return
	}
	var req renewBody
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		writeError(w, fmt.Errorf("%w: renew request: %v", state.ErrInvalid, err))
		return
	}
	csr, err := pki.ParseCSR([]byte(req.CSR), caller.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	presented := r.TLS.VerifiedChains[0][0]
	want := caller.Key
	if want == "" {
		want = pki.Hash(presented)
	}
	if got := pki.HashKey(csr.RawSubjectPublicKeyInfo); got != want {
		n.log.Warn("renewal refused: another key than the member's", "peer", caller.Name, "key", got, "pinned", want)
		writeError(w, fmt.Errorf("%w: %s may renew its certificate only for its own key %s, not %s", state.ErrForbidden, caller.Name, want, got))
		return
	}
	for _, ip := range csr.IPAddresses {
		if !slices.ContainsFunc(presented.IPAddresses, ip.Equal) {
			writeError(w, fmt.Errorf("%w: %s asks for IP address %s, which its certificate lacks; join again to change addresses", state.ErrForbidden, caller.Name, ip))
			return
		}
	}
	signer := n.creds.CA()
	if req.CA != "" && req.CA != signer.Hash() {
		view := n.machine.View()
		if view.Rotation == nil || view.Rotation.To != req.CA || view.Rotation.Phase != state.PhaseReissue {
			writeError(w, fmt.Errorf("%w: CA %s is not the new CA of a rotation in its reissue phase", state.ErrForbidden, req.CA))
			return
		}
		if signer = n.creds.Held(req.CA); signer == nil || signer.Key == nil {
			writeError(w, fmt.Errorf("%w: %s does not hold the key of CA %s (yet)", ErrCannotSign, n.name, req.CA))
			return
		}
	}
	cert, err := signer.SignCSRFor([]byte(req.CSR), caller.Name, n.now(), n.certValidity)
	if err != nil {
		writeError(w, err)
		return
	}
	n.log.Info("renewed a member's certificate", "peer", caller.Name)
	writeJSON(w, renewReply{Cert: string(cert)})
}
