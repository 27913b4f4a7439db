package lab

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/prereq"
	"github.com/tandem-ha/tandem/packaging"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		n       int
		witness bool
		want    []string // name=addr
		wantErr string
	}{
		{n: 2, witness: true, want: []string{"client=10.77.0.2", "witness=10.77.0.10", "node1=10.77.0.11", "node2=10.77.0.12"}},
		{n: 3, witness: false, want: []string{"client=10.77.0.2", "node1=10.77.0.11", "node2=10.77.0.12", "node3=10.77.0.13"}},
		{n: 1, witness: false, want: []string{"client=10.77.0.2", "node1=10.77.0.11"}},
		{n: 0, wantErr: "out of range"},
		{n: MaxNodes + 1, wantErr: "out of range"},
	}
	for _, tt := range tests {
		ms, err := Plan(tt.n, tt.witness)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Plan(%d) error = %v, want %q", tt.n, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Plan(%d): %v", tt.n, err)
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.Name+"="+m.Addr.String())
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Plan(%d, %v) = %v, want %v", tt.n, tt.witness, got, tt.want)
		}
	}
}

func TestPlanLimits(t *testing.T) {
	ms, err := Plan(MaxNodes, true)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if !Subnet.Contains(m.Addr) {
			t.Errorf("%s's address %s is outside %s", m.Name, m.Addr, Subnet)
		}
		if m.Addr == FloatingIP {
			t.Errorf("%s got the floating IP", m.Name)
		}
		if seen[m.Addr.String()] {
			t.Errorf("address %s used twice", m.Addr)
		}
		seen[m.Addr.String()] = true
		if len(portIf(m.Name)) > 15 || len(netemPortIf(m.Name)) > 15 {
			t.Errorf("interface name for %s is longer than 15 bytes", m.Name)
		}
		if !validMember(m.Name) {
			t.Errorf("planned member %q is not a valid member name", m.Name)
		}
	}
	if last := ms[len(ms)-1].Addr; !last.Less(FloatingIP) {
		t.Errorf("last node address %s is not below the floating IP", last)
	}
}

