package debpkg

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// A Django project's static files are collected at build time, into the
// package, instead of on every node at install: the package then holds
// exactly what the app serves, and the install needs no write access to
// the static directory. collectstatic runs with the project's settings
// module and the unit's environment, plus [tool.tandem] build-environment
// and a throwaway secret key (only if the project gives none), so that
// settings which require production secrets at import can load; nothing of
// that build-time environment reaches the package.
//
// Where the files go (STATIC_ROOT as the settings compute it at build
// time, with the unit's environment):
//
//   - inside what the package installs (a venv, or the app's own package
//     directory, e.g. BASE_DIR / "staticfiles" in a venv): shipped at that
//     very path;
//   - anywhere else (the data directory, a path relative to the working
//     directory, which is the data directory, /var/www/...): shipped in
//     /usr/share/NAME/static, Debian's place for a package's
//     architecture-independent data, and bound read-only at STATIC_ROOT
//     in the unit (BindReadOnlyPaths=), so the app finds them where its
//     settings say. A web server in front serves /usr/share/NAME/static.
//
// When collectstatic fails, the build goes on without static files and
// says which setting to fix (a setup command can still collect them on
// install, as before).

// djangoStaticDir is where static files go when STATIC_ROOT is outside
// what the package installs.
func djangoStaticDir(pkg string) string { return "/usr/share/" + pkg + "/static" }

// throwawaySecretNames are the environment variables real settings modules
// read their secret key from; a build-time value is supplied for those the
// project's environment leaves unset.
var throwawaySecretNames = []string{"DJANGO_SECRET_KEY", "SECRET_KEY"}

// throwawaySecret is the build-time secret key: fixed (the build must be
// reproducible) and useless for anything else; it signs nothing that is
// shipped.
const throwawaySecret = "tandem-build-time-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz"

// collectStaticScript loads the settings, collects the static files into
// argv[1] (overriding STATIC_ROOT for the collection only) and prints one
// "tandem-django:" JSON line saying what it did.
const collectStaticScript = `
import json, os, sys
out = sys.argv[1]
def emit(**kw):
    sys.stdout.flush()
    print("tandem-django:" + json.dumps(kw, sort_keys=True), flush=True)
try:
    import django
    from django.conf import settings
    django.setup()
except BaseException as e:
    import traceback
    traceback.print_exc()
    missing = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else ""
    emit(stage="settings", error="%s: %s" % (type(e).__name__, e), missing_env=missing)
    sys.exit(3)
from django.apps import apps
if not apps.is_installed("django.contrib.staticfiles"):
    emit(stage="skip", reason="django.contrib.staticfiles is not in INSTALLED_APPS")
    sys.exit(0)
root = getattr(settings, "STATIC_ROOT", None)
if not root:
    emit(stage="static_root", error="STATIC_ROOT is not set")
    sys.exit(3)
root = os.fspath(root)
try:
    from django.core.management import call_command
    from django.test.utils import override_settings
    with override_settings(STATIC_ROOT=out):
        call_command("collectstatic", interactive=False, verbosity=0)
except BaseException as e:
    import traceback
    traceback.print_exc()
    emit(stage="collect", error="%s: %s" % (type(e).__name__, e), static_root=root)
    sys.exit(3)
# The manifest of ManifestStaticFilesStorage (and whitenoise's) lists the
# files in the order the file system gave them; sorted, it is the same on
# every build.
manifest = os.path.join(out, "staticfiles.json")
if os.path.isfile(manifest):
    try:
        with open(manifest) as f:
            data = json.load(f)
        with open(manifest, "w") as f:
            json.dump(data, f, sort_keys=True)
    except ValueError:
        pass
emit(stage="done", static_root=root)
`

// djangoResult is the script's "tandem-django:" line.
type djangoResult struct {
	Stage      string `json:"stage"`
	Error      string `json:"error"`
	MissingEnv string `json:"missing_env"`
	Reason     string `json:"reason"`
	StaticRoot string `json:"static_root"`
}

