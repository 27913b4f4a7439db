// Package pyproject parses the parts of a PEP 621 pyproject.toml that tandem
// needs to package a Python web project: [project] metadata, PEP 508
// dependency strings and tandem's own [tool.tandem] table.
package pyproject

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Person is an entry of [project].authors or maintainers.
type Person struct {
	Name  string `toml:"name"`
	Email string `toml:"email"`
}

// String formats the person as "Name <email>" (or whichever part is set).
func (p Person) String() string {
	switch {
	case p.Name != "" && p.Email != "":
		return p.Name + " <" + p.Email + ">"
	case p.Email != "":
		return p.Email
	}
	return p.Name
}

// License is [project].license: a PEP 639 SPDX expression, or a PEP 621
// table with either inline text or a file name.
type License struct {
	SPDX string // license = "MIT"
	Text string // license = {text = "..."}
	File string // license = {file = "LICENSE"}, relative to the project
}

// Project is [project] plus [tool.tandem].
type Project struct {
	Name            string
	Version         string // "" when dynamic or absent
	Description     string
	Readme          string // file name, when given as a string or {file=...}
	ReadmeText      string // inline text, when given as {text=...}
	RequiresPython  string
	License         License
	LicenseFiles    []string
	Authors         []Person
	Maintainers     []Person
	Dependencies    []Requirement
	URLs            map[string]string
	Dynamic         []string
	HasBuildBackend bool
	BuildBackend    string   // [build-system].build-backend
	BackendPath     []string // [build-system].backend-path
	Tandem          Tandem
}

// Tandem is [tool.tandem].
type Tandem struct {
	// Service is the command line the unit runs, e.g.
	// "gunicorn mysite.wsgi:application --bind 127.0.0.1:8000".
	Service string `toml:"service"`
	// Mode is "venv" (default) or "system".
	Mode string `toml:"mode"`
	// SystemSitePackages lets the venv see Debian's python3-* packages.
	SystemSitePackages bool `toml:"system-site-packages"`
	// DataDir is the service's writable directory (default /var/lib/NAME).
	DataDir string `toml:"data-dir"`
	// EnvironmentFile is a project file installed as /etc/NAME/<base name>
	// (a conffile) and loaded by the unit.
	EnvironmentFile string `toml:"environment-file"`
	// ConfigFiles are project files installed under /etc/NAME/ as conffiles.
	ConfigFiles []string `toml:"config-files"`
	// Environment is set in the unit with Environment=.
	Environment map[string]string `toml:"environment"`
	// BuildEnvironment is added to Environment for the commands tandem
	// runs at build time only (Django's collectstatic), e.g. throwaway
	// values of settings the project requires at import; it never reaches
	// the package.
	BuildEnvironment map[string]string `toml:"build-environment"`
	// CollectStatic, when false, turns off the build-time collectstatic
	// of a Django project (default on).
	CollectStatic *bool `toml:"collectstatic"`
	// Depends are extra Debian relations added to Depends.
	Depends []string `toml:"depends"`
	// DebianNames maps PyPI names to Debian package names (system mode).
	DebianNames map[string]string `toml:"debian-names"`
	// HealthPath is the HTTP path tandem's health gate probes.
	HealthPath string `toml:"health-path"`
	// Maintainer is "Name <email>" for the Maintainer field.
	Maintainer string `toml:"maintainer"`
	// Section is the Debian section (default "web").
	Section string `toml:"section"`
	// Synopsis replaces the synopsis derived from [project].description.
	Synopsis string `toml:"synopsis"`
	// User is the system user the service runs as (default: the package
	// name). The package creates it and refuses one it did not create.
	User string `toml:"user"`
	// VenvDir is where venv mode installs the virtualenv: /usr/lib/NAME
	// (default) or, as dh-virtualenv does, /opt/venvs/NAME.
	VenvDir string `toml:"venv-dir"`
	// Setup are commands run as the service's user, with its environment,
	// on install and upgrade before the service starts, e.g.
	// "flask --app NAME init-db" or "python -m django migrate".
	Setup []string `toml:"setup"`
	// Unit overrides [Service] directives of the generated unit; an empty
	// value removes the directive.
	Unit map[string]string `toml:"unit"`
}

// Error is a problem found in pyproject.toml; Key names the offending key.
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return "pyproject.toml: " + e.Msg
	}
	return fmt.Sprintf("pyproject.toml: %s: %s", e.Key, e.Msg)
}

// ErrNoPyproject is returned by Load when the directory has no pyproject.toml.
var ErrNoPyproject = errors.New("no pyproject.toml")

