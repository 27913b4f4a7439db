// Command tandem is the single binary of a tandem cluster: agent, CLI and lab.
package main

import (
	"os"

	"github.com/tandem-ha/tandem/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
