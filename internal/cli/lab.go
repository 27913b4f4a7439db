package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/prereq"
)

// ExitStatusError passes a child command's exit status through as tandem's
// own (tandem lab exec). Main returns Code without printing anything.
type ExitStatusError struct{ Code int }

func (e *ExitStatusError) Error() string { return fmt.Sprintf("command exited with status %d", e.Code) }

// ExitStatus is the status Main exits with, silently.
func (e *ExitStatusError) ExitStatus() int { return e.Code }

// labErr maps the lab package's errors onto the CLI's classes.
func labErr(err error) error {
	if err == nil {
		return nil
	}
	return err
}

func newLabCmd(e *env) *cobra.Command {
	var name string
	var exe string
	open := func() (*lab.Lab, error) {
		if os.Geteuid() != 0 {
			return nil, &prereq.Error{What: "the lab needs root", Fix: "run it as root (for example with sudo)"}
		}
		l, err := lab.New(lab.Options{Name: name, Logger: e.logger, Exe: exe})
		if err != nil {
			return nil, &UsageError{Err: err}
		}
		return l, nil
	}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a throwaway cluster of real Debian 12 nodes on this machine",
		Long: `A lab is a cluster of systemd-nspawn containers, each a real Debian 12
(bookworm) system booted by systemd, in its own network namespace. The nodes
and a "client" namespace share a bridge that lives in a namespace of the lab's
own, so the host's network is never touched.

Addresses (10.77.0.0/24, reachable only inside the lab):
  client 10.77.0.2   witness 10.77.0.10   nodeN 10.77.0.(10+N)
  10.77.0.100 is kept free for the cluster's floating IP.

The base image is built once with debootstrap and cached in
/var/cache/tandem/lab; each node boots from a fresh overlay on it. Lab state,
overlays and console logs live in /var/lib/tandem/lab/NAME. Needs root.`,
		Example: `  tandem lab up                       # node1, node2, witness and client
  tandem lab exec node1 -- systemctl is-system-running
  tandem lab kill node1 && tandem lab start node1
  tandem lab down`,
	}
	cmd.PersistentFlags().StringVar(&name, "name", lab.DefaultName, "name of the lab, so several can run side by side")
	exe, _ = os.Executable()

	// up
	var nodes int
	var witness, bare bool
	up := &cobra.Command{
		Use:   "up",
		Short: "Build the base image if needed and boot the lab",
		Long: `Boots --nodes app nodes (node1, node2, ...), a witness node unless
--witness=false, and a client network namespace. It waits until systemd in
every node reports the system running. Then, unless --bare, it packages
tandem and the example site (examples/pysite) as .debs, installs them on the
nodes and forms a cluster with a linux floating IP, 10.77.0.100, that fronts
the site on port 8000. The first run builds the base image
with debootstrap (a few minutes, with progress); later runs take seconds.
Fails if the lab is already up; run 'tandem lab down' first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 || nodes > lab.MaxNodes {
				return &UsageError{Err: fmt.Errorf("--nodes %d is out of range: use 1 to %d", nodes, lab.MaxNodes)}
			}
			l, err := open()
			if err != nil {
				return err
			}
			if err := l.Up(cmd.Context(), lab.UpOptions{Nodes: nodes, Witness: witness, Progress: e.stderr}); err != nil {
				return labErr(err)
			}
			if bare {
				return nil
			}
			if err := labcluster.Provision(cmd.Context(), l, labcluster.Options{Exe: exe, Progress: e.stderr, Logger: e.logger}); err != nil {
				return fmt.Errorf("form the cluster: %w (the nodes are up; inspect with 'tandem lab exec node1 -- journalctl -u tandem', or 'tandem lab down')", err)
			}
			fmt.Fprintf(e.stdout, "\nThe example site answers through the floating IP at %s\n", labcluster.VIPURL)
			fmt.Fprintf(e.stdout, "(from the lab's client: tandem lab exec client -- curl -s %shealthz)\n\n", labcluster.VIPURL)
			code, err := l.Exec(cmd.Context(), "node1", []string{"tandem", "status"}, nil, e.stdout, e.stderr)
			if err == nil && code != 0 {
				err = fmt.Errorf("tandem status on node1 exited %d", code)
			}
			return err
		},
	}
	up.Flags().IntVar(&nodes, "nodes", 2, "number of app nodes")
	up.Flags().BoolVar(&bare, "bare", false, "only boot the nodes; do not install tandem and form the cluster")
	up.Flags().BoolVar(&witness, "witness", true, "add a witness node (votes, holds no IP, runs no app)")

	// status
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each node's state, lab address and init PID",
		Long: `Shows every member of the lab: its role, state (running, stopped or
partitioned), lab address, the host PID of its init, and any netem in force.

--json prints {"name": LAB, "nodes": [{"name", "role", "state", "address",
"init_pid", "netem"}]}; these field names are stable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			st, err := l.Status(cmd.Context())
			if err != nil && st == nil {
				return labErr(err)
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(struct {
					Name  string           `json:"name"`
					Nodes []lab.NodeStatus `json:"nodes"`
				}{l.Name(), st}); jerr != nil {
					return jerr
				}
				return labErr(err)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tSTATE\tADDRESS\tINIT PID\tNETEM")
			for _, n := range st {
				pid := "-"
				if n.InitPID > 0 {
					pid = fmt.Sprint(n.InitPID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Role, n.State, n.Address, pid, n.Netem)
			}
			if ferr := tw.Flush(); ferr != nil {
				return ferr
			}
			return labErr(err)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	// exec
	execCmd := &cobra.Command{
		Use:   "exec NODE -- CMD [ARG...]",
		Short: "Run a command in a node, passing through its output and exit status",
		Long: `Runs CMD as root inside NODE (all its namespaces, its file system, a clean
environment) and exits with CMD's exit status. NODE "client" runs CMD on the
host's file system inside the client's network namespace. Standard input is
passed through too.`,
		Example: `  tandem lab exec node1 -- ip -4 -o addr
  tandem lab exec client -- curl -s http://10.77.0.11/`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash != 1 {
				return &UsageError{Err: errors.New("usage: tandem lab exec NODE -- CMD [ARG...] (put -- between the node and the command)")}
			}
			l, err := open()
			if err != nil {
				return err
			}
			code, err := l.Exec(cmd.Context(), args[0], args[1:], e.stdin, e.stdout, e.stderr)
			if err != nil {
				return labErr(err)
			}
			if code != 0 {
				return &ExitStatusError{Code: code}
			}
			return nil
		},
	}

	// cp
	cp := &cobra.Command{
		Use:   "cp SRC NODE:DST",
		Short: "Copy a file from the host into a node",
		Long: `Copies the regular file SRC into NODE at the absolute path DST, keeping its
mode. If DST is a directory the file keeps its name.`,
		Example: `  tandem lab cp dist/app_1.0_amd64.deb node1:/root/`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, dst, err := lab.ParseCopyTarget(args[1])
			if err != nil {
				return &UsageError{Err: err}
			}
			l, err := open()
			if err != nil {
				return err
			}
			return labErr(l.CopyIn(cmd.Context(), args[0], node, dst))
		},
	}

	nodeCmd := func(use, short, long string, f func(l *lab.Lab, cmd *cobra.Command, node string) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NODE",
			Short: short,
			Long:  long,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				l, err := open()
				if err != nil {
					return err
				}
				return labErr(f(l, cmd, args[0]))
			},
		}
	}
	kill := nodeCmd("kill", "Power a node off abruptly (SIGKILL to the whole container)",
		`Sends SIGKILL to the node's init and its systemd-nspawn, as a power loss
would: nothing in the node gets to run another instruction. Its disk is kept;
'tandem lab start' boots it again.`,
		func(l *lab.Lab, cmd *cobra.Command, node string) error { return l.Kill(cmd.Context(), node) })
	start := nodeCmd("start", "Boot a stopped node again, with its disk as it was left",
		`Boots the node again from its existing overlay (its files survive a kill)
and waits until systemd reports the system running.`,
		func(l *lab.Lab, cmd *cobra.Command, node string) error { return l.Start(cmd.Context(), node) })
	partition := nodeCmd("partition", "Cut a node off the lab network",
		`Makes the lab's bridge drop every frame to or from the node. The node's own
link stays up, as when a switch port or an upstream network fails. 'client' can
be partitioned too.`,
		func(l *lab.Lab, cmd *cobra.Command, node string) error { return l.Partition(cmd.Context(), node) })
	heal := nodeCmd("heal", "Reconnect a partitioned node",
		`Undoes 'tandem lab partition'.`,
		func(l *lab.Lab, cmd *cobra.Command, node string) error { return l.Heal(cmd.Context(), node) })

	// netem
	var delay, jitter, loss string
	var clear bool
	netem := &cobra.Command{
		Use:   "netem NODE (--delay D [--jitter J] [--loss P%] | --clear)",
		Short: "Degrade a node's link with delay, jitter and loss",
		Long: `Delays frames towards NODE by --delay ± --jitter and drops --loss percent
of them, so every round trip to the node grows by the delay. Frames keep their
order. Running it again replaces the values; --clear removes the degradation.
(The lab relays the node's frames through a small forwarder because this
kernel may lack sch_netem.)`,
		Example: `  tandem lab netem node1 --delay 100ms --jitter 20ms --loss 2%
  tandem lab netem node1 --clear`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if clear && (delay != "" || jitter != "" || loss != "") {
				return &UsageError{Err: errors.New("--clear cannot be combined with --delay, --jitter or --loss")}
			}
			l, err := open()
			if err != nil {
				return err
			}
			if clear {
				return labErr(l.ClearNetem(cmd.Context(), args[0]))
			}
			n, err := lab.ParseNetem(delay, jitter, loss)
			if err != nil {
				return &UsageError{Err: err}
			}
			return labErr(l.Netem(cmd.Context(), args[0], n))
		},
	}
	netem.Flags().StringVar(&delay, "delay", "", "added one-way delay towards the node, e.g. 100ms")
	netem.Flags().StringVar(&jitter, "jitter", "", "random variation of the delay, at most the delay, e.g. 20ms")
	netem.Flags().StringVar(&loss, "loss", "", "percentage of frames towards the node to drop, e.g. 2%")
	netem.Flags().BoolVar(&clear, "clear", false, "remove the degradation")

	// netem-forward: the forwarder process Netem starts; not for people.
	var fw lab.ForwarderConfig
	var fwLoss float64
	forward := &cobra.Command{
		Use:    "netem-forward",
		Short:  "Relay a node's frames with netem degradation (started by 'lab netem')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fw.Netem.Loss = fwLoss
			return lab.RunForwarder(cmd.Context(), fw, e.stdout)
		},
	}
	forward.Flags().StringVar(&fw.Port, "port", "", "the node's bridge-side interface")
	forward.Flags().StringVar(&fw.Tap, "tap", "", "the forwarder's interface towards the bridge")
	forward.Flags().DurationVar(&fw.Netem.Delay, "delay", 0, "delay")
	forward.Flags().DurationVar(&fw.Netem.Jitter, "jitter", 0, "jitter")
	forward.Flags().Float64Var(&fwLoss, "loss", 0, "loss percentage")

	// down
	down := &cobra.Command{
		Use:   "down",
		Short: "Remove every process, mount, overlay, namespace and link of the lab",
		Long: `Kills the nodes, unmounts their overlays, deletes the lab's network
namespaces (and with them its bridge and links), its cgroups and its state
directory. It works from the state file and from scanning the system, so it
also cleans up after a crash. Running it again, or on a lab that is not up,
does nothing. The cached base image is kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := open()
			if err != nil {
				return err
			}
			t0 := time.Now()
			if err := l.Down(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "lab %s is down (%.1fs)\n", l.Name(), time.Since(t0).Seconds())
			return nil
		},
	}
	for _, c := range []*cobra.Command{up, status, execCmd, cp, kill, start, partition, heal, netem, forward, down} {
		cmd.AddCommand(c)
	}
	return cmd
}
