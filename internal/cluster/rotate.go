package cluster

import (
	"context"
	"crypto/x509"
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

// CA rotation ('tandem ca rotate') replaces the cluster CA without
// downtime, in phases the replicated state moves on by itself (see
// state.Trust), so that a crash anywhere only pauses it:
//
//  1. An app node makes a new CA, keeps it on disk (ca-next.*) and commits
//     it next to the old one (state.StartRotation), which also revokes
//     every outstanding join token. Every node trusts both CAs at its next
//     handshake (its TLS configurations read the committed set) and keeps
//     them in trusted.pem; the other app nodes fetch the new CA's key from
//     an app node that holds it (members-only POST /v1/ca/key). Each node
//     reports what it trusts and holds (state.ReportCA).
//  2. Once every member trusts the new CA, and every app node holds its key,
//     each node replaces its certificate with one from the new CA, for the
//     same pinned key: an app node signs its own, a witness asks an app
//     node (POST /v1/renew naming the new CA). It reports again.
//  3. Once every member presents a certificate from the new CA, the old one
//     is dropped: from then on a certificate it issued is refused.
//
// While a rotation runs, no token is created and no node joins. A member
// that is down holds the rotation in its phase until it is back or is
// removed ('tandem ca status' names it).

// rotationRetry is how often a node retries a step of a rotation that
// failed (a peer unreachable, no leader).
const rotationRetry = 2 * time.Second

// caKeyBody is the JSON body of POST /v1/ca/key.
type caKeyBody struct {
	CA string `json:"ca"` // hash of the rotation's new CA
}

// caKeyReply is the JSON reply of POST /v1/ca/key.
type caKeyReply struct {
	Key string `json:"key"` // PEM
}

// RotateCA starts a CA rotation from this app node, or returns the one in
// progress (to wait for it; it goes on by itself). It returns once the
// start is committed; watch the state's Trust for the phases.
func (n *Node) RotateCA(ctx context.Context) (state.Rotation, error) {
	if n.role != state.RoleApp || !n.creds.CanSign() {
		return state.Rotation{}, fmt.Errorf("ca rotate: %w: %s is a %s without the CA key; run 'tandem ca rotate' on an app node",
			state.ErrForbidden, n.name, n.role)
	}
	view := n.machine.View()
	if _, ok := view.Members[n.name]; !ok {
		return state.Rotation{}, fmt.Errorf("ca rotate: %w: %s is not a member of the cluster", state.ErrForbidden, n.name)
	}
	if r := view.Rotation; r != nil {
		return *r, nil
	}
	old := n.creds.CA()
	if len(view.CAs) == 1 && view.CAs[0].Hash != old.Hash() {
		return state.Rotation{}, fmt.Errorf("ca rotate: this node's certificate is from CA %s, not the cluster's %s; wait until it has moved (tandem ca status)",
			old.Hash(), view.CAs[0].Hash)
	}
	ca, err := pki.NewCA(n.now())
	if err != nil {
		return state.Rotation{}, fmt.Errorf("ca rotate: %w", err)
	}
	// On disk before it is committed: once committed, the cluster waits for
	// this key, and a crash must not lose it.
	if n.pkiDir != "" {
		if err := pki.SaveNext(n.pkiDir, ca); err != nil {
			return state.Rotation{}, fmt.Errorf("ca rotate: %w", err)
		}
	}
	n.creds.Hold(ca)
	cmd := state.StartRotation{
		By:  n.name,
		Old: state.TrustedCA{Hash: old.Hash(), Cert: string(old.CertPEM())},
		New: state.TrustedCA{Hash: ca.Hash(), Cert: string(ca.CertPEM())},
		At:  n.now(),
	}
	if err := n.Apply(ctx, cmd); err != nil {
		n.creds.Drop(ca.Hash())
		if n.pkiDir != "" {
			_ = pki.RemoveNext(n.pkiDir)
		}
		if errors.Is(err, state.ErrRotating) {
			// Another app node started one a moment ago: follow it.
			if r := n.machine.View().Rotation; r != nil {
				return *r, nil
			}
		}
		return state.Rotation{}, fmt.Errorf("ca rotate: %w", err)
	}
	n.log.Info("CA rotation started", "from", old.Hash(), "to", ca.Hash())
	n.kickRotation()
	return state.Rotation{From: old.Hash(), To: ca.Hash(), Phase: state.PhaseTrust, By: n.name, Started: cmd.At}, nil
}

// AbortRotation calls off the rotation in progress while it is in its
// trust phase (see state.AbortRotation), from this app node.
func (n *Node) AbortRotation(ctx context.Context) (state.Rotation, error) {
	if n.role != state.RoleApp {
		return state.Rotation{}, fmt.Errorf("ca rotate --abort: %w: %s is a %s; run it on an app node", state.ErrForbidden, n.name, n.role)
	}
	r := n.machine.View().Rotation
	if r == nil {
		return state.Rotation{}, fmt.Errorf("ca rotate --abort: %w: no CA rotation is in progress", state.ErrInvalid)
	}
	cmd := state.AbortRotation{By: n.name, To: r.To, At: n.now()}
	if err := n.Apply(ctx, cmd); err != nil {
		return state.Rotation{}, fmt.Errorf("ca rotate --abort: %w", err)
	}
	n.log.Warn("CA rotation aborted", "from", r.From, "to", r.To)
	n.kickRotation()
	done := *r
	done.Finished, done.Aborted = cmd.At, true
	return done, nil
}

// kickRotation wakes the rotation loop.
func (n *Node) kickRotation() {
	select {
	case n.rotKick <- struct{}{}:
	default:
	}
}

// rotationLoop carries out this node's part of a rotation, and keeps its
// trusted CAs and its report in step with the state.
func (n *Node) rotationLoop(ctx context.Context) {
	t := time.NewTicker(rotationRetry)
	defer t.Stop()
	var lastErr string
	cleaned := false
	for {
		trustCh := n.machine.Changed(state.TrustDomain)
		memberCh := n.machine.Changed(state.MembershipDomain)
		err := n.rotationStep(ctx, &cleaned)
		switch {
		case err == nil:
			lastErr = ""
		case err.Error() != lastErr:
			lastErr = err.Error()
			n.log.Warn("CA rotation: this node's step failed; will retry", "in", rotationRetry, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-trustCh:
		case <-memberCh:
		case <-n.rotKick:
		case <-t.C:
		}
	}
}

// rotationStep does what this node can do now: trust the committed CAs,
// fetch the new CA's key (app nodes), move its certificate to the new CA
// in the reissue phase, clean up after a rotation, and report.
func (n *Node) rotationStep(ctx context.Context, cleaned *bool) error {
	if !n.caughtUp() {
		// Replaying the log at start passes through old rotations; act on
		// the state only once it is the cluster's.
		return nil
	}
	view := n.machine.View()
	if len(view.CAs) > 0 {
		certs := make([]*x509.Certificate, 0, len(view.CAs))
		for _, c := range view.CAs {
			cert, err := pki.ParseCertPEM([]byte(c.Cert))
			if err != nil || pki.Hash(cert) != c.Hash {
				return fmt.Errorf("the committed CA %s does not parse or does not match its hash: %v", c.Hash, err)
			}
			certs = append(certs, cert)
		}
		if n.creds.SetTrust(certs) {
			n.log.Info("trusted CAs changed", "cas", n.creds.TrustedHashes())
			if n.pkiDir != "" {
				if err := n.creds.SaveTrust(n.pkiDir); err != nil {
					return err
				}
			}
		}
	}
	if _, ok := view.Members[n.name]; !ok {
		return nil
	}
	r := view.Rotation
	if r != nil {
		*cleaned = false
		if n.role == state.RoleApp && !slices.Contains(n.creds.KeyHashes(), r.To) {
			if err := n.fetchCAKey(ctx, view, r.To); err != nil {
				return err
			}
		}
		if r.Phase == state.PhaseReissue && n.creds.CA().Hash() != r.To {
			if err := n.reissue(ctx, r.To); err != nil {
				return err
			}
		}
	} else if len(view.CAs) == 1 && n.creds.CA().Hash() != view.CAs[0].Hash {
		// The cluster's CA is not this node's: it missed the reissue (its
		// certificate was replaced by a renewal, say). Peers refuse it
		// until it has one from the cluster's CA.
		mine := n.creds.CA().Hash()
		if err := n.reissue(ctx, view.CAs[0].Hash); err != nil {
			return fmt.Errorf("this node's certificate is from CA %s, not the cluster's %s, so peers refuse it, and replacing it failed (if this persists, remove this node and join it again): %w",
				mine, view.CAs[0].Hash, err)
		}
	} else if !*cleaned && len(view.CAs) == 1 {
		n.creds.Forget()
		if n.pkiDir != "" {
			if err := pki.RemoveNext(n.pkiDir); err != nil {
				return err
			}
		}
		*cleaned = true
	}
	return n.reportCA(ctx, view)
}

// caughtUp reports whether this node has applied the log up to the commit
// index it first learnt; it stays true from then on.
func (n *Node) caughtUp() bool {
	if n.upToDate.Load() {
		return true
	}
	ci := n.raft.CommitIndex()
	if ci == 0 || n.raft.AppliedIndex() < ci {
		return false
	}
	n.upToDate.Store(true)
	return true
}

// reportCA proposes this node's report when the state's differs.
func (n *Node) reportCA(ctx context.Context, view state.Snapshot) error {
	rep := state.CAReport{Trusts: n.creds.TrustedHashes(), Cert: n.creds.CA().Hash()}
	if n.role == state.RoleApp {
		rep.Keys = n.creds.KeyHashes()
	}
	if old, ok := view.CAReports[n.name]; ok && old.Cert == rep.Cert && slices.Equal(old.Trusts, rep.Trusts) && slices.Equal(old.Keys, rep.Keys) {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, n.timing.ApplyTimeout)
	defer cancel()
	err := n.Apply(actx, state.ReportCA{Name: n.name, Report: rep, At: n.now()})
	if errors.Is(err, state.ErrUpgradeNeeded) || errors.Is(err, state.ErrInvalid) {
		// A member (or the leader) runs a tandem without rotations; the
		// report waits for the upgrade, and so does any rotation.
		return nil
	}
	return err
}

// fetchCAKey gets the key of the rotation's new CA from an app member that
// holds it (the one that started the rotation first), checks it against
// the committed certificate, keeps it and saves it.
func (n *Node) fetchCAKey(ctx context.Context, view state.Snapshot, hash string) error {
	i := slices.IndexFunc(view.CAs, func(c state.TrustedCA) bool { return c.Hash == hash })
	if i < 0 {
		return fmt.Errorf("the new CA %s is not committed", hash)
	}
	body, err := json.Marshal(caKeyBody{CA: hash})
	if err != nil {
		return err
	}
	apps := view.Apps()
	if by := view.Rotation.By; slices.Contains(apps, by) {
		apps = slices.Insert(slices.DeleteFunc(apps, func(s string) bool { return s == by }), 0, by)
	}
	var errs []error
	for _, name := range apps {
		if name == n.name {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var reply caKeyReply
		err := postJSON(actx, n.client, view.Members[name].Address, "/v1/ca/key", body, &reply)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		ca, err := pki.ParseCA([]byte(view.CAs[i].Cert), []byte(reply.Key))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if n.pkiDir != "" {
			if err := pki.SaveNext(n.pkiDir, ca); err != nil {
				return err
			}
		}
		n.creds.Hold(ca)
		n.log.Info("CA rotation: got the new CA's key", "ca", hash, "from", name)
		return nil
	}
	if len(errs) == 0 {
		return fmt.Errorf("no other app node to fetch the key of the new CA %s from", hash)
	}
	return fmt.Errorf("fetch the key of the new CA %s: %w", hash, errors.Join(errs...))
}

// handleCAKey hands the key of the rotation's new CA to an app member
// (requireMember has checked the caller's pinned key). Witnesses never
// get a CA key.
func (n *Node) handleCAKey(w http.ResponseWriter, r *http.Request) {
	view := n.machine.View()
	caller := view.Members[PeerName(r)]
	if caller.Role != state.RoleApp {
		n.log.Warn("CA key refused to a member that is not an app node", "peer", caller.Name, "role", caller.Role)
		writeError(w, fmt.Errorf("%w: %s is a %s; only app nodes hold the CA key", state.ErrForbidden, caller.Name, caller.Role))
		return
	}
	var req caKeyBody
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&req); err != nil {
		writeError(w, fmt.Errorf("%w: CA key request: %v", state.ErrInvalid, err))
		return
	}
	if view.Rotation == nil || view.Rotation.To != req.CA {
		writeError(w, fmt.Errorf("%w: %s is not the new CA of a rotation in progress", state.ErrForbidden, req.CA))
		return
	}
	ca := n.creds.Held(req.CA)
	if ca == nil || ca.Key == nil {
		writeError(w, fmt.Errorf("%w: %s does not hold the key of CA %s (yet)", ErrCannotSign, n.name, req.CA))
		return
	}
	key, err := ca.KeyPEM()
	if err != nil {
		writeError(w, err)
		return
	}
	n.log.Info("CA rotation: handed the new CA's key to an app member", "peer", caller.Name, "ca", req.CA)
	writeJSON(w, caKeyReply{Key: string(key)})
}

// reissue moves this node's certificate to the CA with hash to, for the
// same key, and saves it: the certificate first, then the CA files (Load
// finds the issuer either way).
func (n *Node) reissue(ctx context.Context, to string) error {
	// Not at the same time as a renewal, whose certificate from the old CA
	// could otherwise replace this one.
	n.certMu.Lock()
	defer n.certMu.Unlock()
	csr, err := n.creds.CSR()
	if err != nil {
		return err
	}
	var cert []byte
	if ca := n.creds.Held(to); ca != nil && ca.Key != nil {
		cert, err = ca.SignCSRFor(csr, n.name, n.now(), n.certValidity)
	} else {
		cert, err = n.renewThroughApp(ctx, csr, to)
	}
	if err != nil {
		return fmt.Errorf("a certificate from the new CA %s: %w", to, err)
	}
	if err := n.creds.Replace(cert); err != nil {
		return err
	}
	if n.pkiDir != "" {
		if err := n.creds.SaveCert(n.pkiDir); err != nil {
			return err
		}
		if err := n.creds.SaveCA(n.pkiDir); err != nil {
			return err
		}
	}
	n.log.Info("CA rotation: this node's certificate is now from the new CA", "ca", to,
		"not_after", n.creds.Current().Leaf.NotAfter)
	return nil
}
