package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// client returns a local API client for the agent configured at --config.
// A missing or broken config falls back to the default socket, since the
// socket path is the only thing needed here.
func (e *env) client() *localapi.Client {
	sock := "/run/tandem/tandem.sock"
	if c, err := config.Load(e.configPath); err == nil {
		sock = c.Cluster.Socket
	}
	return localapi.NewClient(sock)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newStatusCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the cluster: members, raft, the IP holder, health, last failover",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			st, err := e.client().Status(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, st)
			}
			printStatus(e.stdout, st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	return cmd
}

func printStatus(w io.Writer, st localapi.Status) {
	fmt.Fprintf(w, "node:    %s (%s)   mode: %s\n", st.Node, st.Role, st.Mode)
	fmt.Fprintf(w, "raft:    %s, leader %s, term %d, last contact %dms\n",
		st.Raft.State, orDash(st.Raft.Leader), st.Raft.Term, st.Raft.LastContactMs)
	holder := orDash(st.Holder.Node)
	if st.Holder.Node != "" && !st.Holder.Active {
		holder += " (pending release by the previous holder)"
	}
	since := ""
	if !st.Holder.Since.IsZero() {
		since = fmt.Sprintf(" since %s (%s ago)", st.Holder.Since.Format(time.RFC3339), time.Since(st.Holder.Since).Round(time.Second))
	}
	fmt.Fprintf(w, "vip:     %s via %s, holder %s, epoch %d%s\n", orDash(st.VIP.Address), orDash(st.VIP.Provider), holder, st.Holder.Epoch, since)
	if lf := st.LastFailover; lf != nil {
		fmt.Fprintf(w, "last failover: %s -> %s at %s, %s, took %dms\n",
			orDash(lf.From), lf.To, lf.At.Format(time.RFC3339), lf.Reason, lf.DurationMs)
	}
	if st.HoldingBack != "" {
		fmt.Fprintf(w, "HOLDING BACK: this node is the holder but does not configure the IP: %s\n", st.HoldingBack)
	}
	if hm := st.HeldMove; hm != nil {
		until := "until a standby is healthy"
		if hm.Until != nil {
			until = fmt.Sprintf("until %s (%s)", hm.Until.Format(time.RFC3339), time.Until(*hm.Until).Round(time.Second))
		}
		fmt.Fprintf(w, "held move: %s -> %s, %s, %s: %s\n", hm.From, orDash(hm.To), hm.Kind, until, hm.Reason)
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", st.LastError)
	}
	if st.StateWarning != "" {
		fmt.Fprintf(w, "state:   %s\n", st.StateWarning)
	}
	if d := st.Delivery; d != nil {
		printDeliveryStatus(w, d)
	}
	if f := st.Files; f != nil {
		printFilesStatus(w, f, false)
	}
	if h := st.Harden; h != nil {
		printHardenStatus(w, h)
	}
	if g := st.Guard; g != nil {
		here := fmt.Sprintf("%d in this node's kernel", g.Enforced)
		if g.Enforced < 0 {
			here = "this node's kernel sets unreadable"
		}
		fmt.Fprintf(w, "guard:   %d bans in force (%d IPv4, %d IPv6), %s\n", g.Active, g.IPv4, g.IPv6, here)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tADDRESS\tVOTER\tREACHABLE\tHEALTHY\tHOLDS IP\tFAILURES")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Role, m.Address, m.Suffrage,
			yesNo(m.Reachable), healthWord(m), yesNo(m.Holding), failureWord(m))
	}
	tw.Flush()
	for _, m := range st.Members {
		for _, c := range m.Checks {
			// Peers' check output is not trusted: no terminal escapes.
			out := printable(strings.TrimSpace(c.Output))
			if len(out) > 120 {
				out = out[:120] + "…"
			}
			fmt.Fprintf(w, "  %s check %s (%s): %s %s\n", m.Name, printable(c.Name), printable(c.Type), passFail(c.Healthy), out)
		}
	}
}

func healthWord(m localapi.Member) string {
	switch {
	case m.Role == "witness":
		return "-"
	case !m.Reachable:
		return "unknown"
	case m.Healthy:
		return "yes"
	}
	return "NO"
}

