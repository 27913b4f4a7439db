// Command failover is `make bench-failover`: it boots a lab of two app nodes
// and a witness, and measures in one run, on the same topology, how long a
// client talking to the floating IP is cut off when the holder loses power
// and when the holder's app fails, first for tandem with its default
// settings and then for Debian's keepalived configured as a peer would
// (advert_int 1, a vrrp_script running the same health check). It prints the
// median, p95 and max outage per system and fault, the split-brain samples,
// the ratio of the medians and the goals of issue 3 with PASS or FAIL, and
// exits 1 when a goal fails. It is a benchmark, not a timed test. It needs
// root and always tears its lab down.
//
// With -idle it also measures, before each system's trials, the CPU and
// memory each node's processes of that system use while nothing happens
// (`make bench-idle` runs that alone, with -trials 0), against issue 8's
// goal of an idle agent at most 1% of a core.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
)

// options are the command-line flags.
type options struct {
	tandemBin    string
	trials       int
	jsonPath     string
	labName      string
	trialTimeout time.Duration
	cooloff      time.Duration
	jitter       time.Duration
	threshold    int
	systems      []string
	keep         bool
	idle         time.Duration
	idleSettle   time.Duration
}

// errGoals marks a run that measured everything but missed a goal.
var errGoals = errors.New("a goal was missed")

func main() {
	var o options
	var systems string
	flag.StringVar(&o.tandemBin, "tandem-bin", "bin/tandem", "tandem binary to package and install on the nodes (make build)")
	flag.IntVar(&o.trials, "trials", 20, "trials per system and fault type")
	flag.StringVar(&o.jsonPath, "json", "", "write every trial's raw figures to this file as JSON")
	flag.StringVar(&o.labName, "lab", "bench", "name of the lab the benchmark creates and removes")
	flag.DurationVar(&o.trialTimeout, "trial-timeout", 20*time.Second, "a trial with no successful request this long after the fault fails")
	flag.DurationVar(&o.cooloff, "cooloff", 6*time.Second, "wait at least this long after a move before the next fault (tandem's linux cool-off is 5s)")
	flag.DurationVar(&o.jitter, "jitter", time.Second, "wait a random time up to this before each fault, so faults hit the systems' 1 s timers at every phase")
	flag.IntVar(&o.threshold, "failure-threshold", 100, "tandem's failover.failure_threshold for the run; 0 keeps tandem's default (3 in 10m), which penalises both nodes after a few trials and backs app-failure moves off")
	flag.StringVar(&systems, "systems", "tandem,keepalived", "comma-separated systems to measure, in order")
	flag.DurationVar(&o.idle, "idle", 0, "also measure each system's idle CPU and memory over this window (at least 60s is meaningful), before its trials; 0 skips it")
	// 45s: an agent's first harden audit (sshd -T, nft, dpkg queries; then
	// hourly) runs 30s after it starts, the last node's starting about
	// when the cluster is ready. Its ~0.1s of CPU is idle work of an hour,
	// not of the minute the window measures.
	flag.DurationVar(&o.idleSettle, "idle-settle", 45*time.Second, "wait this long after a system is ready before measuring it idle (past tandem's first hourly harden audit, 30s after start)")
	flag.BoolVar(&o.keep, "keep", false, "leave the lab up at the end (debugging; remove it with 'tandem lab down --name bench')")
	flag.Parse()
	if err := o.validate(systems); err != nil {
		fmt.Fprintln(os.Stderr, "bench-failover:", err)
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o, os.Stdout)
	stop()
	switch {
	case errors.Is(err, errGoals):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench-failover:", err)
		os.Exit(1)
	}
}

