package pyproject

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const full = `
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "My_Site"
version = "1.4.0rc1"
description = "A site"
readme = {file = "README.md", content-type = "text/markdown"}
requires-python = ">=3.11"
license = {file = "LICENSE"}
authors = [{name = "Ada", email = "ada@example.org"}, {email = "bob@example.org"}]
dependencies = [
  "Django>=4.2,<5",
  "gunicorn",
  'pywin32; sys_platform == "win32"',
  "requests[socks] (>=2.28)",
]

[project.urls]
Homepage = "https://example.org"

[tool.tandem]
service = "gunicorn mysite.wsgi:application --bind 127.0.0.1:8000"
mode = "system"
data-dir = "/srv/mysite"
environment-file = "deploy/site.env"
config-files = ["deploy/gunicorn.conf.py"]
environment = {DJANGO_SETTINGS_MODULE = "mysite.settings"}
depends = ["nginx"]
debian-names = {Django = "python3-django"}
health-path = "/healthz"
maintainer = "Ops <ops@example.org>"
unit = {MemoryDenyWriteExecute = ""}
`

func TestParseFull(t *testing.T) {
	p, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "My_Site" || p.Version != "1.4.0rc1" || p.Description != "A site" || p.Readme != "README.md" {
		t.Errorf("metadata = %q %q %q %q", p.Name, p.Version, p.Description, p.Readme)
	}
	if p.License != (License{File: "LICENSE"}) {
		t.Errorf("license = %+v", p.License)
	}
	if len(p.Authors) != 2 || p.Authors[0].String() != "Ada <ada@example.org>" || p.Authors[1].String() != "bob@example.org" {
		t.Errorf("authors = %+v", p.Authors)
	}
	var names []string
	for _, d := range p.Dependencies {
		names = append(names, d.Normalized())
	}
	if !reflect.DeepEqual(names, []string{"django", "gunicorn", "pywin32", "requests"}) {
		t.Errorf("dependencies = %v", names)
	}
	if got := p.Dependencies[0].Specifiers; !reflect.DeepEqual(got, []Specifier{{">=", "4.2"}, {"<", "5"}}) {
		t.Errorf("Django specifiers = %v", got)
	}
	if got := p.Dependencies[3]; !reflect.DeepEqual(got.Extras, []string{"socks"}) || len(got.Specifiers) != 1 {
		t.Errorf("requests = %+v", got)
	}
	tt := p.Tandem
	if tt.Mode != "system" || tt.DataDir != "/srv/mysite" || tt.EnvironmentFile != "deploy/site.env" || tt.HealthPath != "/healthz" ||
		tt.Maintainer != "Ops <ops@example.org>" || tt.Environment["DJANGO_SETTINGS_MODULE"] != "mysite.settings" ||
		!reflect.DeepEqual(tt.Depends, []string{"nginx"}) || !reflect.DeepEqual(tt.ConfigFiles, []string{"deploy/gunicorn.conf.py"}) {
		t.Errorf("tool.tandem = %+v", tt)
	}
	if v, ok := tt.Unit["MemoryDenyWriteExecute"]; !ok || v != "" {
		t.Errorf("unit overrides = %v", tt.Unit)
	}
	if p.BuildBackend != "setuptools.build_meta" || p.URLs["Homepage"] != "https://example.org" {
		t.Errorf("backend %q urls %v", p.BuildBackend, p.URLs)
	}
}

