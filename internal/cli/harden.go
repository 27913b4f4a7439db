package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/agent"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/harden"
	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/firewall"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/prereq"
)

// Exit codes of 'tandem harden audit', for CI and cron.
const (
	ExitChecksFailed = 4 // at least one check failed
	ExitChecksError  = 5 // at least one check could not run (and none failed)
)

func newHardenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "harden",
		Short: "Audit and apply the host baseline: firewall, sshd, updates, integrity",
		Long: `tandem harden audits this host against the [harden] policy of tandem.toml
and applies it. Every check has a stable ID; 'harden.skip' skips one, with
its reason.

Changes that could lock you out (the firewall, sshd) must be confirmed:
'tandem harden apply --confirm 60s' applies them and, unless 'tandem harden
confirm' runs within 60 s (from a NEW session, proving you can still get
in), a systemd timer puts the previous files back and reloads them, even if
tandem was killed or upgraded meanwhile. Established sessions are kept.`,
	}
	cmd.AddCommand(newHardenAuditCmd(e), newHardenApplyCmd(e), newHardenConfirmCmd(e), newHardenRevertCmd(e), newHardenScanCmd(e))
	return cmd
}

func (e *env) needRoot(what string) error {
	if e.euid() != 0 {
		return &prereq.Error{What: what + " needs root: it reads the live firewall and sshd's effective settings", Fix: "run it with sudo"}
	}
	return nil
}

// hardenAreas loads the policy and builds the areas with the cluster's
// current members: from the agent, or, when it does not answer, from the
// firewall's members file (the last members the agent recorded).
func (e *env) hardenAreas(ctx context.Context, only []string) (*config.Config, []harden.Area, error) {
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return nil, nil, &UsageError{Err: err}
	}
	members, err := e.currentMembers(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	all := agent.HardenAreas(cfg, members, harden.ExecRunner{}, e.logger)
	if len(only) == 0 {
		return cfg, all, nil
	}
	var names []string
	for _, a := range all {
		names = append(names, a.Name())
	}
	var areas []harden.Area
	for _, name := range only {
		i := slices.Index(names, name)
		if i < 0 {
			return nil, nil, &UsageError{Err: fmt.Errorf("--area %q is not an area of this policy; use %s", name, strings.Join(names, ", "))}
		}
		areas = append(areas, all[i])
	}
	return cfg, areas, nil
}

func (e *env) currentMembers(ctx context.Context, cfg *config.Config) ([]netip.Addr, error) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := localapi.NewClient(cfg.Cluster.Socket).Status(sctx)
	if err == nil {
		var out []netip.Addr
		for _, m := range st.Members {
			if ap, err := netip.ParseAddrPort(m.Address); err == nil {
				out = append(out, ap.Addr().Unmap())
			}
		}
		return out, nil
	}
	file := agent.FirewallOptions(cfg, nil).MembersFile
	data, ferr := os.ReadFile(file)
	if ferr != nil {
		if agent.Initialized(cfg.Node.DataDir) && cfg.Harden.FirewallEnabled() {
			return nil, fmt.Errorf("the agent does not answer (%v) and %s is missing, so the cluster's members are unknown and the firewall would shut them out: start the agent first", err, file)
		}
		return nil, nil // not a cluster member yet: no cluster port to open
	}
	e.logger.Warn("the agent does not answer; using the members it last recorded", "file", file, "err", err)
	return firewall.ParseMembers(data), nil
}

type auditExit struct{ code int }

func (a *auditExit) Error() string   { return fmt.Sprintf("audit: exit %d", a.code) }
func (a *auditExit) ExitStatus() int { return a.code }

