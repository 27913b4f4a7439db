package ops

import (
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
		!strings.Contains(q.Restore, "--ignore-existing /srv/up.tandem-quarantine/epoch-1/ root@a:/srv/up/") {
		t.Errorf("quarantine = %+v", q)
	}
	if (&Files{Name: "b", Machine: m}).Status() != nil {
		t.Error("a node without [[files]] reports a files status")
	}
}

// TestQuarantineCommandsWork runs the commands 'tandem status' prints for
// a quarantine, as an operator pasting them would: restore puts back
// what the holder lacks and keeps what it has, discard removes the
// quarantine. The path has a space and a quote in it. The remote form
// runs through a stand-in for ssh that runs the remote rsync locally.
func TestQuarantineCommandsWork(t *testing.T) {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed (apt-get install rsync)")
	}
	for _, remote := range []bool{false, true} {
		t.Run(fmt.Sprintf("remote=%v", remote), func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "it's my uploads")
			q := files.QuarantineDir(dir, 4)
			for name, content := range map[string]string{
				dir + "/kept.jpg":           "the holder's version",
				q + "/kept.jpg":             "the old holder's version",
				q + "/2026/11/last one.jpg": "written in the last moment",
			} {
				if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			host := ""
			if remote {
				host = "192.0.2.10"
				bin := t.TempDir()
				// rsync runs "ssh -l root 192.0.2.10 rsync --server ...".
				fake := "#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in -l) shift 2;; -*) shift;; *) break;; esac; done\n" +
					"[ \"$1\" = 192.0.2.10 ] || { echo \"fake ssh: unexpected host $1\" >&2; exit 255; }\nshift\nexec sh -c \"$*\"\n"
				if err := os.WriteFile(filepath.Join(bin, "ssh"), []byte(fake), 0o755); err != nil {
					t.Fatal(err)
				}
				t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
			}
			restore := restoreCommand(q, dir, host)
			if remote && !strings.Contains(restore, "root@192.0.2.10:") {
				t.Fatalf("restore = %s; want it to reach the holder at its address", restore)
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
		})
	}
}

func TestRestoreCommandShapes(t *testing.T) {
	tests := []struct {
		name, host, want string
	}{
		{"this node holds", "", "rsync -a --ignore-existing /srv/up.tandem-quarantine/epoch-3/ /srv/up/"},
		{"an IPv4 holder", "10.0.0.2", "rsync -a --ignore-existing /srv/up.tandem-quarantine/epoch-3/ root@10.0.0.2:/srv/up/"},
		{"an IPv6 holder", "2001:db8::2", "rsync -a --ignore-existing /srv/up.tandem-quarantine/epoch-3/ 'root@[2001:db8::2]:/srv/up/'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := restoreCommand("/srv/up.tandem-quarantine/epoch-3", "/srv/up", tt.host)
			if got != tt.want {
				t.Errorf("restoreCommand = %s; want %s", got, tt.want)
			}
			if out, err := exec.Command("sh", "-n", "-c", got).CombinedOutput(); err != nil {
				t.Errorf("%s is not one shell command: %v %s", got, err, out)
			}
		})
	}
	m := state.New()
	for i, cmd := range []state.Command{
		state.AddMember{Member: state.Member{Name: "a", Role: state.RoleApp, Address: "10.0.0.1:7946"}},
		state.AddMember{Member: state.Member{Name: "b", Role: state.RoleApp, Address: "[2001:db8::2]:7946"}},
		state.SetHolder{Node: "b", Active: true, Reason: "test"},
	} {
		b, _ := state.Encode(cmd)
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	if got := holderHost(m.View(), "a"); got != "2001:db8::2" {
		t.Errorf("holderHost from a = %q; want b's address", got)
	}
	if got := holderHost(m.View(), "b"); got != "" {
		t.Errorf("holderHost on the holder = %q; want this node", got)
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
