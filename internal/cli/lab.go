package cli

import (
	"context"
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

// labFlags are the flags every lab command shares.
type labFlags struct {
	name string
	exe  string // the tandem binary the lab installs and runs its forwarder with
}

// open returns a handle on the lab named by --name; mirror is used only to
// build the base image.
func (f *labFlags) open(e *env, mirror string) (*lab.Lab, error) {
	if os.Geteuid() != 0 {
		return nil, &prereq.Error{What: "the lab needs root", Fix: "run it as root (for example with sudo)"}
	}
	if err := lab.CloseInheritedOnExec(); err != nil {
		return nil, err
	}
	l, err := lab.New(lab.Options{Name: f.name, Logger: e.logger, Exe: f.exe, Mirror: mirror})
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	return l, nil
}

func newLabCmd(e *env) *cobra.Command {
	f := &labFlags{}
	f.exe, _ = os.Executable()
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
overlays and console logs live in /var/lib/tandem/lab/NAME. Needs root and the
Debian packages of packaging/lab-deps.txt ('make deps' installs them).`,
		Example: `  tandem lab up                       # node1, node2, witness and client
  tandem lab exec node1 -- systemctl is-system-running
  tandem lab kill node1 && tandem lab start node1
  tandem lab down`,
	}
	cmd.PersistentFlags().StringVar(&f.name, "name", lab.DefaultName, "name of the lab, so several can run side by side")
	cmd.AddCommand(
		newLabUpCmd(e, f),
		newLabStatusCmd(e, f),
		newLabExecCmd(e, f),
		newLabCpCmd(e, f),
		newLabKillCmd(e, f),
		newLabStartCmd(e, f),
		newLabPartitionCmd(e, f),
		newLabHealCmd(e, f),
		newLabNetemCmd(e, f),
		newLabForwardCmd(e),
		newLabPushCmd(e, f),
		newLabForgeServeCmd(e),
		newLabForgeSendCmd(e),
		newLabDownCmd(e, f),
	)
	return cmd
}

// labUpFlags are lab up's own flags.
type labUpFlags struct {
	nodes   int
	witness bool
	bare    bool
	reuse   bool
	mirror  string
}

func newLabUpCmd(e *env, lf *labFlags) *cobra.Command {
	var f labUpFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the base image if needed and boot the lab",
		Long: `Boots --nodes app nodes (node1, node2, ...), a witness node unless
--witness=false, and a client network namespace. It waits until systemd in
every node reports the system running. Then, unless --bare, it packages
tandem and the example site (examples/pysite) as .debs, installs them on the
nodes and forms a cluster with a linux floating IP, 10.77.0.100, that fronts
the site on port 8000. The first run builds the base image with debootstrap
(a few minutes, with progress) from --mirror, else from the bookworm mirror
of the host's apt sources; later runs take seconds.

Fails if the lab is already up; run 'tandem lab down' first. With --reuse
(what 'make lab' passes) a lab that is already up with the asked members,
all running, and (unless --bare) a cluster that answers is reported instead;
one that differs or never formed is taken down and booted again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLabUp(cmd.Context(), e, lf, f)
		},
	}
	cmd.Flags().IntVar(&f.nodes, "nodes", 2, "number of app nodes")
	cmd.Flags().BoolVar(&f.bare, "bare", false, "only boot the nodes; do not install tandem and form the cluster")
	cmd.Flags().BoolVar(&f.witness, "witness", true, "add a witness node (votes, holds no IP, runs no app)")
	cmd.Flags().BoolVar(&f.reuse, "reuse", false, "if the lab is already up as asked, report it instead of failing (else recreate it)")
	cmd.Flags().StringVar(&f.mirror, "mirror", "", "Debian mirror URL for the base image (default: the host's apt sources)")
	return cmd
}

func runLabUp(ctx context.Context, e *env, lf *labFlags, f labUpFlags) error {
	if f.nodes < 1 || f.nodes > lab.MaxNodes {
		return &UsageError{Err: fmt.Errorf("--nodes %d is out of range: use 1 to %d", f.nodes, lab.MaxNodes)}
	}
	l, err := lf.open(e, f.mirror)
	if err != nil {
		return err
	}
	if !f.bare {
		// Packaging the example site needs Debian's python3 packages; say so
		// before minutes go into the image and the boot.
		if err := lab.CheckPackages(ctx); err != nil {
			return err
		}
	}
	if f.reuse {
		done, err := reuseLab(ctx, e, l, f, lf.exe)
		if done || err != nil {
			return err
		}
	}
	if err := l.Up(ctx, lab.UpOptions{Nodes: f.nodes, Witness: f.witness, Progress: e.stderr}); err != nil {
		return err
	}
	if f.bare {
		return nil
	}
	if err := labcluster.Provision(ctx, l, labcluster.Options{Exe: lf.exe, Progress: e.stderr, Logger: e.logger}); err != nil {
		return fmt.Errorf("form the cluster: %w (the nodes are up; inspect with 'tandem lab exec node1 -- journalctl -u tandem', or 'tandem lab down')", err)
	}
	return printLabCluster(ctx, e, l)
}