// staticPlan is where the collected files go and what the unit needs.
type staticPlan struct {
	Ship       string // where the package installs them
	Bind       string // "SOURCE:DEST" for BindReadOnlyPaths=, "" for none
	DataSubdir string // mount point to create in the data directory
	MountPoint string // mount point elsewhere (created by postinst)
	Count      int
}

// usesDjango reports whether the project depends on Django.
func (b *build) usesDjango() bool {
	for _, r := range b.proj.Dependencies {
		if r.Normalized() == "django" {
			return true
		}
	}
	return false
}

var settingsDefaultRe = regexp.MustCompile(`os\.environ\.setdefault\(\s*["']DJANGO_SETTINGS_MODULE["']\s*,\s*["']([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)["']\s*\)`)

// SettingsModuleDefault returns the settings module a manage.py, wsgi.py
// or asgi.py sets as the default (os.environ.setdefault), or "".
func SettingsModuleDefault(src []byte) string {
	if m := settingsDefaultRe.FindSubmatch(src); m != nil {
		return string(m[1])
	}
	return ""
}

// djangoSettingsModule finds the project's settings module: the unit's
// DJANGO_SETTINGS_MODULE, else the default its manage.py sets, else the
// one a wsgi.py or asgi.py of the project sets. from says where it came
// from.
func (b *build) djangoSettingsModule() (module, from string) {
	if m := b.proj.Tandem.Environment["DJANGO_SETTINGS_MODULE"]; m != "" {
		return m, "[tool.tandem] environment"
	}
	if data, err := os.ReadFile(filepath.Join(b.opt.Dir, "manage.py")); err == nil {
		if m := SettingsModuleDefault(data); m != "" {
			return m, "manage.py"
		}
	}
	var found []string
	_ = filepath.WalkDir(b.opt.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(b.opt.Dir, p)
		if rel != "." && skipSource(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() && strings.Count(rel, string(filepath.Separator)) > 3 {
			return filepath.SkipDir
		}
		if n := d.Name(); !d.IsDir() && (n == "wsgi.py" || n == "asgi.py") {
			if data, err := os.ReadFile(p); err == nil {
				if m := SettingsModuleDefault(data); m != "" {
					found = append(found, m+"\x00"+filepath.ToSlash(rel))
				}
			}
		}
		return nil
	})
	sort.Strings(found)
	if len(found) > 0 {
		m, rel, _ := strings.Cut(found[0], "\x00")
		return m, rel
	}
	return "", ""
}

