package labcluster

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/examples"
	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/debpkg"
	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labforge"
	"github.com/tandem-ha/tandem/internal/pyproject"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/packaging"
)

// TestRenderConfigRoundTrips renders each kind of lab node's tandem.toml and
// loads it back with config.Parse: it must validate, keep what the lab set,
// and leave every unset key to config's defaults.
func TestRenderConfigRoundTrips(t *testing.T) {
	app := lab.NodeStatus{Name: "node1", Role: lab.RoleApp, Address: "10.77.0.11"}
	witness := lab.NodeStatus{Name: "witness", Role: lab.RoleWitness, Address: "10.77.0.10"}
	tests := []struct {
		name  string
		node  lab.NodeStatus
		extra string
		check func(t *testing.T, c *config.Config)
	}{
		{"app", app, "", func(t *testing.T, c *config.Config) {
			if c.VIP.Provider != config.ProviderLinux || c.VIP.Address != lab.FloatingIP.String()+"/24" || c.VIP.Linux.Interface != "eth0" {
				t.Errorf("vip = %+v", c.VIP)
			}
			if len(c.Health) != 1 || c.Health[0].Target != "http://127.0.0.1:8000/healthz" || c.Health[0].JSONWant != "ok" {
				t.Errorf("health = %+v", c.Health)
			}
			if c.Hooks.Promote != HookScript || c.Hooks.Demote != HookScript || c.Hooks.Fault != HookScript {
				t.Errorf("hooks = %+v", c.Hooks)
			}
			// The example site's uploads are declared out of the box.
			if len(c.Files) != 1 || c.Files[0].Path != SiteDataDir || !c.Files[0].DeletesPropagate() {
				t.Errorf("files = %+v; want the example site's upload directory %s", c.Files, SiteDataDir)
			}
			// Unset keys get their defaults, as in a hand-written file.
			if c.Metrics.Listen != "127.0.0.1:9746" || c.VIP.Linux.GARPCount != 5 || c.Failover.FailureThreshold != 3 || len(c.Warnings) != 0 {
				t.Errorf("defaults not applied: metrics %q, garp_count %d, failure_threshold %d, warnings %v",
					c.Metrics.Listen, c.VIP.Linux.GARPCount, c.Failover.FailureThreshold, c.Warnings)
			}
		}},
		{"witness", witness, "", func(t *testing.T, c *config.Config) {
			if c.VIP.Provider != "" || len(c.Health) != 0 || c.Hooks.Promote != "" || len(c.Files) != 0 {
				t.Errorf("a witness got app settings: vip %+v, health %+v, hooks %+v, files %+v", c.VIP, c.Health, c.Hooks, c.Files)
			}
		}},
		{"extra", app, "[failover]\nfailure_threshold = 100\ncooloff = \"1s\"\n", func(t *testing.T, c *config.Config) {
			if c.Failover.FailureThreshold != 100 || c.Failover.Cooloff.D() != time.Second {
				t.Errorf("extra not applied: %+v", c.Failover)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := NodeConfig(tt.node, tt.extra)
			if err != nil {
				t.Fatal(err)
			}
			data, err := RenderConfig(in)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(data), `""`) || strings.Contains(string(data), "= 0\n") {
				t.Errorf("rendered zero values:\n%s", data)
			}
			t.Logf("rendered:\n%s", data)
			c, err := config.Parse("tandem.toml", data)
			if err != nil {
				t.Fatalf("config.Parse of the rendered file: %v\n%s", err, data)
			}
			if c.Node.Name != tt.node.Name || c.Node.Role != tt.node.Role {
				t.Errorf("node = %+v, want %s (%s)", c.Node, tt.node.Name, tt.node.Role)
			}
			if ap, err := netip.ParseAddrPort(c.Cluster.Listen); err != nil || ap.Addr().String() != tt.node.Address || ap.Port() != Port {
				t.Errorf("listen = %q", c.Cluster.Listen)
			}
			tt.check(t, c)
		})
	}
}

func TestNodeConfigRejectsUnknownExtra(t *testing.T) {
	_, err := NodeConfig(lab.NodeStatus{Name: "node1", Role: lab.RoleApp, Address: "10.77.0.11"}, "[failover]\nmax_move = 1\n")
	if err == nil {
		t.Fatal("an unknown key in the extra configuration was accepted")
	}
}

