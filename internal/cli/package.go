package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/debpkg"
)

// packageFlags are tandem package's flags.
type packageFlags struct {
	opt         debpkg.Options
	sitePkgs    bool // --system-site-packages, used only when given
	jsonOut     bool
	self        bool
	selfBinary  string
	selfVersion string
}

func newPackageCmd(e *env) *cobra.Command {
	f := &packageFlags{}
	cmd := &cobra.Command{
		Use:   "package [DIR]",
		Short: "Build a Debian package of a Python web project",
		Long: `Package builds a .deb from the Python project in DIR (default: the current
directory), using its PEP 621 pyproject.toml: [project] for the metadata and
dependencies, [tool.tandem] for the service command, configuration files,
data directory and extra Depends.

Modes ([tool.tandem].mode or --mode):
  venv    a virtualenv at /usr/lib/NAME ([tool.tandem] venv-dir =
          "/opt/venvs/NAME" for dh-virtualenv's place), built for
          /usr/bin/python3; dependencies come from --wheels DIR (offline),
          from --index-url URL, or from the system's site-packages
          (--system-site-packages, e.g. Debian's python3-gunicorn)
  system  only the app's code; dependencies become Depends on Debian's
          python3-* packages

A Django project's static files are collected at build time (collectstatic
with its settings module, the unit's environment, [tool.tandem]
build-environment and, when the project sets none, a throwaway SECRET_KEY
for the build only) and shipped read-only: at STATIC_ROOT when that is in
what the package installs, else in /usr/share/NAME/static, bound at
STATIC_ROOT in the unit.

The version is taken from git: tag v1.2.3 gives 1.2.3, N commits later
1.2.3+gitN.gSHA; --version overrides it. SOURCE_DATE_EPOCH (default: the
commit time of HEAD) is stamped on every file: the same inputs give a
byte-identical .deb. The package and its .sha256 are written to --out.`,
		Example: `  tandem package examples/pysite --out dist/
  tandem package --wheels wheelhouse/ --version 1.4.0
  tandem package --json | jq -r .path`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				f.opt.Dir = args[0]
			}
			if cmd.Flags().Changed("system-site-packages") {
				f.opt.SystemSitePackages = &f.sitePkgs
			}
			return runPackage(cmd.Context(), e, *f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.opt.Version, "version", "", "package version (default: derived from git describe)")
	fl.StringVarP(&f.opt.OutDir, "out", "o", "dist", "directory for the .deb and its .sha256")
	fl.StringVar(&f.opt.Wheels, "wheels", "", "install dependencies offline from this directory of wheels")
	fl.StringVar(&f.opt.IndexURL, "index-url", "", "install dependencies from this package index (default: no index)")
	fl.StringVar(&f.opt.Mode, "mode", "", "venv or system (default: [tool.tandem].mode, else venv)")
	fl.BoolVar(&f.sitePkgs, "system-site-packages", false, "let the venv use Debian's python3-* packages (default: [tool.tandem])")
	fl.StringVar(&f.opt.Python, "python", "/usr/bin/python3", "the target's Python interpreter")
	fl.StringVar(&f.opt.Isolation, "isolation", "auto", "how the venv is built at its final path: auto, namespace or relocate")
	fl.StringVar(&f.opt.Compression, "compression", "xz", "data compression: xz, gzip, zstd or none")
	fl.StringSliceVar(&f.opt.AllowDataDirs, "allow-data-dir", nil, "also allow [tool.tandem] data-dir below this directory (besides /var/lib and /srv); repeatable")
	fl.BoolVar(&f.jsonOut, "json", false, "print the result as JSON (package, version, architecture, path, sha256, size, sha256_path)")
	fl.BoolVar(&f.self, "self", false, "package tandem itself (used by make deb)")
	fl.StringVar(&f.selfBinary, "binary", "", "with --self: the tandem binary to package (default: this one)")
	fl.StringVar(&f.selfVersion, "self-version", "", "with --self: the version (default: from git in DIR, else this binary's)")
	for _, h := range []string{"self", "binary", "self-version"} {
		_ = fl.MarkHidden(h)
	}
	return cmd
}

// runPackage builds the package f asks for and reports it.
func runPackage(ctx context.Context, e *env, f packageFlags) error {
	opt := f.opt
	if opt.Dir == "" {
		opt.Dir = "."
	}
	if s, ok := os.LookupEnv("SOURCE_DATE_EPOCH"); ok && s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return &UsageError{Err: fmt.Errorf("SOURCE_DATE_EPOCH=%q: must be a number of seconds since 1970", s)}
		}
		opt.Epoch = time.Unix(n, 0).UTC()
	}
	opt.Logger = e.logger
	start := time.Now()
	opt.Progress = func(stage string, took time.Duration) {
		fmt.Fprintf(e.stderr, "==> %-28s %7s\n", stage, took.Round(time.Millisecond))
	}
	var res *debpkg.Result
	var err error
	if f.self {
		binary := f.selfBinary
		if binary == "" {
			if binary, err = os.Executable(); err != nil {
				return err
			}
		}
		res, err = debpkg.BuildSelf(ctx, debpkg.SelfOptions{
			Binary: binary, Version: f.selfVersion, FallbackVersion: Version, Dir: opt.Dir,
			OutDir: opt.OutDir, Epoch: opt.Epoch,
			Compression: opt.Compression, Progress: opt.Progress,
		})
	} else {
		res, err = debpkg.BuildPython(ctx, opt)
	}
	if err != nil {
		var be *debpkg.BuildError
		if errors.As(err, &be) {
			return &UsageError{Err: err}
		}
		return err // a *prereq.Error maps to ExitNotReady as it is
	}
	if f.jsonOut {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	_, err = fmt.Fprintf(e.stdout, "built %s\n  package %s %s (%s), %d bytes, sha256 %s\n  in %s\n",
		res.Path, res.Package, res.Version, res.Architecture, res.Size, res.SHA256, time.Since(start).Round(time.Millisecond))
	return err
}
