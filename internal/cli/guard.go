package cli

import "github.com/spf13/cobra"

func newGuardCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "guard",
		Short: "Bans shared by the whole cluster: list, ban and unban addresses; test filters",
		Long: `guard bans the sources of brute-force attempts on every node at once. A ban
decided on one node is committed through the cluster and enforced in each
node's kernel (nftables table inet tandem-guard) with its own timeout, so it
expires on time even if tandem is down, and the node that takes over the
floating IP already blocks the attacker. Cluster members' addresses and the
ignored networks are never banned.`,
	}
	cmd.AddCommand(guardBanCmds(e)...)
	cmd.AddCommand(newGuardTestCmd(e))
	return cmd
}