// collectStatic runs Django's collectstatic at build time (see above).
func (b *build) collectStatic(ctx context.Context) error {
	t := &b.proj.Tandem
	if !b.usesDjango() || (t.CollectStatic != nil && !*t.CollectStatic) {
		return nil
	}
	module, from := b.djangoSettingsModule()
	if module == "" {
		b.log.Warn("Django project: static files not collected at build time: no settings module found; set DJANGO_SETTINGS_MODULE in [tool.tandem] environment (e.g. environment = { DJANGO_SETTINGS_MODULE = \"mysite.settings\" })")
		return nil
	}
	if from != "[tool.tandem] environment" {
		// The setup commands (python -m django migrate) need it too.
		if t.Environment == nil {
			t.Environment = map[string]string{}
		}
		t.Environment["DJANGO_SETTINGS_MODULE"] = module
		b.log.Info("Django project: the unit sets DJANGO_SETTINGS_MODULE", "module", module, "from", from)
	}
	env := []string{}
	for _, k := range sortedKeys(t.Environment) {
		env = append(env, k+"="+t.Environment[k])
	}
	for _, k := range sortedKeys(t.BuildEnvironment) {
		env = append(env, k+"="+t.BuildEnvironment[k])
	}
	var throwaway []string
	for _, k := range throwawaySecretNames {
		if _, ok := t.Environment[k]; ok {
			continue
		}
		if _, ok := t.BuildEnvironment[k]; ok {
			continue
		}
		env = append(env, k+"="+throwawaySecret)
		throwaway = append(throwaway, k)
	}
	py := filepath.Join(b.stagedVenv(), "bin", "python")
	if t.Mode == "system" {
		py = b.opt.Python
		env = append(env, "PYTHONPATH="+b.stagedSitePackages())
	}
	out := filepath.Join(b.work, "django-static")
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	output, runErr := b.runEnv(ctx, env, py, "-c", collectStaticScript, out)
	res := parseDjangoResult(output)
	if runErr != nil || res.Stage != "done" {
		if res.Stage == "skip" {
			b.log.Info("Django project: no static files to collect", "reason", res.Reason)
			return nil
		}
		b.log.Warn("Django project: collectstatic failed at build time; the package ships no collected static files. "+
			staticFailureHint(res, module)+" (or collect them on install: setup = [\"python -m django collectstatic --noinput\"])",
			"settings", module, "output", tail(string(output), 8))
		return nil
	}
	for i, c := range t.Setup {
		if strings.Contains(c, "collectstatic") {
			return &BuildError{Msg: fmt.Sprintf("pyproject.toml: tool.tandem.setup[%d]: %q: tandem package collects the static files at build time and ships them read-only; remove this setup command (or set collectstatic = false in [tool.tandem] to collect on install instead)", i, c)}
		}
	}
	if err := checkNoBuildPaths(out, []string{mustAbs(b.work)}); err != nil {
		return err
	}
	plan, err := b.planStatic(res.StaticRoot)
	if err != nil {
		return err
	}
	files, err := treeFiles(out, plan.Ship)
	if err != nil {
		return err
	}
	for _, f := range files {
		if !f.Dir {
			plan.Count++
		}
	}
	b.files = append(b.files, files...)
	b.static = &plan
	msg := fmt.Sprintf("Django project: collected %d static files at build time with DJANGO_SETTINGS_MODULE=%s", plan.Count, module)
	if len(throwaway) > 0 {
		msg += fmt.Sprintf(" and a throwaway %s for the build only (not in the package)", strings.Join(throwaway, ", "))
	}
	b.log.Info(msg, "static_root", res.StaticRoot, "shipped_in", plan.Ship)
	return nil
}

// stagedSitePackages is the system-mode staging of dist-packages.
func (b *build) stagedSitePackages() string {
	return filepath.Join(b.work, "stage", "usr", "lib", "python3", "dist-packages")
}

// planStatic decides where the files collected for staticRoot (as the
// settings computed it at build time) are installed.
func (b *build) planStatic(staticRoot string) (staticPlan, error) {
	stage := mustAbs(filepath.Join(b.work, "stage"))
	if filepath.IsAbs(staticRoot) {
		clean := filepath.Clean(staticRoot)
		if rel, err := filepath.Rel(stage, clean); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			final := "/" + filepath.ToSlash(rel)
			if b.ownsPath(final) {
				return staticPlan{Ship: final}, nil
			}
			staticRoot = final
		} else if strings.HasPrefix(clean, mustAbs(b.work)) {
			return staticPlan{}, &BuildError{Msg: fmt.Sprintf("Django's STATIC_ROOT is %s at build time, inside the build directory but outside what the package installs; compute it from the settings module's location or an environment variable", staticRoot)}
		}
	} else {
		// Relative: to the unit's working directory, the data directory.
		staticRoot = path.Join(b.proj.Tandem.DataDir, filepath.ToSlash(staticRoot))
	}
	staticRoot = path.Clean(filepath.ToSlash(staticRoot))
	if !safeMountRe.MatchString(staticRoot) {
		return staticPlan{}, &BuildError{Msg: fmt.Sprintf("Django's STATIC_ROOT %q cannot be bound in the unit: use a path without spaces, quotes or colons", staticRoot)}
	}
	ship := djangoStaticDir(b.name)
	if staticRoot == ship || strings.HasPrefix(staticRoot, "/usr/") && !strings.HasPrefix(staticRoot, "/usr/lib/python3/") {
		// Already a place for a package's files: ship there.
		return staticPlan{Ship: staticRoot}, nil
	}
	p := staticPlan{Ship: ship, Bind: ship + ":" + staticRoot}
	data := b.proj.Tandem.DataDir
	switch {
	case staticRoot == data:
		return staticPlan{}, &BuildError{Msg: fmt.Sprintf("Django's STATIC_ROOT is the data directory %s itself; make it a subdirectory (e.g. %s/static)", data, data)}
	case strings.HasPrefix(staticRoot, data+"/"):
		if path.Dir(staticRoot) != data {
			return staticPlan{}, &BuildError{Msg: fmt.Sprintf("Django's STATIC_ROOT %s is nested deeper in the data directory than tandem supports; use %s/static", staticRoot, data)}
		}
		p.DataSubdir = staticRoot
	default:
		p.MountPoint = staticRoot
	}
	return p, nil
}

