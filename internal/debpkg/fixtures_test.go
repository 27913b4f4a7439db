package debpkg

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestFrameworkFixtures packages the apps in testdata/apps (a Flask app
// like the tutorial's, a Django project, a Starlette app under gunicorn's
// uvicorn worker), each unmodified but for [tool.tandem], with Debian's
// framework packages, and checks what the packages hold and that lintian
// accepts them as CI runs it.
func TestFrameworkFixtures(t *testing.T) {
	needPython(t)
	for _, tc := range []struct {
		app     string
		modules string // what the build machine needs (Debian packages in packaging/test-deps.txt)
		debs    string
		venv    bool
		control []string
		files   map[string][]string // path in the package: substrings
	}{
		{app: "flaskr", modules: "flask, flit_core", debs: "python3-flask, flit",
			control: []string{"\nMaintainer: Pallets <contact@palletsprojects.example>\n", "\nDepends: python3, python3-flask, python3-gunicorn, adduser\n",
				"\nDescription: basic blog app built in the Flask tutorial\n The basic blog app built in the Flask tutorial.\n .\n Users register"},
			files: map[string][]string{
				"/usr/lib/systemd/system/flaskr.service":           {"\nBindPaths=/var/lib/flaskr/var:/usr/var\n", "\nExecStart=/usr/bin/python3 -m gunicorn flaskr:create_app() --bind 127.0.0.1:8010"},
				"/usr/lib/systemd/system/flaskr-setup.service":     {"\nType=oneshot\n", "\nUser=flaskr\n", "\nExecStart=/usr/bin/python3 -m flask --app flaskr init-db\n", "\nBindPaths=/var/lib/flaskr/var:/usr/var\n"},
				"/usr/share/doc/flaskr/copyright":                  {"\nLicense: BSD-3-clause\n Copyright 2010 Pallets\n"},
				"/usr/lib/python3/dist-packages/flaskr/schema.sql": {"CREATE TABLE IF NOT EXISTS post"},
			}},
		{app: "flaskr", modules: "flask, flit_core", debs: "python3-flask, flit", venv: true,
			control: []string{"\nDepends: python3 (>= 3.11), python3 (<< 3.12), python3-flask, python3-gunicorn, adduser\n"},
			files: map[string][]string{
				"/usr/lib/systemd/system/flaskr.service": {"\nBindPaths=/var/lib/flaskr/var:/usr/lib/flaskr/var\n", "\nExecStart=/usr/lib/flaskr/bin/python -m gunicorn"},
				"/usr/lib/flaskr/var/":                   nil,
			}},
		{app: "djsite", modules: "django", debs: "python3-django",
			control: []string{"\nDepends: python3, python3-django (>= 3:3.2), python3-gunicorn, adduser\n", "\nDescription: Django project with an admin, migrations and static files\n"},
			files: map[string][]string{
				"/usr/lib/systemd/system/djsite-setup.service":                           {"\nExecStart=/usr/bin/python3 -m django migrate --noinput\nTimeoutStartSec", "\nEnvironment=DJANGO_SETTINGS_MODULE=djsite.settings\n"},
				"/usr/lib/systemd/system/djsite.service":                                 {"\nBindReadOnlyPaths=/usr/share/djsite/static:/var/lib/djsite/static\n"},
				"/usr/share/djsite/static/djsite/site.css":                               {"font-family"},
				"/usr/share/djsite/static/admin/css/base.css":                            {"DJANGO"},
				"/usr/lib/python3/dist-packages/djsite/notes/migrations/0001_initial.py": {"CreateModel"},
				"/usr/lib/python3/dist-packages/djsite/static/djsite/site.css":           {"font-family"},
				"/usr/share/doc/djsite/copyright":                                        {"\nLicense: Expat\n MIT License\n"},
			}},
		{app: "asgisite", modules: "starlette, uvicorn.workers", debs: "python3-starlette, python3-uvicorn",
			control: []string{"\nDepends: python3, python3-starlette, python3-uvicorn, python3-gunicorn, adduser\n"},
			files: map[string][]string{
				"/usr/lib/systemd/system/asgisite.service": {"\nExecStart=/usr/bin/python3 -m gunicorn asgisite.app:app --worker-class uvicorn.workers.UvicornWorker"},
				"/usr/share/doc/asgisite/copyright":        {"\nLicense: Apache-2.0\n On Debian systems"},
			}},
	} {
		name := tc.app + "/system"
		if tc.venv {
			name = tc.app + "/venv"
		}
		t.Run(name, func(t *testing.T) {
			if out, err := exec.Command("/usr/bin/python3", "-c", "import "+tc.modules).CombinedOutput(); err != nil {
				testenv.Missing(t, "packaging %s needs Debian's %s (packaging/test-deps.txt): %v %s", tc.app, tc.debs, err, out)
			}
			dir := copyProject(t, filepath.Join("testdata", "apps", tc.app), filepath.Join(t.TempDir(), tc.app))
			res := buildExample(t, dir, func(o *Options) {
				if tc.venv {
					yes := true
					o.Mode, o.SystemSitePackages = "venv", &yes
				}
			})
			control, data, _ := readDeb(t, res.Path)
			ctl := string(control["/control"].data)
			for _, w := range tc.control {
				if !strings.Contains(ctl, w) {
					t.Errorf("control lacks %q:\n%s", w, ctl)
				}
			}
			for p, wants := range tc.files {
				e, ok := data[p]
				if !ok {
					t.Errorf("no %s in the package", p)
					continue
				}
				for _, w := range wants {
					if !strings.Contains(string(e.data), w) {
						t.Errorf("%s lacks %q:\n%s", p, w, e.data)
					}
				}
			}
			if testing.Short() {
				return
			}
			if _, err := exec.LookPath("lintian"); err != nil {
				testenv.Missing(t, "lintian is not installed (Debian package lintian)")
			}
			if out, err := exec.Command("lintian", "--fail-on", "error,warning", "--allow-root", res.Path).CombinedOutput(); err != nil {
				t.Errorf("lintian %s: %v\n%s", filepath.Base(res.Path), err, out)
			}
		})
	}
}
