package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/agent"
	"github.com/tandem-ha/tandem/internal/localapi"
)

func newFilesCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Replication of the [[files]] directories from the IP holder to the other app nodes",
		Long: `The directories declared with [[files]] in tandem.toml are replicated from
the node that holds the floating IP to every other app node, over the
cluster's mutual TLS with Debian's rsync. Only the holder of the current
epoch sends; a node that held an older epoch receives first, and files only
it had are moved to a quarantine directory beside the path (PATH.tandem-
quarantine/epoch-N), never deleted. A planned move (switchover, deploys,
'systemctl stop tandem' on the holder) flushes replication before the IP
moves. SQLite databases inside a path are reported and left out.`,
	}
	cmd.AddCommand(newFilesStatusCmd(e), newFilesSyncCmd(e), newFilesRestoreCmd(e), newFilesPipeCmd(e), newFilesConfineCmd())
	return cmd
}

func newFilesStatusCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show each path's lag per node, last full scan, errors, SQLite databases and quarantines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			st, err := e.client().FilesStatus(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, st)
			}
			printFilesStatus(e.stdout, &st, true)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	return cmd
}

func newFilesSyncCmd(e *env) *cobra.Command {
	var full bool
	cmd := &cobra.Command{
		Use:   "sync --full",
		Short: "Force a full reconcile of every path to every receiver (run it on the holder)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !full {
				return &UsageError{Err: errors.New("say --full: a full reconcile compares every file (changes are sent within a second anyway)")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			rep, err := e.client().FilesSync(ctx, localapi.FilesSyncRequest{Full: true})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, rep.Message)
			return err
		},
	}
	cmd.Flags().BoolVar(&full, "full", false, "compare every file, not just the changed ones")
	return cmd
}

func newFilesRestoreCmd(e *env) *cobra.Command {
	var from string
	var epoch uint64
	cmd := &cobra.Command{
		Use:   "restore --from NODE --epoch N PATH",
		Short: "On the holder: add what NODE's quarantine of epoch N beside PATH holds and the holder lacks",
		Long: `Run on the holder, as 'tandem status' prints it for each quarantine. The
holder fetches NODE's quarantine PATH.tandem-quarantine/epoch-N over the
cluster's mutual TLS and adds the files its copy lacks (it never replaces
or deletes one); they then replicate to every node. Discard the quarantine
on NODE afterwards (rm -r, as 'tandem status' prints it).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || epoch == 0 {
				return &UsageError{Err: errors.New("say which node keeps the quarantine and its epoch: --from NODE --epoch N (as 'tandem status' prints them)")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			rep, err := e.client().FilesRestore(ctx, localapi.FilesRestoreRequest{Path: args[0], From: from, Epoch: epoch})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, rep.Message)
			return err
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the node that keeps the quarantine")
	cmd.Flags().Uint64Var(&epoch, "epoch", 0, "the quarantine's epoch (PATH.tandem-quarantine/epoch-N)")
	return cmd
}

// newFilesPipeCmd is rsync's -e command on a receiver; the agent runs it.
func newFilesPipeCmd(e *env) *cobra.Command {
	var socket, token string
	cmd := &cobra.Command{
		Use:    "pipe --socket PATH --token T HOST COMMAND...",
		Short:  "Carry rsync's stream to the agent (run by the agent's rsync, not by hand)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return agent.FilesPipe(cmd.Context(), socket, token, args[1:])
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "/run/tandem/files.sock", "the agent's files socket")
	cmd.Flags().StringVar(&token, "token", "", "the pull's token")
	// rsync passes the remote command's options after HOST.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// newFilesConfineCmd runs the rsync that serves a directory to a peer,
// confined to reading that directory; the agent runs it.
func newFilesConfineCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "confine --read DIR -- COMMAND...",
		Short:  "Run COMMAND able to read only DIR (run by the agent, not by hand)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return agent.FilesConfine(dir, args)
		},
	}
	cmd.Flags().StringVar(&dir, "read", "", "the only directory COMMAND may read besides the system's programs")
	_ = cmd.MarkFlagRequired("read")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func printFilesStatus(w io.Writer, st *localapi.FilesStatus, detail bool) {
	role := "receives from " + orDash(st.Holder)
	if st.Sending {
		role = fmt.Sprintf("sends (holder, epoch %d)", st.Epoch)
	}
	fmt.Fprintf(w, "files:   this node %s\n", role)
	for _, p := range st.Paths {
		scan := "never"
		if !p.LastScan.IsZero() {
			scan = time.Since(p.LastScan).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "  %s  (last full scan %s)\n", p.Path, scan)
		if len(p.Nodes) > 0 {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			src := ""
			if st.FromHolder {
				src = " (as the holder reports it)"
			}
			fmt.Fprintf(tw, "    NODE\tLAG%s\tPENDING\tLAST SYNC\tERROR\n", src)
			for _, n := range p.Nodes {
				last := "-"
				if n.LastSync != nil {
					last = time.Since(*n.LastSync).Round(time.Millisecond).String() + " ago"
				}
				fmt.Fprintf(tw, "    %s\t%.3fs\t%s\t%s\t%s\n", n.Node, n.LagSeconds, byteCount(n.PendingBytes), last, orDash(n.LastError))
			}
			tw.Flush()
		}
		if !st.Sending && detail && p.Source != "" {
			last := ""
			if p.LastPull != nil {
				last = fmt.Sprintf(", last pull %s ago (%dms)", time.Since(*p.LastPull).Round(time.Millisecond), p.PullMs)
			}
			fmt.Fprintf(w, "    caught up with %s (epoch %d)%s\n", p.Source, p.SourceEpoch, last)
		}
		for _, e := range p.Errors {
			fmt.Fprintf(w, "    error: %s\n", e)
		}
		if len(p.SQLite) > 0 {
			fmt.Fprintf(w, "    WARNING: SQLite databases are not replicated (a copy taken mid-write is corrupt): %s\n", strings.Join(p.SQLite, ", "))
			fmt.Fprintf(w, "      keep them outside %s and back them up with 'sqlite3 DB .backup', or move to a database server\n", p.Path)
		}
		for _, q := range p.Quarantine {
			noun := "files"
			if q.Files == 1 {
				noun = "file"
			}
			fmt.Fprintf(w, "    QUARANTINE: %d %s only this node had (or had in another version) when it first caught up in epoch %d, in %s\n", q.Files, noun, q.Epoch, q.Dir)
			fmt.Fprintf(w, "      restore (on %s): %s\n", orDash(q.RestoreOn), q.Restore)
			fmt.Fprintf(w, "        (adds to the holder's copy, the one that replicates, what it lacks; never replaces a file)\n")
			fmt.Fprintf(w, "      discard (here, after): %s\n", q.Discard)
		}
	}
}

func byteCount(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
