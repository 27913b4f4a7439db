package debpkg

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/tandem-ha/tandem/internal/pyproject"
)

// checkScript finds how to run a command name with python: a module with
// a __main__ (python -m NAME) or a console_scripts entry point.
const checkScript = `
import sys, importlib.util
from importlib import metadata
name = sys.argv[1]
mod = name.replace("-", "_")
try:
    if importlib.util.find_spec(mod) is not None and importlib.util.find_spec(mod + ".__main__") is not None:
        print("module " + mod)
        sys.exit(0)
except Exception:
    pass
for ep in metadata.entry_points(group="console_scripts"):
    if ep.name == name:
        print("entry " + ep.value)
        sys.exit(0)
print("missing")
`

// AppMetaDir holds one JSON file per application package (AppMeta), so
// that tandem's delivery can learn the unit and health path of a .deb
// (from its data, or on an installed node) without parsing the unit.
const AppMetaDir = "/usr/share/tandem/apps"

// AppMeta is /usr/share/tandem/apps/NAME.json. Field names are stable.
type AppMeta struct {
	Package    string `json:"package"`
	Version    string `json:"version"`
	Unit       string `json:"unit"`
	HealthPath string `json:"health_path,omitempty"`
	DataDir    string `json:"data_dir"`
	Mode       string `json:"mode"`
	ExecStart  string `json:"exec_start"`
}

// interpreter is the python the unit runs.
func (b *build) interpreter() string {
	if b.proj.Tandem.Mode == "system" {
		return b.opt.Python
	}
	return b.finalVenv() + "/bin/python"
}

// checkService resolves [tool.tandem].service to an ExecStart that runs
// through the interpreter (never through a script's shebang) and fails if
// the command does not exist in what the package ships.
// The setup commands ([tool.tandem].setup) are resolved the same way.
func (b *build) checkService(ctx context.Context) error {
	var err error
	if b.exec, err = b.resolveCommand(ctx, "tool.tandem.service", "service command", b.proj.Tandem.Service); err != nil {
		return err
	}
	b.setup = nil
	for i, c := range b.proj.Tandem.Setup {
		line, err := b.resolveCommand(ctx, fmt.Sprintf("tool.tandem.setup[%d]", i), "setup command", c)
		if err != nil {
			return err
		}
		b.setup = append(b.setup, line)
	}
	return nil
}

// resolveCommand turns a command line of the project into an ExecStart=
// value run by the package's interpreter.
func (b *build) resolveCommand(ctx context.Context, key, what, cmdline string) (string, error) {
	words, err := SplitCommand(cmdline)
	if err != nil || len(words) == 0 {
		return "", &BuildError{Msg: fmt.Sprintf("pyproject.toml: %s: %q: %v", key, cmdline, err)}
	}
	first, args := words[0], words[1:]
	py := b.interpreter()
	switch {
	case first == "python" || first == "python3" || strings.HasPrefix(first, "python3."):
		return JoinCommand(append([]string{py}, args...)), nil
	case filepath.IsAbs(first):
		b.log.Info(what+" is an absolute path; not checked", "command", first)
		return JoinCommand(words), nil
	}
	var argv []string
	var env []string
	if b.proj.Tandem.Mode == "system" {
		argv = []string{b.opt.Python, "-c", checkScript, first}
		env = append(env, "PYTHONPATH="+filepath.Join(b.work, "stage", "usr", "lib", "python3", "dist-packages"))
	} else {
		argv = []string{filepath.Join(b.stagedVenv(), "bin", "python"), "-c", checkScript, first}
	}
	out, err := b.runEnv(ctx, env, argv...)
	if err != nil {
		return "", fmt.Errorf("check %s: %w: %s", what, err, tail(string(out), 10))
	}
	res := strings.TrimSpace(string(out))
	if i := strings.LastIndex(res, "\n"); i >= 0 {
		res = res[i+1:]
	}
	kind, value, _ := strings.Cut(res, " ")
	switch kind {
	case "module":
		return JoinCommand(append([]string{py, "-m", value}, args...)), nil
	case "entry":
		modPath, attr, ok := strings.Cut(value, ":")
		modPath, attr = strings.TrimSpace(modPath), strings.TrimSpace(attr)
		if !ok || attr == "" {
			return "", &BuildError{Msg: fmt.Sprintf("entry point %s = %q is not module:function", first, value)}
		}
		code := fmt.Sprintf("import sys, %s; sys.argv[0] = %q; sys.exit(%s.%s())", modPath, first, modPath, attr)
		return JoinCommand(append([]string{py, "-c", code}, args...)), nil
	default:
		pkgs := []string{b.hintNames(ctx).Guess(first)}
		if b.proj.Tandem.Mode == "system" {
			return "", &BuildError{Msg: fmt.Sprintf(what+" %q is not installed for %s: install Debian's %s on the build machine and list it in [project].dependencies so that the package depends on it", first, b.opt.Python, pkgs[0])}
		}
		hint := fmt.Sprintf("add the project that provides it to [project].dependencies (with its wheel in --wheels), or set system-site-packages = true in [tool.tandem], apt-get install %s here and add %q to [tool.tandem].depends", pkgs[0], pkgs[0])
		if b.proj.Tandem.SystemSitePackages {
			hint = fmt.Sprintf("add the project that provides it to [project].dependencies, or apt-get install %s on this machine and add %q to [tool.tandem].depends", pkgs[0], pkgs[0])
		}
		return "", &BuildError{Msg: fmt.Sprintf(what+" %q does not exist in the venv: %s", first, hint)}
	}
}

