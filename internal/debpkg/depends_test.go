package debpkg

import (
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/pyproject"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func reqs(t *testing.T, ss ...string) []pyproject.Requirement {
	t.Helper()
	var out []pyproject.Requirement
	for _, s := range ss {
		r, err := pyproject.ParseRequirement(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// distSample is a few lines of dh-python's cpython3_fallback.
const distSample = `Django python3-django
Flask python3-flask
PyYAML python3-yaml
argparse python3 (>= 3.2)
gunicorn python3-gunicorn
psycopg2 python3-psycopg2
requests python3-requests
zope.interface python3-zope.interface
# a comment

`

func sampleNames(t *testing.T, overrides map[string]string) DebianNames {
	t.Helper()
	dist, err := ParseDistMap(strings.NewReader(distSample))
	if err != nil {
		t.Fatal(err)
	}
	return DebianNames{Overrides: overrides, Dist: dist, Epoch: func(pkg string) string { return knownEpochs[pkg] }}
}

func TestSystemDepends(t *testing.T) {
	deps, notes, err := SystemDepends(reqs(t,
		"Django>=4.2,<5",
		"gunicorn>=20.1",
		"PyYAML",
		"Flask==2.2.*",
		"requests~=2.28",
		"zope_interface<=6.0",
		"psycopg2-binary!=2.9.0",
		"argparse",
		`pywin32; sys_platform == "win32"`,
		`pytest; extra == "test"`,
		`tomli; python_version < "3.11"`,
		"Custom_Thing>1.0",
	), sampleNames(t, map[string]string{"custom-thing": "python3-custom", "psycopg2-binary": "python3-psycopg2"}), "3.11")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"python3-django (>= 3:4.2)", "python3-django (<< 3:5~)",
		"python3-gunicorn (>= 20.1)",
		"python3-yaml",
		"python3-flask (>= 2.2~)", "python3-flask (<< 2.3~)",
		"python3-requests (>= 2.28)", "python3-requests (<< 3~)",
		"python3-zope.interface (<< 6.0.~)",
		"python3-psycopg2",
		"python3-custom (>= 1.0.~)",
	}
	if !reflect.DeepEqual(deps, want) {
		t.Errorf("deps =\n%s\nwant\n%s", strings.Join(deps, "\n"), strings.Join(want, "\n"))
	}
	joined := strings.Join(notes, "\n")
	for _, n := range []string{"pywin32", "pytest", "tomli", "exclusion", "argparse"} {
		if !strings.Contains(joined, n) {
			t.Errorf("notes do not mention %s:\n%s", n, joined)
		}
	}
}

func TestSystemDependsUnmapped(t *testing.T) {
	_, _, err := SystemDepends(reqs(t, "Flask", "flask-htmx>=1", "internal_lib"), sampleNames(t, nil), "3.11")
	var ue *UnmappedError
	if !errors.As(err, &ue) || !reflect.DeepEqual(ue.Names, []string{"flask-htmx", "internal_lib"}) {
		t.Fatalf("err = %v", err)
	}
	for _, w := range []string{"flask-htmx", "internal_lib", "debian-names", "venv mode"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not mention %q", err, w)
		}
	}
}

// TestDHPythonMapping reads the mapping dh-python ships, as the build does.
func TestDHPythonMapping(t *testing.T) {
	if _, err := os.Stat(DHPythonFallback); err != nil {
		testenv.Missing(t, "needs dh-python's mapping %s (Debian package dh-python)", DHPythonFallback)
	}
	dist, err := LoadDistMap(DHPythonFallback)
	if err != nil {
		t.Fatal(err)
	}
	names := DebianNames{Dist: dist}
	for pypi, deb := range map[string]string{
		"Django": "python3-django", "flask": "python3-flask", "PyYAML": "python3-yaml", "gunicorn": "python3-gunicorn",
		"starlette": "python3-starlette", "uvicorn": "python3-uvicorn", "Pillow": "python3-pil", "typing_extensions": "python3-typing-extensions",
	} {
		if got := names.Guess(pypi); got != deb {
			t.Errorf("%s maps to %s, want %s", pypi, got, deb)
		}
	}
	if len(dist) < 1000 {
		t.Errorf("only %d names in %s", len(dist), DHPythonFallback)
	}
}

// TestRelationSemantics checks with dpkg that the translated relations
// accept Debian revisions of allowed versions and reject the others.
func TestRelationSemantics(t *testing.T) {
	testenv.NeedCommand(t, "dpkg", "dpkg")
	for _, tc := range []struct {
		spec     string
		accept   []string
		reject   []string
		epochPfx string
	}{
		{"<=2.0", []string{"2.0-1", "2.0+dfsg-1", "1.9-3"}, []string{"2.0.1-1", "2.1-1"}, ""},
		{"<2.0", []string{"1.9.9-1"}, []string{"2.0~rc1-1", "2.0-1"}, ""},
		{">2.0", []string{"2.0.1-1", "2.1-1"}, []string{"2.0-1", "1.9-1"}, ""},
		{"==2.0", []string{"2.0-1", "2.0+ds-2"}, []string{"2.0.1-1", "1.9-1"}, ""},
		{"~=1.4.2", []string{"1.4.2-1", "1.4.9-1"}, []string{"1.5-1", "1.4.1-1"}, ""},
		{">=4.2", []string{"3:4.2.1-1"}, []string{"3:3.2.25-0+deb12u7"}, "3:"},
	} {
		r := reqs(t, "x"+tc.spec)[0]
		var rels []string
		for _, s := range r.Specifiers {
			rr, _ := specToDebian(s, tc.epochPfx)
			rels = append(rels, rr...)
		}
		satisfied := func(v string) bool {
			for _, rel := range rels {
				op, ver, _ := strings.Cut(rel, " ")
				dop := map[string]string{">=": "ge", "<<": "lt", ">>": "gt", "<=": "le", "=": "eq"}[op]
				if exec.Command("dpkg", "--compare-versions", v, dop, ver).Run() != nil {
					return false
				}
			}
			return true
		}
		for _, v := range tc.accept {
			if !satisfied(v) {
				t.Errorf("%s -> %v rejects %s", tc.spec, rels, v)
			}
		}
		for _, v := range tc.reject {
			if satisfied(v) {
				t.Errorf("%s -> %v accepts %s", tc.spec, rels, v)
			}
		}
	}
}

func TestPythonDepends(t *testing.T) {
	if got := pythonDepends("venv", "3.11", ""); !reflect.DeepEqual(got, []string{"python3 (>= 3.11)", "python3 (<< 3.12)"}) {
		t.Errorf("venv: %v", got)
	}
	if got := pythonDepends("system", "3.11", ">=3.9, <4"); !reflect.DeepEqual(got, []string{"python3 (>= 3.9)"}) {
		t.Errorf("system: %v", got)
	}
	if got := pythonDepends("system", "3.11", ""); !reflect.DeepEqual(got, []string{"python3"}) {
		t.Errorf("system without requires-python: %v", got)
	}
}

func TestCommandQuoting(t *testing.T) {
	words, err := SplitCommand(`gunicorn app:wsgi --bind "127.0.0.1:8000" --name 'my site' --env A=\$B --pct 50%`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"gunicorn", "app:wsgi", "--bind", "127.0.0.1:8000", "--name", "my site", "--env", "A=$B", "--pct", "50%"}
	if !reflect.DeepEqual(words, want) {
		t.Fatalf("SplitCommand = %q", words)
	}
	if got := JoinCommand(words); got != `gunicorn app:wsgi --bind 127.0.0.1:8000 --name "my site" --env A=$$B --pct 50%%` {
		t.Errorf("JoinCommand = %s", got)
	}
	for _, bad := range []string{"", "  ", `a "b`, "a 'b", `a \`} {
		if _, err := SplitCommand(bad); err == nil {
			t.Errorf("SplitCommand(%q) succeeded", bad)
		}
	}
}
