package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/harden/integrity"
	"github.com/tandem-ha/tandem/internal/prereq"
)

// newHardenScanCmd is `tandem harden scan`, the integrity scan the daily
// tandem-integrity.timer runs. It belongs under `tandem harden`.
func newHardenScanCmd(e *env) *cobra.Command {
	var (
		asJSON bool
		opts   integrity.Options
	)
	cmd := &cobra.Command{
		Use:   "scan [--json]",
		Short: "Check installed packages' files against their checksums and save the result",
		Long: `Checks every file an installed Debian package shipped against the
package's checksums (/var/lib/dpkg/info/*.md5sums), as rkhunter's and
debsums' daily runs did, and saves the findings in
/var/lib/tandem/integrity.json, where 'tandem harden audit' (checks
integrity.packages and integrity.last-scan), 'tandem status' and /metrics
read them without scanning again.

Conffiles are yours to change: the edited ones are listed for
information and do not fail the scan. Files dpkg's path-exclude kept off
the disk are not checked; a diverted file is checked where it now lives. 'tandem harden apply' installs tandem-integrity.timer, which runs
this daily at idle CPU and IO priority; run by hand it uses normal
priority (prefix 'ionice -c3 nice' to lower it).

Exits 1 when a file changed or is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 && opts.Root == "" {
				return &prereq.Error{What: "the integrity scan must run as root: it reads every package's files and writes " + integrity.DefaultStatePath,
					Fix: "try: sudo tandem harden scan"}
			}
			opts.Log = e.logger
			r, err := integrity.New(opts).Scan(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.stdout, "%d files of %d packages checked in %s (%d MB read)\n",
					r.Files, r.Packages, r.Finished.Sub(r.Started).Round(time.Millisecond), r.Bytes>>20)
				for _, f := range r.Findings {
					fmt.Fprintf(e.stdout, "%-10s %s (%s)\n", f.Kind, f.Path, f.Package)
				}
				for _, f := range r.Conffiles {
					fmt.Fprintf(e.stdout, "conffile   %s %s (%s; yours to change, for information)\n", f.Path, f.Kind, f.Package)
				}
				for _, msg := range r.Errors {
					fmt.Fprintf(e.stdout, "unreadable checksums: %s\n", msg)
				}
			}
			if len(r.Findings) > 0 {
				return fmt.Errorf("%d files of %d packages do not match their checksums", len(r.Findings), len(r.ChangedPackages()))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON (stable field names)")
	cmd.Flags().StringVar(&opts.StatePath, "state-file", integrity.DefaultStatePath, "where the report is saved")
	cmd.Flags().IntVar(&opts.Workers, "workers", 2, "files hashed at once")
	// The tests scan a tree of their own.
	cmd.Flags().StringVar(&opts.Root, "root", "", "scan the Debian system under this directory instead of /")
	_ = cmd.Flags().MarkHidden("root")
	return cmd
}
