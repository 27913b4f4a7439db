package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/pyproject"
)

// ciForge is one CI system tandem can write a pipeline for.
type ciForge struct {
	path string // relative to the project
	tmpl *template.Template
}

var ciForges = map[string]ciForge{
	"gitlab":  {".gitlab-ci.yml", template.Must(template.New("gitlab").Parse(gitlabCI))},
	"github":  {".github/workflows/tandem.yml", template.Must(template.New("github").Parse(actionsCI))},
	"gitea":   {".gitea/workflows/tandem.yml", template.Must(template.New("gitea").Parse(actionsCI))},
	"forgejo": {".forgejo/workflows/tandem.yml", template.Must(template.New("forgejo").Parse(actionsCI))},
}

// ciData fills the pipeline templates.
type ciData struct {
	Forge   string
	Name    string
	Apt     string // Debian packages the jobs install
	Test    string // shell command that runs the project's tests
	Image   string
	RunsOn  string
	Upload  string // upload-artifact action reference
	Tandem  string // how tandem itself is installed
	Package string // tandem package invocation
}

func newCICmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ci",
		Short: "Set up continuous integration for a Python project",
	}
	var force bool
	initCmd := &cobra.Command{
		Use:   "init gitlab|github|gitea|forgejo [DIR]",
		Short: "Write a CI pipeline that tests, packages and lints the project",
		Long: `Init writes an idiomatic pipeline for the project in DIR (default: the
current directory):

  gitlab   .gitlab-ci.yml
  github   .github/workflows/tandem.yml
  gitea    .gitea/workflows/tandem.yml
  forgejo  .forgejo/workflows/tandem.yml

The pipeline runs the project's tests on Debian 12, builds the .deb with
'tandem package', checks it with 'lintian --fail-on error,warning' and keeps
the .deb and its .sha256 as artifacts. A clearly marked notify step is left
for telling the cluster about new releases. An existing file is never
overwritten unless --force is given.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			forge, ok := ciForges[strings.ToLower(args[0])]
			if !ok {
				return &UsageError{Err: fmt.Errorf("unknown CI system %q: use gitlab, github, gitea or forgejo", args[0])}
			}
			dir := "."
			if len(args) == 2 {
				dir = args[1]
			}
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return &UsageError{Err: fmt.Errorf("%s is not a directory", dir)}
			}
			data := ciDataFor(strings.ToLower(args[0]), dir)
			var buf bytes.Buffer
			if err := forge.tmpl.Execute(&buf, data); err != nil {
				return fmt.Errorf("render pipeline: %w", err)
			}
			path := filepath.Join(dir, forge.path)
			if _, err := os.Stat(path); err == nil && !force {
				return &UsageError{Err: fmt.Errorf("%s already exists; pass --force to overwrite it", path)}
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			_, err := fmt.Fprintf(e.stdout, "wrote %s\n", path)
			return err
		},
	}
	initCmd.Flags().BoolVar(&force, "force", false, "overwrite an existing pipeline file")
	cmd.AddCommand(initCmd)
	return cmd
}

// ciDataFor inspects the project to choose the test command.
func ciDataFor(forge, dir string) ciData {
	d := ciData{
		Forge:   forge,
		Name:    filepath.Base(mustAbsDir(dir)),
		Apt:     "ca-certificates curl git lintian python3 python3-venv python3-pip python3-setuptools python3-wheel",
		Test:    "python3 -m unittest discover -s tests -v",
		Image:   "debian:bookworm",
		RunsOn:  "ubuntu-latest",
		Upload:  "actions/upload-artifact@v4",
		Package: "tandem package . --out dist",
	}
	if p, err := pyproject.Load(dir); err == nil {
		d.Name = p.Name
		for _, r := range p.Dependencies {
			if r.Normalized() == "gunicorn" && p.Tandem.SystemSitePackages {
				d.Apt += " python3-gunicorn"
			}
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
		d.Image, d.Upload = "node:20-bookworm", "actions/upload-artifact@v3"
	case "forgejo":
		d.Image, d.RunsOn, d.Upload = "node:20-bookworm", "docker", "https://code.forgejo.org/forgejo/upload-artifact@v4"
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

const gitlabCI = `# CI for {{.Name}}, written by "tandem ci init gitlab".
# test -> package (.deb + .sha256, checked by lintian) -> notify the cluster.
stages: [test, package, notify]

default:
  image: debian:bookworm

variables:
  # tandem derives the version from "git describe": it needs history and tags.
  GIT_DEPTH: "0"
  DEBIAN_FRONTEND: noninteractive
  # Where this cluster's tandem .deb is published (set it in CI/CD variables).
  TANDEM_DEB_URL: "https://github.com/tandem-ha/tandem/releases/latest/download/tandem_amd64.deb"

.debian: &debian
  before_script:
    - apt-get update -qq
    - apt-get install -y -qq --no-install-recommends {{.Apt}} >/dev/null

test:
  stage: test
  <<: *debian
  script:
    - {{.Test}}

package:
  stage: package
  <<: *debian
  script:
    - curl -fsSLo /tmp/tandem.deb "$TANDEM_DEB_URL" && apt-get install -y -qq /tmp/tandem.deb
    - {{.Package}}
    - lintian --fail-on error,warning dist/*.deb
  artifacts:
    name: "$CI_PROJECT_NAME-$CI_COMMIT_SHORT_SHA"
    paths:
      - dist/*.deb
      - dist/*.deb.sha256
    expire_in: 30 days

# ---------------------------------------------------------------------------
# NOTIFY THE CLUSTER: placeholder for tandem's delivery webhook.
# When delivery is configured, this job tells the cluster that a new .deb is
# ready; the cluster verifies its sha256 and rolls it out node by node.
# Set TANDEM_WEBHOOK_URL (and a masked TANDEM_WEBHOOK_SECRET) to enable it.
# ---------------------------------------------------------------------------
notify:
  stage: notify
  needs: [package]
  rules:
    - if: $TANDEM_WEBHOOK_URL && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
    - if: $TANDEM_WEBHOOK_URL && $CI_COMMIT_TAG
  script:
    - echo "TODO(tandem delivery): notify $TANDEM_WEBHOOK_URL of $(cat dist/*.deb.sha256)"
`

const actionsCI = `# CI for {{.Name}}, written by "tandem ci init {{.Forge}}".
# test -> package (.deb + .sha256, checked by lintian) -> notify the cluster.
name: tandem

on:
  push:
    branches: [main]
    tags: ["v*"]
  pull_request:

env:
  DEBIAN_FRONTEND: noninteractive
  # Where this cluster's tandem .deb is published (override as a variable).
  TANDEM_DEB_URL: ${{"{{"}} vars.TANDEM_DEB_URL || 'https://github.com/tandem-ha/tandem/releases/latest/download/tandem_amd64.deb' {{"}}"}}

jobs:
  test:
    runs-on: {{.RunsOn}}
    container: {{.Image}}
    steps:
      - uses: actions/checkout@v4
      - run: apt-get update -qq && apt-get install -y -qq --no-install-recommends {{.Apt}} >/dev/null
      - run: {{.Test}}

  package:
    needs: test
    runs-on: {{.RunsOn}}
    container: {{.Image}}
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0 # tandem derives the version from git describe: history and tags
      - run: apt-get update -qq && apt-get install -y -qq --no-install-recommends {{.Apt}} >/dev/null
      - run: curl -fsSLo /tmp/tandem.deb "$TANDEM_DEB_URL" && apt-get install -y -qq /tmp/tandem.deb
      - run: {{.Package}}
      - run: lintian --fail-on error,warning dist/*.deb
      - uses: {{.Upload}}
        with:
          name: deb
          path: |
            dist/*.deb
            dist/*.deb.sha256
          retention-days: 30
          if-no-files-found: error

  # -------------------------------------------------------------------------
  # NOTIFY THE CLUSTER: placeholder for tandem's delivery webhook.
  # When delivery is configured, this job tells the cluster that a new .deb
  # is ready; the cluster verifies its sha256 and rolls it out node by node.
  # Set the TANDEM_WEBHOOK_URL variable (and a TANDEM_WEBHOOK_SECRET secret).
  # -------------------------------------------------------------------------
  notify:
    needs: package
    if: ${{"{{"}} vars.TANDEM_WEBHOOK_URL != '' && github.event_name == 'push' {{"}}"}}
    runs-on: {{.RunsOn}}
    steps:
      - run: echo "TODO(tandem delivery) notify ${{"{{"}} vars.TANDEM_WEBHOOK_URL {{"}}"}} of ${{"{{"}} github.sha {{"}}"}}"
`
