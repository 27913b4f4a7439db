package ops

import (
	"context"
	"crypto/x509"
	"slices"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/pki"
)

// CA is the part of the raft node the CA operations use.
type CA interface {
	// RotateCA starts a CA rotation, or returns the one in progress.
	RotateCA(ctx context.Context) (state.Rotation, error)
	// AbortRotation calls off a rotation in its trust phase.
	AbortRotation(ctx context.Context) (state.Rotation, error)
	Credentials() *pki.Node
}

func (s *Service) caRoutes() []localapi.Route {
	if s.o.CA == nil {
		return nil
	}
	return []localapi.Route{
		{Pattern: "GET /v1/ca", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.CAStatus, error) {
			return s.CAStatus(), nil
		})},
		{Pattern: "POST /v1/ca/rotate", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.RotateReply, error) {
			return s.RotateCA(ctx)
		})},
		{Pattern: "POST /v1/ca/abort", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.RotationStatus, error) {
			return s.AbortRotation(ctx)
		})},
	}
}

// RotateCA starts a CA rotation on this app node, or reports the one in
// progress, which goes on by itself.
func (s *Service) RotateCA(ctx context.Context) (localapi.RotateReply, error) {
	if err := s.requireApp("ca rotate"); err != nil {
		return localapi.RotateReply{}, err
	}
	before := s.o.Machine.View().Rotation
	r, err := s.o.CA.RotateCA(ctx)
	if err != nil {
		return localapi.RotateReply{}, err
	}
	st := s.CAStatus()
	out := localapi.RotateReply{Rotation: rotationStatus(r, nil), Resumed: before != nil && before.To == r.To}
	if st.Rotation != nil && st.Rotation.To == r.To {
		out.Rotation = *st.Rotation
	}
	return out, nil
}

// AbortRotation calls off the rotation in progress, in its trust phase.
func (s *Service) AbortRotation(ctx context.Context) (localapi.RotationStatus, error) {
	if err := s.requireApp("ca rotate --abort"); err != nil {
		return localapi.RotationStatus{}, err
	}
	r, err := s.o.CA.AbortRotation(ctx)
	if err != nil {
		return localapi.RotationStatus{}, err
	}
	return rotationStatus(r, nil), nil
}

func rotationStatus(r state.Rotation, waiting []string) localapi.RotationStatus {
	out := localapi.RotationStatus{From: r.From, To: r.To, Phase: r.Phase, By: r.By, Started: r.Started, Waiting: waiting}
	if out.Waiting == nil {
		out.Waiting = []string{}
	}
	if !r.Finished.IsZero() {
		f := r.Finished
		out.Finished, out.Phase = &f, "done"
		if r.Aborted {
			out.Phase = "aborted"
		}
	}
	return out
}

// CAStatus assembles the cluster's CA status from the state, and from
// this node's credentials before the first rotation (when the state names
// no CA).
func (s *Service) CAStatus() localapi.CAStatus {
	v := s.o.Machine.View()
	out := localapi.CAStatus{CAs: []localapi.CAInfo{}, Members: []localapi.CAMember{}, GeneratedAt: s.o.Now()}
	status := func(hash string) string {
		switch {
		case v.Rotation == nil:
			return "current"
		case hash == v.Rotation.From:
			return "old"
		case hash == v.Rotation.To:
			return "new"
		}
		return "unknown"
	}
	var certs []*x509.Certificate
	for _, c := range v.CAs {
		if cert, err := pki.ParseCertPEM([]byte(c.Cert)); err == nil {
			certs = append(certs, cert)
		}
	}
	if len(certs) == 0 && s.o.CA != nil {
		certs = s.o.CA.Credentials().Trusted()
	}
	for _, c := range certs {
		h := pki.Hash(c)
		out.CAs = append(out.CAs, localapi.CAInfo{Hash: h, Subject: c.Subject.CommonName, NotAfter: c.NotAfter, Status: status(h)})
	}
	if r := v.Rotation; r != nil {
		rs := rotationStatus(*r, v.Waiting(v.Membership))
		out.Rotation = &rs
	}
	if r := v.LastRotation; r != nil {
		rs := rotationStatus(*r, nil)
		out.LastRotation = &rs
	}
	for _, name := range v.Names() {
		m := v.Members[name]
		rep, ok := v.CAReports[name]
		cm := localapi.CAMember{Name: name, Role: m.Role, CertCA: rep.Cert, On: "unknown"}
		if ok {
			cm.On = status(rep.Cert)
		}
		if r := v.Rotation; r != nil {
			cm.TrustsNew = slices.Contains(rep.Trusts, r.To)
			cm.HoldsNewKey = slices.Contains(rep.Keys, r.To)
		}
		out.Members = append(out.Members, cm)
	}
	return out
}
