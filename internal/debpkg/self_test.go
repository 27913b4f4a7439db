package debpkg

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestBuildSelf(t *testing.T) {
	bin, err := os.Executable() // any ELF executable will do here
	if err != nil {
		t.Fatal(err)
	}
	res, err := BuildSelf(context.Background(), SelfOptions{Binary: bin, Version: "1.4.0", OutDir: t.TempDir(), Epoch: testEpoch, Compression: "gzip"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Package != "tandem" || res.Version != "1.4.0" || res.Architecture != debianArch() || filepath.Base(res.Path) != "tandem_1.4.0_"+debianArch()+".deb" {
		t.Errorf("result = %+v", res)
	}
	control, data, _ := readDeb(t, res.Path)
	if got := string(control["/conffiles"].data); got != "/etc/tandem/tandem.toml\n" {
		t.Errorf("conffiles = %q", got)
	}
	for _, f := range []string{"/usr/bin/tandem", "/usr/lib/systemd/system/tandem.service", "/etc/tandem/tandem.toml",
		"/usr/share/doc/tandem/copyright", "/usr/share/doc/tandem/changelog.gz", "/usr/share/man/man1/tandem.1.gz", "/usr/share/lintian/overrides/tandem"} {
		if _, ok := data[f]; !ok {
			t.Errorf("%s missing", f)
		}
	}
	if data["/usr/bin/tandem"].hdr.Mode&0o777 != 0o755 {
		t.Errorf("binary mode %o", data["/usr/bin/tandem"].hdr.Mode)
	}
	unit := string(data["/usr/lib/systemd/system/tandem.service"].data)
	for _, want := range []string{"ExecStart=/usr/bin/tandem agent", "ProtectSystem=strict", "ReadWritePaths=/var/lib/tandem /run/tandem",
		"StateDirectory=tandem", "RuntimeDirectory=tandem", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes"} {
		if !strings.Contains(unit, want) {
			t.Errorf("tandem.service lacks %q", want)
		}
	}
	post := string(control["/postinst"].data)
	if strings.Contains(post, "adduser") || !strings.Contains(post, "deb-systemd-helper enable tandem.service") {
		t.Errorf("postinst:\n%s", post)
	}
	if !strings.Contains(string(control["/postrm"].data), "rm -rf /var/lib/tandem") {
		t.Error("postrm does not purge /var/lib/tandem")
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		// Verify the unit as installed, with a binary and manual page that
		// exist on this machine.
		fixed := strings.NewReplacer("/usr/bin/tandem agent", "/bin/true agent", "man:tandem(1) ", "").Replace(unit)
		p := filepath.Join(t.TempDir(), "tandem.service")
		if err := os.WriteFile(p, []byte(fixed), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify tandem.service: %v\n%s", err, out)
		}
	}
	if _, err := BuildSelf(context.Background(), SelfOptions{Binary: "/nonexistent", Version: "1.0", OutDir: t.TempDir()}); err == nil {
		t.Error("BuildSelf with a missing binary succeeded")
	}
}

// TestLintian runs lintian --fail-on error,warning on the example's package
// and on tandem's own package, as CI does.
func TestLintian(t *testing.T) {
	if testing.Short() {
		t.Skip("lintian takes several seconds")
	}
	testenv.NeedCommand(t, "lintian", "lintian")
	needPython(t)
	dir := copyProject(t, examplePysite, filepath.Join(t.TempDir(), "pysite"))
	app := buildExample(t, dir, nil)

	// tandem's own package, with a release-like static binary.
	bin := filepath.Join(t.TempDir(), "tandem")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "github.com/tandem-ha/tandem/cmd/tandem")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/tandem: %v\n%s", err, out)
	}
	self, err := BuildSelf(context.Background(), SelfOptions{Binary: bin, Version: "1.0.0", OutDir: t.TempDir(), Epoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	// A venv with an entry-point script (the override for its interpreter).
	wheels := t.TempDir()
	makeWheel(t, wheels, "tinydep", "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n[project]\nname = \"tinydep\"\nversion = \"1.0.0\"\n[project.scripts]\ntinyserve = \"tinydep.cli:main\"\n",
		map[string]string{"tinydep/__init__.py": "", "tinydep/cli.py": "def main():\n    return 0\n"})
	tiny := buildExample(t, tinyProject(t, tinyApp), func(o *Options) { o.Wheels = wheels })
	for _, deb := range []string{app.Path, self.Path, tiny.Path} {
		out, err := exec.Command("lintian", "--fail-on", "error,warning", "--allow-root", deb).CombinedOutput()
		if err != nil {
			t.Errorf("lintian %s: %v\n%s", filepath.Base(deb), err, out)
		} else {
			t.Logf("lintian %s: clean\n%s", filepath.Base(deb), out)
		}
	}
}