func TestMemberMAC(t *testing.T) {
	if got := memberMAC(NodeAddr(1), 0); got != "02:00:0a:4d:00:0b" {
		t.Errorf("memberMAC(node1, 0) = %s", got)
	}
	if got := memberMAC(ClientAddr, 1); got != "02:01:0a:4d:00:02" {
		t.Errorf("memberMAC(client, 1) = %s", got)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"tandem", true}, {"e2e", true}, {"lab-2", true}, {"a", true},
		{"", false}, {"Lab", false}, {"-x", false}, {"x-", false}, {"a/b", false},
		{"abcdefghijklmnopq", false}, {"with space", false}, {"dot.ted", false},
	}
	for _, tt := range tests {
		if err := ValidateName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestOwnedNetns(t *testing.T) {
	tests := []struct {
		lab, ns string
		want    bool
	}{
		{"e2e", "tandem-e2e-br", true},
		{"e2e", "tandem-e2e-node1", true},
		{"e2e", "tandem-e2e-node42", true},
		{"e2e", "tandem-e2e-client", true},
		{"e2e", "tandem-e2e-witness", true},
		{"e2e", "tandem-e2e-foo-node1", false}, // lab "e2e-foo"
		{"e2e", "tandem-e2e-node0", false},
		{"e2e", "tandem-e2e2-node1", false},
		{"e2e", "other", false},
	}
	for _, tt := range tests {
		if got := ownedNetns(tt.lab, tt.ns); got != tt.want {
			t.Errorf("ownedNetns(%q, %q) = %v, want %v", tt.lab, tt.ns, got, tt.want)
		}
	}
}

func TestDecodeStateReadsOldNodeRole(t *testing.T) {
	s, err := decodeState([]byte(`{"version":1,"name":"tandem","members":[{"name":"node1","role":"node","address":"10.77.0.11"},{"name":"witness","role":"witness","address":"10.77.0.10"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{s.Members[0].Role, s.Members[1].Role}; !slices.Equal(got, []string{RoleApp, RoleWitness}) {
		t.Errorf("roles = %v, want [app witness]", got)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lab.json")
	in := &state{
		Name: "e2e", Image: "/var/cache/tandem/lab/bookworm-x", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Members: []memberState{
			{Name: "client", Role: RoleClient, Addr: "10.77.0.2"},
			{Name: "node1", Role: RoleApp, Addr: "10.77.0.11", Nspawn: procID{PID: 42, Start: 99},
				Netem: &Netem{Delay: 100 * time.Millisecond, Loss: 2}, Forwarder: procID{PID: 43, Start: 100}},
		},
	}
	if err := saveState(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the state:\n in %+v\nout %+v", in, out)
	}
	m, err := out.member("node1")
	if err != nil || m.Nspawn.PID != 42 {
		t.Errorf("member(node1) = %+v, %v", m, err)
	}
	if _, err := out.member("node9"); err == nil || !strings.Contains(err.Error(), "no node") {
		t.Errorf("member(node9) error = %v", err)
	}
	// No temporary files are left next to it.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want 1", len(ents))
	}
	if _, err := loadState(filepath.Join(dir, "missing.json")); !errors.Is(err, ErrNoLab) {
		t.Errorf("loadState(missing) = %v, want ErrNoLab", err)
	}
}

func TestDecodeStateRejects(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"garbage", "{", "parse"},
		{"version", `{"version":2,"name":"x"}`, "version 2"},
		{"bad lab name", `{"version":1,"name":"../etc"}`, "invalid"},
		{"bad member", `{"version":1,"name":"x","members":[{"name":"../../root"}]}`, "bad member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeState([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decodeState(%s) = %v, want error containing %q", tt.doc, err, tt.want)
			}
		})
	}
}

func TestParseNetem(t *testing.T) {
	tests := []struct {
		delay, jitter, loss string
		want                Netem
		wantErr             string
	}{
		{"100ms", "", "", Netem{Delay: 100 * time.Millisecond}, ""},
		{"100ms", "20ms", "2%", Netem{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 2}, ""},
		{"", "", "0.5%", Netem{Loss: 0.5}, ""},
		{"", "", "10", Netem{Loss: 10}, ""},
		{"1s", "", "100%", Netem{Delay: time.Second, Loss: 100}, ""},
		{"", "", "", Netem{}, "needs --delay or --loss"},
		{"fast", "", "", Netem{}, "not a duration"},
		{"100ms", "x", "", Netem{}, "not a duration"},
		{"-1ms", "", "", Netem{}, "out of range"},
		{"2m", "", "", Netem{}, "out of range"},
		{"10ms", "20ms", "", Netem{}, "--jitter"},
		{"", "", "101%", Netem{}, "out of range"},
		{"", "", "-1%", Netem{}, "out of range"},
		{"", "", "two%", Netem{}, "not a percentage"},
		{"", "", "NaN", Netem{}, "not a percentage"},
	}
	for _, tt := range tests {
		got, err := ParseNetem(tt.delay, tt.jitter, tt.loss)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseNetem(%q,%q,%q) error = %v, want %q", tt.delay, tt.jitter, tt.loss, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseNetem(%q,%q,%q) = %+v, %v; want %+v", tt.delay, tt.jitter, tt.loss, got, err, tt.want)
		}
	}
}

func TestNetemString(t *testing.T) {
	tests := []struct {
		n    Netem
		want string
	}{
		{Netem{Delay: 100 * time.Millisecond}, "delay 100ms"},
		{Netem{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 2}, "delay 100ms ±20ms, loss 2%"},
		{Netem{Loss: 0.5}, "loss 0.5%"},
	}
	for _, tt := range tests {
		if got := tt.n.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestParseMirror(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"deb822", `Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
`, "http://mirror.example/debian"},
		{"deb822 security first", `Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: https://mirror.example/debian
Suites: bookworm
Components: main contrib
`, "https://mirror.example/debian"},
		{"deb822 disabled", "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n", ""},
		{"one-line", "# comment\ndeb http://ftp.example/debian bookworm main contrib\n", "http://ftp.example/debian"},
		{"one-line options", "deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian bookworm main\n", "http://ftp.example/debian"},
		{"one-line other suite", "deb http://x/debian bullseye main\ndeb-src http://y/debian bookworm main\n", ""},
		{"no main", "deb https://packages.example/apt bookworm stable\n", ""},
		{"third-party only", "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseMirror(tt.text, "bookworm"); got != tt.want {
				t.Errorf("parseMirror = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestImageKey(t *testing.T) {
	a := imageKey("bookworm", []string{"systemd", "curl"}, 1)
	if b := imageKey("bookworm", []string{"curl", "systemd"}, 1); a != b {
		t.Errorf("key depends on package order: %s vs %s", a, b)
	}
	for _, other := range []string{
		imageKey("bookworm", []string{"systemd", "curl", "vim"}, 1),
		imageKey("bookworm", []string{"systemd", "curl"}, 2),
		imageKey("trixie", []string{"systemd", "curl"}, 1),
	} {
		if other == a {
			t.Errorf("a changed recipe kept key %s", a)
		}
	}
	if !strings.HasPrefix(filepath.Base(ImagePath("/c")), "bookworm-") {
		t.Errorf("ImagePath = %s", ImagePath("/c"))
	}
}

func TestParseStat(t *testing.T) {
	line := "1234 (systemd (x) y) S 77 1234 1234 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
	st, ppid, start, err := parseStat(line)
	if err != nil || st != 'S' || ppid != 77 || start != 987654 {
		t.Errorf("parseStat = %c %d %d %v, want S 77 987654", st, ppid, start, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S", "1 (x) S notanumber 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19"} {
		if _, _, _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
}

func TestParseMountsUnder(t *testing.T) {
	mounts := `overlay /var/lib/tandem/lab/e2e/node1/merged overlay rw 0 0
proc /proc proc rw 0 0
overlay /var/lib/tandem/lab/e2e-2/node1/merged overlay rw 0 0
tmpfs /var/lib/tandem/lab/e2e/node1/merged/run tmpfs rw 0 0
overlay /var/lib/tandem/lab/e2e/my\040node/merged overlay rw 0 0
`
	got := parseMountsUnder(mounts, "/var/lib/tandem/lab/e2e")
	want := []string{
		"/var/lib/tandem/lab/e2e/my node/merged",
		"/var/lib/tandem/lab/e2e/node1/merged/run",
		"/var/lib/tandem/lab/e2e/node1/merged",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseMountsUnder = %q, want %q", got, want)
	}
}

func TestParseCopyTarget(t *testing.T) {
	tests := []struct {
		arg, node, dst, wantErr string
	}{
		{"node1:/root/app.deb", "node1", "/root/app.deb", ""},
		{"client:/tmp/", "client", "/tmp/", ""},
		{"witness:/etc/tandem/tandem.toml", "witness", "/etc/tandem/tandem.toml", ""},
		{"node1", "", "", "NODE:PATH"},
		{":/x", "", "", "NODE:PATH"},
		{"node1:", "", "", "NODE:PATH"},
		{"node1:relative", "", "", "absolute"},
		{"br:/x", "", "", "names no lab node"},
		{"host:/x", "", "", "names no lab node"},
	}
	for _, tt := range tests {
		node, dst, err := ParseCopyTarget(tt.arg)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseCopyTarget(%q) error = %v, want %q", tt.arg, err, tt.wantErr)
			}
			continue
		}
		if err != nil || node != tt.node || dst != tt.dst {
			t.Errorf("ParseCopyTarget(%q) = %q, %q, %v", tt.arg, node, dst, err)
		}
	}
}

func TestParsePartitionSet(t *testing.T) {
	doc := `{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "bridge", "name": "partitioned", "table": "tandem", "type": "ifname", "handle": 2, "elem": ["ve-node1", "vp-node1"]}}]}`
	got, err := parsePartitionSet([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !got["ve-node1"] || !got["vp-node1"] || len(got) != 2 {
		t.Errorf("parsePartitionSet = %v", got)
	}
	empty := `{"nftables": [{"metainfo": {}}, {"set": {"name": "partitioned"}}]}`
	if got, err := parsePartitionSet([]byte(empty)); err != nil || len(got) != 0 {
		t.Errorf("empty set = %v, %v", got, err)
	}
	if _, err := parsePartitionSet([]byte("nope")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestCheckPrereqs(t *testing.T) {
	have := func(missing ...string) func(string) (string, error) {
		return func(bin string) (string, error) {
			for _, m := range missing {
				if m == bin {
					return "", errors.New("not found")
				}
			}
			return "/usr/bin/" + bin, nil
		}
	}
	statOK := func(string) (fs.FileInfo, error) { return nil, nil }
	statNo := func(string) (fs.FileInfo, error) { return nil, fs.ErrNotExist }
	fsOK := "nodev\tproc\nnodev\toverlay\n"
	tests := []struct {
		name      string
		needImage bool
		euid      int
		look      func(string) (string, error)
		stat      func(string) (fs.FileInfo, error)
		fs        string
		want      string // substring of the error; "" = ok
	}{
		{"ok", true, 0, have(), statOK, fsOK, ""},
		{"not root", true, 1000, have(), statOK, fsOK, "root"},
		{"no nspawn", false, 0, have("systemd-nspawn"), statOK, fsOK, "systemd-container"},
		{"no debootstrap, image cached", false, 0, have("debootstrap"), statOK, fsOK, ""},
		{"no debootstrap, image needed", true, 0, have("debootstrap"), statOK, fsOK, "apt-get install debootstrap"},
		{"no ip", false, 0, have("ip"), statOK, fsOK, "iproute2"},
		{"no netns", false, 0, have(), statNo, fsOK, "network namespace"},
		{"no overlayfs", false, 0, have(), statOK, "nodev\tproc\n", "overlayfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPrereqs(tt.needImage, tt.euid, tt.look, tt.stat, tt.fs)
			if tt.want == "" {
				if err != nil {
					t.Errorf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !prereq.Is(err) {
				t.Errorf("error = %v, want a prereq.Error containing %q", err, tt.want)
			}
		})
	}
}

// TestToolsInLabDeps ties the tools checked here to the one package list
// that make deps installs and CI uses.
func TestToolsInLabDeps(t *testing.T) {
	deps := packaging.LabDeps()
	for _, tool := range append(tools, struct{ bin, pkg string }{"debootstrap", "debootstrap"}) {
		// mount is Essential: every Debian system has it.
		if tool.pkg != "mount" && !slices.Contains(deps, tool.pkg) {
			t.Errorf("the lab needs %s from %s, which packaging/lab-deps.txt lacks", tool.bin, tool.pkg)
		}
	}
}

func TestMissingPackages(t *testing.T) {
	out := []byte("python3 ii \npython3-venv un \ncurl:amd64 ii \nnftables rc \n")
	st := parseDpkgStatus(out)
	got := missingPackages([]string{"python3", "python3-venv", "curl", "nftables", "python3-gunicorn"}, st)
	want := []string{"python3-venv", "nftables", "python3-gunicorn"}
	if !slices.Equal(got, want) {
		t.Errorf("missing = %v, want %v (status %v)", got, want, st)
	}
}

func TestStageWriterThinsDebootstrap(t *testing.T) {
	var b strings.Builder
	s := &stageWriter{w: &b, start: time.Now()}
	for _, l := range []string{"I: Retrieving InRelease", "I: Validating a", "I: Retrieving a", "I: Retrieving b", "I: Extracting x...", "W: careful", "noise"} {
		s.debootstrapLine(l)
	}
	out := b.String()
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("printed %d lines, want 3 (first Retrieving, Extracting, warning):\n%s", n, out)
	}
	if strings.Contains(out, "Validating") || !strings.Contains(out, "Extracting") || !strings.Contains(out, "W: careful") {
		t.Errorf("unexpected progress:\n%s", out)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"name":"e2e","members":[{"name":"node1","role":"node","address":"10.77.0.11","nspawn":{"pid":1,"start":2}}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			return
		}
		// Whatever decodes must name only things Down may touch.
		if ValidateName(s.Name) != nil {
			t.Fatalf("accepted lab name %q", s.Name)
		}
		for _, m := range s.Members {
			if !validMember(m.Name) || strings.ContainsAny(m.Name, "/.") {
				t.Fatalf("accepted member %q", m.Name)
			}
		}
	})
}

func FuzzParseNetem(f *testing.F) {
	f.Add("100ms", "20ms", "2%")
	f.Add("", "", "0.5")
	f.Fuzz(func(t *testing.T, d, j, l string) {
		n, err := ParseNetem(d, j, l)
		if err != nil {
			return
		}
		if n.Validate() != nil || n.Jitter > n.Delay || n.Loss < 0 || n.Loss > 100 || math.IsNaN(n.Loss) {
			t.Fatalf("accepted invalid %+v", n)
		}
	})
}

func FuzzParseMirror(f *testing.F) {
	f.Add("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n")
	f.Add("deb [a=b] http://x/debian bookworm main\n")
	f.Fuzz(func(t *testing.T, text string) {
		m := parseMirror(text, "bookworm")
		if m != "" && !validMirror(m) {
			t.Fatalf("returned invalid mirror %q", m)
		}
		if strings.ContainsAny(m, " \t\n") {
			t.Fatalf("mirror %q holds whitespace", m)
		}
	})
}

// The per-node commands look their node up under the lab lock and release
// the lock on every error, so a failed command never blocks the next one.
func TestLockMember(t *testing.T) {
	l, err := New(Options{Name: "unit", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// within fails the test if fn blocks (a lock left held would).
	within := func(name string, fn func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); fn() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s blocked: the lab lock was not released", name)
		}
	}
	within("lockMember without a lab", func() {
		if _, _, _, err := l.lockMember("node1"); !errors.Is(err, ErrNoLab) {
			t.Errorf("lockMember without a lab = %v, want ErrNoLab", err)
		}
	})
	if _, _, err := l.member("node1"); !errors.Is(err, ErrNoLab) || !strings.Contains(err.Error(), "tandem lab up --name unit") {
		t.Errorf("member without a lab = %v, want ErrNoLab with a hint", err)
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st := &state{Version: stateVersion, Name: "unit", Members: []memberState{
		{Name: "client", Role: RoleClient, Addr: "10.77.0.2"},
		{Name: "node1", Role: RoleApp, Addr: "10.77.0.11"},
	}}
	if err := saveState(l.statePath(), st); err != nil {
		t.Fatal(err)
	}
	within("lockMember of an unknown node", func() {
		if _, _, _, err := l.lockMember("node9"); err == nil || !strings.Contains(err.Error(), `no node "node9"`) {
			t.Errorf("lockMember(node9) = %v, want no node", err)
		}
	})
	within("lockMember of node1", func() {
		unlock, s, m, err := l.lockMember("node1")
		if err != nil {
			t.Errorf("lockMember(node1) = %v", err)
			return
		}
		defer unlock()
		if m.Addr != "10.77.0.11" || s.Name != "unit" || m != &s.Members[1] {
			t.Errorf("lockMember(node1) = %+v in %+v; want node1 of the loaded state", m, s)
		}
	})
	// The public commands go through the same look-up.
	within("Kill and Start of the client", func() {
		if err := l.Kill(t.Context(), "client"); err == nil || !strings.Contains(err.Error(), "cannot be killed") {
			t.Errorf("Kill(client) = %v", err)
		}
		if err := l.Start(t.Context(), "client"); err == nil || !strings.Contains(err.Error(), "always up") {
			t.Errorf("Start(client) = %v", err)
		}
		if err := l.ClearNetem(t.Context(), "node9"); err == nil || !strings.Contains(err.Error(), "no node") {
			t.Errorf("ClearNetem(node9) = %v", err)
		}
	})
	if got, err := l.WaitRunning(t.Context(), "client"); err != nil || got != StateRunning {
		t.Errorf("WaitRunning(client) = %q, %v", got, err)
	}
	if _, err := l.Exec(t.Context(), "node9", []string{"true"}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "no node") {
		t.Errorf("Exec(node9) = %v", err)
	}
}

// TestPruneImages keeps the new image and the ones a lab still boots from,
// and removes the rest.
func TestPruneImages(t *testing.T) {
	stateDir, cache := t.TempDir(), t.TempDir()
	img := func(key string) string {
		d := filepath.Join(cache, Suite+"-"+key)
		if err := os.MkdirAll(filepath.Join(d, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	current, used, stale := img("current"), img("used"), img("stale")
	other := filepath.Join(cache, "build.log")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := New(Options{Name: "busy", StateDir: stateDir, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(busy.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := saveState(busy.statePath(), &state{Name: "busy", Image: used}); err != nil {
		t.Fatal(err)
	}
	l, err := New(Options{Name: "fresh", StateDir: stateDir, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	pruneImages(cache, current, l.imageInUse, &stageWriter{w: &progress, start: time.Now()})
	for _, tc := range []struct {
		path string
		kept bool
	}{{current, true}, {used, true}, {other, true}, {stale, false}} {
		if _, err := os.Stat(tc.path); (err == nil) != tc.kept {
			t.Errorf("%s: exists %v; want %v", filepath.Base(tc.path), err == nil, tc.kept)
		}
	}
	if !strings.Contains(progress.String(), "removed the old base image "+stale) || !strings.Contains(progress.String(), "a lab still uses it") {
		t.Errorf("progress does not say what was pruned and kept:\n%s", progress.String())
	}
}
