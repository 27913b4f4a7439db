package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/agent"
	"github.com/tandem-ha/tandem/internal/config"
)

func (e *env) loadConfig() (*config.Config, error) {
	c, err := config.Load(e.configPath)
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	return c, nil
}

func newAgentCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the tandem agent (the systemd service runs this)",
		Long: `agent runs this node: raft, the floating IP, health checks, hooks, the local
API on a unix socket and Prometheus metrics. It reads --config
(/etc/tandem/tandem.toml). On a node that has not run 'tandem init' or
'tandem join' yet it waits for that.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := waitForConfig(cmd.Context(), e)
			if err != nil {
				return err
			}
			if os.Geteuid() != 0 {
				return &PrereqError{Err: fmt.Errorf("the agent must run as root: it configures addresses and runs hooks (try: sudo tandem agent)")}
			}
			// The agent's work comes in many tiny bursts. With one P the
			// runtime handles each burst on one thread instead of waking a
			// second one to spin for work: about a quarter of an idle
			// agent's CPU on a two-core VM. GOMAXPROCS set in the
			// environment still wins.
			if os.Getenv("GOMAXPROCS") == "" {
				runtime.GOMAXPROCS(1)
			}
			return agent.New(cfg, e.logger, Version).Run(cmd.Context())
		},
	}
}

func newInitCmd(e *env) *cobra.Command {
	var ttl time.Duration
	var uses int
	var noStart bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new cluster on this node and print a join token",
		Long: `init creates the cluster CA and this node's certificate under the data
directory, starts a cluster of one and prints a join token that pins the CA's
hash. Run 'tandem join --token TOKEN THIS_NODE:7946' on every other node;
with an on-link (linux) VIP, join the witness first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 || uses < 0 {
				return &UsageError{Err: fmt.Errorf("--token-ttl must be positive and --token-uses 0 or more")}
			}
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			tok, err := agent.Init(ctx, cfg, e.logger, agent.InitOptions{TokenTTL: ttl, TokenUses: uses})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "cluster created on %s; join other nodes with:\n  tandem join --token %s %s\n", cfg.Node.Name, tok.String(), cfg.Cluster.Advertise)
			fmt.Fprintln(e.stdout, tok.String())
			if !noStart {
				startService(e)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "token-ttl", 24*time.Hour, "how long the printed join token is valid")
	cmd.Flags().IntVar(&uses, "token-uses", 0, "how many joins the token allows (0: unlimited until it expires)")
	cmd.Flags().BoolVar(&noStart, "no-start", false, "do not start tandem.service afterwards")
	return cmd
}

func newJoinCmd(e *env) *cobra.Command {
	var token string
	var witness, noStart bool
	cmd := &cobra.Command{
		Use:   "join --token TOKEN ADDR [--witness]",
		Short: "Join this node to the cluster at ADDR (IP:PORT of an app node)",
		Long: `join checks that the cluster at ADDR has the CA the token pins, obtains a
certificate for this node and joins the raft cluster as a voter. A wrong,
expired or used-up token, or a CA that does not match, is refused and changes
nothing. --witness joins a witness: it votes but never holds the IP; its
tandem.toml must say role = "witness".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				return &UsageError{Err: fmt.Errorf("--token is required (print one with 'tandem token create' on a member)")}
			}
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			if witness && cfg.Node.Role != config.RoleWitness {
				return &UsageError{Err: fmt.Errorf("--witness given but %s says node.role = %q; set role = \"witness\" there", e.configPath, cfg.Node.Role)}
			}
			if !witness && cfg.Node.Role == config.RoleWitness {
				return &UsageError{Err: fmt.Errorf("%s says node.role = \"witness\"; add --witness to confirm", e.configPath)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := agent.Join(ctx, cfg, e.logger, args[0], token); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s joined the cluster via %s\n", cfg.Node.Name, args[0])
			if !noStart {
				startService(e)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "join token from 'tandem init' or 'tandem token create'")
	cmd.Flags().BoolVar(&witness, "witness", false, "join as a witness (votes, never holds the IP)")
	cmd.Flags().BoolVar(&noStart, "no-start", false, "do not start tandem.service afterwards")
	return cmd
}

// startService starts the agent under systemd when there is one. The agent
// may already be running and waiting for init/join: then this is harmless.
func startService(e *env) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		fmt.Fprintln(e.stderr, "no systemd here: start the agent yourself with 'tandem agent'")
		return
	}
	if out, err := exec.Command("systemctl", "enable", "--now", "tandem.service").CombinedOutput(); err != nil {
		fmt.Fprintf(e.stderr, "could not start tandem.service (%v): %s\nstart the agent with 'tandem agent'\n", err, out)
	}
}

// waitForConfig loads the configuration. On a node that is not part of a
// cluster yet, a missing or invalid file is the normal state right after
// the package is installed: the agent then waits for the operator to write
// it instead of failing the unit. On a cluster member a bad file is an
// error that stops the agent (exit 2, not restarted by systemd).
func waitForConfig(ctx context.Context, e *env) (*config.Config, error) {
	cfg, err := config.Load(e.configPath)
	if err == nil {
		return cfg, nil
	}
	if _, serr := os.Stat(filepath.Join("/var/lib/tandem", "cluster.json")); serr == nil {
		return nil, &UsageError{Err: err}
	}
	last := err.Error()
	e.logger.Warn("waiting for a valid configuration before this node joins a cluster; edit it, then run 'tandem init' or 'tandem join'",
		"config", e.configPath, "problems", last)
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
		cfg, err = config.Load(e.configPath)
		if err == nil {
			e.logger.Info("configuration is valid", "config", e.configPath)
			return cfg, nil
		}
		if err.Error() != last {
			last = err.Error()
			e.logger.Warn("configuration still invalid", "config", e.configPath, "problems", last)
		}
	}
}
