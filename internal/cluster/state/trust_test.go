package state

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func caHash(i int) string { return fmt.Sprintf("sha256:%064x", i) }

func trusted(i int) TrustedCA { return TrustedCA{Hash: caHash(i), Cert: fmt.Sprintf("PEM %d", i)} }

// TestCARotationPhases walks a rotation through its phases with the
// members' reports, in a table: each step is one command and the phase,
// waiting members and trusted CAs after it.
func TestCARotationPhases(t *testing.T) {
	old, nw := caHash(1), caHash(2)
	report := func(name string, trusts []string, keys []string, cert string) Command {
		return ReportCA{Name: name, Report: CAReport{Trusts: trusts, Keys: keys, Cert: cert}, At: t0}
	}
	both := []string{old, nw}
	steps := []struct {
		name    string
		cmd     Command
		wantErr error
		phase   string // "" when no rotation is in progress
		waiting []string
		cas     []string
	}{
		{"reports before a rotation", report("node1", []string{old}, []string{old}, old), nil, "", nil, nil},
		{"a report with a bad hash", report("node1", []string{"md5:x"}, nil, old), ErrInvalid, "", nil, nil},
		{"a report for a stranger", report("ghost", both, nil, old), ErrUnknownMember, "", nil, nil},
		{"the witness starts one", StartRotation{By: "witness", Old: trusted(1), New: trusted(2), At: t0}, ErrForbidden, "", nil, nil},
		{"the new CA is the old one", StartRotation{By: "node1", Old: trusted(1), New: trusted(1), At: t0}, ErrInvalid, "", nil, nil},
		{"node1 starts it", StartRotation{By: "node1", Old: trusted(1), New: trusted(2), At: t0}, nil, PhaseTrust, []string{"node1", "node2", "witness"}, both},
		{"a second start", StartRotation{By: "node2", Old: trusted(1), New: trusted(3), At: t0}, ErrRotating, PhaseTrust, []string{"node1", "node2", "witness"}, both},
		{"node1 trusts both and holds the key", report("node1", both, both, old), nil, PhaseTrust, []string{"node2", "witness"}, both},
		{"node2 trusts both but lacks the key", report("node2", both, []string{old}, old), nil, PhaseTrust, []string{"node2", "witness"}, both},
		{"node2 has the key", report("node2", both, both, old), nil, PhaseTrust, []string{"witness"}, both},
		{"the witness trusts both", report("witness", both, nil, old), nil, PhaseReissue, []string{"node1", "node2", "witness"}, both},
		{"node1 is on the new CA", report("node1", both, both, nw), nil, PhaseReissue, []string{"node2", "witness"}, both},
		{"the witness is on the new CA", report("witness", both, nil, nw), nil, PhaseReissue, []string{"node2"}, both},
		{"node2, the last, drops the old CA", report("node2", both, both, nw), nil, "", nil, []string{nw}},
		{"a rotation from a CA that is not the cluster's", StartRotation{By: "node1", Old: trusted(1), New: trusted(3), At: t0}, ErrInvalid, "", nil, []string{nw}},
		{"the next rotation", StartRotation{By: "node2", Old: trusted(2), New: trusted(3), At: t0}, nil, PhaseTrust, []string{"node1", "node2", "witness"}, []string{nw, caHash(3)}},
	}
	m := threeNodes(t)
	if err := mustApply(t, m, 10, AddToken{Token: Token{ID: "tok", SecretHash: "h", UsesLeft: 1, Expires: t0.Add(1e12)}}); err != nil {
		t.Fatal(err)
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := mustApply(t, m, uint64(20+i), s.cmd); !errors.Is(err, s.wantErr) {
				t.Fatalf("Apply = %v; want %v", err, s.wantErr)
			}
			v := m.View()
			phase := ""
			if v.Rotation != nil {
				phase = v.Rotation.Phase
			}
			var cas []string
			for _, c := range v.CAs {
				cas = append(cas, c.Hash)
			}
			if phase != s.phase || !slices.Equal(v.Waiting(v.Membership), s.waiting) || !slices.Equal(cas, s.cas) {
				t.Errorf("phase %q waiting %v CAs %v; want %q %v %v", phase, v.Waiting(v.Membership), cas, s.phase, s.waiting, s.cas)
			}
		})
		if s.name == "node1 starts it" {
			if len(m.View().Tokens) != 0 {
				t.Errorf("tokens after the start: %v; want every token revoked", m.View().Tokens)
			}
		}
		if s.name == "node2, the last, drops the old CA" {
			if l := m.View().LastRotation; l == nil || l.To != nw || l.Finished != t0 {
				t.Errorf("last rotation %+v; want the one to %s, finished", l, nw)
			}
		}
	}
}