func (b *build) runEnv(ctx context.Context, extra []string, argv ...string) ([]byte, error) {
	if len(extra) == 0 {
		return b.run(ctx, argv...)
	}
	saved := b.extraEnv
	b.extraEnv = extra
	defer func() { b.extraEnv = saved }()
	return b.run(ctx, argv...)
}

// guessSPDX names common license texts when the project gives only a file.
func guessSPDX(spdx, text string) string {
	if spdx != "" {
		return spdx
	}
	switch {
	case strings.Contains(text, "Permission is hereby granted, free of charge"):
		return "Expat"
	case strings.Contains(text, "Apache License") && strings.Contains(text, "Version 2.0"):
		return "Apache-2.0"
	case strings.Contains(text, "Redistribution and use in source and binary forms"):
		return "BSD-3-clause"
	}
	return "other"
}

func (b *build) addMeta(context.Context) error {
	p := b.proj
	t := p.Tandem
	maint, err := maintainer(p)
	if err != nil {
		return err
	}
	b.maint = maint
	if err := b.describe(); err != nil {
		return err
	}
	b.user = t.User
	if b.user == "" {
		b.user = b.name
	}
	if err := CheckUser(b.user); err != nil {
		return &BuildError{Msg: "pyproject.toml: " + err.Error()}
	}
	if err := CheckDataDir(t.DataDir, b.opt.AllowDataDirs); err != nil {
		return &BuildError{Msg: "pyproject.toml: tool.tandem." + err.Error()}
	}
	etc := "/etc/" + b.name
	var envFiles []string
	conf := append([]string{}, t.ConfigFiles...)
	if t.EnvironmentFile != "" {
		conf = append([]string{t.EnvironmentFile}, conf...)
		envFiles = append(envFiles, etc+"/"+filepath.Base(t.EnvironmentFile))
	}
	seen := map[string]string{}
	for _, c := range conf {
		src := filepath.Join(b.opt.Dir, c)
		st, err := os.Stat(src)
		if err != nil || !st.Mode().IsRegular() {
			return &BuildError{Msg: fmt.Sprintf("pyproject.toml: tool.tandem: configuration file %q not found in the project", c)}
		}
		base := filepath.Base(c)
		if prev, dup := seen[base]; dup {
			return &BuildError{Msg: fmt.Sprintf("pyproject.toml: tool.tandem: %q and %q would both be installed as %s/%s", prev, c, etc, base)}
		}
		seen[base] = c
		mode := fs.FileMode(0o644)
		if c == t.EnvironmentFile {
			mode = 0o600
		}
		b.files = append(b.files, File{Dest: etc + "/" + base, Source: src, Mode: mode, Conffile: true})
	}
	env := map[string]string{"TANDEM_APP_VERSION": b.version}
	for k, v := range t.Environment {
		env[k] = v
	}
	doc := "file:///usr/share/doc/" + b.name + "/copyright"
	if hp := b.homepage(); hp != "" {
		doc = hp
	}
	unit := AppUnit{
		Name:          b.name,
		User:          b.user,
		Description:   b.synopsis,
		Documentation: doc,
		ExecStart:     b.exec,
		DataDir:       t.DataDir,
		Environment:   env,
		EnvFiles:      envFiles,
		Overrides:     t.Unit,
		Setup:         b.setup,
	}
	sp := ScriptParams{
		Package: b.name, Unit: b.name + ".service", User: b.user, DataDir: t.DataDir,
		Mode: t.Mode, VenvDir: b.finalVenv(), StartCheck: 3,
	}
	if t.Mode != "venv" {
		sp.VenvDir = ""
	}
	if b.usesFlask() {
		// Flask puts an installed app's instance folder in PREFIX/var
		// (sys.prefix: /usr, or the venv), read-only in the sandbox: it
		// is the data directory's var/ instead.
		prefix := "/usr"
		if t.Mode == "venv" {
			prefix = b.finalVenv()
			b.files = append(b.files, File{Dest: prefix + "/var", Dir: true, Mode: 0o755})
		} else {
			sp.MountPoints = append(sp.MountPoints, prefix+"/var")
		}
		src := t.DataDir + "/var"
		sp.DataSubdirs = append(sp.DataSubdirs, src)
		unit.BindPaths = append(unit.BindPaths, src+":"+prefix+"/var")
		b.log.Info("Flask app: its instance folder is in the data directory", "instance_folder", src+"/NAME-instance")
	}
	if st := b.static; st != nil && st.Bind != "" {
		// Collected at build time into /usr/share/NAME/static: the app
		// finds them at its STATIC_ROOT (see django.go).
		unit.BindReadOnlyPaths = append(unit.BindReadOnlyPaths, st.Bind)
		if st.DataSubdir != "" {
			sp.DataSubdirs = append(sp.DataSubdirs, st.DataSubdir)
		}
		if st.MountPoint != "" {
			sp.MountPoints = append(sp.MountPoints, st.MountPoint)
		}
	}
	b.files = append(b.files, File{Dest: "/usr/lib/systemd/system/" + b.name + ".service", Data: []byte(unit.Render()), Mode: 0o644})
	if len(b.setup) > 0 {
		sp.SetupUnit = SetupUnitName(b.name)
		b.files = append(b.files, File{Dest: "/usr/lib/systemd/system/" + sp.SetupUnit, Data: []byte(unit.RenderSetup()), Mode: 0o644})
	}
	b.scripts, err = RenderScripts(sp)
	if err != nil {
		return err
	}

	lic, err := b.license()
	if err != nil {
		return err
	}
	var holders []string
	people := p.Authors
	if len(people) == 0 {
		people = p.Maintainers
	}
	for _, a := range people {
		if a.Name != "" {
			holders = append(holders, a.Name)
		} else if a.Email != "" {
			holders = append(holders, a.Email)
		}
	}
	doc = "/usr/share/doc/" + b.name
	b.files = append(b.files, File{Dest: doc + "/copyright", Mode: 0o644, Data: []byte(RenderCopyright(CopyrightParams{
		Name: p.Name, Contact: maint, Source: b.homepage(), Year: b.mtime.Year(), Holders: holders, License: lic,
	}))})
	note := "Built by tandem package"
	if b.gitDesc != "" {
		note += " from git " + b.gitDesc
	}
	note += "."
	cl, err := RenderChangelog(b.name, b.version, maint, note, b.mtime)
	if err != nil {
		return err
	}
	b.files = append(b.files, File{Dest: doc + "/" + changelogName(b.version), Data: cl, Mode: 0o644})

	meta, err := json.MarshalIndent(AppMeta{
		Package: b.name, Version: b.version, Unit: b.name + ".service", HealthPath: t.HealthPath,
		DataDir: t.DataDir, Mode: t.Mode, ExecStart: b.exec,
	}, "", "  ")
	if err != nil {
		return err
	}
	b.files = append(b.files, File{Dest: AppMetaDir + "/" + b.name + ".json", Data: append(meta, '\n'), Mode: 0o644})

	var ov []lintianOverride
	if t.EnvironmentFile != "" {
		ov = append(ov, lintianOverride{"non-standard-file-perm 0600 != 0644 [etc/" + b.name + "/" + filepath.Base(t.EnvironmentFile) + "]",
			"The environment file is where secrets such as database passwords go.\nsystemd reads it as root before starting the service, so no one else\nneeds to read it."})
	}
	if b.static != nil {
		ov = append(ov, lintianOverride{"embedded-javascript-library * [" + strings.TrimPrefix(b.static.Ship, "/") + "/*]",
			"Django's collectstatic copies the JavaScript of the installed apps (the\nadmin's jQuery, which Debian's python3-django links to libjs-jquery)\ninto STATIC_ROOT, with hashed and compressed variants the app serves."})
	}
	if t.Mode == "venv" {
		venv := b.finalVenv()
		if strings.HasPrefix(venv, "/opt/") {
			ov = append(ov, lintianOverride{"dir-or-file-in-opt [" + strings.TrimPrefix(path.Dir(venv), "/") + "/*]",
				"The application is a self-contained virtualenv at " + venv + ",\nthe location dh-virtualenv established for such packages, chosen with\nvenv-dir in [tool.tandem] (the default is /usr/lib/" + b.name + ")."})
		}
		if b.hasVenvScripts() {
			ov = append(ov, lintianOverride{"unusual-interpreter " + venv + "/bin/python [" + strings.TrimPrefix(venv, "/") + "/bin/*]",
				"Entry-point scripts installed by pip run with the virtualenv's python,\nwhich is how a virtualenv isolates its dependencies."})
		}
	}
	if len(ov) > 0 {
		b.files = append(b.files, File{Dest: "/usr/share/lintian/overrides/" + b.name, Data: lintianOverrides(b.name, ov), Mode: 0o644})
	}

	b.depends = append(b.depends, "adduser")
	b.depends = append(b.depends, t.Depends...)
	return nil
}