func (o *options) validate(systems string) error {
	if o.trials < 0 || (o.trials == 0 && o.idle <= 0) {
		return fmt.Errorf("-trials must be at least 1 (or 0 with -idle), got %d", o.trials)
	}
	if o.idle < 0 || o.idleSettle < 0 {
		return fmt.Errorf("-idle and -idle-settle must not be negative")
	}
	if o.trialTimeout < time.Second {
		return fmt.Errorf("-trial-timeout must be at least 1s, got %v", o.trialTimeout)
	}
	if o.jitter < 0 {
		return fmt.Errorf("-jitter must not be negative")
	}
	if o.threshold < 0 || o.threshold > 100 {
		return fmt.Errorf("-failure-threshold must be 0 (tandem's default) to 100")
	}
	for _, s := range strings.Split(systems, ",") {
		s = strings.TrimSpace(s)
		if s != systemTandem && s != systemKeepalived {
			return fmt.Errorf("-systems: unknown system %q; use tandem and/or keepalived", s)
		}
		o.systems = append(o.systems, s)
	}
	abs, err := filepath.Abs(o.tandemBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err != nil {
		return fmt.Errorf("-tandem-bin %s: %w (run make build)", abs, err)
	}
	o.tandemBin = abs
	return nil
}

// run boots the lab, measures every series, prints the report and tears
// the lab down whatever happens.
func run(ctx context.Context, o options, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the lab needs root: run it as root (sudo make bench-failover)")
	}
	// Others may rebuild bin/tandem while the benchmark runs: use a copy.
	tmp, err := os.MkdirTemp("", "bench-failover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.tandemBin, err = copyExe(o.tandemBin, filepath.Join(tmp, "tandem")); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := lab.New(lab.Options{Name: o.labName, Exe: o.tandemBin, Logger: logger})
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	version := "unknown"
	if v, err := exec.CommandContext(ctx, o.tandemBin, "version").Output(); err == nil {
		version = strings.TrimSpace(string(v))
	}
	fmt.Fprintf(out, "bench-failover: tandem %s, %d trials per system and fault, idle window %v, lab %q on %s, %s\n",
		version, o.trials, o.idle, o.labName, host, time.Now().UTC().Format(time.RFC3339))

	upErr := l.Up(ctx, lab.UpOptions{Nodes: 2, Witness: true, Progress: out})
	if errors.Is(upErr, lab.ErrExists) {
		return fmt.Errorf("%w\n(an earlier run was killed before it could clean up; 'tandem lab down --name %s' removes it)", upErr, o.labName)
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(out, "lab %s left up (-keep); remove it with: tandem lab down --name %s\n", o.labName, o.labName)
			return
		}
		fmt.Fprintf(out, "tearing down lab %s\n", o.labName)
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if derr := l.Down(dctx); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down lab %s: %w", o.labName, derr))
		}
	}()
	if upErr != nil {
		return fmt.Errorf("lab up: %w", upErr)
	}
	extra := ""
	if o.threshold > 0 {
		extra = fmt.Sprintf("[failover]\nfailure_threshold = %d\n", o.threshold)
	}
	if err := labcluster.Provision(ctx, l, labcluster.Options{Exe: o.tandemBin, Progress: out, Logger: logger, Config: extra}); err != nil {
		return fmt.Errorf("provision tandem: %w", err)
	}

	b, err := newBench(l, o, out)
	if err != nil {
		return err
	}
	defer b.close()
	rep := &report{Trials: o.trials, Lab: o.labName, Host: host, TandemVersion: version, Started: time.Now().UTC(),
		JitterMs:       float64(o.jitter) / float64(time.Millisecond),
		TandemSettings: tandemSettings(o.threshold)}
	var runErr error
	for _, name := range o.systems {
		if ctx.Err() != nil {
			break
		}
		var sys system
		switch name {
		case systemTandem:
			sys = &tandemSystem{b: b}
			if o.idle > 0 {
				figs, err := measureIdle(ctx, b, systemTandem, "tandem", []string{"node1", "node2", lab.WitnessName}, o.idleSettle, o.idle)
				rep.Idle = append(rep.Idle, figs...)
				if err != nil {
					runErr = errors.Join(runErr, fmt.Errorf("tandem idle: %w", err))
				}
			}
		case systemKeepalived:
			fmt.Fprintln(out, "\nswitching the lab from tandem to keepalived")
			k, err := setupKeepalived(ctx, b)
			if err != nil {
				runErr = errors.Join(runErr, fmt.Errorf("keepalived: %w", err))
				rep.Notes = append(rep.Notes, "keepalived could not be set up: "+err.Error())
				continue
			}
			rep.KeepalivedTransport = k.transport
			rep.KeepalivedSettings = k.settings
			sys = k
			if o.idle > 0 {
				figs, err := measureIdle(ctx, b, systemKeepalived, "keepalived", appNodes, o.idleSettle, o.idle)
				rep.Idle = append(rep.Idle, figs...)
				if err != nil {
					runErr = errors.Join(runErr, fmt.Errorf("keepalived idle: %w", err))
				}
			}
		}
		if o.trials == 0 {
			continue
		}
		for _, f := range []string{faultPowerLoss, faultAppFailure} {
			res, err := b.series(ctx, sys, f)
			rep.Results = append(rep.Results, res...)
			if err != nil {
				runErr = errors.Join(runErr, fmt.Errorf("%s %s: %w", name, f, err))
				fmt.Fprintf(out, "%s %s stopped early: %v\n", name, f, err)
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	rep.Finished = time.Now().UTC()
	if o.trials > 0 {
		rep.summarize()
		rep.print(out)
	}
	if o.idle > 0 {
		printIdle(out, rep.Idle, o.idle)
		rep.Goals = append(rep.Goals, idleGoal(rep.Idle))
	}
	if o.jsonPath != "" {
		if err := rep.writeJSON(o.jsonPath); err != nil {
			runErr = errors.Join(runErr, err)
		} else {
			fmt.Fprintf(out, "raw figures: %s\n", o.jsonPath)
		}
	}
	if ctx.Err() != nil {
		return errors.Join(runErr, fmt.Errorf("interrupted: %w", ctx.Err()))
	}
	if runErr != nil {
		return runErr
	}
	if !rep.allPass() {
		return errGoals
	}
	return nil
}

func tandemSettings(threshold int) string {
	if threshold == 0 {
		return "defaults"
	}
	return fmt.Sprintf("defaults, except failover.failure_threshold = %d (default 3 in 10m: the run fails each node about N times in minutes, which would penalise both and back app-failure moves off)", threshold)
}

func copyExe(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", src, err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	return dst, nil
}
