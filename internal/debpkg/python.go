package debpkg

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/prereq"
	"github.com/tandem-ha/tandem/internal/pyproject"
)

// Options configure BuildPython.
type Options struct {
	Dir                string // project directory (holds pyproject.toml)
	OutDir             string // where the .deb goes
	Version            string // overrides the derived version
	Mode               string // "venv" or "system"; "" uses [tool.tandem].mode
	SystemSitePackages *bool  // nil uses [tool.tandem]
	Wheels             string // offline wheelhouse: pip --no-index --find-links
	IndexURL           string // package index; "" (and no Wheels) means no index at all
	Python             string // interpreter the package targets (default /usr/bin/python3)
	Isolation          string // "auto", "namespace" or "relocate" (see venv.go)
	Compression        string // default "xz"
	// Epoch is the build time stamped into the package (SOURCE_DATE_EPOCH).
	// Zero means: HEAD's commit time, or 2000-01-01 outside git.
	Epoch    time.Time
	Logger   *slog.Logger
	Progress func(stage string, took time.Duration) // called after each stage
	// DistMap is dh-python's mapping of PyPI names to Debian packages
	// (default DHPythonFallback), for system mode and system-site-packages.
	DistMap string
	// WorkDir is a scratch directory; "" creates (and removes) a temporary one.
	WorkDir string
	// AllowDataDirs are roots, besides /var/lib and /srv, that the
	// operator allows a data directory below (tandem package --allow-data-dir).
	AllowDataDirs []string
}

// BuildError is a problem with the project or the build inputs, reported
// with what to do about it. The CLI maps it to a usage error.
type BuildError struct{ Msg string }

func (e *BuildError) Error() string { return e.Msg }

var debNameRe = regexp.MustCompile(`^[a-z][a-z0-9-]{1,30}$`)

// PackageName turns a Python project name into the Debian package (and
// system user) name: lower case, '_' and '.' become '-'.
func PackageName(project string) (string, error) {
	n := pyproject.NormalizeName(project)
	if !debNameRe.MatchString(n) {
		return "", &BuildError{Msg: fmt.Sprintf("project name %q gives package name %q, which cannot also be a system user name: use 2-31 characters, starting with a letter", project, n)}
	}
	return n, nil
}

type build struct {
	opt      Options
	log      *slog.Logger
	proj     *pyproject.Project
	name     string
	version  string
	gitDesc  string
	mtime    time.Time
	work     string
	pyVer    string // "3.11"
	pyFull   string // "3.11.2"
	files    []File
	depends  []string
	arch     string
	exec     string   // ExecStart
	setup    []string // ExecStart= lines of the setup unit
	user     string
	iso      string // isolation actually used
	wheel    string // the project's own wheel
	maint    string
	synopsis string
	longDesc string
	scripts  Scripts
	extraEnv []string
	names    *DebianNames
	// sysDepends are Debian packages for dependencies a venv with
	// system-site-packages takes from the system.
	sysDepends []string
	// static is where a Django project's static files, collected at
	// build time, are installed (nil: none collected).
	static *staticPlan
}

// BuildPython packages the Python project in opt.Dir.
func BuildPython(ctx context.Context, opt Options) (*Result, error) {
	b := &build{opt: opt, log: opt.Logger}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if b.opt.Python == "" {
		b.opt.Python = "/usr/bin/python3"
	}
	if b.opt.Compression == "" {
		b.opt.Compression = "xz"
	}
	if b.opt.OutDir == "" {
		b.opt.OutDir = "dist"
	}
	if b.opt.Isolation == "" {
		b.opt.Isolation = "auto"
	}
	if b.opt.WorkDir == "" {
		w, err := os.MkdirTemp("", "tandem-package-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(w)
		b.opt.WorkDir = w
	}
	b.work = b.opt.WorkDir
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"read pyproject.toml", b.readProject},
		{"derive version", b.deriveVersion},
		{"build wheel", b.buildWheel},
		{"install", b.install},
		{"check service command", b.checkService},
		{"collect static files", b.collectStatic},
		{"add unit, scripts and docs", b.addMeta},
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.fn(ctx); err != nil {
			return nil, err
		}
		b.progress(s.name, time.Since(start))
	}
	start := time.Now()
	res, err := Write(b.spec(), b.opt.OutDir, b.work)
	if err != nil {
		return nil, fmt.Errorf("write package: %w", err)
	}
	b.progress("write .deb", time.Since(start))
	return res, nil
}

func (b *build) progress(stage string, d time.Duration) {
	if b.opt.Progress != nil {
		b.opt.Progress(stage, d)
	}
}

