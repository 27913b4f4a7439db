package integrity

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// tree is a fake Debian system under a temp dir.
type tree struct {
	t    *testing.T
	root string
}

func newTree(t *testing.T) *tree {
	t.Helper()
	return &tree{t: t, root: t.TempDir()}
}

func (tr *tree) write(path, content string) {
	tr.t.Helper()
	p := filepath.Join(tr.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

// pkg installs a package: its files on disk and an md5sums listing them
// (as dpkg does: relative paths), plus conffiles.
func (tr *tree) pkg(name string, files map[string]string, conffiles ...string) {
	tr.t.Helper()
	var sums strings.Builder
	for _, path := range slices.Sorted(func(yield func(string) bool) {
		for p := range files {
			if !yield(p) {
				return
			}
		}
	}) {
		sum := md5.Sum([]byte(files[path]))
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), strings.TrimPrefix(path, "/"))
		tr.write(path, files[path])
	}
	tr.write("/var/lib/dpkg/info/"+name+".md5sums", sums.String())
	if len(conffiles) > 0 {
		tr.write("/var/lib/dpkg/info/"+name+".conffiles", strings.Join(conffiles, "\n")+"\n")
	}
}

var fixedNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func (tr *tree) area(run func(context.Context, ...string) ([]byte, error)) *Area {
	return New(Options{Root: tr.root, Run: run, Now: func() time.Time { return fixedNow }, Workers: 3})
}

func enabledTimer(_ context.Context, argv ...string) ([]byte, error) {
	return []byte("enabled\n"), nil
}

func TestScan(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(tr *tree)
		want    []Finding
		files   int
		skipped int
	}{
		{
			name: "clean",
			setup: func(tr *tree) {
				tr.pkg("bash", map[string]string{"/bin/bash": "ELF bash", "/usr/share/doc/bash/README": "doc"})
			},
			files: 2,
		},
		{
			name: "changed and missing",
			setup: func(tr *tree) {
				tr.pkg("bash", map[string]string{"/bin/bash": "ELF bash", "/usr/bin/bashbug": "script"})
				tr.pkg("coreutils:amd64", map[string]string{"/bin/ls": "ELF ls"})
				tr.write("/bin/bash", "ELF bash with a rootkit")
				if err := os.Remove(filepath.Join(tr.root, "bin/ls")); err != nil {
					t.Fatal(err)
				}
			},
			want: []Finding{
				{Package: "bash", Path: "/bin/bash", Kind: Changed},
				{Package: "coreutils:amd64", Path: "/bin/ls", Kind: Missing},
			},
			files: 3,
		},
		{
			name: "conffile changed is not a finding",
			setup: func(tr *tree) {
				tr.pkg("openssh-server", map[string]string{"/usr/sbin/sshd": "ELF sshd", "/etc/ssh/moduli": "moduli"}, "/etc/ssh/moduli", "remove-on-upgrade /etc/old")
				tr.write("/etc/ssh/moduli", "edited by the admin")
			},
			files: 1, skipped: 1,
		},
		{
			name: "path-exclude skips, path-include brings back",
			setup: func(tr *tree) {
				tr.write("/etc/dpkg/dpkg.cfg.d/excludes", "# docs off\npath-exclude=/usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n")
				tr.pkg("bash", map[string]string{
					"/bin/bash": "ELF bash", "/usr/share/doc/bash/README": "doc", "/usr/share/doc/bash/copyright": "GPL",
				})
				if err := os.Remove(filepath.Join(tr.root, "usr/share/doc/bash/README")); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(tr.root, "usr/share/doc/bash/copyright")); err != nil {
					t.Fatal(err)
				}
			},
			want:  []Finding{{Package: "bash", Path: "/usr/share/doc/bash/copyright", Kind: Missing}},
			files: 2, skipped: 1,
		},
		{
			name: "a diverted file is checked where it lives",
			setup: func(tr *tree) {
				tr.pkg("coreutils", map[string]string{"/bin/true": "ELF true"})
				// Another package diverted /bin/true to /bin/true.real and
				// put its own file in place.
				if err := os.Rename(filepath.Join(tr.root, "bin/true"), filepath.Join(tr.root, "bin/true.real")); err != nil {
					t.Fatal(err)
				}
				tr.write("/bin/true", "other package's true")
				tr.write("/var/lib/dpkg/diversions", "/bin/true\n/bin/true.real\nfaketrue\n")
			},
			files: 1,
		},
		{
			name: "a file diverted by its own package stays in place",
			setup: func(tr *tree) {
				tr.pkg("faketrue", map[string]string{"/bin/true": "fake"})
				tr.write("/var/lib/dpkg/diversions", "/bin/true\n/bin/true.real\nfaketrue\n")
			},
			files: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			tt.setup(tr)
			a := tr.area(enabledTimer)
			r, err := a.Scan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				tt.want = []Finding{}
			}
			if !slices.Equal(r.Findings, tt.want) {
				t.Errorf("findings %+v, want %+v", r.Findings, tt.want)
			}
			if r.Files != tt.files || r.Skipped != tt.skipped {
				t.Errorf("files %d skipped %d, want %d and %d", r.Files, r.Skipped, tt.files, tt.skipped)
			}
			// The report is saved and reads back the same.
			saved, err := a.LastReport()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(saved.Findings, r.Findings) || !saved.Finished.Equal(r.Finished) {
				t.Errorf("saved report %+v differs from %+v", saved, r)
			}
		})
	}
}

