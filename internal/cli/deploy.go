package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/localapi"
	"github.com/tandem-ha/tandem/internal/webhook"
)

func newDeployCmd(e *env) *cobra.Command {
	var force, asJSON, follow bool
	var sha string
	cmd := &cobra.Command{
		Use:   "deploy FILE.deb|URL [--force]",
		Short: "Roll a release out to every node, health-gated, behind the floating IP",
		Long: `deploy queues a release for a rolling install: the nodes that do not hold
the floating IP are upgraded first and health-gated, then the IP moves to an
upgraded node (a planned move that drains), then the former holder is
upgraded. Any failure rolls every node back by itself.

FILE.deb is copied to the cluster from this node (a FILE.deb.sig beside it is
sent too: with deploy.signing_keys set, a release needs one). A URL needs
--sha256. Webhooks and the poll fallback queue deliveries the same way; the
newest queued one wins. --force deploys an older version, a release that
failed before, or on a degraded, locked or maintenance cluster.

Subcommands show and steer rollouts: status, plan, lock, unlock.`,
		Example: `  tandem deploy dist/mysite_1.4.0-1_amd64.deb --follow
  tandem deploy https://ci.example/mysite_1.4.0-1_amd64.deb --sha256 9f86d0...
  tandem deploy status --follow`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			req := localapi.DeployRequest{Force: force}
			if u := args[0]; strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
				req.URL, req.SHA256 = u, sha
			} else {
				cfg, err := e.loadConfig()
				if err != nil {
					return err
				}
				path, sig, err := stageRelease(cfg, u)
				if err != nil {
					return err
				}
				defer os.Remove(path)
				req.File, req.Signature = path, sig
			}
			actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			r, err := localapi.Call[localapi.DeployReply](actx, e.client(), http.MethodPost, "/v1/deploy", req)
			if err != nil {
				return err
			}
			if asJSON && !follow {
				return writeJSON(e.stdout, r)
			}
			fmt.Fprintf(e.stdout, "queued %s %s as delivery %s\n", r.Package, r.Version, r.Delivery)
			if follow {
				return followRollout(ctx, e, r.Delivery)
			}
			fmt.Fprintf(e.stdout, "follow it with: tandem deploy status %s --follow\n", r.Delivery)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "deploy even an older or previously failed release, or on a degraded, locked or maintenance cluster")
	cmd.Flags().StringVar(&sha, "sha256", "", "the SHA-256 of the .deb at URL")
	cmd.Flags().BoolVar(&follow, "follow", false, "print the rollout's steps until it ends")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(newDeployStatusCmd(e), newDeployPlanCmd(e), newDeployLockCmd(e, true), newDeployLockCmd(e, false))
	return cmd
}

