package debpkg

import (
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

func TestSystemDepends(t *testing.T) {
	deps, notes := SystemDepends(reqs(t,
		"Django>=4.2,<5",
		"gunicorn>=20.1",
		"PyYAML",
		"Flask==2.2.*",
		"requests~=2.28",
		"zope.interface<=6.0",
		"psycopg2-binary!=2.9.0",
		`pywin32; sys_platform == "win32"`,
		`pytest; extra == "test"`,
		`tomli; python_version < "3.11"`,
		"Custom_Thing>1.0",
	), map[string]string{"custom-thing": "python3-custom"}, "3.11")
	want := []string{
		"python3-django (>= 3:4.2)", "python3-django (<< 3:5~)",
		"python3-gunicorn (>= 20.1)", "gunicorn",
		"python3-yaml",
		"python3-flask (>= 2.2~)", "python3-flask (<< 2.3~)",
		"python3-requests (>= 2.28)", "python3-requests (<< 3~)",
		"python3-zope-interface (<< 6.0.~)",
		"python3-psycopg2",
		"python3-custom (>= 1.0.~)",
	}
	if !reflect.DeepEqual(deps, want) {
		t.Errorf("deps =\n%s\nwant\n%s", strings.Join(deps, "\n"), strings.Join(want, "\n"))
	}
	joined := strings.Join(notes, "\n")
	for _, n := range []string{"pywin32", "pytest", "tomli", "exclusion"} {
		if !strings.Contains(joined, n) {
			t.Errorf("notes do not mention %s:\n%s", n, joined)
		}
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