// usesFlask reports whether the project depends on Flask.
func (b *build) usesFlask() bool {
	for _, r := range b.proj.Dependencies {
		if r.Normalized() == "flask" {
			return true
		}
	}
	return false
}

// changelogName is changelog.Debian.gz, except for native versions
// (without a Debian revision), for which Debian names it changelog.gz.
func changelogName(version string) string {
	_, v := splitEpoch(version)
	if strings.Contains(v, "-") {
		return "changelog.Debian.gz"
	}
	return "changelog.gz"
}

// hasVenvScripts reports whether pip installed any script with a shebang.
func (b *build) hasVenvScripts() bool {
	for _, f := range b.files {
		if strings.HasPrefix(f.Dest, b.finalVenv()+"/bin/") && f.Source != "" {
			data, err := os.ReadFile(f.Source)
			if err == nil && strings.HasPrefix(string(data), "#!"+b.finalVenv()+"/bin/python") {
				return true
			}
		}
	}
	return false
}

func (b *build) homepage() string {
	for _, k := range []string{"Homepage", "homepage", "Home", "Source", "source", "Repository", "repository"} {
		if u := b.proj.URLs[k]; strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
			return u
		}
	}
	return ""
}

func (b *build) spec() *Spec {
	var desc []string
	if b.longDesc != "" {
		desc = append(desc, b.longDesc, "")
	}
	where := "a virtualenv in " + b.finalVenv()
	if b.proj.Tandem.Mode == "system" {
		where = "Debian's python3 and python3-* packages"
	}
	desc = append(desc, fmt.Sprintf("This package runs the %s Python project as the systemd service %s.service, using %s, as the system user %s with data in %s.",
		b.proj.Name, b.name, where, b.name, b.proj.Tandem.DataDir))
	deps := append([]string{}, b.depends...)
	seen := map[string]bool{}
	var uniq []string
	for _, d := range deps {
		if !seen[d] {
			seen[d] = true
			uniq = append(uniq, d)
		}
	}
	section := b.proj.Tandem.Section
	if section == "" {
		section = "web"
	}
	return &Spec{
		Name:        b.name,
		Version:     b.version,
		Arch:        b.arch,
		Maintainer:  b.maint,
		Summary:     b.synopsis,
		Description: wrapText(strings.Join(desc, "\n"), 78),
		Section:     section,
		Priority:    "optional",
		Homepage:    b.homepage(),
		Depends:     uniq,
		Files:       b.files,
		Scripts:     b.scripts,
		MTime:       b.mtime,
		Compression: b.opt.Compression,
	}
}

