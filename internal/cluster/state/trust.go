package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// TrustDomain names the trust domain: the cluster CAs every node trusts,
// a CA rotation in progress, and what each member reports of its own
// certificate.
const TrustDomain = "trust"

// Phases of a CA rotation. A rotation starts in PhaseTrust with both CAs
// trusted; once every member trusts the new CA (and every app node holds
// its key) it moves to PhaseReissue, where each node replaces its
// certificate with one from the new CA; once every member reports one, the
// old CA is dropped and the rotation ends. The state moves the phases
// itself as reports (ReportCA) and removals arrive, so a rotation needs no
// driver and survives any node's crash.
const (
	PhaseTrust   = "trust"
	PhaseReissue = "reissue"
)

// ErrRotating is a command refused because a CA rotation is in progress.
var ErrRotating = errors.New("a CA rotation is in progress")

// TrustedCA is one CA certificate the cluster trusts.
type TrustedCA struct {
	Hash string `json:"hash"` // "sha256:<hex>" of its public key
	Cert string `json:"cert"` // PEM
}

// Rotation is a CA rotation in progress, or the last one finished.
type Rotation struct {
	From    string    `json:"from"` // hash of the CA being replaced
	To      string    `json:"to"`   // hash of the new CA
	Phase   string    `json:"phase"`
	By      string    `json:"by"` // the app node that started it
	Started time.Time `json:"started"`
	// Finished is set on the last finished rotation (Trust.LastRotation).
	Finished time.Time `json:"finished,omitzero"`
	// Aborted marks a finished rotation that was called off.
	Aborted bool `json:"aborted,omitempty"`
}

// CAReport is what a member reports of its own credentials.
type CAReport struct {
	// Trusts are the hashes of the CAs it accepts peers from.
	Trusts []string `json:"trusts"`
	// Keys are the hashes of the CAs whose key it holds (app nodes).
	Keys []string `json:"keys,omitempty"`
	// Cert is the hash of the CA that issued the certificate it presents.
	Cert string `json:"cert"`
}

// Trust is the trust domain's state. Read-only once published.
type Trust struct {
	// CAs are the CAs every node trusts. Empty until the first rotation:
	// each node then trusts the CA it founded or joined with.
	CAs []TrustedCA `json:"cas,omitempty"`
	// Rotation is the rotation in progress, or nil.
	Rotation *Rotation `json:"rotation,omitempty"`
	// LastRotation is the last finished rotation, or nil.
	LastRotation *Rotation `json:"last_rotation,omitempty"`
	// CAReports holds each member's latest report.
	CAReports map[string]CAReport `json:"ca_reports,omitempty"`
}

type trustDomain struct{}

func (trustDomain) Name() string { return TrustDomain }

func (trustDomain) Commands() []CommandType {
	return []CommandType{
		{Name: StartRotation{}.Type(), Level: 4, New: func() Command { return &StartRotation{} }},
		{Name: ReportCA{}.Type(), Level: 4, Witness: true, New: func() Command { return &ReportCA{} }},
		{Name: AbortRotation{}.Type(), Level: 4, New: func() Command { return &AbortRotation{} }},
	}
}

func (trustDomain) Empty() any { return &Trust{CAReports: map[string]CAReport{}} }

// Clone copies the reports map; CAs and rotations are replaced, never
// changed in place.
func (trustDomain) Clone(v any) any {
	t := *v.(*Trust)
	t.CAReports = maps.Clone(t.CAReports)
	if t.CAReports == nil {
		t.CAReports = map[string]CAReport{}
	}
	return &t
}

func (trustDomain) Save(v any) (json.RawMessage, error) { return json.Marshal(v) }

func (d trustDomain) Restore(data json.RawMessage) (any, error) {
	t := d.Empty().(*Trust)
	if err := json.Unmarshal(data, t); err != nil {
		return nil, err
	}
	if t.CAReports == nil {
		t.CAReports = map[string]CAReport{}
	}
	return t, nil
}

func readTrust(tx *Tx) *Trust { return tx.Read(TrustDomain).(*Trust) }
func editTrust(tx *Tx) *Trust { return tx.Edit(TrustDomain).(*Trust) }

