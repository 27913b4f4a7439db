// Package ciconfig renders the CI pipelines 'tandem ci init' writes: one
// template per CI system (embedded from templates/), filled from what the
// project's pyproject.toml and layout say.
package ciconfig

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/tandem-ha/tandem/internal/debpkg"
	"github.com/tandem-ha/tandem/internal/pyproject"
)

//go:embed templates/*.tmpl templates/notify.sh
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{"indent": indent}).ParseFS(templateFS, "templates/*.tmpl"))

// NotifyScript is the notify job's shell script, shared by every pipeline:
// it announces dist/*.deb to the cluster's generic source with a Standard
// Webhooks signature made by openssl. It reads TANDEM_WEBHOOK_URL,
// TANDEM_WEBHOOK_SECRET, TANDEM_DEB_BASE_URL, TANDEM_REF, TANDEM_REF_TYPE,
// TANDEM_COMMIT and TANDEM_PROJECT.
func NotifyScript() string {
	b, err := templateFS.ReadFile("templates/notify.sh")
	if err != nil {
		panic(err) // embedded at build time
	}
	return string(b)
}

// indent prefixes every non-empty line of s but the first with n spaces,
// for a block scalar whose first line the template indents.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := 1; i < len(lines); i++ {
		if lines[i] != "" {
			lines[i] = pad + lines[i]
		}
	}
	return strings.Join(lines, "\n")
}

// forge is one CI system tandem can write a pipeline for.
type forge struct {
	path     string // the pipeline file, relative to the project
	template string // its template in templates/
}

var forges = map[string]forge{
	"gitlab":  {".gitlab-ci.yml", "gitlab-ci.yml.tmpl"},
	"github":  {".github/workflows/tandem.yml", "actions.yml.tmpl"},
	"gitea":   {".gitea/workflows/tandem.yml", "actions.yml.tmpl"},
	"forgejo": {".forgejo/workflows/tandem.yml", "actions.yml.tmpl"},
}

// Path returns where forge's pipeline lives in a project, and whether forge
// is known.
func Path(forgeName string) (string, bool) {
	f, ok := forges[strings.ToLower(forgeName)]
	return f.path, ok
}

// Data fills the pipeline templates.
type Data struct {
	Forge   string
	Name    string
	Apt     string // Debian packages the jobs install
	Test    string // shell command that runs the project's tests
	Image   string
	RunsOn  string
	Upload  string // upload-artifact action reference
	Package string // tandem package invocation
	// Download is the download-artifact action reference.
	Download string
	// Notify is NotifyScript, the notify job's script.
	Notify string
}

// Render returns the pipeline for the project in dir on forgeName.
func Render(forgeName, dir string) ([]byte, error) {
	name := strings.ToLower(forgeName)
	f, ok := forges[name]
	if !ok {
		return nil, fmt.Errorf("unknown CI system %q: use gitlab, github, gitea or forgejo", forgeName)
	}
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, f.template, DataFor(name, dir)); err != nil {
		return nil, fmt.Errorf("render the %s pipeline: %w", name, err)
	}
	return buf.Bytes(), nil
}

// DataFor inspects the project in dir to choose the test command and packages.
func DataFor(forge, dir string) Data {
	d := Data{
		Forge:    forge,
		Name:     filepath.Base(mustAbsDir(dir)),
		Apt:      "ca-certificates curl git lintian python3 python3-venv python3-pip python3-setuptools python3-wheel",
		Test:     "python3 -m unittest discover -s tests -v",
		Image:    "debian:bookworm",
		RunsOn:   "ubuntu-latest",
		Upload:   "actions/upload-artifact@v4",
		Download: "actions/download-artifact@v4",
		Package:  "tandem package . --out dist",
		Notify:   NotifyScript(),
	}
	if p, err := pyproject.Load(dir); err == nil {
		d.Name = p.Name
		if p.Tandem.SystemSitePackages || p.Tandem.Mode == "system" {
			// The build maps the dependencies with dh-python's data and
			// checks the service command against Debian's packages.
			dist, _ := debpkg.LoadDistMap(debpkg.DHPythonFallback) // without it, Debian's usual names
			names := debpkg.DebianNames{Overrides: p.Tandem.DebianNames, Dist: dist}
			d.Apt += " dh-python"
			for _, r := range p.Dependencies {
				if r.Marker == nil {
					d.Apt += " " + names.Guess(r.Name)
				}
			}
		}
		switch backend, _, _ := strings.Cut(p.BuildBackend, ":"); {
		case strings.HasPrefix(backend, "flit_core"):
			d.Apt += " flit"
		case strings.HasPrefix(backend, "hatchling"):
			d.Apt += " python3-hatchling"
		case strings.HasPrefix(backend, "poetry.core"):
			d.Apt += " python3-poetry-core"
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "src")); err == nil {
		d.Test = "PYTHONPATH=src " + d.Test
	}
	if data, err := os.ReadFile(filepath.Join(dir, "pyproject.toml")); err == nil && strings.Contains(string(data), "[tool.pytest") {
		d.Apt += " python3-pytest"
		d.Test = strings.Replace(d.Test, "python3 -m unittest discover -s tests -v", "python3 -m pytest", 1)
	}
	switch forge {
	case "gitea":
		// act_runner runs JavaScript actions with node inside the job container.
		d.Image, d.Upload, d.Download = "node:20-bookworm", "actions/upload-artifact@v3", "actions/download-artifact@v3"
	case "forgejo":
		d.Image, d.RunsOn = "node:20-bookworm", "docker"
		d.Upload, d.Download = "https://code.forgejo.org/forgejo/upload-artifact@v4", "https://code.forgejo.org/forgejo/download-artifact@v4"
	}
	return d
}

func mustAbsDir(dir string) string {
	a, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	return a
}