// maintainer picks [tool.tandem].maintainer, else the first of
// [project].maintainers, then [project].authors, that has a name and an
// email address Debian accepts.
func maintainer(p *pyproject.Project) (string, error) {
	if p.Tandem.Maintainer != "" {
		if err := ValidateMaintainer(p.Tandem.Maintainer); err != nil {
			return "", &BuildError{Msg: "pyproject.toml: tool.tandem.maintainer: " + err.Error()}
		}
		return p.Tandem.Maintainer, nil
	}
	var rejected []string
	for _, who := range append(append([]pyproject.Person{}, p.Maintainers...), p.Authors...) {
		if who.Name == "" || who.Email == "" {
			continue
		}
		m := who.String()
		if err := ValidateMaintainer(m); err != nil || strings.ContainsAny(who.Name, ",<>\"") {
			rejected = append(rejected, fmt.Sprintf("%q", m))
			continue
		}
		return m, nil
	}
	msg := "no maintainer: give [project].maintainers or [project].authors an entry with both name and email, or set maintainer = \"Full Name <email@example.org>\" in [tool.tandem]"
	if len(rejected) > 0 {
		msg += " (" + strings.Join(rejected, ", ") + " cannot be a Debian Maintainer field: the name may not contain commas, quotes or angle brackets)"
	}
	return "", &BuildError{Msg: msg}
}

