package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/ciconfig"
)

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
the .deb and its .sha256 as artifacts, with a .sig when the CI secret
TANDEM_SIGNING_KEY holds a key from 'tandem release keygen'.

The cluster learns of a build either from the forge's own webhook (a
[[deploy.source]] of type gitlab, github, gitea or forgejo) or from the
pipeline's notify job, for a source of type generic: when the CI variable
TANDEM_WEBHOOK_URL is set it POSTs the .deb's URL (under TANDEM_DEB_BASE_URL)
and SHA-256, signed the Standard Webhooks way with TANDEM_WEBHOOK_SECRET.

An existing file is never overwritten unless --force is given.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, ok := ciconfig.Path(args[0])
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
			pipeline, err := ciconfig.Render(args[0], dir)
			if err != nil {
				return err
			}
			path := filepath.Join(dir, rel)
			if _, err := os.Stat(path); err == nil && !force {
				return &UsageError{Err: fmt.Errorf("%s already exists; pass --force to overwrite it", path)}
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(path, pipeline, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			_, err = fmt.Fprintf(e.stdout, "wrote %s\n", path)
			return err
		},
	}
	initCmd.Flags().BoolVar(&force, "force", false, "overwrite an existing pipeline file")
	cmd.AddCommand(initCmd)
	return cmd
}