func TestScanBadMD5SumsIsReportedNotFatal(t *testing.T) {
	tr := newTree(t)
	tr.pkg("bash", map[string]string{"/bin/bash": "ELF bash"})
	tr.write("/var/lib/dpkg/info/broken.md5sums", "not a checksum line\n")
	r, err := tr.area(enabledTimer).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Packages != 1 || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "broken.md5sums") {
		t.Errorf("packages %d errors %q, want 1 package and an error naming broken.md5sums", r.Packages, r.Errors)
	}
}

func TestScanCancelled(t *testing.T) {
	tr := newTree(t)
	files := map[string]string{}
	for i := range 2000 {
		files[fmt.Sprintf("/usr/lib/x/%d", i)] = "x"
	}
	tr.pkg("big", files)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := tr.area(enabledTimer)
	if _, err := a.Scan(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Scan on a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := a.LastReport(); !errors.Is(err, ErrNoScan) {
		t.Errorf("an interrupted scan saved a report: %v", err)
	}
}

func saveReport(t *testing.T, tr *tree, r Report) {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	tr.write(DefaultStatePath, string(data))
}

func TestAudit(t *testing.T) {
	fresh := Report{Started: fixedNow.Add(-2 * time.Hour), Finished: fixedNow.Add(-time.Hour), Packages: 196, Files: 9472, Findings: []Finding{}}
	old := fresh
	old.Finished = fixedNow.Add(-72 * time.Hour)
	dirty := fresh
	dirty.Findings = []Finding{{Package: "bash", Path: "/bin/bash", Kind: Changed}}
	tests := []struct {
		name   string
		report *Report
		raw    string
		timer  string
		want   map[string]check.Status
		substr map[string]string
	}{
		{
			name: "never scanned", timer: "disabled",
			want: map[string]check.Status{"integrity.last-scan": check.Fail, "integrity.packages": check.Error, "integrity.timer": check.Fail},
		},
		{
			name: "fresh and clean", report: &fresh, timer: "enabled",
			want: map[string]check.Status{"integrity.last-scan": check.Pass, "integrity.packages": check.Pass, "integrity.timer": check.Pass},
		},
		{
			name: "too old", report: &old, timer: "enabled",
			want: map[string]check.Status{"integrity.last-scan": check.Fail, "integrity.packages": check.Pass, "integrity.timer": check.Pass},
		},
		{
			name: "changed file", report: &dirty, timer: "enabled",
			want:   map[string]check.Status{"integrity.last-scan": check.Pass, "integrity.packages": check.Fail, "integrity.timer": check.Pass},
			substr: map[string]string{"integrity.packages": "/bin/bash changed (bash)"},
		},
		{
			name: "corrupt report", raw: "{not json", timer: "enabled",
			want: map[string]check.Status{"integrity.last-scan": check.Error, "integrity.packages": check.Error, "integrity.timer": check.Pass},
		},
		{
			name: "systemctl prints nothing", report: &fresh, timer: "",
			want: map[string]check.Status{"integrity.last-scan": check.Pass, "integrity.packages": check.Pass, "integrity.timer": check.Error},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(t)
			if tt.report != nil {
				saveReport(t, tr, *tt.report)
			}
			if tt.raw != "" {
				tr.write(DefaultStatePath, tt.raw)
			}
			a := tr.area(func(_ context.Context, argv ...string) ([]byte, error) {
				if tt.timer == "" {
					return nil, errors.New("systemctl: not found")
				}
				return []byte(tt.timer + "\n"), nil
			})
			got := map[string]check.Result{}
			for _, r := range a.Audit(context.Background()) {
				got[r.ID] = r
			}
			if len(got) != len(tt.want) {
				t.Errorf("got checks %v, want %v", got, tt.want)
			}
			for id, st := range tt.want {
				if got[id].Status != st {
					t.Errorf("%s: %s (%s), want %s", id, got[id].Status, got[id].Current, st)
				}
			}
			for id, s := range tt.substr {
				if !strings.Contains(got[id].Current, s) {
					t.Errorf("%s current %q lacks %q", id, got[id].Current, s)
				}
			}
		})
	}
}