func (b *build) readProject(ctx context.Context) error {
	p, err := pyproject.Load(b.opt.Dir)
	if err != nil {
		return &BuildError{Msg: err.Error()}
	}
	b.proj = p
	if b.opt.Mode != "" {
		if b.opt.Mode != "venv" && b.opt.Mode != "system" {
			return &BuildError{Msg: fmt.Sprintf("mode %q: use venv or system", b.opt.Mode)}
		}
		p.Tandem.Mode = b.opt.Mode
	}
	if b.opt.SystemSitePackages != nil {
		p.Tandem.SystemSitePackages = *b.opt.SystemSitePackages
	}
	if p.Tandem.Service == "" {
		return &BuildError{Msg: "pyproject.toml: tool.tandem.service: missing; set the command the service runs, e.g. service = \"gunicorn mysite.wsgi:application --bind 127.0.0.1:8000\""}
	}
	if b.name, err = PackageName(p.Name); err != nil {
		return err
	}
	if p.Tandem.DataDir == "" {
		p.Tandem.DataDir = "/var/lib/" + b.name
	}
	if !p.HasBuildBackend {
		b.log.Info("pyproject.toml has no [build-system]; pip falls back to setuptools")
	}
	out, err := exec.CommandContext(ctx, b.opt.Python, "-c", "import sys; print('%d.%d %d.%d.%d' % (sys.version_info[:2] + sys.version_info[:3]))").Output()
	if err != nil {
		return &prereq.Error{What: fmt.Sprintf("cannot run %s: %v", b.opt.Python, err), Fix: "install Debian's python3 (apt-get install python3 python3-venv python3-pip)"}
	}
	b.pyVer, b.pyFull, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	return nil
}

func (b *build) deriveVersion(ctx context.Context) error {
	gi, gitErr := ReadGit(ctx, b.opt.Dir)
	switch {
	case b.opt.Version != "":
		b.version = strings.TrimPrefix(b.opt.Version, "v")
	case gitErr == nil:
		if st, err := git(ctx, b.opt.Dir, "status", "--porcelain", "--untracked-files=no", "--", "."); err == nil && st != "" {
			b.log.Warn("the project has uncommitted changes; the derived version does not show them (commit, or pass --version)", "version_from", "git describe")
		}
		if gi.Tag == "" && b.proj.Version == "" {
			b.log.Info("no v* tag and no [project].version; using 0.0.0", "commits", gi.Count)
		}
		v, err := gi.Version(b.proj.Version)
		if err != nil {
			return &BuildError{Msg: err.Error()}
		}
		b.version = v
		b.gitDesc = gi.Describe
		if b.gitDesc == "" {
			b.gitDesc = "g" + gi.SHA
		}
	case b.proj.Version != "":
		v, err := FromPEP440(b.proj.Version)
		if err != nil {
			return &BuildError{Msg: "pyproject.toml: project.version: " + err.Error()}
		}
		b.version = v
	default:
		return &BuildError{Msg: fmt.Sprintf("no version: %s is not in git (%v) and pyproject.toml has no [project].version; set version = \"1.0.0\" in [project], tag a commit v1.0.0, or pass --version", b.opt.Dir, gitErr)}
	}
	if err := ValidateVersion(b.version); err != nil {
		return &BuildError{Msg: err.Error()}
	}
	b.mtime = b.opt.Epoch
	if b.mtime.IsZero() {
		if gitErr == nil {
			b.mtime = gi.CommitTime
		} else {
			b.mtime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		}
	}
	b.mtime = b.mtime.UTC()
	return nil
}

// buildEnv is the environment of every python and pip call: no bytecode,
// fixed hash seed, locale and time, no user site, and a private HOME so
// that nothing of the caller's configuration leaks in.
func (b *build) buildEnv() []string {
	home := filepath.Join(b.work, "home")
	_ = os.MkdirAll(home, 0o755)
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LC_ALL=C.UTF-8",
		"TZ=UTC",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONHASHSEED=0",
		"PYTHONNOUSERSITE=1",
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", b.mtime.Unix()),
		"PIP_DISABLE_PIP_VERSION_CHECK=1",
		"PIP_NO_INPUT=1",
		"PIP_NO_WARN_SCRIPT_LOCATION=1",
		"PIP_ROOT_USER_ACTION=ignore",
	}
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_CERT", "SSL_CERT_FILE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// run executes argv with the build environment and returns combined output.
func (b *build) run(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(b.buildEnv(), b.extraEnv...)
	cmd.Dir = b.work
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	b.log.Debug("ran", "argv", strings.Join(argv, " "), "err", err)
	return out.Bytes(), err
}

