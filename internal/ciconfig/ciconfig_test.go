package ciconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataFor(t *testing.T) {
	tests := []struct {
		name      string
		pyproject string
		src       bool
		forge     string
		wantTest  string
		wantApt   string
		wantImage string
	}{
		{"unittest", "[project]\nname = \"a\"\n", false, "gitlab", "python3 -m unittest discover -s tests -v", "python3-wheel", "debian:bookworm"},
		{"src layout", "[project]\nname = \"a\"\n", true, "github", "PYTHONPATH=src python3 -m unittest", "python3-wheel", "debian:bookworm"},
		{"pytest", "[project]\nname = \"a\"\n[tool.pytest.ini_options]\n", false, "gitea", "python3 -m pytest", "python3-pytest", "node:20-bookworm"},
		{"debian gunicorn", "[project]\nname = \"a\"\ndependencies = [\"gunicorn\"]\n[tool.tandem]\nsystem-site-packages = true\n", false, "forgejo", "unittest", "python3-gunicorn", "node:20-bookworm"},
		{"system mode, flit", "[build-system]\nbuild-backend = \"flit_core.buildapi\"\n[project]\nname = \"a\"\ndependencies = [\"Flask\"]\n[tool.tandem]\nmode = \"system\"\n", false, "gitlab", "unittest", " dh-python python3-flask flit", "debian:bookworm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(tt.pyproject), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.src {
				if err := os.Mkdir(filepath.Join(dir, "src"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			d := DataFor(tt.forge, dir)
			if !strings.Contains(d.Test, tt.wantTest) || !strings.Contains(d.Apt, tt.wantApt) || d.Image != tt.wantImage || d.Name != "a" {
				t.Errorf("DataFor = %+v; want test %q, apt with %q, image %q, name a", d, tt.wantTest, tt.wantApt, tt.wantImage)
			}
		})
	}
}

func TestRender(t *testing.T) {
	dir := t.TempDir()
	for _, forge := range []string{"gitlab", "GitHub", "gitea", "forgejo"} {
		out, err := Render(forge, dir)
		if err != nil {
			t.Fatalf("Render(%s): %v", forge, err)
		}
		if want := `written by "tandem ci init ` + strings.ToLower(forge) + `"`; !strings.Contains(string(out), want) {
			t.Errorf("Render(%s) lacks %q", forge, want)
		}
		if strings.Contains(string(out), "<no value>") {
			t.Errorf("Render(%s) left a template field empty:\n%s", forge, out)
		}
	}
	if _, err := Render("jenkins", dir); err == nil || !strings.Contains(err.Error(), "gitlab, github, gitea or forgejo") {
		t.Errorf("Render(jenkins) error = %v", err)
	}
}