func TestLabRolesAreConfigRoles(t *testing.T) {
	if lab.RoleApp != config.RoleApp || lab.RoleWitness != config.RoleWitness {
		t.Errorf("lab roles %q/%q differ from config's %q/%q", lab.RoleApp, lab.RoleWitness, config.RoleApp, config.RoleWitness)
	}
}

// TestLabDepsPackageTheSite checks that every Debian package the example
// site's dependencies resolve to offline is in packaging/lab-deps.txt, the
// list make deps installs: its lack is what broke a fresh 'make lab'.
func TestLabDepsPackageTheSite(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, mustSub(examples.Pysite, "pysite")); err != nil {
		t.Fatal(err)
	}
	p, err := pyproject.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Tandem.SystemSitePackages {
		t.Fatal("the example site no longer reuses Debian's packages; revisit packaging/lab-deps.txt")
	}
	deps := packaging.LabDeps()
	want := []string{"python3", "python3-venv", "python3-pip", "python3-setuptools", "python3-wheel", "dh-python"}
	dist, _ := debpkg.LoadDistMap(debpkg.DHPythonFallback) // without it, Guess gives Debian's usual names
	names := debpkg.DebianNames{Dist: dist}
	for _, r := range p.Dependencies {
		want = append(want, names.Guess(r.Normalized()))
	}
	for _, pkg := range want {
		if !slices.Contains(deps, pkg) {
			t.Errorf("packaging the example site needs %s, which %s lacks", pkg, filepath.Join("packaging", "lab-deps.txt"))
		}
	}
}

// TestSitePatchesApply: the lines BuildSite patches for a broken build and
// a renamed package are in the example, once each.
func TestSitePatchesApply(t *testing.T) {
	for _, tc := range []struct{ file, line string }{
		{"pysite/src/pysite/app.py", healthzLine},
		{"pysite/pyproject.toml", siteNameLine},
	} {
		b, err := examples.Pysite.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), tc.line); n != 1 {
			t.Errorf("%s has %d copies of %q, want 1", tc.file, n, tc.line)
		}
	}
}

// TestBuildSite builds the variants lab push publishes and reads their
// control fields back.
func TestBuildSite(t *testing.T) {
	if err := lab.CheckPackages(t.Context()); err != nil {
		testenv.Missing(t, "%v", err)
	}
	tests := []struct {
		name string
		o    SiteOptions
		pkg  string
	}{
		{"broken", SiteOptions{Version: "0.3.0", Broken: true}, "pysite"},
		{"renamed", SiteOptions{Version: "0.3.0", Package: "othersite"}, "othersite"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.OutDir = t.TempDir()
			res, err := BuildSite(t.Context(), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(res.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c, err := artifact.ReadControl(f)
			if err != nil {
				t.Fatal(err)
			}
			if c.Package != tc.pkg || c.Version != "0.3.0" {
				t.Errorf("control %+v, want %s 0.3.0", c, tc.pkg)
			}
		})
	}
}

// TestDeployConfigValidates: an app node's [deploy] section, rendered as the
// lab writes it, loads and validates, with both forge sources.
func TestDeployConfigValidates(t *testing.T) {
	fc, err := labforge.NewConfig(ForgeURL, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := NodeConfig(lab.NodeStatus{Name: "node1", Role: lab.RoleApp, Address: "10.77.0.11"}, "")
	if err != nil {
		t.Fatal(err)
	}
	c.Deploy = DeployConfig(fc)
	data, err := RenderConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.Parse("tandem.toml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	d := got.Deploy
	if !d.Enabled() || d.Listen != ":8443" || !d.InsecureHTTP || d.Soak.D() != 2*time.Second || d.PollInterval.D() != 30*time.Second ||
		!d.Auto || len(d.SigningKeys) != 1 || d.SigningKeys[0] != fc.SigningPublic {
		t.Errorf("deploy = %+v", d)
	}
	if len(d.Sources) != 2 || d.Sources[0].APIURL != "http://10.77.0.2:8080/api/v4" || d.Sources[1].APIURL != "http://10.77.0.2:8080/gh" ||
		d.Sources[1].Name != "github" || d.Sources[0].Job != "package" {
		t.Errorf("sources = %+v", d.Sources)
	}
}
