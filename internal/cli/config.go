package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/config"
)

func newConfigCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check tandem.toml",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate [FILE]",
		Short: "Validate a configuration file (default: --config)",
		Long: `Validate reads the file, applies defaults and reports every problem at
once, each with the key and line it concerns. It exits 0 when the file is
valid and 2 when it is not.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := e.configPath
			if len(args) == 1 {
				path = args[0]
			}
			c, err := config.Load(path)
			if err != nil {
				var ce config.Errors
				if errors.As(err, &ce) {
					for _, x := range ce {
						fmt.Fprintln(e.stderr, x.Error())
					}
					return &UsageError{Err: fmt.Errorf("%s: %d problem(s) found", path, len(ce))}
				}
				return &UsageError{Err: err}
			}
			for _, w := range c.Warnings {
				fmt.Fprintln(e.stderr, "warning: "+w.Error())
			}
			_, err = fmt.Fprintf(e.stdout, "%s: ok\n", path)
			return err
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "example",
		Short: "Print an annotated tandem.toml with every key and its default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprint(e.stdout, config.Example)
			return err
		},
	})
	return cmd
}
