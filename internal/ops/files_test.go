package ops

import (
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/files"
)

func TestFilesStatus(t *testing.T) {
	m := state.New()
	for i, cmd := range []state.Command{
		state.AddMember{Member: state.Member{Name: "a", Role: state.RoleApp, Address: "a:1"}},
		state.AddMember{Member: state.Member{Name: "b", Role: state.RoleApp, Address: "b:1"}},
		state.SetHolder{Node: "a", Active: true, Reason: "test"},
	} {
		b, err := state.Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	local := files.Status{Paths: []files.DirStatus{{Dir: "/srv/up", Source: "a", SourceEpoch: 1, PullError: "rsync: exit 12",
		SQLite:     []string{"app.db"},
		Quarantine: []files.Quarantine{{Dir: "/srv/up.tandem-quarantine/epoch-1", Epoch: 1, Files: 2}}}}}
	f := &Files{Name: "b", Machine: m, Local: func() files.Status { return local },
		HolderFact: func(holder string) ([]byte, bool) {
			if holder != "a" {
				t.Errorf("asked %s for the holder's fact", holder)
			}
			return []byte(`{"e":1,"d":[{"d":"/srv/up","p":[{"n":"b","l":250,"b":1024}]}]}`), true
		}}
	st := f.Status()
	if st == nil || st.Holder != "a" || st.Sending || !st.FromHolder || len(st.Paths) != 1 {
		t.Fatalf("status = %+v", st)
	}
	p := st.Paths[0]
	if len(p.Nodes) != 1 || p.Nodes[0].Node != "b" || p.Nodes[0].LagSeconds != 0.25 || p.Nodes[0].PendingBytes != 1024 {
		t.Errorf("nodes = %+v; want b's lag from the holder's fact", p.Nodes)
	}
	if len(p.Errors) != 1 || !strings.Contains(p.Errors[0], "exit 12") {
		t.Errorf("errors = %q", p.Errors)
	}
	q := p.Quarantine[0]
	if q.Files != 2 || q.Discard != "rm -r /srv/up.tandem-quarantine/epoch-1" ||
		!strings.Contains(q.Restore, "--ignore-existing /srv/up.tandem-quarantine/epoch-1/ root@a:/srv/up/") {
		t.Errorf("quarantine = %+v", q)
	}
	if (&Files{Name: "b", Machine: m}).Status() != nil {
		t.Error("a node without [[files]] reports a files status")
	}
}