// stageRelease copies a .deb where the sandboxed agent can read it: the
// release store's directory under the data directory.
func stageRelease(cfg *config.Config, file string) (path, sig string, err error) {
	src, err := os.Open(file)
	if err != nil {
		return "", "", fmt.Errorf("open release: %w", err)
	}
	defer src.Close()
	dir := filepath.Join(cfg.Node.DataDir, "releases")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("release store: %w (run as root on an app node)", err)
	}
	dst, err := os.CreateTemp(dir, ".incoming-*.deb")
	if err != nil {
		return "", "", fmt.Errorf("release store: %w (run as root on an app node)", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		os.Remove(dst.Name())
		return "", "", fmt.Errorf("copy release: %w", err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(dst.Name())
		return "", "", fmt.Errorf("copy release: %w", err)
	}
	if b, err := os.ReadFile(file + ".sig"); err == nil {
		// The .sig holds base64 text already; send its bytes as they are.
		sig = base64.StdEncoding.EncodeToString(b)
	}
	return dst.Name(), sig, nil
}

func deployState(ctx context.Context, e *env) (*state.Deploy, error) {
	return localapi.Call[*state.Deploy](ctx, e.client(), http.MethodGet, "/v1/deploy/state", nil)
}

func newDeployStatusCmd(e *env) *cobra.Command {
	var follow, asJSON bool
	cmd := &cobra.Command{
		Use:   "status [DELIVERY] [--follow]",
		Short: "Show a rollout's journal (default: the current or latest one)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			if follow {
				return followRollout(cmd.Context(), e, id)
			}
			dep, err := deployState(cmd.Context(), e)
			if err != nil {
				return err
			}
			r, del := findRollout(dep, id)
			if asJSON {
				return writeJSON(e.stdout, map[string]any{"delivery": del, "rollout": r})
			}
			if del == nil {
				return fmt.Errorf("no delivery %q ('tandem releases' lists them)", id)
			}
			printDelivery(e.stdout, *del)
			if r != nil {
				for _, st := range r.Steps {
					printStep(e.stdout, st)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&follow, "follow", false, "print steps as they happen until the rollout ends")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// findRollout finds a delivery and its rollout (running or finished); ""
// is the running one, else the newest.
func findRollout(dep *state.Deploy, id string) (*state.Rollout, *state.Delivery) {
	if id == "" {
		if dep.Rollout != nil {
			id = dep.Rollout.ID
		} else if n := len(dep.Deliveries); n > 0 {
			id = dep.Deliveries[n-1].ID
		}
	}
	var del *state.Delivery
	if d, ok := dep.Delivery(id); ok {
		del = &d
	}
	if dep.Rollout != nil && dep.Rollout.ID == id {
		return dep.Rollout, del
	}
	for _, r := range slices.Backward(dep.History) {
		if r.ID == id {
			return r, del
		}
	}
	return nil, del
}

func printDelivery(w io.Writer, d state.Delivery) {
	what := strings.TrimSpace(d.Package + " " + d.Version)
	if what == "" {
		what = strings.TrimSpace(d.Ref + " " + shortSHA(d.Commit))
	}
	fmt.Fprintf(w, "delivery %s (%s, from %s via %s): %s", d.ID, what, d.Source, d.ReceivedBy, d.Status)
	if d.Reason != "" {
		fmt.Fprintf(w, ": %s", printableLines(d.Reason, "  "))
	}
	fmt.Fprintln(w)
}

func printStep(w io.Writer, st state.Step) {
	took := ""
	if !st.EndedAt.IsZero() {
		took = " (" + st.EndedAt.Sub(st.At).Round(10*time.Millisecond).String() + ")"
	}
	fmt.Fprintf(w, "  %s  #%d %-9s %-8s %-7s %s%s\n", st.At.Local().Format("15:04:05.000"), st.N, st.Action, st.Node, st.State, printableLines(st.Detail, "      "), took)
}

func shortSHA(s string) string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

// followRollout prints a rollout's steps as they are journaled until it
// ends; it fails when the rollout did not deploy.
func followRollout(ctx context.Context, e *env, id string) error {
	printed := map[string]bool{}
	var lastStatus string
	for {
		dep, err := deployState(ctx, e)
		if err != nil {
			return err
		}
		r, del := findRollout(dep, id)
		if del == nil {
			return fmt.Errorf("no delivery %q", id)
		}
		id = del.ID
		if del.Status != lastStatus {
			printDelivery(e.stdout, *del)
			lastStatus = del.Status
		}
		if r != nil {
			for _, st := range r.Steps {
				key := fmt.Sprintf("%d/%s", st.N, st.State)
				if !printed[key] {
					printed[key] = true
					printStep(e.stdout, st)
				}
			}
		}
		if del.Finished() {
			if del.Status != state.DeliveryDeployed {
				return fmt.Errorf("delivery %s %s: %s", del.ID, del.Status, del.Reason)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func newDeployPlanCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what delivery would do now, changing nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := localapi.Call[localapi.Plan](cmd.Context(), e.client(), http.MethodGet, "/v1/deploy/plan", nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, p)
			}
			switch {
			case p.Running != nil:
				fmt.Fprintf(e.stdout, "rollout %s in progress (%s phase, %s %s), driven by %s\n", p.Running.ID, p.Running.Phase, p.Running.Package, p.Running.Version, p.Running.Driver)
			case p.Next == nil:
				fmt.Fprintln(e.stdout, "nothing queued")
			case p.HeldBack != "":
				fmt.Fprintf(e.stdout, "next: delivery %s, held back: %s\n", p.Next.ID, p.HeldBack)
			default:
				fmt.Fprintf(e.stdout, "next: delivery %s starts now\n", p.Next.ID)
			}
			if p.Queued > 1 {
				fmt.Fprintf(e.stdout, "%d deliveries queued: only the newest runs, the others are superseded\n", p.Queued)
			}
			if len(p.Order) > 0 {
				fmt.Fprintf(e.stdout, "order: %s (the IP moves off %s before it is upgraded)\n", strings.Join(p.Order, ", then "), p.Holder)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newDeployLockCmd(e *env, lock bool) *cobra.Command {
	var msg string
	use, short := "unlock", "Let automatic deploys run again"
	if lock {
		use, short = "lock --message M", "Hold automatic deploys back (a forced 'tandem deploy' still runs)"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := localapi.Call[localapi.Empty](cmd.Context(), e.client(), http.MethodPost, "/v1/deploy/lock", localapi.LockRequest{Lock: lock, Message: msg})
			if err != nil {
				return err
			}
			if lock {
				fmt.Fprintln(e.stdout, "automatic deploys are locked; 'tandem deploy unlock' lifts it")
			} else {
				fmt.Fprintln(e.stdout, "automatic deploys are unlocked")
			}
			return nil
		},
	}
	if lock {
		cmd.Flags().StringVarP(&msg, "message", "m", "", "why (shown in 'tandem deploy plan' and status)")
	}
	return cmd
}

func newReleasesCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "releases [--json]",
		Short: "List deliveries and their outcome, and what each node runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dep, err := deployState(cmd.Context(), e)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, map[string]any{"deliveries": dep.Deliveries, "installed": dep.Installed,
					"rollout": dep.Rollout, "lock": dep.Lock, "bad": dep.Bad})
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tPACKAGE\tVERSION\tSHA256")
			for _, n := range slices.Sorted(maps.Keys(dep.Installed)) {
				for _, p := range slices.Sorted(maps.Keys(dep.Installed[n])) {
					r := dep.Installed[n][p]
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, p, r.Version, shortSHA(r.Digest))
				}
			}
			tw.Flush()
			fmt.Fprintln(e.stdout)
			tw = tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DELIVERY\tRECEIVED\tSOURCE\tRELEASE\tSTATUS\tREASON")
			for _, d := range slices.Backward(dep.Deliveries) {
				rel := strings.TrimSpace(d.Package + " " + d.Version)
				if rel == "" {
					rel = strings.TrimSpace(d.Ref + " " + shortSHA(d.Commit))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.ReceivedAt.Local().Format("01-02 15:04:05"), d.Source, printable(rel), d.Status, printable(d.Reason))
			}
			tw.Flush()
			if dep.Lock != nil {
				fmt.Fprintf(e.stdout, "\nautomatic deploys are locked by %s: %s\n", dep.Lock.By, dep.Lock.Message)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newRollbackCmd(e *env) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "rollback [VERSION] [--follow]",
		Short: "Roll every node back to an earlier release (default: the one the last deploy replaced)",
		Long: `rollback queues a forced rolling install of an earlier release that a node
still keeps in its release store (deploy.keep releases are kept). It runs like
a deploy: standbys first, a planned move, health gates, zero failed requests.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := localapi.DeployRequest{}
			if len(args) == 1 {
				req.Version = args[0]
			}
			r, err := localapi.Call[localapi.DeployReply](cmd.Context(), e.client(), http.MethodPost, "/v1/rollback", req)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "queued rollback to %s %s as delivery %s\n", r.Package, r.Version, r.Delivery)
			if follow {
				return followRollout(cmd.Context(), e, r.Delivery)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&follow, "follow", false, "print the rollout's steps until it ends")
	return cmd
}

func newWebhookCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Check webhook deliveries against the configuration",
	}
	var headerFile string
	test := &cobra.Command{
		Use:   "test SOURCE FILE [--headers HEADERS]",
		Short: "Check a saved delivery against a source's secret and rules, as the listener would",
		Long: `test reads a saved delivery (the body in FILE, its HTTP headers in
--headers, one "Name: value" per line, as the forge's webhook log shows them)
and checks it against deploy.source SOURCE: signature, payload, ref rules.
Standard Webhooks timestamps are checked against the delivery's own time, so
an old saved delivery still verifies. Nothing is sent to the cluster.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			var src *config.Source
			for i := range cfg.Deploy.Sources {
				if cfg.Deploy.Sources[i].Name == args[0] {
					src = &cfg.Deploy.Sources[i]
				}
			}
			if src == nil {
				return &UsageError{Err: fmt.Errorf("no deploy.source named %q in %s", args[0], e.configPath)}
			}
			kind, err := webhook.ParseSource(src.Type)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(src.SecretFile)
			if err != nil {
				return fmt.Errorf("deploy.source %s: %w", src.Name, err)
			}
			secrets, err := webhook.ParseSecrets(b, src.SecretFile)
			if err != nil {
				return err
			}
			body, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			h := http.Header{}
			if headerFile != "" {
				hb, err := os.ReadFile(headerFile)
				if err != nil {
					return err
				}
				for _, line := range strings.Split(string(hb), "\n") {
					if k, v, ok := strings.Cut(line, ":"); ok {
						h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
					}
				}
			}
			now := time.Now()
			if ts := h.Get("webhook-timestamp"); ts != "" {
				var sec int64
				if _, err := fmt.Sscan(ts, &sec); err == nil {
					now = time.Unix(sec, 0)
				}
			}
			in := webhook.Intake{Source: kind, Secrets: secrets, Rules: webhook.Rules{Branches: src.Branches, Tags: src.Tags, Job: src.Job}}
			d, err := in.Receive(h, body, now)
			status := webhook.HTTPStatus(err)
			if err == nil {
				status = http.StatusAccepted
			}
			fmt.Fprintf(e.stdout, "the listener would answer %d\n", status)
			if d.Ref != "" || d.Commit != "" {
				fmt.Fprintf(e.stdout, "%s %s %s %s commit %s\n", d.Source, d.Event, d.Project, d.Ref, d.Commit)
			}
			if err != nil {
				if errors.Is(err, webhook.ErrIrrelevant) {
					fmt.Fprintf(e.stdout, "ignored: %v\n", err)
					return nil
				}
				return err
			}
			fmt.Fprintln(e.stdout, "accepted: it would be queued for deploy")
			return nil
		},
	}
	test.Flags().StringVar(&headerFile, "headers", "", "file with the delivery's HTTP headers")
	cmd.AddCommand(test)
	return cmd
}