// skipSource lists what is not copied from the project into the build.
func skipSource(rel string, d fs.DirEntry) bool {
	base := d.Name()
	if d.IsDir() {
		switch base {
		case ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".tox", ".nox", ".pytest_cache", ".mypy_cache", ".ruff_cache", "node_modules":
			return true
		}
		if strings.HasSuffix(base, ".egg-info") {
			return true
		}
		if !strings.Contains(rel, string(filepath.Separator)) && (base == "build" || base == "dist") {
			return true
		}
	}
	return strings.HasSuffix(base, ".pyc")
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel != "." && skipSource(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm()|0o200)
		}
		return nil
	})
}

// buildWheel builds the project's own wheel from a clean copy of its
// source, so that the build leaves nothing behind in the project and no
// project path ends up in the package.
func (b *build) buildWheel(ctx context.Context) error {
	src := filepath.Join(b.work, "src", b.name)
	if err := copyTree(b.opt.Dir, src); err != nil {
		return fmt.Errorf("copy project: %w", err)
	}
	wheels := filepath.Join(b.work, "wheel")
	if err := os.MkdirAll(wheels, 0o755); err != nil {
		return err
	}
	backend := b.proj.BuildBackend
	if backend == "" {
		backend = "setuptools.build_meta:__legacy__"
	}
	for _, p := range b.proj.BackendPath {
		if filepath.IsAbs(p) || strings.HasPrefix(filepath.Clean(p), "..") {
			return &BuildError{Msg: fmt.Sprintf("pyproject.toml: build-system.backend-path: %q must be inside the project", p)}
		}
	}
	argv := append([]string{b.opt.Python, "-c", pep517Script, src, wheels, backend}, b.proj.BackendPath...)
	out, err := b.run(ctx, argv...)
	if err != nil {
		s := string(out)
		mod, _, _ := strings.Cut(backend, ":")
		if strings.Contains(s, "No module named '"+strings.Split(mod, ".")[0]+"'") || strings.Contains(s, "No module named 'wheel'") || strings.Contains(s, "invalid command 'bdist_wheel'") {
			hint := "install it on this machine"
			if strings.HasPrefix(mod, "setuptools") {
				hint = "apt-get install python3-setuptools python3-wheel"
			}
			return &prereq.Error{What: fmt.Sprintf("building the project's wheel needs its build backend %s for %s", backend, b.opt.Python), Fix: hint, Output: tail(s, 10)}
		}
		return &BuildError{Msg: fmt.Sprintf("building the project's wheel with %s failed:\n%s", backend, tail(s, 20))}
	}
	ms, _ := filepath.Glob(filepath.Join(wheels, "*.whl"))
	if len(ms) != 1 {
		return fmt.Errorf("expected one wheel in %s, found %d", wheels, len(ms))
	}
	b.wheel = ms[0]
	return nil
}

// pep517Script calls the project's build backend directly (PEP 517
// build_wheel), without pip: the backend must be installed, as with pip
// wheel --no-build-isolation, and this saves pip's start-up.
const pep517Script = `
import importlib, os, sys
src, out, backend, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
os.chdir(src)
for p in reversed(paths):
    sys.path.insert(0, os.path.join(src, p))
sys.path.insert(len(paths), src) if paths else None
mod, _, obj = backend.partition(":")
b = importlib.import_module(mod)
for a in filter(None, obj.split(".")):
    b = getattr(b, a)
name = b.build_wheel(out)
print("wheel:" + name)
`

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (b *build) install(ctx context.Context) error {
	if b.proj.Tandem.Mode == "system" {
		return b.installSystem(ctx)
	}
	return b.installVenv(ctx)
}

// installSystem unpacks the app's wheel into Debian's dist-packages; the
// dependencies become Depends on Debian's python3-* packages.
func (b *build) installSystem(ctx context.Context) error {
	dst := filepath.Join(b.work, "stage", "usr", "lib", "python3", "dist-packages")
	if err := unpackWheel(b.wheel, dst, b.log); err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(b.wheel), err)
	}
	if err := cleanBytecode(dst); err != nil {
		return err
	}
	fs, err := treeFiles(dst, "/usr/lib/python3/dist-packages")
	if err != nil {
		return err
	}
	b.files = append(b.files, fs...)
	names, err := b.debianNames(ctx)
	if err != nil {
		return err
	}
	deps, notes, err := SystemDepends(b.proj.Dependencies, names, b.pyVer)
	for _, n := range notes {
		b.log.Info("dependency", "note", n)
	}
	if err != nil {
		return &BuildError{Msg: "pyproject.toml: project.dependencies: " + err.Error()}
	}
	b.depends = append(b.depends, pythonDepends("system", b.pyVer, b.proj.RequiresPython)...)
	b.depends = append(b.depends, deps...)
	b.arch = "all"
	if hasELF(dst) {
		b.arch = debianArch()
	}
	return nil
}