// Rotating reports whether a CA rotation is in progress.
func (t Trust) Rotating() bool { return t.Rotation != nil }

// StartRotation starts a CA rotation: New is trusted next to Old, the
// cluster's CA until now, and every outstanding join token is revoked (a
// token pins the CA hash, and a rotation is for when something may have
// leaked). Only the app node that made the new CA proposes it.
type StartRotation struct {
	By  string    `json:"by"`
	Old TrustedCA `json:"old"`
	New TrustedCA `json:"new"`
	At  time.Time `json:"at"`
}

func (StartRotation) Type() string { return "start_rotation" }

// Authorize lets an app node start a rotation in its own name only.
func (c StartRotation) Authorize(caller Member) error {
	if caller.Name != c.By || caller.Role != RoleApp {
		return fmt.Errorf("%w: %s (a %s) may not start a CA rotation in the name of %q; run 'tandem ca rotate' on an app node",
			ErrForbidden, caller.Name, caller.Role, c.By)
	}
	return nil
}

// Apply implements Command.
func (c StartRotation) Apply(tx *Tx) error {
	t := readTrust(tx)
	if r := t.Rotation; r != nil {
		return fmt.Errorf("%w (to %s, phase %s, started by %s): wait for it to finish ('tandem ca status')", ErrRotating, r.To, r.Phase, r.By)
	}
	m, ok := readMembers(tx).Members[c.By]
	if !ok || m.Role != RoleApp {
		return fmt.Errorf("%w: only an app member may start a CA rotation, not %q", ErrForbidden, c.By)
	}
	for _, ca := range []TrustedCA{c.Old, c.New} {
		if !validKey(ca.Hash) || ca.Cert == "" {
			return fmt.Errorf("%w: CA %q needs a sha256:<64 hex digits> hash and a PEM certificate", ErrInvalid, ca.Hash)
		}
	}
	if c.Old.Hash == c.New.Hash {
		return fmt.Errorf("%w: the new CA is the old one", ErrInvalid)
	}
	if len(t.CAs) > 0 && (len(t.CAs) != 1 || t.CAs[0].Hash != c.Old.Hash) {
		return fmt.Errorf("%w: the cluster's CA is %s, not %s", ErrInvalid, t.CAs[0].Hash, c.Old.Hash)
	}
	e := editTrust(tx)
	e.CAs = []TrustedCA{c.Old, c.New}
	e.Rotation = &Rotation{From: c.Old.Hash, To: c.New.Hash, Phase: PhaseTrust, By: c.By, Started: c.At}
	if len(readMembers(tx).Tokens) > 0 {
		editMembers(tx).Tokens = map[string]Token{}
	}
	advanceRotation(tx, c.At)
	return nil
}

// AbortRotation calls off a rotation in its trust phase, before any node
// has a certificate from the new CA: the old CA alone is trusted again. It
// is the way out when the new CA's key is lost (the node that made it is
// gone before another app node fetched it). In the reissue phase a
// rotation can only go on (remove a member that is gone for good).
type AbortRotation struct {
	By string    `json:"by"`
	To string    `json:"to"` // the rotation's new CA, so an old abort cannot end a newer rotation
	At time.Time `json:"at"`
}

func (AbortRotation) Type() string { return "abort_rotation" }

// Authorize lets an app node abort in its own name only.
func (c AbortRotation) Authorize(caller Member) error {
	if caller.Name != c.By || caller.Role != RoleApp {
		return fmt.Errorf("%w: %s (a %s) may not abort a CA rotation in the name of %q; run 'tandem ca rotate --abort' on an app node",
			ErrForbidden, caller.Name, caller.Role, c.By)
	}
	return nil
}

// Apply implements Command.
func (c AbortRotation) Apply(tx *Tx) error {
	t := readTrust(tx)
	r := t.Rotation
	if r == nil || r.To != c.To {
		return fmt.Errorf("%w: no CA rotation to %s is in progress", ErrInvalid, c.To)
	}
	if r.Phase != PhaseTrust {
		return fmt.Errorf("%w: the rotation to %s is in its %s phase, where nodes already use the new CA; it can only go on (start or remove the members it waits for)",
			ErrRotating, r.To, r.Phase)
	}
	e := editTrust(tx)
	if i := slices.IndexFunc(t.CAs, func(ca TrustedCA) bool { return ca.Hash == r.From }); i >= 0 {
		e.CAs = []TrustedCA{t.CAs[i]}
	}
	done := *r
	done.Finished, done.Aborted = c.At, true
	e.Rotation, e.LastRotation = nil, &done
	return nil
}