func newHardenAuditCmd(e *env) *cobra.Command {
	var asJSON bool
	var only []string
	cmd := &cobra.Command{
		Use:   "audit [--json]",
		Short: "Run every baseline check; exit 4 when one fails, 5 when one could not run",
		Long: `Runs every check of the enabled areas against the live host (the loaded
ruleset, sshd -T's effective values), and prints each with its ID, status,
current and wanted value and the fix. Skipped checks show the policy's reason.

Exit status: 0 when every check passes or is skipped, 4 when at least one
fails, 5 when none fails but at least one could not run, 1-3 as usual
(tandem error, usage, prerequisite). --json prints stable field names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.needRoot("tandem harden audit"); err != nil {
				return err
			}
			cfg, areas, err := e.hardenAreas(cmd.Context(), only)
			if err != nil {
				return err
			}
			r := harden.Audit(cmd.Context(), areas, cfg.Harden.Skip)
			if asJSON {
				if err := writeJSON(e.stdout, r); err != nil {
					return err
				}
			} else {
				printAudit(e.stdout, r)
			}
			switch {
			case r.Failed > 0:
				return &auditExit{ExitChecksFailed}
			case r.Errors > 0:
				return &auditExit{ExitChecksError}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	cmd.Flags().StringSliceVar(&only, "area", nil, "audit only this area (firewall, sshd, updates, integrity); repeatable")
	return cmd
}

func printAudit(w io.Writer, r harden.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tCURRENT\tWANTED")
	for _, f := range r.Findings {
		cur := f.Current
		if f.Status == check.Skipped {
			cur = "skipped: " + f.SkipReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", strings.ToUpper(string(f.Status)), f.ID, cur, f.Wanted)
	}
	tw.Flush()
	for _, f := range r.Findings {
		if f.Status == check.Fail || f.Status == check.Error {
			fmt.Fprintf(w, "\n%s: %s\n  fix: %s\n", f.ID, f.Title, f.Fix)
		}
	}
	for _, id := range r.UnknownSkips {
		fmt.Fprintf(w, "\nwarning: harden.skip names %q, which is no check: check its spelling\n", id)
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped, %d could not run\n", r.Passed, r.Failed, r.Skipped, r.Errors)
}

func newHardenApplyCmd(e *env) *cobra.Command {
	var dryRun, asJSON bool
	var confirm time.Duration
	var only []string
	cmd := &cobra.Command{
		Use:   "apply [--dry-run] [--confirm 60s]",
		Short: "Bring the host to the baseline; risky changes revert unless confirmed",
		Long: `Computes every area's plan and applies it: each file is backed up under
/var/lib/tandem/harden/pending/ID/, written atomically, validated (nft -c,
sshd -t; a failure puts everything back at once) and reloaded.

Firewall and sshd changes are risky: they revert by themselves after the
--confirm time unless 'tandem harden confirm' runs first. The revert is a
transient systemd timer running a shell script from the pending directory,
so it happens even if tandem is killed or upgraded. A second apply with
nothing to change says so and changes nothing. --dry-run prints the diff.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.needRoot("tandem harden apply"); err != nil {
				return err
			}
			_, areas, err := e.hardenAreas(cmd.Context(), only)
			if err != nil {
				return err
			}
			var plans []check.Plan
			for _, a := range areas {
				p, err := a.Plan(cmd.Context())
				if err != nil {
					return fmt.Errorf("plan %s: %w", a.Name(), err)
				}
				if p.Area == "" {
					p.Area = a.Name()
				}
				plans = append(plans, p)
			}
			host := &harden.Host{Root: "/", Run: harden.ExecRunner{}, Log: e.logger}
			res, err := host.Apply(cmd.Context(), plans, harden.ApplyOptions{DryRun: dryRun, Confirm: confirm})
			if asJSON {
				if jerr := writeJSON(e.stdout, res); jerr != nil {
					return jerr
				}
			} else {
				printApply(e.stdout, res)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan (a diff of every file) and change nothing")
	cmd.Flags().DurationVar(&confirm, "confirm", 60*time.Second, "how long risky changes wait for 'tandem harden confirm' before they revert")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	cmd.Flags().StringSliceVar(&only, "area", nil, "apply only this area (firewall, sshd, updates, integrity); repeatable")
	return cmd
}

func printApply(w io.Writer, res harden.ApplyResult) {
	if res.Nothing {
		fmt.Fprintln(w, "nothing to change: the host complies with the policy")
		return
	}
	for _, c := range res.Changes {
		fmt.Fprintf(w, "[%s] %s\n%s\n", c.Area, c.Path, c.Diff)
	}
	for _, c := range res.Commands {
		verb := "ran"
		if res.DryRun {
			verb = "would run"
		}
		fmt.Fprintf(w, "%s: %s\n", verb, strings.Join(c, " "))
	}
	switch {
	case res.DryRun:
		fmt.Fprintln(w, "dry run: nothing changed")
	case res.Pending != "":
		fmt.Fprintf(w, "\napplied. Check that you can still log in (open a NEW SSH session), then run\n  tandem harden confirm\nbefore %s (%s), or everything reverts by itself. 'tandem harden revert' undoes it now.\n",
			res.Deadline.Local().Format(time.TimeOnly), time.Until(res.Deadline).Round(time.Second))
	default:
		fmt.Fprintln(w, "applied")
	}
}

func newHardenConfirmCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "confirm",
		Short: "Keep the pending apply: cancel its revert timer and drop the backup",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.needRoot("tandem harden confirm"); err != nil {
				return err
			}
			host := &harden.Host{Root: "/", Run: harden.ExecRunner{}, Log: e.logger}
			m, err := host.Confirm(cmd.Context())
			if err != nil {
				if errors.Is(err, harden.ErrNothingPending) {
					return &UsageError{Err: err}
				}
				return err
			}
			fmt.Fprintf(e.stdout, "confirmed apply %s (%s)\n", m.ID, strings.Join(m.Areas, ", "))
			return nil
		},
	}
}

func newHardenRevertCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "revert",
		Short: "Undo the pending apply now: put the previous files back and reload",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := e.needRoot("tandem harden revert"); err != nil {
				return err
			}
			host := &harden.Host{Root: "/", Run: harden.ExecRunner{}, Log: e.logger}
			m, err := host.Revert(cmd.Context())
			if err != nil {
				if errors.Is(err, harden.ErrNothingPending) {
					return &UsageError{Err: err}
				}
				return err
			}
			fmt.Fprintf(e.stdout, "reverted apply %s (%s)\n", m.ID, strings.Join(m.Areas, ", "))
			return nil
		},
	}
}

func printHardenStatus(w io.Writer, h *localapi.HardenStatus) {
	when := h.CheckedAt.Format(time.RFC3339)
	if h.Failed+h.Errors == 0 {
		fmt.Fprintf(w, "harden:  %d checks pass, %d skipped (audited %s)\n", h.Passed, h.Skipped, when)
		return
	}
	fmt.Fprintf(w, "harden:  %d failing, %d could not run: %s (audited %s; see 'tandem harden audit')\n", h.Failed, h.Errors, strings.Join(h.Failing, ", "), when)
}