func TestParseDefaultsAndLicenseForms(t *testing.T) {
	p, err := Parse([]byte("[project]\nname = \"a\"\nlicense = \"MIT\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Tandem.Mode != "venv" || p.License.SPDX != "MIT" || p.Version != "" {
		t.Errorf("got mode %q license %+v version %q", p.Tandem.Mode, p.License, p.Version)
	}
	p, err = Parse([]byte("[project]\nname = \"a\"\nlicense = {text = \"do what you want\"}\n"))
	if err != nil || p.License.Text != "do what you want" {
		t.Errorf("text license: %+v, %v", p, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ doc, key string }{
		{"[tool.tandem]\nservice = \"x\"\n", "[project]"},
		{"[project]\nversion = \"1\"\n", "project.name"},
		{"[project]\nname = \"-bad\"\n", "project.name"},
		{"[project]\nname = \"a\"\ndynamic = [\"name\"]\n", "project.dynamic"},
		{"[project]\nname = \"a\"\nlicense = {text = \"x\", file = \"y\"}\n", "project.license"},
		{"[project]\nname = \"a\"\nlicense = 3\n", "project.license"},
		{"[project]\nname = \"a\"\ndependencies = [\"dj ango\"]\n", "project.dependencies[0]"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nmode = \"docker\"\n", "tool.tandem.mode"},
		{"[project]\nname = \"a\"\n[tool.tandem]\ndata-dir = \"var/lib/a\"\n", "tool.tandem.data-dir"},
		{"[project]\nname = \"a\"\n[tool.tandem]\ndata-dir = \"/\"\n", "tool.tandem.data-dir"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nconfig-files = [\"../etc/passwd\"]\n", "tool.tandem.config-files"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nenvironment = {\"A-B\" = \"x\"}\n", "tool.tandem.environment"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nbuild-environment = {\"A B\" = \"x\"}\n", "tool.tandem.build-environment"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nbuild-environment = {SECRET_KEY = \"a\\nb\"}\n", "tool.tandem.build-environment.SECRET_KEY"},
		{"[project]\nname = \"a\"\n[tool.tandem]\ncollectstatic = \"no\"\n", ""},
		{"[project]\nname = \"a\"\n[tool.tandem]\nunit = {\"exec start\" = \"x\"}\n", "tool.tandem.unit"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nservice = \"a\\nb\"\n", "tool.tandem.service"},
		{"[project]\nname = \"a\"\n[tool.tandem]\nhealth-path = \"healthz\"\n", "tool.tandem.health-path"},
		{"[project]\nname = \"a\"\n[tool.tandem]\ndepends = [\"\"]\n", "tool.tandem.depends[0]"},
	} {
		_, err := Parse([]byte(tc.doc))
		var pe *Error
		if !errors.As(err, &pe) || pe.Key != tc.key {
			t.Errorf("Parse(%q) = %v, want an error for key %s", tc.doc, err, tc.key)
		}
	}
	_, err := Parse([]byte("[project\nname = 1"))
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("syntax error = %v, want one naming line 1", err)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrNoPyproject) || !strings.Contains(err.Error(), "add a pyproject.toml") {
		t.Errorf("Load(empty dir) = %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte("[project]\nname = \"ok\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := Load(dir); err != nil || p.Name != "ok" {
		t.Errorf("Load = %+v, %v", p, err)
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{"Django": "django", "Py_YAML": "py-yaml", "a.-_b": "a-b", "zope.interface": "zope-interface", "A__B--C": "a-b-c"} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRequirement(t *testing.T) {
	for _, tc := range []struct {
		in     string
		name   string
		specs  []Specifier
		url    string
		marker bool
	}{
		{"flask", "flask", nil, "", false},
		{"Flask >= 2.2 , < 3", "Flask", []Specifier{{">=", "2.2"}, {"<", "3"}}, "", false},
		{"pkg (~=1.4.2)", "pkg", []Specifier{{"~=", "1.4.2"}}, "", false},
		{"pkg==1.2.*", "pkg", []Specifier{{"==", "1.2.*"}}, "", false},
		{"pkg===weird1", "pkg", []Specifier{{"===", "weird1"}}, "", false},
		{"pkg @ https://example.org/p.whl", "pkg", nil, "https://example.org/p.whl", false},
		{`pkg[a,b]>=1; python_version < "3.12" and os_name == 'posix'`, "pkg", []Specifier{{">=", "1"}}, "", true},
	} {
		r, err := ParseRequirement(tc.in)
		if err != nil {
			t.Errorf("ParseRequirement(%q): %v", tc.in, err)
			continue
		}
		if r.Name != tc.name || !reflect.DeepEqual(r.Specifiers, tc.specs) || r.URL != tc.url || (r.Marker != nil) != tc.marker {
			t.Errorf("ParseRequirement(%q) = %+v", tc.in, r)
		}
	}
	for _, bad := range []string{"", ">=1", "pkg >= ", "pkg ~ 1", "pkg[a", "pkg (>=1", "pkg; python_version >", "pkg; foo == '1'", "pkg>=1.*", "pkg @ ", "pkg; (os_name == 'a'"} {
		if r, err := ParseRequirement(bad); err == nil {
			t.Errorf("ParseRequirement(%q) = %+v, want an error", bad, r)
		}
	}
}

func TestMarkerEval(t *testing.T) {
	env := map[string]string{"python_version": "3.11", "sys_platform": "linux", "os_name": "posix", "platform_machine": "x86_64"}
	for _, tc := range []struct {
		m    string
		want bool
	}{
		{`python_version >= "3.8"`, true},
		{`python_version < "3.9"`, false},
		{`python_version == "3.11"`, true},
		{`"3.10" < python_version`, true},
		{`python_version ~= "3.9"`, true},
		{`python_version ~= "3.12"`, false},
		{`sys_platform == "win32"`, false},
		{`sys_platform != "win32" and (os_name == "nt" or python_version > "3.10")`, true},
		{`platform_machine in "x86_64 aarch64"`, true},
		{`platform_machine not in "x86_64 aarch64"`, false},
		{`extra == "dev"`, false},
	} {
		m, err := ParseMarker(tc.m)
		if err != nil {
			t.Errorf("ParseMarker(%q): %v", tc.m, err)
			continue
		}
		if got := m.Eval(env); got != tc.want {
			t.Errorf("Eval(%q) = %v, want %v", tc.m, got, tc.want)
		}
	}
	m, _ := ParseMarker(`os_name == "posix" and extra == "dev"`)
	if !m.Mentions("extra") || m.Mentions("sys_platform") {
		t.Error("Mentions is wrong")
	}
}

// FuzzParse checks that no pyproject.toml makes the parser panic, and that
// what it accepts satisfies the invariants the packager relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("[project]\nname = \"a\"\nlicense = \"MIT\"\n"))
	f.Add([]byte("[project]\nname=\"x\"\ndependencies=[\"a[b]>=1; python_version<'3'\"]\n[tool.tandem]\nunit={A=\"\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		if !nameRe.MatchString(p.Name) {
			t.Fatalf("accepted bad name %q", p.Name)
		}
		if p.Tandem.Mode != "venv" && p.Tandem.Mode != "system" {
			t.Fatalf("accepted mode %q", p.Tandem.Mode)
		}
		if strings.ContainsAny(p.Tandem.Service, "\n\r") {
			t.Fatalf("accepted multi-line service %q", p.Tandem.Service)
		}
		for _, d := range p.Dependencies {
			if d.Name == "" {
				t.Fatalf("dependency without a name: %+v", d)
			}
		}
	})
}

// FuzzParseRequirement feeds arbitrary PEP 508 strings and markers.
func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{"flask", "Django>=4.2,<5", `a[b,c] (==1.*) ; python_version < "3.9" or (os_name == 'nt' and extra == "x")`, "p @ https://x/y.whl ; os_name=='posix'"} {
		f.Add(s)
	}
	env := map[string]string{"python_version": "3.11", "os_name": "posix"}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRequirement(s)
		if err != nil {
			return
		}
		if !nameRe.MatchString(r.Name) {
			t.Fatalf("accepted bad name %q from %q", r.Name, s)
		}
		for _, sp := range r.Specifiers {
			if sp.Version == "" {
				t.Fatalf("empty version in %q", s)
			}
		}
		if r.Marker != nil {
			r.Marker.Eval(env)
		}
	})
}

func TestTandemNewKeys(t *testing.T) {
	base := "[project]\nname = \"x\"\n[tool.tandem]\nservice = \"gunicorn x:app\"\n"
	for _, tc := range []struct {
		extra, errKey string
	}{
		{"synopsis = \"blog app\"\nuser = \"xuser\"\nvenv-dir = \"/opt/venvs/x\"\nsetup = [\"flask --app x init-db\"]\n", ""},
		{"venv-dir = \"/usr/lib/x\"\n", ""},
		{"venv-dir = \"/srv/x\"\n", "tool.tandem.venv-dir"},
		{"venv-dir = \"/usr/lib/x y\"\n", "tool.tandem.venv-dir"},
		{"venv-dir = \"/usr/lib/../x\"\n", "tool.tandem.venv-dir"},
		{"user = \"Root\"\n", "tool.tandem.user"},
		{"user = \"a;b\"\n", "tool.tandem.user"},
		{"setup = [\"\"]\n", "tool.tandem.setup[0]"},
		{"setup = [\"a\\nb\"]\n", "tool.tandem.setup[0]"},
		{"synopsis = \"a\\nb\"\n", "tool.tandem.synopsis"},
		{"data-dir = \"/var/lib/x$(id)\"\n", "tool.tandem.data-dir"},
	} {
		_, err := Parse([]byte(base + tc.extra))
		switch {
		case tc.errKey == "" && err != nil:
			t.Errorf("%q: %v", tc.extra, err)
		case tc.errKey != "" && (err == nil || !strings.Contains(err.Error(), tc.errKey)):
			t.Errorf("%q: err = %v, want one naming %s", tc.extra, err, tc.errKey)
		}
	}
	p, err := Parse([]byte("[project]\nname = \"x\"\nreadme = {text = \"Hello.\", content-type = \"text/plain\"}\n"))
	if err != nil || p.ReadmeText != "Hello." {
		t.Errorf("readme text: %+v, %v", p, err)
	}
}
