// Package cli implements tandem's command line: subcommands, flags, human and
// --json output, and exit codes. It is the only package that handles signals
// and the only one that maps errors to exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/prereq"
)

// Version is stamped at build time with -ldflags "-X ...cli.Version=...".
var Version = "0.0.0-dev"

// Exit codes. Scripts may rely on them.
const (
	ExitOK       = 0
	ExitError    = 1 // the operation failed
	ExitUsage    = 2 // bad flags, arguments or configuration
	ExitNotReady = 3 // a prerequisite is missing (not root, tool not installed, ...)
)

// UsageError marks an error caused by the caller's input; it maps to ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// env carries what every subcommand needs. It is built once in Main and passed
// down explicitly; there is no package-level state.
type env struct {
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	logLevel   slog.LevelVar
	configPath string
	logger     *slog.Logger
	geteuid    func() int // os.Geteuid; tests pass another caller
}

func (e *env) euid() int {
	if e.geteuid != nil {
		return e.geteuid()
	}
	return os.Geteuid()
}

// Main runs tandem with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	e.logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &e.logLevel}))

	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	// A command run for the user (tandem lab exec) exits with its own status.
	var st interface{ ExitStatus() int }
	if errors.As(err, &st) {
		return st.ExitStatus()
	}
	fmt.Fprintf(stderr, "tandem: %v\n", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var u *UsageError
	switch {
	case errors.As(err, &u):
		return ExitUsage
	case prereq.Is(err): // a missing prerequisite, from any package
		return ExitNotReady
	case strings.HasPrefix(err.Error(), "unknown command"),
		strings.HasPrefix(err.Error(), "unknown flag"),
		strings.HasPrefix(err.Error(), "unknown shorthand flag"),
		strings.Contains(err.Error(), "flag needs an argument"),
		strings.Contains(err.Error(), "invalid argument"),
		strings.Contains(err.Error(), "accepts "),
		strings.Contains(err.Error(), "requires at least"):
		return ExitUsage
	}
	return ExitError
}

func newRootCmd(e *env) *cobra.Command {
	var verbose bool
	root := &cobra.Command{
		Use:   "tandem",
		Short: "Fault-tolerant, continuously delivered home for a web site on 2-3 Debian servers",
		Long: `tandem keeps a floating IP on exactly one healthy node of a small raft
cluster (two app nodes and a witness, or three or more nodes). It packages
your Python web site as a reproducible .deb and rolls new releases out from
your forge's webhook, node by node behind the IP, rolling back a release
that fails its health check. It replicates uploaded files from the IP's
holder to the other nodes, hardens the hosts (firewall, sshd, integrity)
and bans attackers on every node at once. A throwaway lab of real Debian
nodes on one machine lets you try it all.

Configuration lives in /etc/tandem/tandem.toml, state in /var/lib/tandem.`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			if verbose {
				e.logLevel.Set(slog.LevelDebug)
			}
		},
	}
	root.PersistentFlags().StringVarP(&e.configPath, "config", "c", "/etc/tandem/tandem.toml", "path to tandem.toml")
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug messages")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &UsageError{Err: fmt.Errorf("%w (see 'tandem %s --help')", err, cmd.Name())}
	})
	for _, add := range subcommands {
		root.AddCommand(add(e))
	}
	return root
}

// subcommands lists the constructors of the top-level commands; each lives in
// its own file.
var subcommands = []func(*env) *cobra.Command{
	newVersionCmd,
	newConfigCmd,
	newPackageCmd,
	newCICmd,
	newReleaseCmd,
	newAgentCmd,
	newInitCmd,
	newJoinCmd,
	newStatusCmd,
	newDeployCmd,
	newReleasesCmd,
	newRollbackCmd,
	newWebhookCmd,
	newTokenCmd,
	newCACmd,
	newMaintenanceCmd,
	newSwitchoverCmd,
	newLeaveCmd,
	newRemoveCmd,
	newResetCmd,
	newFilesCmd,
	newHardenCmd,
	newGuardCmd,
	newLabCmd,
}

func newVersionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print tandem's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(e.stdout, Version)
			return err
		},
	}
}
