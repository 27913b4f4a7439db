package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestCIInit(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte("[project]\nname = \"mysite\"\ndependencies = [\"gunicorn\"]\n[tool.tandem]\nsystem-site-packages = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ forge, path string }{
		{"gitlab", ".gitlab-ci.yml"},
		{"github", ".github/workflows/tandem.yml"},
		{"gitea", ".gitea/workflows/tandem.yml"},
		{"forgejo", ".forgejo/workflows/tandem.yml"},
	} {
		var out, errb bytes.Buffer
		if code := Main([]string{"ci", "init", tc.forge, dir}, nil, &out, &errb); code != 0 {
			t.Fatalf("ci init %s: exit %d: %s", tc.forge, code, errb.String())
		}
		data, err := os.ReadFile(filepath.Join(dir, tc.path))
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s is not valid YAML: %v\n%s", tc.path, err, data)
		}
		text := string(data)
		for _, want := range []string{"tandem package . --out dist", "lintian --fail-on error,warning dist/*.deb", "dist/*.deb.sha256",
			"NOTIFY THE CLUSTER", "PYTHONPATH=src python3 -m unittest", "python3-gunicorn", "mysite"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %q", tc.path, want)
			}
		}
		if tc.forge == "gitlab" {
			if _, ok := doc["package"].(map[string]any)["artifacts"]; !ok || doc["variables"].(map[string]any)["GIT_DEPTH"] != "0" {
				t.Errorf("gitlab pipeline lacks artifacts or GIT_DEPTH: %v", doc)
			}
		} else {
			jobs, _ := doc["jobs"].(map[string]any)
			for _, j := range []string{"test", "package", "notify"} {
				if _, ok := jobs[j]; !ok {
					t.Errorf("%s has no job %s", tc.path, j)
				}
			}
			if !strings.Contains(text, "fetch-depth: 0") {
				t.Errorf("%s does not fetch tags for git describe", tc.path)
			}
		}
		// A second run refuses to overwrite; --force does.
		errb.Reset()
		if code := Main([]string{"ci", "init", tc.forge, dir}, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "--force") {
			t.Errorf("second ci init %s: exit %d, %q", tc.forge, code, errb.String())
		}
		if code := Main([]string{"ci", "init", "--force", tc.forge, dir}, nil, &out, &errb); code != 0 {
			t.Errorf("ci init --force %s: exit %d", tc.forge, code)
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"ci", "init", "jenkins", dir}, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "gitlab, github, gitea or forgejo") {
		t.Errorf("unknown forge: exit %d, %q", code, errb.String())
	}
}

func TestPackageCommandErrors(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main([]string{"package", t.TempDir()}, nil, &out, &errb)
	if code != ExitUsage || !strings.Contains(errb.String(), "pyproject.toml") {
		t.Errorf("package without pyproject: exit %d, %q", code, errb.String())
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	errb.Reset()
	if code := Main([]string{"package", "."}, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: exit %d, %q", code, errb.String())
	}
}

func TestPackageJSON(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import setuptools, wheel, gunicorn, pip, venv").Run(); err != nil {
		testenv.Missing(t, "Debian python3 with setuptools, wheel, gunicorn, pip and venv is needed")
	}
	out := t.TempDir()
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	var stdout, stderr bytes.Buffer
	code := Main([]string{"package", "../../examples/pysite", "--version", "2.0.0", "--out", out, "--json"}, nil, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	for _, k := range []string{"package", "version", "architecture", "path", "sha256", "size", "sha256_path"} {
		if _, ok := res[k]; !ok {
			t.Errorf("JSON lacks %q: %v", k, res)
		}
	}
	if res["package"] != "pysite" || res["version"] != "2.0.0" || res["path"] != filepath.Join(out, "pysite_2.0.0_all.deb") {
		t.Errorf("result %v", res)
	}
	for _, stage := range []string{"==> build wheel", "==> install", "==> write .deb"} {
		if !strings.Contains(stderr.String(), stage) {
			t.Errorf("progress lacks %q:\n%s", stage, stderr.String())
		}
	}
}
