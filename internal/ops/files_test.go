package ops

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/files"
	"github.com/tandem-ha/tandem/internal/localapi"
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
		q.Restore != "tandem files restore --from b --epoch 1 /srv/up" || q.RestoreOn != "a" {
		t.Errorf("quarantine = %+v; want the restore command for the holder a", q)
	}
	if (&Files{Name: "b", Machine: m}).Status() != nil {
		t.Error("a node without [[files]] reports a files status")
	}
}

// TestQuarantineCommandsWork runs the commands 'tandem status' prints on
// the holder for its own quarantine, as an operator pasting them would:
// restore puts back what the copy lacks and keeps what it has, discard
// removes the quarantine. The path has a space and a quote in it. (On
// another node the command is 'tandem files restore' on the holder:
// internal/files TestRestoreFromQuarantine and rsync TestPullFromQuarantine.)
func TestQuarantineCommandsWork(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed (apt-get install rsync)")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "it's my uploads")
	q := files.QuarantineDir(dir, 4)
	for name, content := range map[string]string{
		dir + "/kept.jpg":           "the holder's version",
		q + "/kept.jpg":             "the old version",
		q + "/2026/11/last one.jpg": "written in the last moment",
	} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	on, restore := restoreCommand(q, dir, 4, "a", "a")
	if on != "a" || !strings.HasPrefix(restore, "rsync -a --ignore-existing ") {
		t.Fatalf("restore on the holder = %s on %s", restore, on)
	}
	if out, err := exec.Command("sh", "-c", restore).CombinedOutput(); err != nil {
		t.Fatalf("restore %s: %v\n%s", restore, err, out)
	}
	for name, want := range map[string]string{"kept.jpg": "the holder's version", "2026/11/last one.jpg": "written in the last moment"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("after restore %s = %q, %v; want %q", name, b, err, want)
		}
	}
	discard := "rm -r " + shellQuote(q)
	if out, err := exec.Command("sh", "-c", discard).CombinedOutput(); err != nil {
		t.Fatalf("discard %s: %v\n%s", discard, err, out)
	}
	if _, err := os.Stat(q); !os.IsNotExist(err) {
		t.Errorf("the quarantine is still there after discard: %v", err)
	}
}

func TestRestoreCommandShapes(t *testing.T) {
	tests := []struct {
		name, holder, self, dir string
		on, want                string
	}{
		{"this node holds", "a", "a", "/srv/up", "a", "rsync -a --ignore-existing /srv/up.tandem-quarantine/epoch-3/ /srv/up/"},
		{"nobody holds", "", "a", "/srv/up", "a", "rsync -a --ignore-existing /srv/up.tandem-quarantine/epoch-3/ /srv/up/"},
		{"another node holds", "b", "a", "/srv/up", "b", "tandem files restore --from a --epoch 3 /srv/up"},
		{"a path with a space", "b", "a", "/srv/my up", "b", "tandem files restore --from a --epoch 3 '/srv/my up'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			on, got := restoreCommand(files.QuarantineDir(tt.dir, 3), tt.dir, 3, tt.holder, tt.self)
			if got != tt.want || on != tt.on {
				t.Errorf("restoreCommand = %s on %s; want %s on %s", got, on, tt.want, tt.on)
			}
			if out, err := exec.Command("sh", "-n", "-c", got).CombinedOutput(); err != nil {
				t.Errorf("%s is not one shell command: %v %s", got, err, out)
			}
		})
	}
}

func TestFilesRoutes(t *testing.T) {
	m := state.New()
	for i, cmd := range []state.Command{
		state.AddMember{Member: state.Member{Name: "a", Role: state.RoleApp, Address: "a:1"}},
		state.SetHolder{Node: "a", Active: true, Reason: "test"},
	} {
		b, _ := state.Encode(cmd)
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	status := func() files.Status { return files.Status{Paths: []files.DirStatus{{Dir: "/srv/up"}}} }
	tests := []struct {
		name       string
		f          *Files
		path, body string
		code       int
		want       string
	}{
		{"sync on the source", &Files{Name: "a", Machine: m, Local: status, SyncAll: func() bool { return true }},
			"/v1/files/sync", `{"full":true}`, 200, "full sync of every path to every receiver started"},
		{"sync on a receiver", &Files{Name: "b", Machine: m, Local: status, SyncAll: func() bool { return false }},
			"/v1/files/sync", `{"full":true}`, 200, "run 'tandem files sync --full' on the holder (a)"},
		{"sync without [[files]]", &Files{Name: "b", Machine: m},
			"/v1/files/sync", `{"full":true}`, 0, "no [[files]]"},
		{"status without [[files]]", &Files{Name: "b", Machine: m},
			"/v1/files/status", "", 0, "no [[files]]"},
		{"status", &Files{Name: "b", Machine: m, Local: status},
			"/v1/files/status", "", 200, `"path":"/srv/up"`},
		{"restore", &Files{Name: "a", Machine: m, Local: status, Restore: func(_ context.Context, from, path string, epoch uint64) (int64, error) {
			if from != "b" || path != "/srv/up" || epoch != 3 {
				return 0, fmt.Errorf("restore(%s, %s, %d)", from, path, epoch)
			}
			return 2, nil
		}}, "/v1/files/restore", `{"path":"/srv/up","from":"b","epoch":3}`, 200, "2 files restored from b's quarantine of epoch 3"},
		{"restore without the epoch", &Files{Name: "a", Machine: m, Local: status, Restore: func(context.Context, string, string, uint64) (int64, error) { return 0, nil }},
			"/v1/files/restore", `{"path":"/srv/up","from":"b"}`, 0, "restore needs the node"},
		{"restore on a receiver", &Files{Name: "b", Machine: m, Local: status, Restore: func(context.Context, string, string, uint64) (int64, error) {
			return 0, errors.New("not the holder: run this on the holder (a)")
		}}, "/v1/files/restore", `{"path":"/srv/up","from":"c","epoch":3}`, 0, "run this on the holder (a)"},
		{"restore without [[files]]", &Files{Name: "b", Machine: m},
			"/v1/files/restore", `{"path":"/srv/up","from":"c","epoch":3}`, 0, "no [[files]]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := localapi.Handler(tt.f.Routes())
			if err != nil {
				t.Fatal(err)
			}
			method := "GET"
			if tt.body != "" {
				method = "POST"
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, tt.path, strings.NewReader(tt.body)))
			if (tt.code == 200) != (rec.Code == 200) || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("%s %s = %d %s; want %d with %q", method, tt.path, rec.Code, rec.Body, tt.code, tt.want)
			}
		})
	}
}