func TestPlanIdempotent(t *testing.T) {
	tr := newTree(t)
	enabled := false
	a := tr.area(func(_ context.Context, argv ...string) ([]byte, error) {
		if enabled {
			return []byte("enabled\n"), nil
		}
		return []byte("not-found\n"), errors.New("exit status 4")
	})
	p, err := a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Files) != 2 || p.Risky || len(p.Reload) == 0 {
		t.Fatalf("first plan %+v: want two units, not risky, a reload", p)
	}
	var service string
	for _, f := range p.Files {
		tr.write(f.Path, string(f.Content))
		if f.Path == ServiceUnit {
			service = string(f.Content)
		}
	}
	for _, want := range []string{"ExecStart=/usr/bin/tandem harden scan", "IOSchedulingClass=idle", "StateDirectory=tandem"} {
		if !strings.Contains(service, want) {
			t.Errorf("service unit lacks %q:\n%s", want, service)
		}
	}
	// Files in place but the timer not enabled: only the reload.
	p, err = a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Files) != 0 || len(p.Reload) == 0 {
		t.Errorf("plan with units written but timer disabled: %+v", p)
	}
	enabled = true
	p, err = a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() {
		t.Errorf("second apply would change %+v, want nothing", p)
	}
}

func TestFnmatch(t *testing.T) {
	tests := []struct {
		glob, path string
		want       bool
	}{
		{"/usr/share/doc/*", "/usr/share/doc/bash/README", true}, // '*' crosses '/' as in fnmatch without FNM_PATHNAME
		{"/usr/share/doc/*", "/usr/share/docs", false},
		{"/usr/share/locale/*/LC_MESSAGES/*.mo", "/usr/share/locale/de/LC_MESSAGES/bash.mo", true},
		{"/usr/share/man/??/*", "/usr/share/man/de/man1/ls.1.gz", true},
		{"/usr/share/man/??/*", "/usr/share/man/man1/ls.1.gz", false},
		{"/a/[!b]c", "/a/xc", true},
		{"/a/[!b]c", "/a/bc", false},
		{"/a.b", "/axb", false},
	}
	for _, tt := range tests {
		re, err := fnmatchRegexp(tt.glob)
		if err != nil {
			t.Fatalf("%q: %v", tt.glob, err)
		}
		if got := re.MatchString(tt.path); got != tt.want {
			t.Errorf("%q matches %q: %v, want %v", tt.glob, tt.path, got, tt.want)
		}
	}
}

func TestScanConffilesAreInformation(t *testing.T) {
	tr := newTree(t)
	sum := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	tr.pkg("bash", map[string]string{"/bin/bash": "ELF bash"}, "/etc/bash.bashrc")
	tr.write("/etc/bash.bashrc", "edited by the admin")
	tr.write("/etc/skel/.bashrc", "as shipped")
	tr.write("/etc/old.conf", "anything")
	tr.write("/etc/removed.conf", "anything")
	tr.write("/var/lib/dpkg/status", "Package: bash\nStatus: install ok installed\nConffiles:\n"+
		" /etc/bash.bashrc "+sum("as shipped")+"\n"+
		" /etc/skel/.bashrc "+sum("as shipped")+"\n"+
		" /etc/old.conf "+sum("x")+" obsolete\n"+
		" /etc/new.conf newconffile\n"+
		"Description: shell\n continued\n\n"+
		"Package: gone\nStatus: deinstall ok config-files\nConffiles:\n /etc/removed.conf "+sum("x")+"\n")
	r, err := tr.area(enabledTimer).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 0 {
		t.Errorf("findings %+v: an edited conffile is not a finding", r.Findings)
	}
	want := []Finding{{Package: "bash", Path: "/etc/bash.bashrc", Kind: Changed}}
	if !slices.Equal(r.Conffiles, want) {
		t.Errorf("conffiles %+v, want %+v", r.Conffiles, want)
	}
	if r.Files != 1 {
		t.Errorf("files %d: conffiles are not counted as package files", r.Files)
	}
}

func TestStatusLine(t *testing.T) {
	r := Report{Finished: fixedNow.Add(-90 * time.Minute), Files: 9472}
	if got := r.StatusLine(fixedNow); got != "all 9472 package files match (scanned 1h30m0s ago)" {
		t.Errorf("clean: %q", got)
	}
	r.Findings = []Finding{{Package: "bash", Path: "/bin/bash", Kind: Changed}, {Package: "bash", Path: "/bin/sh", Kind: Missing}}
	if got := r.StatusLine(fixedNow); !strings.HasPrefix(got, "2 package files changed or missing in 1 packages") {
		t.Errorf("dirty: %q", got)
	}
}