// safeMountRe are paths usable in BindReadOnlyPaths= and scripts as they are.
var safeMountRe = regexp.MustCompile(`^(/[A-Za-z0-9._+-]+)+$`)

// ownsPath reports whether p is inside what the package installs by
// itself: the venv, or a top-level package of the app in dist-packages.
func (b *build) ownsPath(p string) bool {
	if b.proj.Tandem.Mode != "system" {
		return strings.HasPrefix(p, b.finalVenv()+"/")
	}
	const dist = "/usr/lib/python3/dist-packages/"
	rest, ok := strings.CutPrefix(p, dist)
	if !ok {
		return false
	}
	top, _, nested := strings.Cut(rest, "/")
	if !nested || strings.HasSuffix(top, ".dist-info") {
		return false
	}
	st, err := os.Stat(filepath.Join(b.stagedSitePackages(), top))
	return err == nil && st.IsDir()
}

func parseDjangoResult(out []byte) djangoResult {
	var r djangoResult
	for _, l := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(l, "tandem-django:"); ok {
			_ = json.Unmarshal([]byte(s), &r)
		}
	}
	return r
}

// staticFailureHint names what to fix for a failed build-time collection.
func staticFailureHint(r djangoResult, module string) string {
	switch {
	case r.MissingEnv != "":
		return fmt.Sprintf("The settings (%s) read the environment variable %s at import: give it a build-time value in [tool.tandem] build-environment (e.g. build-environment = { %s = \"...\" }) or set it in [tool.tandem] environment", module, r.MissingEnv, r.MissingEnv)
	case r.Stage == "static_root":
		return fmt.Sprintf("Set STATIC_ROOT in %s (e.g. STATIC_ROOT = BASE_DIR / \"staticfiles\")", module)
	case r.Stage == "settings" && strings.Contains(r.Error, "SECRET_KEY"):
		return fmt.Sprintf("%s: the settings need SECRET_KEY: give it a build-time value in [tool.tandem] build-environment", r.Error)
	case r.Stage == "settings" && strings.HasPrefix(r.Error, "ModuleNotFoundError"):
		return fmt.Sprintf("%s: check DJANGO_SETTINGS_MODULE (%s) and that the module is in the project's wheel", r.Error, module)
	case r.Stage == "settings":
		return fmt.Sprintf("Loading the settings %s failed (%s): give what they need at import in [tool.tandem] build-environment", module, r.Error)
	case r.Stage == "collect":
		return fmt.Sprintf("collectstatic failed (%s): check STATICFILES_DIRS, STATICFILES_STORAGE (STORAGES) and the files they name", r.Error)
	}
	return "Check DJANGO_SETTINGS_MODULE and STATIC_ROOT"
}
