package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/debpkg"
)

func newPackageCmd(e *env) *cobra.Command {
	var (
		opt         debpkg.Options
		sitePkgs    bool
		jsonOut     bool
		self        bool
		selfBinary  string
		selfVersion string
	)
	cmd := &cobra.Command{
		Use:   "package [DIR]",
		Short: "Build a Debian package of a Python web project",
		Long: `Package builds a .deb from the Python project in DIR (default: the current
directory), using its PEP 621 pyproject.toml: [project] for the metadata and
dependencies, [tool.tandem] for the service command, configuration files,
data directory and extra Depends.

Modes ([tool.tandem].mode or --mode):
  venv    a virtualenv at /opt/venvs/NAME, built at that path against
          /usr/bin/python3; dependencies come from --wheels DIR (offline),
          from --index-url URL, or from the system's site-packages
          (--system-site-packages, e.g. Debian's python3-gunicorn)
  system  only the app's code; dependencies become Depends on Debian's
          python3-* packages

The version is taken from git: tag v1.2.3 gives 1.2.3, N commits later
1.2.3+gitN.gSHA; --version overrides it. SOURCE_DATE_EPOCH (default: the
commit time of HEAD) is stamped on every file: the same inputs give a
byte-identical .deb. The package and its .sha256 are written to --out.`,
		Example: `  tandem package examples/pysite --out dist/
  tandem package --wheels wheelhouse/ --version 1.4.0
  tandem package --json | jq -r .path`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt.Dir = "."
			if len(args) == 1 {
				opt.Dir = args[0]
			}
			if cmd.Flags().Changed("system-site-packages") {
				opt.SystemSitePackages = &sitePkgs
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
			if self {
				if selfBinary == "" {
					if selfBinary, err = os.Executable(); err != nil {
						return err
					}
				}
				res, err = debpkg.BuildSelf(cmd.Context(), debpkg.SelfOptions{
					Binary: selfBinary, Version: selfVersion, FallbackVersion: Version, Dir: opt.Dir,
					OutDir: opt.OutDir, Epoch: opt.Epoch,
					Compression: opt.Compression, Progress: opt.Progress,
				})
			} else {
				res, err = debpkg.BuildPython(cmd.Context(), opt)
			}
			if err != nil {
				var be *debpkg.BuildError
				if errors.As(err, &be) {
					return &UsageError{Err: err}
				}
				return err // a *prereq.Error maps to ExitNotReady as it is
			}
			if jsonOut {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			_, err = fmt.Fprintf(e.stdout, "built %s\n  package %s %s (%s), %d bytes, sha256 %s\n  in %s\n",
				res.Path, res.Package, res.Version, res.Architecture, res.Size, res.SHA256, time.Since(start).Round(time.Millisecond))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.Version, "version", "", "package version (default: derived from git describe)")
	f.StringVarP(&opt.OutDir, "out", "o", "dist", "directory for the .deb and its .sha256")
	f.StringVar(&opt.Wheels, "wheels", "", "install dependencies offline from this directory of wheels")
	f.StringVar(&opt.IndexURL, "index-url", "", "install dependencies from this package index (default: no index)")
	f.StringVar(&opt.Mode, "mode", "", "venv or system (default: [tool.tandem].mode, else venv)")
	f.BoolVar(&sitePkgs, "system-site-packages", false, "let the venv use Debian's python3-* packages (default: [tool.tandem])")
	f.StringVar(&opt.Python, "python", "/usr/bin/python3", "the target's Python interpreter")
	f.StringVar(&opt.Isolation, "isolation", "auto", "how the venv is built at its final path: auto, namespace or relocate")
	f.StringVar(&opt.Compression, "compression", "xz", "data compression: xz, gzip, zstd or none")
	f.BoolVar(&jsonOut, "json", false, "print the result as JSON (package, version, architecture, path, sha256, size, sha256_path)")
	f.BoolVar(&self, "self", false, "package tandem itself (used by make deb)")
	f.StringVar(&selfBinary, "binary", "", "with --self: the tandem binary to package (default: this one)")
	f.StringVar(&selfVersion, "self-version", "", "with --self: the version (default: from git in DIR, else this binary's)")
	for _, h := range []string{"self", "binary", "self-version"} {
		_ = f.MarkHidden(h)
	}
	return cmd
}
