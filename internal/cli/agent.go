package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/agent"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/prereq"
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
				return &prereq.Error{What: "the agent must run as root: it configures addresses and runs hooks", Fix: "try: sudo tandem agent"}
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
	var appUses int
	var witnessToken, noStart, asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new cluster on this node and print its first join tokens",
		Long: `init creates the cluster CA and this node's certificate under the data
directory, starts a cluster of one and prints join tokens that pin the CA's
hash: one for a witness and one for an app node, each good for one join
(standard output: one "ROLE TOKEN" line each). Hand each to its node in a
file and run 'tandem join --token-file FILE THIS_NODE:7946' there; with an
on-link (linux) VIP, join the witness first. Make more with 'tandem token
create'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 || appUses < 0 {
				return &UsageError{Err: fmt.Errorf("--token-ttl must be positive and --app-token-uses 0 or more")}
			}
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			o := agent.InitOptions{TokenTTL: ttl}
			if witnessToken {
				o.Tokens = append(o.Tokens, agent.TokenSpec{Role: config.RoleWitness, Uses: 1})
			}
			if appUses > 0 {
				o.Tokens = append(o.Tokens, agent.TokenSpec{Role: config.RoleApp, Uses: appUses})
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			toks, err := agent.Init(ctx, cfg, e.logger, o)
			if err != nil {
				return err
			}
			if asJSON {
				type tokenJSON struct {
					Role    string    `json:"role"`
					Token   string    `json:"token"`
					Uses    int       `json:"uses"`
					Expires time.Time `json:"expires"`
				}
				out := struct {
					Node   string      `json:"node"`
					Tokens []tokenJSON `json:"tokens"`
				}{Node: cfg.Node.Name, Tokens: []tokenJSON{}}
				for _, t := range toks {
					out.Tokens = append(out.Tokens, tokenJSON{Role: t.Role, Token: t.Token.String(), Uses: t.Uses, Expires: t.Expires})
				}
				if err := writeJSON(e.stdout, out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(e.stderr, "cluster created on %s; join the other nodes (the witness first) with:\n", cfg.Node.Name)
				for _, t := range toks {
					flag := ""
					if t.Role == config.RoleWitness {
						flag = " --witness"
					}
					fmt.Fprintf(e.stderr, "  %-8s tandem join%s --token-file FILE %s   (FILE holds its token below)\n", t.Role+":", flag, cfg.Cluster.Advertise)
					fmt.Fprintf(e.stdout, "%s %s\n", t.Role, t.Token.String())
				}
			}
			if !noStart {
				startService(e)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "token-ttl", 24*time.Hour, "how long the printed join tokens are valid")
	cmd.Flags().IntVar(&appUses, "app-token-uses", 1, "how many app nodes the app token admits (0: print no app token)")
	cmd.Flags().BoolVar(&witnessToken, "witness-token", true, "print a token for one witness")
	cmd.Flags().BoolVar(&noStart, "no-start", false, "do not start tandem.service afterwards")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newJoinCmd(e *env) *cobra.Command {
	var token, tokenFile string
	var witness, noStart bool
	cmd := &cobra.Command{
		Use:   "join (--token-file FILE | --token TOKEN) ADDR [--witness]",
		Short: "Join this node to the cluster at ADDR (IP:PORT of an app node)",
		Long: `join checks that the cluster at ADDR has the CA the token pins, obtains a
certificate for this node and joins the raft cluster as a voter. A wrong,
expired or used-up token, a token for the other role, or a CA that does not
match, is refused and changes nothing. --witness joins a witness: it votes
but never holds the IP; its tandem.toml must say role = "witness".

Pass the token in a file (--token-file FILE, or - for standard input):
other users on this machine can read a command line.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := readToken(e, token, tokenFile)
			if err != nil {
				return err
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
			if err := agent.Join(ctx, cfg, args[0], tok); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s joined the cluster via %s\n", cfg.Node.Name, args[0])
			if !noStart {
				startService(e)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the join token ('-': standard input)")
	cmd.Flags().StringVar(&token, "token", "", "the join token itself (visible to other local users; prefer --token-file)")
	cmd.Flags().BoolVar(&witness, "witness", false, "join as a witness (votes, never holds the IP)")
	cmd.Flags().BoolVar(&noStart, "no-start", false, "do not start tandem.service afterwards")
	return cmd
}

// readToken returns the join token from --token or --token-file (a path,
// or - for standard input), with surrounding space removed.
func readToken(e *env, token, file string) (string, error) {
	switch {
	case token != "" && file != "":
		return "", &UsageError{Err: errors.New("give the token once: --token-file or --token, not both")}
	case token != "":
		return strings.TrimSpace(token), nil
	case file == "":
		return "", &UsageError{Err: errors.New("a join token is required: --token-file FILE (or - for standard input); create one with 'tandem token create' on an app node")}
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(e.stdin, 4096))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return "", &UsageError{Err: fmt.Errorf("read the join token: %w", err)}
	}
	// A file may hold init's "ROLE TOKEN" line: take the last field.
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return "", &UsageError{Err: fmt.Errorf("the token file %s is empty", file)}
	}
	return fields[len(fields)-1], nil
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
	if agent.Initialized(config.DataDir(e.configPath)) {
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
