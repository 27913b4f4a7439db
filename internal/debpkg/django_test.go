package debpkg

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/pyproject"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestSettingsModuleDefault(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")`, "mysite.settings"},
		{"    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.production')\n", "config.settings.production"},
		{"os.environ.setdefault(\n    \"DJANGO_SETTINGS_MODULE\",\n    \"a_b.c2\"\n)", "a_b.c2"},
		{`os.environ["DJANGO_SETTINGS_MODULE"] = "x.settings"`, ""},                     // not a default
		{`os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bad module")`, ""},           // not a module path
		{`os.environ.setdefault("DJANGO_SETTINGS_MODULE", "x.settings; rm -rf /")`, ""}, // nor a command
		{`os.environ.setdefault("OTHER", "x.settings")`, ""},
		{"", ""},
	} {
		if got := SettingsModuleDefault([]byte(tc.src)); got != tc.want {
			t.Errorf("SettingsModuleDefault(%q) = %q, want %q", tc.src, got, tc.want)
		}
	}
}

// TestPlanStatic pins where collected static files are installed for
// each shape of STATIC_ROOT, and the STATIC_ROOTs refused.
func TestPlanStatic(t *testing.T) {
	work := t.TempDir()
	stage := filepath.Join(work, "stage")
	if err := os.MkdirAll(filepath.Join(stage, "usr/lib/python3/dist-packages/mysite"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, mode, root string
		want             staticPlan
		err              string
	}{
		{name: "venv, BASE_DIR/staticfiles", mode: "venv", root: stage + "/usr/lib/mysite/lib/python3.11/site-packages/mysite/staticfiles",
			want: staticPlan{Ship: "/usr/lib/mysite/lib/python3.11/site-packages/mysite/staticfiles"}},
		{name: "system, in the app's package", mode: "system", root: stage + "/usr/lib/python3/dist-packages/mysite/staticfiles",
			want: staticPlan{Ship: "/usr/lib/python3/dist-packages/mysite/staticfiles"}},
		{name: "system, top level of dist-packages", mode: "system", root: stage + "/usr/lib/python3/dist-packages/staticfiles",
			want: staticPlan{Ship: "/usr/share/mysite/static", Bind: "/usr/share/mysite/static:/usr/lib/python3/dist-packages/staticfiles", MountPoint: "/usr/lib/python3/dist-packages/staticfiles"}},
		{name: "in the data directory", mode: "venv", root: "/var/lib/mysite/static",
			want: staticPlan{Ship: "/usr/share/mysite/static", Bind: "/usr/share/mysite/static:/var/lib/mysite/static", DataSubdir: "/var/lib/mysite/static"}},
		{name: "relative: to the working directory", mode: "system", root: "staticfiles",
			want: staticPlan{Ship: "/usr/share/mysite/static", Bind: "/usr/share/mysite/static:/var/lib/mysite/staticfiles", DataSubdir: "/var/lib/mysite/staticfiles"}},
		{name: "for a web server", mode: "venv", root: "/var/www/mysite/static",
			want: staticPlan{Ship: "/usr/share/mysite/static", Bind: "/usr/share/mysite/static:/var/www/mysite/static", MountPoint: "/var/www/mysite/static"}},
		{name: "already a package's place", mode: "venv", root: "/usr/share/mysite/assets", want: staticPlan{Ship: "/usr/share/mysite/assets"}},
		{name: "the data directory itself", mode: "venv", root: "/var/lib/mysite", err: "make it a subdirectory"},
		{name: "deep in the data directory", mode: "venv", root: "/var/lib/mysite/a/static", err: "nested deeper"},
		{name: "a space", mode: "venv", root: "/srv/my site/static", err: "without spaces"},
		{name: "a colon", mode: "venv", root: "/srv/a:b", err: "colons"},
		{name: "the build directory", mode: "venv", root: work + "/src/mysite/staticfiles", err: "inside the build directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &build{work: work, name: "mysite", proj: &pyproject.Project{Tandem: pyproject.Tandem{Mode: tc.mode, DataDir: "/var/lib/mysite"}}}
			got, err := b.planStatic(tc.root)
			if tc.err != "" {
				var be *BuildError
				if !errors.As(err, &be) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("planStatic(%q) = %+v, %v; want a BuildError with %q", tc.root, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("planStatic(%q) = %+v, %v; want %+v", tc.root, got, err, tc.want)
			}
		})
	}
}

// needDjango skips unless the build machine has what the Django fixtures
// need (packaging/test-deps.txt).
func needDjango(t *testing.T) {
	t.Helper()
	needPython(t)
	if out, err := exec.Command("/usr/bin/python3", "-c", "import django, whitenoise").CombinedOutput(); err != nil {
		testenv.Missing(t, "the Django fixtures need Debian's python3-django and python3-whitenoise (packaging/test-deps.txt): %v %s", err, out)
	}
}

// editFile rewrites a file of a copied project.
func editFile(t *testing.T, p string, edit func(string) string) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(edit(string(data))), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDjangoCollectStatic packages djreal, a Django project shaped like
// real ones (settings module in a package named by manage.py, SECRET_KEY
// required from the environment at import, STATIC_ROOT from the
// environment or BASE_DIR, whitenoise's compressed manifest storage), and
// checks that its static files are collected at build time into the
// package, at the place the settings give, reproducibly, without the
// throwaway secret, and that lintian accepts the result.
func TestDjangoCollectStatic(t *testing.T) {
	needDjango(t)
	src := filepath.Join("testdata", "apps", "djreal")
	type check struct {
		files   map[string][]string // path in the package: substrings
		absent  []string
		scripts []string // in postinst
		log     []string
	}
	for _, tc := range []struct {
		name  string
		mode  string
		edit  func(string) string // pyproject.toml
		check check
	}{
		{name: "system, BASE_DIR/staticfiles", mode: "system", check: check{
			files: map[string][]string{
				"/usr/lib/python3/dist-packages/djreal/staticfiles/staticfiles.json": {`"djreal/site.css": "djreal/site.`},
				"/usr/lib/python3/dist-packages/djreal/staticfiles/djreal/site.css":  {`url("logo.svg")`},
				"/usr/lib/systemd/system/djreal.service":                             {"\nEnvironment=DJANGO_SETTINGS_MODULE=djreal.settings.production\n"},
				"/usr/lib/systemd/system/djreal-setup.service":                       {"\nEnvironment=DJANGO_SETTINGS_MODULE=djreal.settings.production\n"},
			},
			absent: []string{"/usr/share/djreal/static/"},
			log:    []string{"DJANGO_SETTINGS_MODULE", "from=manage.py", "a throwaway DJANGO_SECRET_KEY, SECRET_KEY for the build only"},
		}},
		{name: "venv, STATIC_ROOT from the environment", mode: "venv", edit: func(s string) string {
			return strings.Replace(s, `DJANGO_ALLOWED_HOSTS = "*"`, `DJANGO_ALLOWED_HOSTS = "*", DJANGO_STATIC_ROOT = "/var/lib/djreal/static"`, 1)
		}, check: check{
			files: map[string][]string{
				"/usr/share/djreal/static/staticfiles.json":   {`"admin/css/base.css": "admin/css/base.`},
				"/usr/share/djreal/static/admin/css/base.css": {"DJANGO"},
				"/usr/lib/systemd/system/djreal.service":      {"\nBindReadOnlyPaths=/usr/share/djreal/static:/var/lib/djreal/static\n"},
				"/usr/share/lintian/overrides/djreal":         {"embedded-javascript-library * [usr/share/djreal/static/*]"},
			},
			absent:  []string{"/usr/lib/djreal/lib/python3.11/site-packages/djreal/staticfiles/"},
			scripts: []string{"mkdir /var/lib/djreal/static\n"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyProject(t, src, filepath.Join(t.TempDir(), "djreal"))
			if tc.edit != nil {
				editFile(t, filepath.Join(dir, "pyproject.toml"), tc.edit)
			}
			var logs bytes.Buffer
			res := buildExample(t, dir, func(o *Options) {
				yes := true
				o.Mode, o.SystemSitePackages = tc.mode, &yes
				o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			control, data, _ := readDeb(t, res.Path)
			for p, wants := range tc.check.files {
				e, ok := data[p]
				if !ok {
					t.Errorf("no %s in the package", p)
					continue
				}
				for _, w := range wants {
					if !strings.Contains(string(e.data), w) {
						t.Errorf("%s lacks %q:\n%.600s", p, w, e.data)
					}
				}
			}
			for _, p := range tc.check.absent {
				if _, ok := data[p]; ok {
					t.Errorf("%s is in the package", p)
				}
			}
			hashed, compressed := false, false
			for p, e := range data {
				if bytes.Contains(e.data, []byte(throwawaySecret)) {
					t.Errorf("%s holds the build-time secret", p)
				}
				hashed = hashed || strings.Contains(p, "/djreal/logo.") && strings.HasSuffix(p, ".svg") && !strings.HasSuffix(p, "/logo.svg")
				compressed = compressed || strings.HasSuffix(p, "/djreal/site.css.gz")
			}
			if !hashed || !compressed {
				t.Errorf("whitenoise's storage did not run: hashed logo %v, compressed css %v", hashed, compressed)
			}
			for _, w := range tc.check.scripts {
				if !strings.Contains(string(control["/postinst"].data), w) {
					t.Errorf("postinst lacks %q", w)
				}
			}
			for _, w := range tc.check.log {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("the build's output lacks %q:\n%s", w, logs.String())
				}
			}
			if testing.Short() {
				return
			}
			// Reproducible: the same inputs from another directory give
			// the same bytes.
			dir2 := copyProject(t, dir, filepath.Join(t.TempDir(), "elsewhere", "djreal"))
			res2 := buildExample(t, dir2, func(o *Options) {
				yes := true
				o.Mode, o.SystemSitePackages = tc.mode, &yes
			})
			if res.SHA256 != res2.SHA256 {
				t.Errorf("two builds differ: %s %s", res.SHA256, res2.SHA256)
			}
			testenv.NeedCommand(t, "lintian", "lintian")
			if out, err := exec.Command("lintian", "--fail-on", "error,warning", "--allow-root", res.Path).CombinedOutput(); err != nil {
				t.Errorf("lintian %s: %v\n%s", filepath.Base(res.Path), err, out)
			}
		})
	}
}

// TestDjangoCollectStaticFallback: settings that cannot load at build time
// leave the package without static files and name what to set; given a
// build-time value, the same project collects. A setup command that
// collects again is refused, and collectstatic = false keeps it.
func TestDjangoCollectStaticFallback(t *testing.T) {
	needDjango(t)
	dir := copyProject(t, filepath.Join("testdata", "apps", "djreal"), filepath.Join(t.TempDir(), "djreal"))
	editFile(t, filepath.Join(dir, "djreal", "settings", "production.py"), func(s string) string {
		return s + "\nDATABASES[\"default\"][\"PASSWORD\"] = os.environ[\"DJREAL_DB_PASSWORD\"]\n"
	})
	sysMode := func(logs *bytes.Buffer) func(o *Options) {
		return func(o *Options) {
			o.Mode = "system"
			if logs != nil {
				o.Logger = slog.New(slog.NewTextHandler(logs, nil))
			}
		}
	}
	staticIn := func(res *Result) bool {
		_, data, _ := readDeb(t, res.Path)
		_, ok := data["/usr/lib/python3/dist-packages/djreal/staticfiles/staticfiles.json"]
		return ok
	}
	var logs bytes.Buffer
	res := buildExample(t, dir, sysMode(&logs))
	if staticIn(res) {
		t.Error("static files collected although the settings cannot load")
	}
	for _, w := range []string{"collectstatic failed at build time", "DJREAL_DB_PASSWORD", "build-environment", "collectstatic --noinput"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("the warning lacks %q:\n%s", w, logs.String())
		}
	}

	editFile(t, filepath.Join(dir, "pyproject.toml"), func(s string) string {
		return strings.Replace(s, "[tool.tandem]\n", "[tool.tandem]\nbuild-environment = { DJREAL_DB_PASSWORD = \"unused-at-build\" }\n", 1)
	})
	if res := buildExample(t, dir, sysMode(nil)); !staticIn(res) {
		t.Error("static files not collected with build-environment")
	}

	editFile(t, filepath.Join(dir, "pyproject.toml"), func(s string) string {
		return strings.Replace(s, `setup = ["python -m django migrate --noinput"]`, `setup = ["python -m django migrate --noinput", "python -m django collectstatic --noinput --clear"]`, 1)
	})
	_, err := BuildPython(t.Context(), Options{Dir: dir, OutDir: t.TempDir(), Version: "1.0.0", Epoch: testEpoch, Mode: "system", WorkDir: t.TempDir()})
	var be *BuildError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "tool.tandem.setup[1]") || !strings.Contains(err.Error(), "collectstatic = false") {
		t.Errorf("a setup command that collects again: %v; want a BuildError naming tool.tandem.setup[1]", err)
	}

	editFile(t, filepath.Join(dir, "pyproject.toml"), func(s string) string {
		return strings.Replace(s, "[tool.tandem]\n", "[tool.tandem]\ncollectstatic = false\n", 1)
	})
	if res := buildExample(t, dir, sysMode(nil)); staticIn(res) {
		t.Error("collectstatic = false still collected")
	}
}