// TestRemovalMovesRotationOn: a member that is gone no longer holds a
// rotation back once it is removed.
func TestRemovalMovesRotationOn(t *testing.T) {
	m := threeNodes(t)
	both := []string{caHash(1), caHash(2)}
	for i, c := range []Command{
		StartRotation{By: "node1", Old: trusted(1), New: trusted(2), At: t0},
		ReportCA{Name: "node1", Report: CAReport{Trusts: both, Keys: both, Cert: caHash(2)}},
		ReportCA{Name: "witness", Report: CAReport{Trusts: both, Cert: caHash(2)}},
	} {
		if err := mustApply(t, m, uint64(10+i), c); err != nil {
			t.Fatal(err)
		}
	}
	if v := m.View(); v.Rotation == nil || v.Rotation.Phase != PhaseTrust {
		t.Fatalf("rotation %+v; want held in phase trust by node2", v.Rotation)
	}
	if err := mustApply(t, m, 20, RemoveMember{Name: "node2", At: t0}); err != nil {
		t.Fatal(err)
	}
	v := m.View()
	if v.Rotation != nil || len(v.CAs) != 1 || v.CAs[0].Hash != caHash(2) {
		t.Errorf("after node2's removal: rotation %+v, CAs %v; want finished on the new CA", v.Rotation, v.CAs)
	}
	if _, ok := v.CAReports["node2"]; ok {
		t.Error("the removed node2's report is kept")
	}
}

func TestAbortRotation(t *testing.T) {
	both := []string{caHash(1), caHash(2)}
	for _, tt := range []struct {
		name    string
		reports []Command
		abort   AbortRotation
		want    error
	}{
		{"in the trust phase", nil, AbortRotation{By: "node1", To: caHash(2), At: t0}, nil},
		{"another rotation's", nil, AbortRotation{By: "node1", To: caHash(3), At: t0}, ErrInvalid},
		{"in the reissue phase", []Command{
			ReportCA{Name: "node1", Report: CAReport{Trusts: both, Keys: both, Cert: caHash(1)}},
			ReportCA{Name: "node2", Report: CAReport{Trusts: both, Keys: both, Cert: caHash(1)}},
			ReportCA{Name: "witness", Report: CAReport{Trusts: both, Cert: caHash(1)}},
		}, AbortRotation{By: "node1", To: caHash(2), At: t0}, ErrRotating},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := threeNodes(t)
			cmds := append([]Command{StartRotation{By: "node1", Old: trusted(1), New: trusted(2), At: t0}}, tt.reports...)
			for i, c := range cmds {
				if err := mustApply(t, m, uint64(10+i), c); err != nil {
					t.Fatal(err)
				}
			}
			if err := mustApply(t, m, 30, tt.abort); !errors.Is(err, tt.want) {
				t.Fatalf("AbortRotation = %v; want %v", err, tt.want)
			}
			v := m.View()
			if tt.want != nil {
				if v.Rotation == nil {
					t.Error("a refused abort ended the rotation")
				}
				return
			}
			if v.Rotation != nil || len(v.CAs) != 1 || v.CAs[0].Hash != caHash(1) || v.LastRotation == nil || !v.LastRotation.Aborted {
				t.Errorf("after the abort: rotation %+v, CAs %v, last %+v; want the old CA alone", v.Rotation, v.CAs, v.LastRotation)
			}
		})
	}
}

func TestTrustAuthorize(t *testing.T) {
	app, witness := Member{Name: "node1", Role: RoleApp}, Member{Name: "witness", Role: RoleWitness}
	for _, tt := range []struct {
		caller Member
		cmd    Command
		ok     bool
	}{
		{app, StartRotation{By: "node1"}, true},
		{app, StartRotation{By: "node2"}, false},
		{witness, StartRotation{By: "witness"}, false},
		{witness, ReportCA{Name: "witness"}, true},
		{witness, ReportCA{Name: "node1"}, false},
		{app, ReportCA{Name: "node1"}, true},
		{Member{}, ReportCA{Name: ""}, false},
		{app, AbortRotation{By: "node1"}, true},
		{witness, AbortRotation{By: "witness"}, false},
	} {
		b, _ := Encode(tt.cmd)
		err := New().Authorize(tt.caller, b)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrForbidden)) {
			t.Errorf("Authorize(%s, %s %+v) = %v; want ok=%v", tt.caller.Name, tt.cmd.Type(), tt.cmd, err, tt.ok)
		}
	}
}

func TestTrustSnapshotRoundTrip(t *testing.T) {
	m := threeNodes(t)
	if err := mustApply(t, m, 10, StartRotation{By: "node1", Old: trusted(1), New: trusted(2), At: t0}); err != nil {
		t.Fatal(err)
	}
	saved, err := m.Save()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), `"trust"`) {
		t.Fatalf("snapshot lacks the trust section: %s", saved)
	}
	r := New()
	if err := r.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if got := r.View(); got.Rotation == nil || got.Rotation.To != caHash(2) || len(got.CAs) != 2 {
		t.Errorf("restored trust = %+v", got.Trust)
	}
}
