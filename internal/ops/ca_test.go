package ops

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

type fakeCA struct {
	creds   *pki.Node
	started int
}

func (f *fakeCA) RotateCA(ctx context.Context) (state.Rotation, error) {
	f.started++
	return state.Rotation{From: "sha256:old", To: "sha256:new", Phase: state.PhaseTrust, By: "node1"}, nil
}
func (f *fakeCA) AbortRotation(ctx context.Context) (state.Rotation, error) {
	return state.Rotation{}, nil
}
func (f *fakeCA) Credentials() *pki.Node { return f.creds }

func TestCAStatus(t *testing.T) {
	s, fc, _ := newService(t)
	oldCA, _ := pki.NewCA(t0)
	newCA, _ := pki.NewCA(t0)
	creds, err := oldCA.Issue("node1", []netip.Addr{netip.MustParseAddr("127.0.0.1")}, t0)
	if err != nil {
		t.Fatal(err)
	}
	ca := &fakeCA{creds: creds}
	s.o.CA = ca

	// Before any rotation: this node's CA, members unknown until reported.
	st := s.CAStatus()
	if len(st.CAs) != 1 || st.CAs[0].Hash != oldCA.Hash() || st.CAs[0].Status != "current" || st.Rotation != nil {
		t.Fatalf("CA status before a rotation = %+v", st)
	}
	ctx := context.Background()
	for _, c := range []state.Command{
		state.ReportCA{Name: "node1", Report: state.CAReport{Trusts: []string{oldCA.Hash()}, Keys: []string{oldCA.Hash()}, Cert: oldCA.Hash()}},
		state.StartRotation{By: "node1", At: t0,
			Old: state.TrustedCA{Hash: oldCA.Hash(), Cert: string(oldCA.CertPEM())},
			New: state.TrustedCA{Hash: newCA.Hash(), Cert: string(newCA.CertPEM())}},
		state.ReportCA{Name: "node2", Report: state.CAReport{Trusts: []string{oldCA.Hash(), newCA.Hash()}, Keys: []string{newCA.Hash()}, Cert: oldCA.Hash()}},
	} {
		if err := fc.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	st = s.CAStatus()
	if len(st.CAs) != 2 || st.CAs[0].Status != "old" || st.CAs[1].Status != "new" {
		t.Errorf("CAs during the rotation = %+v; want old and new", st.CAs)
	}
	if r := st.Rotation; r == nil || r.Phase != state.PhaseTrust || !slices.Equal(r.Waiting, []string{"node1", "node3", "witness"}) {
		t.Errorf("rotation = %+v; want phase trust waiting for node1, node3, witness", r)
	}
	want := `
# HELP tandem_ca_rotation_phase 1 for the phase of the CA rotation in progress (trust, reissue); every phase 0 when none.
# TYPE tandem_ca_rotation_phase gauge
tandem_ca_rotation_phase{phase="reissue"} 0
tandem_ca_rotation_phase{phase="trust"} 1
`
	if err := testutil.CollectAndCompare(s.Collector(), strings.NewReader(want), "tandem_ca_rotation_phase"); err != nil {
		t.Error(err)
	}
	if w := s.Status(ctx).StateWarning; !strings.Contains(w, "CA rotation is in progress (phase trust, waiting for node1, node3, witness)") {
		t.Errorf("status warning %q; want the rotation named", w)
	}
	byName := map[string]int{}
	for i, m := range st.Members {
		byName[m.Name] = i
	}
	if m := st.Members[byName["node2"]]; m.On != "old" || !m.TrustsNew || !m.HoldsNewKey {
		t.Errorf("node2 = %+v; want on the old CA, trusting the new one and holding its key", m)
	}
	if m := st.Members[byName["witness"]]; m.On != "unknown" || m.TrustsNew {
		t.Errorf("witness = %+v; want unknown", m)
	}

	// Rotating from a witness is refused before it reaches the cluster.
	w := New(Options{Node: "witness", Role: state.RoleWitness, Machine: fc.m, Cluster: fc, CA: ca})
	if _, err := w.RotateCA(ctx); err == nil || ca.started != 0 {
		t.Errorf("RotateCA on a witness = %v (started %d); want refused", err, ca.started)
	}
	r, err := s.RotateCA(ctx)
	if err != nil || ca.started != 1 || r.Rotation.To == "" {
		t.Errorf("RotateCA on an app node = %+v, %v", r, err)
	}
}