// Load reads and parses DIR/pyproject.toml.
func Load(dir string) (*Project, error) {
	path := filepath.Join(dir, "pyproject.toml")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w: tandem packages PEP 621 projects; add a pyproject.toml with a [project] table (name, version, dependencies) and a [tool.tandem] table (service = \"gunicorn app.wsgi:application ...\")", dir, ErrNoPyproject)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

var nameRe = regexp.MustCompile(`(?i)^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$`)

// rawProject mirrors the TOML document loosely: fields whose type varies by
// PEP (license, readme) are decoded as any and checked by hand.
type rawProject struct {
	BuildSystem struct {
		BuildBackend string   `toml:"build-backend"`
		BackendPath  []string `toml:"backend-path"`
		Requires     []string `toml:"requires"`
	} `toml:"build-system"`
	Project *struct {
		Name           string            `toml:"name"`
		Version        string            `toml:"version"`
		Description    string            `toml:"description"`
		Readme         any               `toml:"readme"`
		RequiresPython string            `toml:"requires-python"`
		License        any               `toml:"license"`
		LicenseFiles   []string          `toml:"license-files"`
		Authors        []Person          `toml:"authors"`
		Maintainers    []Person          `toml:"maintainers"`
		Dependencies   []string          `toml:"dependencies"`
		URLs           map[string]string `toml:"urls"`
		Dynamic        []string          `toml:"dynamic"`
	} `toml:"project"`
	Tool struct {
		Tandem Tandem `toml:"tandem"`
	} `toml:"tool"`
}

// Parse decodes a pyproject.toml document. It checks what tandem relies on:
// a valid name, well-formed dependencies and a sane [tool.tandem] table. A
// missing version is not an error here, since git or --version may supply it.
func Parse(data []byte) (*Project, error) {
	var raw rawProject
	if err := toml.Unmarshal(data, &raw); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, &Error{Msg: fmt.Sprintf("line %d column %d: %s", row, col, de.String())}
		}
		return nil, &Error{Msg: err.Error()}
	}
	if raw.Project == nil {
		return nil, &Error{Key: "[project]", Msg: "missing; add a [project] table with name, version and dependencies (PEP 621)"}
	}
	rp := raw.Project
	p := &Project{
		Name:            strings.TrimSpace(rp.Name),
		Version:         strings.TrimSpace(rp.Version),
		Description:     strings.TrimSpace(rp.Description),
		RequiresPython:  strings.TrimSpace(rp.RequiresPython),
		LicenseFiles:    rp.LicenseFiles,
		Authors:         rp.Authors,
		Maintainers:     rp.Maintainers,
		URLs:            rp.URLs,
		Dynamic:         rp.Dynamic,
		HasBuildBackend: raw.BuildSystem.BuildBackend != "",
		BuildBackend:    strings.TrimSpace(raw.BuildSystem.BuildBackend),
		BackendPath:     raw.BuildSystem.BackendPath,
		Tandem:          raw.Tool.Tandem,
	}
	if p.Name == "" {
		return nil, &Error{Key: "project.name", Msg: `missing; set name = "mysite" in [project]`}
	}
	if !nameRe.MatchString(p.Name) {
		return nil, &Error{Key: "project.name", Msg: fmt.Sprintf("%q is not a valid Python project name (letters, digits, '.', '_', '-'; starting and ending with a letter or digit)", p.Name)}
	}
	for _, d := range p.Dynamic {
		if d == "name" {
			return nil, &Error{Key: "project.dynamic", Msg: `"name" cannot be dynamic`}
		}
	}
	switch r := rp.Readme.(type) {
	case nil:
	case string:
		p.Readme = r
	case map[string]any:
		if f, ok := r["file"].(string); ok {
			p.Readme = f
		}
		if t, ok := r["text"].(string); ok {
			p.ReadmeText = t
		}
	default:
		return nil, &Error{Key: "project.readme", Msg: "must be a file name or a table"}
	}
	switch l := rp.License.(type) {
	case nil:
	case string:
		p.License.SPDX = strings.TrimSpace(l)
	case map[string]any:
		text, _ := l["text"].(string)
		file, _ := l["file"].(string)
		if (text == "") == (file == "") {
			return nil, &Error{Key: "project.license", Msg: `set exactly one of {text = "..."} or {file = "LICENSE"}`}
		}
		p.License.Text, p.License.File = text, file
	default:
		return nil, &Error{Key: "project.license", Msg: `must be an SPDX expression ("MIT") or a table ({file = "LICENSE"})`}
	}
	for i, d := range rp.Dependencies {
		r, err := ParseRequirement(d)
		if err != nil {
			return nil, &Error{Key: fmt.Sprintf("project.dependencies[%d]", i), Msg: err.Error()}
		}
		p.Dependencies = append(p.Dependencies, r)
	}
	if err := p.Tandem.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// envKeyRe is what systemd accepts as an environment variable name.
var envKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// userRe is a portable system user name (Debian's adduser default NAME_REGEX).
var userRe = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// safePathRe is a path without blanks, quotes or shell syntax.
var safePathRe = regexp.MustCompile(`^[A-Za-z0-9/._+-]+$`)

// unitKeyRe is a systemd directive name.
var unitKeyRe = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

