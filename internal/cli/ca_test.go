package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestPrintCAStatus(t *testing.T) {
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name    string
		st      localapi.CAStatus
		want    []string
		notWant []string
	}{
		{
			name: "rotation waiting for the witness",
			st: localapi.CAStatus{
				CAs: []localapi.CAInfo{{Hash: "sha256:old", Subject: "tandem cluster CA 1", NotAfter: at, Status: "old"},
					{Hash: "sha256:new", Subject: "tandem cluster CA 2", NotAfter: at, Status: "new"}},
				Rotation: &localapi.RotationStatus{From: "sha256:old", To: "sha256:new", Phase: "trust", By: "node2", Started: at, Waiting: []string{"witness"}},
				Members: []localapi.CAMember{{Name: "node1", Role: "app", On: "old", TrustsNew: true, HoldsNewKey: true},
					{Name: "witness", Role: "witness", On: "old"}},
			},
			want: []string{"CA old:    sha256:old", "CA new:    sha256:new", "phase trust, started by node2", "waiting for witness",
				"TRUSTS NEW", "witness  witness  old CA", "<- waiting"},
		},
		{
			name: "no rotation",
			st: localapi.CAStatus{
				CAs:     []localapi.CAInfo{{Hash: "sha256:cur", Subject: "tandem cluster CA 3", NotAfter: at, Status: "current"}},
				Members: []localapi.CAMember{{Name: "node1", Role: "app", On: "current"}, {Name: "old", Role: "app", On: "unknown"}},
			},
			want:    []string{"CA current: sha256:cur", "rotation: none in progress", "current CA", "not reported"},
			notWant: []string{"TRUSTS NEW", "waiting"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printCAStatus(&b, tt.st)
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestPhaseLine(t *testing.T) {
	got := phaseLine(localapi.RotationStatus{Phase: "reissue", Waiting: []string{"a", "b"}})
	if want := "phase reissue: waiting for every node to get a certificate from the new CA (a, b)"; got != want {
		t.Errorf("phaseLine = %q; want %q", got, want)
	}
}