// unpackWheel installs a wheel's files (purelib/platlib) under dst.
// Scripts and data files of the wheel are not installed: the unit runs
// modules with python -m, never a script.
func unpackWheel(whl, dst string, log *slog.Logger) error {
	zr, err := zip.OpenReader(whl)
	if err != nil {
		return err
	}
	defer zr.Close()
	for _, f := range zr.File {
		name := f.Name
		if strings.HasSuffix(name, "/") {
			continue
		}
		parts := strings.SplitN(name, "/", 3)
		if strings.HasSuffix(parts[0], ".data") {
			if len(parts) == 3 && (parts[1] == "purelib" || parts[1] == "platlib") {
				name = parts[2]
			} else {
				log.Info("wheel file not installed in system mode", "file", name)
				continue
			}
		}
		clean := path.Clean(name)
		if path.IsAbs(clean) || strings.HasPrefix(clean, "../") || clean == ".." {
			return fmt.Errorf("unsafe path %q in wheel", f.Name)
		}
		target := filepath.Join(dst, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		rc, err := f.Open()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if f.Mode()&0o111 != 0 {
			mode = 0o755
		}
		if err := os.WriteFile(target, data, mode); err != nil {
			return err
		}
	}
	return nil
}

// pipFailure turns pip's output into an error that says what to do.
func (b *build) pipFailure(ctx context.Context, out []byte) error {
	s := string(out)
	if m := regexp.MustCompile(`No matching distribution found for ([^\s]+)`).FindStringSubmatch(s); m != nil {
		dep := m[1]
		var how []string
		if b.opt.Wheels != "" {
			how = append(how, fmt.Sprintf("add a wheel for it (and for its own dependencies) to the --wheels directory %s, e.g. run \"pip wheel -w %s '%s'\" where an index is reachable", b.opt.Wheels, b.opt.Wheels, dep))
		} else {
			how = append(how, fmt.Sprintf("pass --wheels DIR with its wheel (e.g. \"pip wheel -w DIR '%s'\" where an index is reachable)", dep))
		}
		if b.opt.IndexURL == "" {
			how = append(how, "pass --index-url URL to use a package index")
		}
		pkgs := []string{b.hintNames(ctx).Guess(strings.FieldsFunc(dep, func(r rune) bool { return strings.ContainsRune("<>=!~;[ ", r) })[0])}
		if !b.proj.Tandem.SystemSitePackages {
			how = append(how, fmt.Sprintf("or use Debian's package: apt-get install %s and set system-site-packages = true in [tool.tandem] (or pass --system-site-packages)", pkgs[0]))
		} else {
			how = append(how, fmt.Sprintf("or install Debian's %s on the build machine (system-site-packages is on)", pkgs[0]))
		}
		return &BuildError{Msg: fmt.Sprintf("dependency %s cannot be resolved offline: %s", dep, strings.Join(how, "; "))}
	}
	return &BuildError{Msg: "pip install failed:\n" + tail(s, 25)}
}

// cleanBytecode removes __pycache__ directories and stray .pyc files.
func cleanBytecode(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "__pycache__" {
			dirs = append(dirs, p)
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".pyc") || strings.HasSuffix(p, ".pyo")) {
			return os.Remove(p)
		}
		return nil
	})
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	return err
}

// hasELF reports whether any regular file under root is an ELF object, in
// which case the package is architecture-specific.
func hasELF(root string) bool {
	found := false
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found || !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		var magic [4]byte
		if n, _ := io.ReadFull(f, magic[:]); n == 4 && string(magic[:]) == "\x7fELF" {
			found = true
		}
		return nil
	})
	return found
}

func debianArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	case "mipsle":
		return "mipsel"
	case "mips64le":
		return "mips64el"
	}
	return runtime.GOARCH
}

// debianNames loads dh-python's mapping once.
func (b *build) debianNames(ctx context.Context) (DebianNames, error) {
	if b.names != nil {
		return *b.names, nil
	}
	path := b.opt.DistMap
	if path == "" {
		path = DHPythonFallback
	}
	dist, err := LoadDistMap(path)
	if err != nil {
		return DebianNames{}, &prereq.Error{What: fmt.Sprintf("mapping the dependencies to Debian packages needs dh-python's mapping %s: %v", path, err), Fix: "apt-get install dh-python"}
	}
	b.names = &DebianNames{Overrides: b.proj.Tandem.DebianNames, Dist: dist, Epoch: func(pkg string) string {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", pkg).Output()
		if e, _, ok := strings.Cut(string(out), ":"); err == nil && ok && e != "" {
			return e + ":"
		}
		return knownEpochs[pkg]
	}}
	return *b.names, nil
}

// hintNames is debianNames for hints in messages: without dh-python,
// Debian's usual names.
func (b *build) hintNames(ctx context.Context) DebianNames {
	n, err := b.debianNames(ctx)
	if err != nil {
		return DebianNames{Overrides: b.proj.Tandem.DebianNames}
	}
	return n
}
