package updates

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// host fakes dpkg-query, apt-config dump and systemctl is-enabled over a
// temp root.
type host struct {
	t         *testing.T
	root      string
	installed string // dpkg-query's status; "" means dpkg does not know the package
	dump      string
	dumpErr   error
	timers    []string // is-enabled answers, in Timers' order
	calls     [][]string
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// newHost is a Debian 12 host with unattended-upgrades installed and
// configured as its package does by default.
func newHost(t *testing.T) *host {
	return &host{t: t, root: t.TempDir(), installed: "ii ", dump: testdata(t, "apt-config-dump-unattended.txt"),
		timers: []string{"enabled", "enabled"}}
}

func (h *host) write(path, content string) {
	h.t.Helper()
	p := filepath.Join(h.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// dropLines removes the dump's lines that contain s.
func (h *host) dropLines(s string) {
	var kept []string
	for l := range strings.SplitSeq(h.dump, "\n") {
		if !strings.Contains(l, s) {
			kept = append(kept, l)
		}
	}
	h.dump = strings.Join(kept, "\n")
}

func (h *host) run(_ context.Context, argv ...string) ([]byte, error) {
	h.calls = append(h.calls, argv)
	switch argv[0] {
	case "dpkg-query":
		if h.installed == "" {
			return nil, errors.New("dpkg-query: exit status 1: dpkg-query: no packages found matching unattended-upgrades")
		}
		return []byte(h.installed), nil
	case "apt-config":
		return []byte(h.dump), h.dumpErr
	case "systemctl":
		out := strings.Join(h.timers, "\n") + "\n"
		if slices.Equal(h.timers, []string{"enabled", "enabled"}) {
			return []byte(out), nil
		}
		return []byte(out), errors.New("exit status 1")
	}
	return nil, fmt.Errorf("unexpected command %q", argv)
}

func (h *host) area() *Area { return New(Options{Root: h.root, Run: h.run}) }

func TestAudit(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *host)
		want   map[string]check.Status
		substr map[string]string
	}{
		{
			name:  "unattended-upgrades as Debian installs it",
			setup: func(h *host) {},
			want: map[string]check.Status{"updates.unattended-installed": check.Pass, "updates.periodic": check.Pass,
				"updates.security-origin": check.Pass, "updates.timers": check.Pass},
		},
		{
			name: "Debian 12 without it",
			setup: func(h *host) {
				h.installed = ""
				h.dump = testdata(t, "apt-config-dump-debian12.txt")
			},
			want: map[string]check.Status{"updates.unattended-installed": check.Fail, "updates.periodic": check.Fail,
				"updates.security-origin": check.Fail, "updates.timers": check.Pass},
			substr: map[string]string{"updates.security-origin": "is not installed", "updates.periodic": `Update-Package-Lists ""`},
		},
		{
			name:   "removed but not purged",
			setup:  func(h *host) { h.installed = "rc " },
			want:   map[string]check.Status{"updates.unattended-installed": check.Fail},
			substr: map[string]string{"updates.unattended-installed": "not installed"},
		},
		{
			name:   "a later file turns upgrades off",
			setup:  func(h *host) { h.dump += "APT::Periodic::Unattended-Upgrade \"0\";\n" },
			want:   map[string]check.Status{"updates.periodic": check.Fail},
			substr: map[string]string{"updates.periodic": `Unattended-Upgrade "0"`},
		},
		{
			name: "only the legacy Allowed-Origins, with security",
			setup: func(h *host) {
				h.dropLines("Origins-Pattern")
				h.dump += "Unattended-Upgrade::Allowed-Origins:: \"${distro_id}:${distro_codename}-security\";\n"
			},
			want: map[string]check.Status{"updates.security-origin": check.Pass},
		},
		{
			name:  "origins without security",
			setup: func(h *host) { h.dropLines("Security") },
			want:  map[string]check.Status{"updates.security-origin": check.Fail},
		},
		{
			name:   "a timer disabled",
			setup:  func(h *host) { h.timers = []string{"enabled", "disabled"} },
			want:   map[string]check.Status{"updates.timers": check.Fail},
			substr: map[string]string{"updates.timers": "apt-daily-upgrade.timer disabled"},
		},
		{
			name:   "apt-config fails",
			setup:  func(h *host) { h.dumpErr = errors.New("apt-config: E: Syntax error /etc/apt/apt.conf.d/99x:1") },
			want:   map[string]check.Status{"updates.periodic": check.Error, "updates.security-origin": check.Error},
			substr: map[string]string{"updates.periodic": "Syntax error"},
		},
		{
			name:   "apt-config prints garbage",
			setup:  func(h *host) { h.dump = "nonsense\n" },
			want:   map[string]check.Status{"updates.periodic": check.Error},
			substr: map[string]string{"updates.periodic": "line 1"},
		},
		{
			name:  "systemctl unusable",
			setup: func(h *host) { h.timers = nil },
			want:  map[string]check.Status{"updates.timers": check.Error},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			tt.setup(h)
			rs := h.area().Audit(context.Background())
			got := map[string]check.Result{}
			for _, r := range rs {
				got[r.ID] = r
			}
			if len(rs) != 4 || len(got) != 4 {
				t.Errorf("got %d results, want the 4 checks: %+v", len(rs), rs)
			}
			for id, st := range tt.want {
				if got[id].Status != st {
					t.Errorf("%s: %s (current %q), want %s", id, got[id].Status, got[id].Current, st)
				}
			}
			for id, s := range tt.substr {
				if !strings.Contains(got[id].Current, s) {
					t.Errorf("%s: current %q lacks %q", id, got[id].Current, s)
				}
			}
		})
	}
}