// license resolves the copyright file's license from [project].license
// (a PEP 639 expression, or a PEP 621 table) and license-files.
func (b *build) license() (CopyrightLicense, error) {
	l := b.proj.License
	if l.Text != "" {
		// {text = "MIT"} is common shorthand for an identifier.
		if t := strings.TrimSpace(l.Text); isSPDXExpr(t) {
			files, err := FindLicenseFiles(b.opt.Dir, b.proj.LicenseFiles, "")
			if err != nil {
				return CopyrightLicense{}, fmt.Errorf("find license files: %w", err)
			}
			return ResolveLicense(t, files), nil
		}
		return CopyrightLicense{Expr: "other", Text: l.Text}, nil
	}
	files, err := FindLicenseFiles(b.opt.Dir, b.proj.LicenseFiles, l.File)
	if err != nil {
		return CopyrightLicense{}, fmt.Errorf("find license files: %w", err)
	}
	if len(b.proj.LicenseFiles) > 0 && len(files) == 0 {
		return CopyrightLicense{}, &BuildError{Msg: fmt.Sprintf("pyproject.toml: project.license-files: %q matches no file in the project", b.proj.LicenseFiles)}
	}
	if l.File != "" && len(files) == 0 {
		return CopyrightLicense{}, &BuildError{Msg: fmt.Sprintf("pyproject.toml: project.license: file %q not found in the project", l.File)}
	}
	return ResolveLicense(l.SPDX, files), nil
}

var spdxExprRe = regexp.MustCompile(`^\(?[A-Za-z0-9.+-]+\)?( (AND|OR|WITH) \(?[A-Za-z0-9.+-]+\)?)*$`)

// isSPDXExpr reports whether s looks like an SPDX license expression
// rather than a license text.
func isSPDXExpr(s string) bool { return len(s) < 100 && spdxExprRe.MatchString(s) }

// readme returns the declared readme's text ("" when none is declared).
func (b *build) readme() (string, error) {
	if b.proj.ReadmeText != "" {
		return b.proj.ReadmeText, nil
	}
	if b.proj.Readme == "" {
		return "", nil
	}
	data, err := os.ReadFile(filepath.Join(b.opt.Dir, b.proj.Readme))
	if err != nil {
		return "", &BuildError{Msg: fmt.Sprintf("pyproject.toml: project.readme: %v", err)}
	}
	return string(data), nil
}

// describe sets the synopsis and the extended description.
func (b *build) describe() error {
	if s := b.proj.Tandem.Synopsis; s != "" {
		if err := CheckSynopsis(s, b.name); err != nil {
			return &BuildError{Msg: "pyproject.toml: tool.tandem.synopsis: " + err.Error()}
		}
		b.synopsis = s
	} else {
		var notes []string
		b.synopsis, notes = DeriveSynopsis(b.proj.Description, b.name, b.proj.Name)
		for _, n := range notes {
			b.log.Info(n)
		}
	}
	readme, err := b.readme()
	if err != nil {
		return err
	}
	b.longDesc = LongDescription(readme, b.synopsis)
	return nil
}
