package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestPrintFilesStatus(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name string
		st   localapi.FilesStatus
		want []string
	}{
		{"holder", localapi.FilesStatus{Node: "a", Holder: "a", Sending: true, Epoch: 7, Paths: []localapi.FilesPath{{
			Path: "/srv/up", LastScan: now,
			Nodes:  []localapi.FilesNode{{Node: "b", LagSeconds: 0.25, PendingBytes: 2048, LastSync: &now, LastError: "dial b: refused"}},
			SQLite: []string{"app.db"},
		}}}, []string{"sends (holder, epoch 7)", "b", "0.250s", "2.0 KiB", "dial b: refused", "WARNING: SQLite", "app.db"}},
		{"returning old holder", localapi.FilesStatus{Node: "a", Holder: "b", Paths: []localapi.FilesPath{{
			Path: "/srv/up", Source: "b", SourceEpoch: 8, LastPull: &now, PullMs: 120,
			Quarantine: []localapi.FilesQuarantine{{Dir: "/srv/up.tandem-quarantine/epoch-8", Epoch: 8, Files: 1,
				Restore: "tandem files restore --from a --epoch 8 /srv/up", RestoreOn: "b", Discard: "rm -r Z"}},
		}}}, []string{"receives from b", "caught up with b (epoch 8)", "QUARANTINE: 1 file only", "restore (on b): tandem files restore --from a --epoch 8 /srv/up", "discard (here, after): rm -r Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printFilesStatus(&b, &tt.st, true)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			// 'tandem status' prints the short form: the lag, warnings
			// and quarantines (count and commands) are all still there.
			b.Reset()
			printFilesStatus(&b, &tt.st, false)
			for _, w := range tt.want {
				if strings.HasPrefix(w, "caught up") {
					continue
				}
				if !strings.Contains(b.String(), w) {
					t.Errorf("'tandem status' output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