func TestPlan(t *testing.T) {
	install := []string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
		"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", "unattended-upgrades"}
	tests := []struct {
		name     string
		setup    func(h *host)
		files    []string
		validate [][]string
		reload   [][]string
	}{
		{name: "compliant: nothing to do", setup: func(h *host) {}},
		{
			name: "not installed: the periodic file, then the install",
			setup: func(h *host) {
				h.installed = ""
				h.dump = testdata(t, "apt-config-dump-debian12.txt")
			},
			files:    []string{AutoUpgrades},
			validate: [][]string{install},
		},
		{
			name:   "timers off",
			setup:  func(h *host) { h.timers = []string{"disabled", "masked"} },
			reload: [][]string{{"systemctl", "enable", "--now", "apt-daily.timer", "apt-daily-upgrade.timer"}},
		},
		{
			name:  "security origin missing",
			setup: func(h *host) { h.dropLines("Security") },
			files: []string{SecurityOrigin},
		},
		{
			name: "our file is there but overridden: nothing to rewrite",
			setup: func(h *host) {
				h.write(AutoUpgrades, autoUpgradesContent)
				h.dump += "APT::Periodic::Unattended-Upgrade \"0\";\n"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			tt.setup(h)
			p, err := h.area().Plan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for _, f := range p.Files {
				files = append(files, f.Path)
				if f.Mode != 0o644 {
					t.Errorf("%s mode %o", f.Path, f.Mode)
				}
			}
			if !slices.Equal(files, tt.files) || !slices.EqualFunc(p.Validate, tt.validate, slices.Equal) ||
				!slices.EqualFunc(p.Reload, tt.reload, slices.Equal) {
				t.Errorf("plan files %q validate %q reload %q\nwant files %q validate %q reload %q",
					files, p.Validate, p.Reload, tt.files, tt.validate, tt.reload)
			}
			if p.Risky {
				t.Error("updates plan is risky; nothing in it can lock anyone out")
			}
		})
	}
}

// TestAutoUpgradesMatchesThePackage: the file tandem writes is the one
// unattended-upgrades' postinst installs, so installing it afterwards
// never meets a locally changed file.
func TestAutoUpgradesMatchesThePackage(t *testing.T) {
	conf, err := ParseAptConfig([]byte(testdata(t, "apt-config-dump-unattended.txt")))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range periodicKeys {
		want, _ := conf.Get(k)
		if !strings.Contains(autoUpgradesContent, k+` "`+want+`";`) {
			t.Errorf("%s: the package sets %q, tandem's file:\n%s", k, want, autoUpgradesContent)
		}
	}
}

func TestPlanErrors(t *testing.T) {
	h := newHost(t)
	h.dumpErr = errors.New("apt-config: E: Syntax error")
	if _, err := h.area().Plan(context.Background()); err == nil || !strings.Contains(err.Error(), "Syntax error") {
		t.Errorf("plan when apt-config fails: %v", err)
	}
}

func TestParseAptConfig(t *testing.T) {
	conf, err := ParseAptConfig([]byte(testdata(t, "apt-config-dump-unattended.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := conf.Get("APT::Periodic::Unattended-Upgrade"); !ok || v != "1" {
		t.Errorf("Unattended-Upgrade %q %v", v, ok)
	}
	if got := conf.Values("Unattended-Upgrade::Origins-Pattern"); len(got) != 3 || !strings.Contains(got[2], "-security") {
		t.Errorf("Origins-Pattern %q", got)
	}
	for _, bad := range []string{"APT::X 1;\n", "APT::X \"1\"\n", "\"1\";\n", "APT::X \";\n"} {
		if _, err := ParseAptConfig([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzParseAptConfig: the parser never panics, and what it returns
// printed back as apt-config does parses to the same.
func FuzzParseAptConfig(f *testing.F) {
	f.Add([]byte("APT \"\";\nAPT::Periodic::Unattended-Upgrade \"1\";\nX:: \"a\";\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := ParseAptConfig(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for name, vals := range conf {
			for _, v := range vals {
				fmt.Fprintf(&b, "%s \"%s\";\n", name, v)
			}
		}
		again, err := ParseAptConfig([]byte(b.String()))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", b.String(), err)
		}
		for name, vals := range conf {
			if !slices.Equal(again[name], vals) {
				t.Fatalf("%s: %q, then %q", name, vals, again[name])
			}
		}
	})
}