// ReportCA records what a member reports of its own credentials, and
// moves a rotation on when every member is ready for its next phase.
type ReportCA struct {
	Name   string    `json:"name"`
	Report CAReport  `json:"report"`
	At     time.Time `json:"at"`
}

func (ReportCA) Type() string { return "report_ca" }

// Authorize lets only the node itself report.
func (c ReportCA) Authorize(caller Member) error {
	if caller.Name != c.Name {
		return fmt.Errorf("%w: %s may not report the credentials of %s", ErrForbidden, caller.Name, c.Name)
	}
	return nil
}

// Apply implements Command.
func (c ReportCA) Apply(tx *Tx) error {
	if _, ok := readMembers(tx).Members[c.Name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Name)
	}
	if !validKey(c.Report.Cert) {
		return fmt.Errorf("%w: certificate CA %q: want sha256:<64 hex digits>", ErrInvalid, c.Report.Cert)
	}
	for _, h := range slices.Concat(c.Report.Trusts, c.Report.Keys) {
		if !validKey(h) {
			return fmt.Errorf("%w: CA hash %q: want sha256:<64 hex digits>", ErrInvalid, h)
		}
	}
	rep := CAReport{Trusts: slices.Sorted(slices.Values(c.Report.Trusts)), Keys: slices.Sorted(slices.Values(c.Report.Keys)), Cert: c.Report.Cert}
	if old, ok := readTrust(tx).CAReports[c.Name]; !ok || !sameReport(old, rep) {
		editTrust(tx).CAReports[c.Name] = rep
	}
	advanceRotation(tx, c.At)
	return nil
}

func sameReport(a, b CAReport) bool {
	return a.Cert == b.Cert && slices.Equal(a.Trusts, b.Trusts) && slices.Equal(a.Keys, b.Keys)
}

// Waiting names the members a rotation in phase waits for, sorted: in
// PhaseTrust those that do not yet trust the new CA (or, app nodes, hold
// its key), in PhaseReissue those whose certificate is not from it yet.
func (t Trust) Waiting(m Membership) []string {
	r := t.Rotation
	if r == nil {
		return nil
	}
	var out []string
	for _, name := range m.Names() {
		rep, ok := t.CAReports[name]
		ready := ok
		switch r.Phase {
		case PhaseTrust:
			ready = ready && slices.Contains(rep.Trusts, r.To) && (m.Members[name].Role != RoleApp || slices.Contains(rep.Keys, r.To))
		case PhaseReissue:
			ready = ready && rep.Cert == r.To
		}
		if !ready {
			out = append(out, name)
		}
	}
	return out
}

// advanceRotation moves a rotation to its next phase while no member
// holds it back: trust, then reissue, then the old CA is dropped.
func advanceRotation(tx *Tx, at time.Time) {
	for {
		t := readTrust(tx)
		r := t.Rotation
		if r == nil || len(t.Waiting(*readMembers(tx))) > 0 {
			return
		}
		e := editTrust(tx)
		next := *r
		switch r.Phase {
		case PhaseTrust:
			next.Phase = PhaseReissue
			e.Rotation = &next
		default:
			if i := slices.IndexFunc(e.CAs, func(ca TrustedCA) bool { return ca.Hash == r.To }); i >= 0 {
				e.CAs = []TrustedCA{e.CAs[i]}
			}
			next.Finished = at
			e.Rotation, e.LastRotation = nil, &next
			return
		}
	}
}

// forgetReport drops a removed member's report and moves a rotation on
// that waited only for it.
func forgetReport(tx *Tx, name string, at time.Time) {
	if tx.Read(TrustDomain) == nil {
		return // a machine without the trust domain (tests of older nodes)
	}
	if _, ok := readTrust(tx).CAReports[name]; ok {
		delete(editTrust(tx).CAReports, name)
	}
	advanceRotation(tx, at)
}