func (t *Tandem) check() error {
	t.Service = strings.TrimSpace(t.Service)
	if strings.ContainsAny(t.Service, "\n\r") {
		return &Error{Key: "tool.tandem.service", Msg: "must be a single line"}
	}
	switch t.Mode {
	case "":
		t.Mode = "venv"
	case "venv", "system":
	default:
		return &Error{Key: "tool.tandem.mode", Msg: fmt.Sprintf("%q is not a mode; use \"venv\" or \"system\"", t.Mode)}
	}
	if t.DataDir != "" && (!filepath.IsAbs(t.DataDir) || filepath.Clean(t.DataDir) != t.DataDir || t.DataDir == "/" || !safePathRe.MatchString(t.DataDir)) {
		return &Error{Key: "tool.tandem.data-dir", Msg: fmt.Sprintf("%q must be a clean absolute path without spaces or quotes, e.g. \"/var/lib/mysite\"", t.DataDir)}
	}
	for _, f := range append([]string{t.EnvironmentFile}, t.ConfigFiles...) {
		if f == "" {
			continue
		}
		if filepath.IsAbs(f) || strings.HasPrefix(filepath.Clean(f), "..") {
			return &Error{Key: "tool.tandem.config-files", Msg: fmt.Sprintf("%q must be a path inside the project", f)}
		}
		if strings.ContainsAny(filepath.Base(f), " \t\n'\"\\$`") {
			return &Error{Key: "tool.tandem.config-files", Msg: fmt.Sprintf("%q: file names with spaces or quotes are not supported", f)}
		}
	}
	for _, k := range sortedKeys(t.Environment) {
		if !envKeyRe.MatchString(k) {
			return &Error{Key: "tool.tandem.environment", Msg: fmt.Sprintf("%q is not a valid environment variable name", k)}
		}
		if strings.ContainsAny(t.Environment[k], "\n\r") {
			return &Error{Key: "tool.tandem.environment." + k, Msg: "must be a single line"}
		}
	}
	for _, k := range sortedKeys(t.BuildEnvironment) {
		if !envKeyRe.MatchString(k) {
			return &Error{Key: "tool.tandem.build-environment", Msg: fmt.Sprintf("%q is not a valid environment variable name", k)}
		}
		if strings.ContainsAny(t.BuildEnvironment[k], "\n\r\x00") {
			return &Error{Key: "tool.tandem.build-environment." + k, Msg: "must be a single line"}
		}
	}
	for k, v := range t.Unit {
		if !unitKeyRe.MatchString(k) {
			return &Error{Key: "tool.tandem.unit", Msg: fmt.Sprintf("%q is not a systemd directive name", k)}
		}
		if strings.ContainsAny(v, "\n\r") {
			return &Error{Key: "tool.tandem.unit." + k, Msg: "must be a single line"}
		}
	}
	for i, d := range t.Depends {
		if strings.TrimSpace(d) == "" || strings.ContainsAny(d, "\n\r") {
			return &Error{Key: fmt.Sprintf("tool.tandem.depends[%d]", i), Msg: "must be a non-empty single-line Debian relation such as \"curl (>= 7)\""}
		}
	}
	if t.HealthPath != "" && !strings.HasPrefix(t.HealthPath, "/") {
		return &Error{Key: "tool.tandem.health-path", Msg: fmt.Sprintf("%q must start with /", t.HealthPath)}
	}
	if strings.ContainsAny(t.Synopsis, "\n\r") {
		return &Error{Key: "tool.tandem.synopsis", Msg: "must be a single line"}
	}
	if t.User != "" && !userRe.MatchString(t.User) {
		return &Error{Key: "tool.tandem.user", Msg: fmt.Sprintf("%q is not a valid system user name (lower-case letters, digits, '-' and '_', starting with a letter, at most 32 characters)", t.User)}
	}
	if t.VenvDir != "" && (!filepath.IsAbs(t.VenvDir) || filepath.Clean(t.VenvDir) != t.VenvDir || !safePathRe.MatchString(t.VenvDir) ||
		!(strings.HasPrefix(t.VenvDir, "/usr/lib/") || strings.HasPrefix(t.VenvDir, "/opt/"))) {
		return &Error{Key: "tool.tandem.venv-dir", Msg: fmt.Sprintf("%q must be a clean path below /usr/lib or /opt, e.g. \"/usr/lib/mysite\" or \"/opt/venvs/mysite\"", t.VenvDir)}
	}
	for i, c := range t.Setup {
		if strings.TrimSpace(c) == "" || strings.ContainsAny(c, "\n\r") {
			return &Error{Key: fmt.Sprintf("tool.tandem.setup[%d]", i), Msg: "must be a non-empty single-line command such as \"flask --app mysite init-db\""}
		}
	}
	if strings.ContainsAny(t.Maintainer, "\n\r") {
		return &Error{Key: "tool.tandem.maintainer", Msg: "must be a single line"}
	}
	return nil
}

// NormalizeName returns the PEP 503 normalised form of a project name:
// lower case, with runs of "-", "_" and "." replaced by one "-".
func NormalizeName(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if r == '-' || r == '_' || r == '.' {
			dash = true
			continue
		}
		if dash && b.Len() > 0 {
			b.WriteByte('-')
		}
		dash = false
		b.WriteRune(r)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