// failureWord is a member's failure count, and its penalty if any.
func failureWord(m localapi.Member) string {
	switch {
	case m.Role == "witness":
		return "-"
	case m.Penalised && m.PenalisedUntil != nil:
		return fmt.Sprintf("%d, PENALISED until %s", m.Failures, m.PenalisedUntil.Format(time.TimeOnly))
	}
	return fmt.Sprint(m.Failures)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func passFail(b bool) string {
	if b {
		return "pass"
	}
	return "FAIL"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTokenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join tokens"}
	cmd.AddCommand(newTokenCreateCmd(e), newTokenListCmd(e), newTokenRevokeCmd(e))
	return cmd
}

func newTokenCreateCmd(e *env) *cobra.Command {
	var ttl time.Duration
	var uses int
	var role string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [--role app|witness] [--ttl D] [--uses N]",
		Short: "Create a join token for one role that pins this cluster's CA",
		Long: `create prints a join token. It admits one node of the given role (app by
default; a witness needs --role witness) once, within --ttl. Only app nodes
create tokens. Hand it to the joining node through a file or standard input
('tandem join --token-file'), not on a command line other users can read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return &UsageError{Err: fmt.Errorf("--ttl must be positive, e.g. 24h")}
			}
			if uses < 0 {
				return &UsageError{Err: fmt.Errorf("--uses must be 1 or more, or 0 for unlimited until it expires")}
			}
			if role != config.RoleApp && role != config.RoleWitness {
				return &UsageError{Err: fmt.Errorf("--role %q: want app or witness", role)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			t, err := e.client().CreateToken(ctx, localapi.TokenRequest{TTL: ttl, Uses: uses, Role: role})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, t)
			}
			fmt.Fprintln(e.stdout, t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", config.RoleApp, "the role of the node it admits: app or witness")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	cmd.Flags().IntVar(&uses, "uses", 1, "how many joins it allows (0: unlimited until it expires)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTokenListCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			l, err := e.client().ListTokens(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, l)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tUSES LEFT\tEXPIRES\tSTATE")
			for _, t := range l.Tokens {
				uses := fmt.Sprint(t.UsesLeft)
				if t.UsesLeft < 0 {
					uses = "unlimited"
				}
				st := "valid"
				switch {
				case t.Expired:
					st = "expired"
				case t.UsesLeft == 0:
					st = "used up"
				}
				role := t.Role
				if role == "" {
					role = "any"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, role, uses, t.Expires.Local().Format(time.DateTime), st)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTokenRevokeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token at once (its ID from 'tandem token list')",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := e.client().RevokeToken(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "revoked %s\n", args[0])
			return nil
		},
	}
}

func newMaintenanceCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:       "maintenance on|off",
		Short:     "Freeze (on) or resume (off) automatic placement of the floating IP",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			mode := map[string]string{"on": "maintenance", "off": "auto"}[args[0]]
			if mode == "" {
				return &UsageError{Err: fmt.Errorf("maintenance takes 'on' or 'off', not %q", args[0])}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := e.client().SetMode(ctx, mode); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "mode: %s\n", mode)
			return nil
		},
	}
}

func newSwitchoverCmd(e *env) *cobra.Command {
	var to string
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "switchover [--to NODE]",
		Short: "Move the floating IP in a planned way, once the target is healthy",
		Long: `switchover waits until the target node (default: the healthiest standby)
passes its health checks, then moves the floating IP to it. The old holder
releases the IP before the new one configures it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			r, err := e.client().Switchover(ctx, localapi.SwitchoverRequest{To: to, Timeout: timeout})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, r)
			}
			fmt.Fprintf(e.stdout, "moved %s -> %s (epoch %d) in %dms\n", r.From, r.To, r.Epoch, r.TookMs)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "target node (default: pick the best standby)")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait for the target to become healthy")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newLeaveCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Remove this node from the cluster (it releases the IP first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := e.client().Leave(ctx); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, "left the cluster; stop the agent with 'systemctl disable --now tandem'")
			return nil
		},
	}
}

func newRemoveCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove another node (use only for a node that is off or has left)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := e.client().Remove(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "removed %s\n", args[0])
			return nil
		},
	}
}

func newResetCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "reset NODE",
		Short: "Clear an app node's failure count, so it is no longer penalised",
		Long: `reset clears NODE's failure count: the failures counted so far (moves
away from it because it was unhealthy or lost) no longer penalise it, and it
is again an ordinary target for the floating IP. Use it once the cause of the
failures is fixed, rather than waiting for failover.failure_window to pass.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if err := e.client().ResetFailures(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "cleared the failure count of %s\n", args[0])
			return nil
		},
	}
}

func printDeliveryStatus(w io.Writer, d *localapi.DeliveryStatus) {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(d.Installed)) {
		for _, p := range slices.Sorted(maps.Keys(d.Installed[n])) {
			parts = append(parts, fmt.Sprintf("%s %s %s", n, p, d.Installed[n][p].Version))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "release: %s\n", strings.Join(parts, ", "))
	}
	if r := d.Rollout; r != nil {
		fmt.Fprintf(w, "rollout: %s %s %s (%s phase, driven by %s, %s): %s\n", r.Delivery, r.Package, r.Version, r.Phase, r.Driver,
			time.Since(r.Started).Round(time.Second), orDash(r.Step))
	} else if d.LastOutcome != "" {
		fmt.Fprintf(w, "last rollout: %s: %s\n", d.LastOutcome, d.LastReason)
	}
	if d.Queued > 0 {
		fmt.Fprintf(w, "queued:  %d deliveries ('tandem deploy plan')\n", d.Queued)
	}
	if d.Locked != "" {
		fmt.Fprintf(w, "deploys locked: %s\n", d.Locked)
	}
}

// printable replaces control characters (terminal escapes, carriage
// returns) in text that came from another node with '?', so a peer cannot
// drive the operator's terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' {
			return ' '
		}
		if unicode.IsControl(r) || r == utf8.RuneError || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// printableLines is printable for multi-line text: each line is cleaned
// and the lines after the first are indented by indent.
func printableLines(s, indent string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = printable(strings.TrimRight(l, "\r"))
	}
	return strings.Join(lines, "\n"+indent)
}
