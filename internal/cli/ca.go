package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/localapi"
)

func newCACmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show the cluster CA, or rotate it",
		Long: `The cluster CA signs every node's certificate. A certificate proves only
that the CA signed it: each member's key is pinned in the cluster state and
checked on every connection, so the CA key alone lets no one in. But joining
nodes trust the CA (their token pins it), so a leaked CA key lets its holder
pose as the cluster to a node that joins: rotate the CA ('tandem ca rotate')
when an app node or the CA key may have leaked, after removing that node.`,
	}
	cmd.AddCommand(newCAStatusCmd(e), newCARotateCmd(e))
	return cmd
}

func (e *env) caStatus(ctx context.Context) (localapi.CAStatus, error) {
	return localapi.Call[localapi.CAStatus](ctx, e.client(), http.MethodGet, "/v1/ca", nil)
}

func newCAStatusCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the trusted CAs, a rotation in progress, and which member is on which CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			st, err := e.caStatus(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, st)
			}
			printCAStatus(e.stdout, st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	return cmd
}

func newCARotateCmd(e *env) *cobra.Command {
	var timeout time.Duration
	var noWait, asJSON, abort bool
	cmd := &cobra.Command{
		Use:   "rotate [--timeout D] [--no-wait] | rotate --abort",
		Short: "Replace the cluster CA in phases, without downtime",
		Long: `rotate replaces the cluster CA. Run it on an app node (a witness is refused).

It makes a new CA on this node and commits it next to the old one. Then:
  1. trust:   every node trusts both CAs (no restart), and the app nodes fetch
              the new CA's key;
  2. reissue: every node replaces its certificate with one from the new CA,
              for the same pinned key;
  3. done:    once every member presents a certificate from the new CA, the
              old CA is dropped: a certificate it signed is refused from then on.

The rotation is recorded in the cluster state and goes on by itself: if this
command is interrupted, or a node crashes, it continues once the node is back.
Running 'tandem ca rotate' again waits for the rotation in progress rather than
starting another. A member that is down holds the rotation in its phase until
it is started again or removed ('tandem remove'); 'tandem ca status' names it.

Join tokens pin the CA: starting a rotation revokes every outstanding token,
and no token is created and no node joins until it has finished. Tokens created
afterwards pin the new CA.

--abort calls off a rotation still in its trust phase (no node uses the new CA
yet), for when the new CA's key is lost: the node that started it is gone
before another app node fetched the key. Later phases can only go on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return &UsageError{Err: fmt.Errorf("--timeout must be positive, e.g. 10m")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if abort {
				r, err := localapi.Call[localapi.RotationStatus](ctx, e.client(), http.MethodPost, "/v1/ca/abort", localapi.Empty{})
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(e.stdout, r)
				}
				fmt.Fprintf(e.stdout, "CA rotation to %s aborted; the cluster trusts %s alone again\n", r.To, r.From)
				return nil
			}
			r, err := localapi.Call[localapi.RotateReply](ctx, e.client(), http.MethodPost, "/v1/ca/rotate", localapi.Empty{})
			if err != nil {
				return err
			}
			if !asJSON {
				verb := "started"
				if r.Resumed {
					verb = "in progress (started by " + r.Rotation.By + ")"
				}
				fmt.Fprintf(e.stdout, "CA rotation %s: %s -> %s\n", verb, r.Rotation.From, r.Rotation.To)
			}
			if noWait {
				if asJSON {
					return writeJSON(e.stdout, r)
				}
				fmt.Fprintln(e.stdout, "it goes on by itself; follow it with 'tandem ca status'")
				return nil
			}
			st, err := e.waitRotation(ctx, r.Rotation.To, asJSON)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, st)
			}
			fmt.Fprintf(e.stdout, "done: every member is on CA %s; the old CA %s is no longer trusted\n", r.Rotation.To, r.Rotation.From)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the rotation to finish")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the rotation has started")
	cmd.Flags().BoolVar(&abort, "abort", false, "call off the rotation in progress, while it is in its trust phase")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the final CA status as JSON")
	return cmd
}

// waitRotation polls the CA status until the rotation to CA to has
// finished, printing each phase and what it waits for.
func (e *env) waitRotation(ctx context.Context, to string, quiet bool) (localapi.CAStatus, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var last localapi.CAStatus
	var said string
	var seen bool
	for {
		st, err := e.caStatus(ctx)
		if err == nil {
			last = st
			if lr := st.LastRotation; st.Rotation == nil && lr != nil && lr.To == to {
				if lr.Phase == "aborted" {
					return st, fmt.Errorf("ca rotate: the rotation to %s was aborted; the cluster keeps CA %s", to, lr.From)
				}
				return st, nil
			}
			if r := st.Rotation; r != nil && r.To == to && !quiet {
				if line := phaseLine(*r); line != said {
					fmt.Fprintln(e.stdout, line)
					said = line
				}
			}
			if r := st.Rotation; r != nil && r.To == to {
				seen = true
			}
			// Until this node has applied the start (it may lag the leader
			// by a moment), an absent rotation is not yet a lost one.
			if seen && st.Rotation == nil && (st.LastRotation == nil || st.LastRotation.To != to) {
				return st, fmt.Errorf("ca rotate: the rotation to %s is no longer in progress, yet did not finish; see 'tandem ca status'", to)
			}
		}
		select {
		case <-ctx.Done():
			msg := "the rotation did not finish in time"
			if r := last.Rotation; r != nil {
				msg = fmt.Sprintf("the rotation is still in phase %s, waiting for %s", r.Phase, strings.Join(r.Waiting, ", "))
			}
			return last, fmt.Errorf("ca rotate: %s. It goes on by itself: start the members it waits for, or remove those that are gone ('tandem remove NODE'), and follow it with 'tandem ca status'", msg)
		case <-t.C:
		}
	}
}

func phaseLine(r localapi.RotationStatus) string {
	what := map[string]string{"trust": "every node to trust the new CA", "reissue": "every node to get a certificate from the new CA"}[r.Phase]
	if what == "" {
		what = "phase " + r.Phase
	}
	line := "phase " + r.Phase + ": waiting for " + what
	if len(r.Waiting) > 0 {
		line += " (" + strings.Join(r.Waiting, ", ") + ")"
	}
	return line
}

func printCAStatus(w io.Writer, st localapi.CAStatus) {
	for _, c := range st.CAs {
		fmt.Fprintf(w, "CA %-7s %s  %s, valid until %s\n", c.Status+":", c.Hash, c.Subject, c.NotAfter.Format(time.DateOnly))
	}
	switch r := st.Rotation; {
	case r != nil:
		fmt.Fprintf(w, "rotation: phase %s, started by %s at %s", r.Phase, r.By, r.Started.Format(time.RFC3339))
		if len(r.Waiting) > 0 {
			fmt.Fprintf(w, ", waiting for %s", strings.Join(r.Waiting, ", "))
		}
		fmt.Fprintln(w)
	case st.LastRotation != nil && st.LastRotation.Finished != nil:
		fmt.Fprintf(w, "rotation: none in progress; the last finished at %s\n", st.LastRotation.Finished.Format(time.RFC3339))
	default:
		fmt.Fprintln(w, "rotation: none in progress")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if st.Rotation != nil {
		fmt.Fprintln(tw, "MEMBER\tROLE\tCERTIFICATE FROM\tTRUSTS NEW\tHOLDS NEW KEY")
	} else {
		fmt.Fprintln(tw, "MEMBER\tROLE\tCERTIFICATE FROM")
	}
	for _, m := range st.Members {
		from := m.On + " CA"
		if m.On == "unknown" {
			from = "unknown (not reported; an older tandem?)"
		}
		if st.Rotation == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, m.Role, from)
			continue
		}
		key := yesNo(m.HoldsNewKey)
		if m.Role != "app" {
			key = "-"
		}
		mark := ""
		if slices.Contains(st.Rotation.Waiting, m.Name) {
			mark = "  <- waiting"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s%s\n", m.Name, m.Role, from, yesNo(m.TrustsNew), key, mark)
	}
	tw.Flush()
}
