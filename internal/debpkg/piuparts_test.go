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
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestPiuparts runs Debian's piuparts (install and purge, and upgrade from
// the previous version then purge, comparing the file system before and
// after, with adequate's checks) on every package it builds: the example
// site's, in both venv locations and in system mode, the framework
// fixtures' and tandem's own, each in a copy of the lab's cached Debian
// base image (no debootstrap) with the host's mirror for the
// dependencies. Each piuparts run reuses its chroot for its two tests;
// two runs go at a time: the seven take about four minutes on 2 cores.
func TestPiuparts(t *testing.T) {
	if os.Getenv("TANDEM_PIUPARTS") == "" {
		t.Skip("piuparts takes about four minutes: make piuparts (part of make test) sets TANDEM_PIUPARTS=1")
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
	testenv.NeedCommand(t, "dpkg-scanpackages", "dpkg-dev")
	type pkg struct {
		name  string
		build func(t *testing.T, version string) string
	}
	app := func(src string, edit func(string) string, mod func(*Options)) func(t *testing.T, version string) string {
		return func(t *testing.T, version string) string {
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
			return buildExample(t, dir, func(o *Options) {
				o.Version = version
				if mod != nil {
					mod(o)
				}
			}).Path
		}
	}
	pkgs := []pkg{
		{"pysite", app(examplePysite, nil, nil)},
		{"pysite-in-opt", app(examplePysite, func(s string) string {
			return strings.Replace(s, "[tool.tandem]\n", "[tool.tandem]\nvenv-dir = \"/opt/venvs/pysite\"\n", 1)
		}, nil)},
		{"pysite-system", app(examplePysite, nil, func(o *Options) { o.Mode = "system" })},
		{"tandem", func(t *testing.T, version string) string {
			bin := filepath.Join(t.TempDir(), "tandem")
			build := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/tandem-ha/tandem/cmd/tandem")
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+runtime.GOARCH)
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build: %v\n%s", err, out)
			}
			res, err := BuildSelf(context.Background(), SelfOptions{Binary: bin, Version: version, OutDir: t.TempDir(), Epoch: testEpoch})
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
	// Two at a time: piuparts mostly waits for dpkg, apt and the disk.
	slots := make(chan struct{}, 2)
	start := time.Now()
	t.Run("packages", func(t *testing.T) {
		for _, p := range pkgs {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				slots <- struct{}{}
				defer func() { <-slots }()
				began := time.Now()
				// The previous version is in a local repository, from
				// which piuparts' upgrade test installs it before
				// upgrading to the version under test.
				repo := t.TempDir()
				old := p.build(t, "1.0.0")
				if err := os.Rename(old, filepath.Join(repo, filepath.Base(old))); err != nil {
					t.Fatal(err)
				}
				scan := exec.Command("dpkg-scanpackages", ".")
				scan.Dir = repo
				idx, err := scan.Output()
				if err != nil {
					t.Fatalf("dpkg-scanpackages: %v", err)
				}
				if err := os.WriteFile(filepath.Join(repo, "Packages"), idx, 0o644); err != nil {
					t.Fatal(err)
				}
				args := []string{"-d", "bookworm", "-e", image, "-m", mirror,
					"--bindmount", repo, "--extra-repo", "deb [trusted=yes] file://" + repo + " ./", p.build(t, "1.1.0")}
				out := run(t, args)
				for _, want := range []string{"PASS: Installation and purging test.", "PASS: Installation, upgrade and purging tests."} {
					if !strings.Contains(out, want) {
						t.Errorf("piuparts did not report %q:\n%s", want, tail(out, 30))
					}
				}
				t.Logf("%s: install, purge, upgrade from 1.0.0 and purge in %s", p.name, time.Since(began).Round(time.Second))
			})
		}
	})
	t.Logf("%d packages in %s", len(pkgs), time.Since(start).Round(time.Second))
}

// run runs piuparts and fails t unless all its tests pass, adequate's
// included (piuparts only warns about those).
func run(t *testing.T, args []string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("piuparts", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	deb := filepath.Base(args[len(args)-1])
	s := out.String
	if err := cmd.Run(); err != nil {
		t.Errorf("piuparts %s: %v\n%s", deb, err, tail(s(), 60))
	} else if !strings.Contains(s(), "PASS: All tests.") {
		t.Errorf("piuparts %s did not pass:\n%s", deb, tail(s(), 30))
	}
	if i := strings.Index(s(), "Inadequate results"); i >= 0 {
		t.Errorf("adequate (run by piuparts) on %s:\n%s", deb, s()[i:min(len(s()), i+2000)])
	}
	return s()
}
