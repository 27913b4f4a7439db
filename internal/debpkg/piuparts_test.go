package debpkg

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestPiuparts runs Debian's piuparts (install, then purge, comparing the
// file system before and after) on the example site's package, in both
// venv locations, on the framework fixtures' packages and on tandem's own
// package, in a copy of the lab's cached Debian base image with the host's
// mirror for the dependencies.
func TestPiuparts(t *testing.T) {
	if testing.Short() {
		t.Skip("piuparts takes about 20 s a package")
	}
	testenv.NeedRoot(t, "piuparts runs in a chroot")
	testenv.NeedCommand(t, "piuparts", "piuparts")
	testenv.NeedCommand(t, "adequate", "adequate") // piuparts runs it: bytecode, copyright, ...
	needPython(t)
	image := lab.ImagePath(lab.DefaultCacheDir)
	if _, err := os.Stat(filepath.Join(image, "usr", "bin", "dpkg")); err != nil {
		// Not a missing prerequisite: make test builds the image in its
		// e2e step, after the unit tests.
		t.Skipf("piuparts runs in the lab's base image %s, not built yet: run 'make lab' (or tandem lab up) once", image)
	}
	mirror := lab.HostMirror()
	if mirror == "" {
		t.Skip("piuparts installs the packages' dependencies from a Debian mirror, and the host's apt sources name none")
	}
	type pkg struct {
		name  string
		build func(t *testing.T) string
	}
	app := func(src string, edit func(string) string, mod func(*Options)) func(t *testing.T) string {
		return func(t *testing.T) string {
			dir := copyProject(t, src, filepath.Join(t.TempDir(), filepath.Base(src)))
			if edit != nil {
				p := filepath.Join(dir, "pyproject.toml")
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(edit(string(data))), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			return buildExample(t, dir, mod).Path
		}
	}
	pkgs := []pkg{
		{"pysite", app(examplePysite, nil, nil)},
		{"pysite-in-opt", app(examplePysite, func(s string) string {
			return strings.Replace(s, "[tool.tandem]\n", "[tool.tandem]\nvenv-dir = \"/opt/venvs/pysite\"\n", 1)
		}, nil)},
		{"pysite-system", app(examplePysite, nil, func(o *Options) { o.Mode = "system" })},
		{"tandem", func(t *testing.T) string {
			bin := filepath.Join(t.TempDir(), "tandem")
			build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/tandem-ha/tandem/cmd/tandem")
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+runtime.GOARCH)
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			res, err := BuildSelf(context.Background(), SelfOptions{Binary: bin, Version: "1.0.0", OutDir: t.TempDir(), Epoch: testEpoch})
			if err != nil {
				t.Fatal(err)
			}
			return res.Path
		}},
	}
	for _, a := range []struct{ app, modules string }{{"flaskr", "flask, flit_core"}, {"djsite", "django"}, {"asgisite", "starlette, uvicorn"}} {
		if exec.Command("/usr/bin/python3", "-c", "import "+a.modules).Run() == nil {
			pkgs = append(pkgs, pkg{a.app, app(filepath.Join("testdata", "apps", a.app), nil, nil)})
		} else {
			t.Logf("%s not checked: building it needs the Python modules %s (packaging/test-deps.txt)", a.app, a.modules)
		}
	}
	for _, p := range pkgs {
		t.Run(p.name, func(t *testing.T) {
			deb := p.build(t)
			var out bytes.Buffer
			cmd := exec.Command("piuparts", "-d", "bookworm", "-e", image, "-m", mirror, "--no-upgrade-test", deb)
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Errorf("piuparts %s: %v\n%s", filepath.Base(deb), err, tail(out.String(), 60))
			} else if !strings.Contains(out.String(), "PASS: All tests.") {
				t.Errorf("piuparts %s did not pass:\n%s", filepath.Base(deb), tail(out.String(), 30))
			}
			// piuparts runs adequate when it is installed and only warns.
			if i := strings.Index(out.String(), "Inadequate results"); i >= 0 {
				t.Errorf("adequate (run by piuparts) on %s:\n%s", filepath.Base(deb), out.String()[i:min(len(out.String()), i+2000)])
			}
		})
	}
}