// reuseLab is lab up --reuse on a lab that may be up already: a lab as asked
// whose cluster answers is reported (done); one that differs, has a node
// down, never formed, or left debris is taken down so that up starts afresh.
func reuseLab(ctx context.Context, e *env, l *lab.Lab, f labUpFlags, exe string) (done bool, err error) {
	st, err := l.Status(ctx)
	if errors.Is(err, lab.ErrNoLab) {
		// Not up; clear what an interrupted run may have left.
		return false, l.Down(ctx)
	}
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case !sameMembers(st, f.nodes, f.witness):
		why = "it has other members than asked for"
	default:
		for _, n := range st {
			if n.State != lab.StateRunning && why == "" {
				why = fmt.Sprintf("%s is %s", n.Name, n.State)
			}
		}
	}
	if why == "" && !f.bare {
		if _, serr := labcluster.Status(ctx, l, lab.NodeName(1)); serr != nil {
			why = "its cluster does not answer (" + serr.Error() + ")"
		}
	}
	if why != "" {
		fmt.Fprintf(e.stderr, "lab %s is up, but %s: recreating it\n", l.Name(), why)
		return false, l.Down(ctx)
	}
	fmt.Fprintf(e.stderr, "lab %s is already up (for a fresh one: tandem lab down --name %s)\n", l.Name(), l.Name())
	if f.bare {
		return true, printLabStatus(e, st)
	}
	// The forge runs in the client namespace: start it again if it died.
	if err := labcluster.StartForge(ctx, l, exe); err != nil {
		return true, err
	}
	return true, printLabCluster(ctx, e, l)
}

// sameMembers reports whether a lab's members are those of
// lab.Plan(nodes, witness).
func sameMembers(st []lab.NodeStatus, nodes int, witness bool) bool {
	plan, err := lab.Plan(nodes, witness)
	if err != nil || len(plan) != len(st) {
		return false
	}
	for i, m := range plan {
		if st[i].Name != m.Name || st[i].Role != m.Role {
			return false
		}
	}
	return true
}

// printLabCluster tells where the example site answers and shows the
// cluster's status from node1.
func printLabCluster(ctx context.Context, e *env, l *lab.Lab) error {
	fmt.Fprintf(e.stdout, "\nThe example site answers through the floating IP at %s\n", labcluster.VIPURL)
	fmt.Fprintf(e.stdout, "(from the lab's client: tandem lab exec client -- curl -s %shealthz)\n\n", labcluster.VIPURL)
	code, err := l.Exec(ctx, lab.NodeName(1), []string{"tandem", "status"}, nil, e.stdout, e.stderr)
	if err == nil && code != 0 {
		err = fmt.Errorf("tandem status on node1 exited %d", code)
	}
	return err
}

