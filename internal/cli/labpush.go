package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/labforge"
)

// labPushFlags are lab push's own flags.
type labPushFlags struct {
	o                 labcluster.PushOptions
	replay            string
	replayLast        bool
	unsigned, asJSON  bool
	wrongSecret, huge bool
}

func newLabPushCmd(e *env, lf *labFlags) *cobra.Command {
	var f labPushFlags
	cmd := &cobra.Command{
		Use:   "push --version V [flags]",
		Short: "Publish a new build of the example site to the lab's forge and send its webhook",
		Long: `Builds examples/pysite at --version as a .deb, publishes it to the lab's fake
forge (in the client namespace, ` + labcluster.ForgeURL + `) as a new successful GitLab
pipeline or GitHub workflow run whose artifact holds dist/NAME.deb, its .sha256
and a .sig by the lab's signing key, then sends the forge's webhook (GitLab
Pipeline Hook or GitHub workflow_run) to the cluster through the floating IP,
` + labcluster.WebhookURL("SOURCE") + `, and prints the answer.

Builds the cluster must refuse: --broken (its /healthz answers 500, so the
health gate fails and the rollout rolls back), --bad-checksum, --bad-signature
(signed by a key the cluster does not pin), --unsigned, --package NAME (a
package the cluster does not run), --status failed. Webhooks it must refuse:
--wrong-secret (401, nothing stored), --oversize (a body over 1 MiB: 413).
--no-webhook publishes only (the poll fallback must find the build);
--replay sends the last webhook again, byte for byte, without building.`,
		Example: `  tandem lab push --version 0.2.0
  tandem lab push --version 0.3.0 --broken
  tandem lab push --version 0.2.1 --source github --no-webhook
  tandem lab push --replay`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLabPush(cmd.Context(), e, lf, cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.o.Version, "version", "", "version of the build, e.g. 0.2.0 (required unless --replay)")
	fl.StringVar(&f.o.Source, "source", labforge.SourceGitLab, "forge to publish to: gitlab or github")
	fl.StringVar(&f.o.Ref, "ref", "main", "branch (or, with --tag, tag) the build is from")
	fl.BoolVar(&f.o.Tag, "tag", false, "--ref names a tag")
	fl.BoolVar(&f.o.Broken, "broken", false, "build a site whose /healthz answers 500")
	fl.StringVar(&f.o.Package, "package", "", "rename the package (one the cluster does not run)")
	fl.StringVar(&f.o.Status, "status", "", "the build's outcome instead of success (e.g. failed, failure)")
	fl.BoolVar(&f.unsigned, "unsigned", false, "publish no .sig")
	fl.BoolVar(&f.o.BadSignature, "bad-signature", false, "sign with a key the cluster does not pin")
	fl.BoolVar(&f.o.BadChecksum, "bad-checksum", false, "publish a .sha256 that does not match the .deb")
	fl.BoolVar(&f.o.NoWebhook, "no-webhook", false, "publish only; send no webhook")
	fl.BoolVar(&f.wrongSecret, "wrong-secret", false, "sign the webhook with a secret the cluster does not know")
	fl.BoolVar(&f.huge, "oversize", false, "pad the webhook's body past 1 MiB")
	fl.StringVar(&f.o.URL, "url", "", "send the webhook here instead of "+labcluster.WebhookURL("SOURCE"))
	fl.BoolVar(&f.replayLast, "replay", false, "send the last webhook again (no build)")
	fl.StringVar(&f.replay, "replay-id", "", "send the webhook with this delivery ID again (no build)")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	return cmd
}

func runLabPush(ctx context.Context, e *env, lf *labFlags, cmd *cobra.Command, f labPushFlags) error {
	replay := f.replayLast || f.replay != ""
	switch {
	case replay && cmd.Flags().Changed("version"):
		return &UsageError{Err: errors.New("--replay sends an earlier webhook again: it takes no --version")}
	case !replay && f.o.Version == "":
		return &UsageError{Err: errors.New("--version is required, e.g. --version 0.2.0")}
	case f.o.Source != labforge.SourceGitLab && f.o.Source != labforge.SourceGitHub:
		return &UsageError{Err: fmt.Errorf("--source %q: use gitlab or github", f.o.Source)}
	case f.unsigned && f.o.BadSignature:
		return &UsageError{Err: errors.New("--unsigned and --bad-signature exclude each other")}
	}
	l, err := lf.open(e, "")
	if err != nil {
		return err
	}
	var res labcluster.PushResult
	if replay {
		res, err = labcluster.Replay(ctx, l, lf.exe, f.o.URL, f.replay)
	} else {
		f.o.Exe, f.o.Unsigned, f.o.Logger = lf.exe, f.unsigned, e.logger
		f.o.Hook = labforge.HookOptions{WrongSecret: f.wrongSecret, Oversize: f.huge}
		res, err = labcluster.Push(ctx, l, f.o)
	}
	if perr := printPush(e, res, f.asJSON); perr != nil && err == nil {
		err = perr
	}
	return err
}

func printPush(e *env, r labcluster.PushResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	if r.Version != "" {
		fmt.Fprintf(e.stdout, "published %s %s (sha256 %s) as %s %s %d, artifact %d\n", r.Package, r.Version, r.SHA256,
			r.Source, map[string]string{labforge.SourceGitLab: "pipeline", labforge.SourceGitHub: "run"}[r.Source], r.ID, r.Artifact)
	}
	if r.Webhook != nil {
		fmt.Fprintf(e.stdout, "webhook %s to %s: %d %s\n", r.Delivery, r.URL, r.Webhook.Status, r.Webhook.Body)
	} else if r.ID != 0 && r.Delivery == "" {
		fmt.Fprintln(e.stdout, "no webhook sent: the poll fallback must find it")
	}
	return nil
}

// newLabForgeServeCmd is the forge process lab up starts in the client
// namespace; not for people.
func newLabForgeServeCmd(e *env) *cobra.Command {
	var dir string
	var listen []string
	cmd := &cobra.Command{
		Use:    "forge-serve",
		Short:  "Serve the lab's fake forge (started by 'lab up')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := labforge.Open(dir)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(e.stderr, nil))
			return labforge.Serve(cmd.Context(), f, listen, log, e.stdout)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the forge's state directory")
	cmd.Flags().StringArrayVar(&listen, "listen", nil, "address to listen on (repeatable)")
	return cmd
}

// newLabForgeSendCmd sends a webhook the forge built, from the client
// namespace (lab push runs it there); not for people.
func newLabForgeSendCmd(e *env) *cobra.Command {
	var dir, id, url string
	cmd := &cobra.Command{
		Use:    "forge-send",
		Short:  "Send a webhook the lab's forge built (run by 'lab push')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := labforge.Open(dir)
			if err != nil {
				return err
			}
			h, err := f.LastHook(id)
			if err != nil {
				return err
			}
			resp, err := labforge.Send(cmd.Context(), nil, url, h)
			if err != nil {
				return err
			}
			return json.NewEncoder(e.stdout).Encode(resp)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the forge's state directory")
	cmd.Flags().StringVar(&id, "id", "", "delivery ID of the webhook")
	cmd.Flags().StringVar(&url, "url", "", "where to send it")
	return cmd
}
