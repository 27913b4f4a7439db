package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/localapi"
)

// guardBanCmds are the subcommands of 'tandem guard' that act on the
// cluster's bans.
func guardBanCmds(e *env) []*cobra.Command {
	return []*cobra.Command{newGuardBansCmd(e), newGuardBanCmd(e), newGuardUnbanCmd(e)}
}

func newGuardBansCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bans [--json]",
		Short: "List the bans in force on the cluster, and whether this node's kernel holds each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			list, err := localapi.Call[localapi.BanList](ctx, e.client(), http.MethodGet, "/v1/guard/bans", nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, list)
			}
			printBans(e.stdout, list)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	return cmd
}

func printBans(w io.Writer, l localapi.BanList) {
	if l.KernelError != "" {
		fmt.Fprintf(w, "WARNING: cannot read this node's ban sets: %s\n", l.KernelError)
	}
	if len(l.Bans) == 0 {
		fmt.Fprintln(w, "no bans in force")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tJAIL\tBY\tSINCE\tLEFT\tOFFENCE\tHERE\tREASON")
	for _, b := range l.Bans {
		here := yesNo(b.Enforced)
		if b.Protected != "" {
			here = "protected"
		}
		// The log line is an attacker's text: never let it reach the
		// terminal raw.
		reason := b.Reason
		if reason == "" {
			reason = b.Line
		}
		reason = printable(reason)
		if r := []rune(reason); len(r) > 60 {
			reason = string(r[:57]) + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", b.Addr, printable(b.Jail), b.By, b.At.Local().Format(time.DateTime),
			b.Until.Sub(l.GeneratedAt).Round(time.Second), b.Offence, here, reason)
	}
	tw.Flush()
}

func newGuardBanCmd(e *env) *cobra.Command {
	var forD, reason string
	cmd := &cobra.Command{
		Use:   "ban IP [--for DURATION] [--reason TEXT]",
		Short: "Ban an address on every node (default for 24h)",
		Long: `ban commits a ban of one IP address that every node enforces in its kernel
at once. It replaces a ban in force on the same address. A cluster member's
address, or one in an ignored network, is refused. Run it on an app node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			b, err := localapi.Call[localapi.BanInfo](ctx, e.client(), http.MethodPost, "/v1/guard/ban",
				localapi.BanRequest{Addr: args[0], For: forD, Reason: reason})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s is banned on every node until %s\n", b.Addr, b.Until.Local().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&forD, "for", "", "how long, e.g. 30m, 48h (default 24h)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}

func newGuardUnbanCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "unban IP",
		Short: "Lift an address's ban on every node, and forget its offences",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			if _, err := localapi.Call[localapi.Empty](ctx, e.client(), http.MethodPost, "/v1/guard/unban", localapi.UnbanRequest{Addr: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s is no longer banned on any node\n", args[0])
			return nil
		},
	}
}