func newLabStatusCmd(e *env, lf *labFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each node's state, lab address and init PID",
		Long: `Shows every member of the lab: its role (app, witness or client), state
(running, stopped or partitioned), lab address, the host PID of its init, and
any netem in force.

--json prints {"name": LAB, "nodes": [{"name", "role", "state", "address",
"init_pid", "netem"}]}; these field names are stable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lf.open(e, "")
			if err != nil {
				return err
			}
			st, err := l.Status(cmd.Context())
			if err != nil && st == nil {
				return err
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
				return err
			}
			if perr := printLabStatus(e, st); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printLabStatus prints the members as a table.
func printLabStatus(e *env, st []lab.NodeStatus) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSTATE\tADDRESS\tINIT PID\tNETEM")
	for _, n := range st {
		pid := "-"
		if n.InitPID > 0 {
			pid = fmt.Sprint(n.InitPID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Role, n.State, n.Address, pid, n.Netem)
	}
	return tw.Flush()
}

func newLabExecCmd(e *env, lf *labFlags) *cobra.Command {
	return &cobra.Command{
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
			l, err := lf.open(e, "")
			if err != nil {
				return err
			}
			code, err := l.Exec(cmd.Context(), args[0], args[1:], e.stdin, e.stdout, e.stderr)
			if err != nil {
				return err
			}
			if code != 0 {
				return &ExitStatusError{Code: code}
			}
			return nil
		},
	}
}

func newLabCpCmd(e *env, lf *labFlags) *cobra.Command {
	return &cobra.Command{
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
			l, err := lf.open(e, "")
			if err != nil {
				return err
			}
			return l.CopyIn(cmd.Context(), args[0], node, dst)
		},
	}
}

// newLabNodeCmd builds a command that acts on one node of the lab.
func newLabNodeCmd(e *env, lf *labFlags, use, short, long string, act func(ctx context.Context, l *lab.Lab, node string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NODE",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lf.open(e, "")
			if err != nil {
				return err
			}
			return act(cmd.Context(), l, args[0])
		},
	}
}

func newLabKillCmd(e *env, lf *labFlags) *cobra.Command {
	return newLabNodeCmd(e, lf, "kill", "Power a node off abruptly (SIGKILL to the whole container)",
		`Sends SIGKILL to the node's init and its systemd-nspawn, as a power loss
would: nothing in the node gets to run another instruction. Its disk is kept;
'tandem lab start' boots it again.`, func(ctx context.Context, l *lab.Lab, node string) error { return l.Kill(ctx, node) })
}

func newLabStartCmd(e *env, lf *labFlags) *cobra.Command {
	return newLabNodeCmd(e, lf, "start", "Boot a stopped node again, with its disk as it was left",
		`Boots the node again from its existing overlay (its files survive a kill)
and waits until systemd reports the system running.`, func(ctx context.Context, l *lab.Lab, node string) error { return l.Start(ctx, node) })
}

func newLabPartitionCmd(e *env, lf *labFlags) *cobra.Command {
	return newLabNodeCmd(e, lf, "partition", "Cut a node off the lab network",
		`Makes the lab's bridge drop every frame to or from the node. The node's own
link stays up, as when a switch port or an upstream network fails. 'client' can
be partitioned too.`, func(ctx context.Context, l *lab.Lab, node string) error { return l.Partition(ctx, node) })
}

func newLabHealCmd(e *env, lf *labFlags) *cobra.Command {
	return newLabNodeCmd(e, lf, "heal", "Reconnect a partitioned node",
		`Undoes 'tandem lab partition'.`, func(ctx context.Context, l *lab.Lab, node string) error { return l.Heal(ctx, node) })
}

// labNetemFlags are lab netem's own flags.
type labNetemFlags struct {
	delay, jitter, loss string
	clear               bool
}

func newLabNetemCmd(e *env, lf *labFlags) *cobra.Command {
	var f labNetemFlags
	cmd := &cobra.Command{
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
			return runLabNetem(cmd.Context(), e, lf, f, args[0])
		},
	}
	cmd.Flags().StringVar(&f.delay, "delay", "", "added one-way delay towards the node, e.g. 100ms")
	cmd.Flags().StringVar(&f.jitter, "jitter", "", "random variation of the delay, at most the delay, e.g. 20ms")
	cmd.Flags().StringVar(&f.loss, "loss", "", "percentage of frames towards the node to drop, e.g. 2%")
	cmd.Flags().BoolVar(&f.clear, "clear", false, "remove the degradation")
	return cmd
}

func runLabNetem(ctx context.Context, e *env, lf *labFlags, f labNetemFlags, node string) error {
	if f.clear && (f.delay != "" || f.jitter != "" || f.loss != "") {
		return &UsageError{Err: errors.New("--clear cannot be combined with --delay, --jitter or --loss")}
	}
	l, err := lf.open(e, "")
	if err != nil {
		return err
	}
	if f.clear {
		return l.ClearNetem(ctx, node)
	}
	n, err := lab.ParseNetem(f.delay, f.jitter, f.loss)
	if err != nil {
		return &UsageError{Err: err}
	}
	return l.Netem(ctx, node, n)
}

// newLabForwardCmd is the forwarder process lab netem starts; not for people.
func newLabForwardCmd(e *env) *cobra.Command {
	var fw lab.ForwarderConfig
	var loss float64
	cmd := &cobra.Command{
		Use:    "netem-forward",
		Short:  "Relay a node's frames with netem degradation (started by 'lab netem')",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fw.Netem.Loss = loss
			return lab.RunForwarder(cmd.Context(), fw, e.stdout)
		},
	}
	cmd.Flags().StringVar(&fw.Port, "port", "", "the node's bridge-side interface")
	cmd.Flags().StringVar(&fw.Tap, "tap", "", "the forwarder's interface towards the bridge")
	cmd.Flags().DurationVar(&fw.Netem.Delay, "delay", 0, "delay")
	cmd.Flags().DurationVar(&fw.Netem.Jitter, "jitter", 0, "jitter")
	cmd.Flags().Float64Var(&loss, "loss", 0, "loss percentage")
	return cmd
}

func newLabDownCmd(e *env, lf *labFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove every process, mount, overlay, namespace and link of the lab",
		Long: `Kills the nodes, unmounts their overlays, deletes the lab's network
namespaces (and with them its bridge and links), its cgroups and its state
directory. It works from the state file and from scanning the system, so it
also cleans up after a crash. Running it again, or on a lab that is not up,
does nothing. The cached base image is kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lf.open(e, "")
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
}
