package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// CommandRunner runs a command and returns its combined output. Units uses
// it to call systemctl; tests substitute a recording fake.
type CommandRunner interface {
	Run(ctx context.Context, name string, args ...string) (output []byte, err error)
}

// ExecRunner is the CommandRunner that runs real processes. A command runs
// in its own process group, which is killed when ctx ends.
type ExecRunner struct{}

// maxCommandOutput bounds the output ExecRunner keeps.
const maxCommandOutput = 4096

// Run implements CommandRunner.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	setProcessGroup(cmd, 100*time.Millisecond)
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		err = nil
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (killed: %w)", err, context.Cause(ctx))
	}
	return out.Bytes(), err
}

// limitedBuffer keeps the first maxCommandOutput bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxCommandOutput - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.buf)
}

// DefaultUnitTimeout bounds one systemctl call when UnitsOptions.Timeout is
// zero; it matches systemd's DefaultTimeoutStartSec.
const DefaultUnitTimeout = 90 * time.Second

// UnitsOptions configures Units. The zero value uses the real systemctl.
type UnitsOptions struct {
	Runner    CommandRunner // default ExecRunner{}
	Systemctl string        // default "systemctl"
	Timeout   time.Duration // per systemctl call; default DefaultUnitTimeout
}

// Units starts and stops the systemd units that must run only on the holder.
// Start and Stop are serialised, so they never interleave.
type Units struct {
	logger    *slog.Logger
	names     []string
	runner    CommandRunner
	systemctl string
	timeout   time.Duration

	mu sync.Mutex
}

// NewUnits returns Units for the named systemd units, in start order.
func NewUnits(names []string, logger *slog.Logger, opts UnitsOptions) (*Units, error) {
	if logger == nil {
		return nil, errors.New("units: nil logger")
	}
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, "/ \t\r\n") || strings.HasPrefix(n, "-") {
			return nil, fmt.Errorf("primary unit %q is not a systemd unit name (like \"scheduler.service\")", n)
		}
	}
	u := &Units{
		logger:    logger,
		names:     slices.Clone(names),
		runner:    opts.Runner,
		systemctl: opts.Systemctl,
		timeout:   opts.Timeout,
	}
	if u.runner == nil {
		u.runner = ExecRunner{}
	}
	if u.systemctl == "" {
		u.systemctl = "systemctl"
	}
	if u.timeout <= 0 {
		u.timeout = DefaultUnitTimeout
	}
	return u, nil
}

// Names returns the units in start order.
func (u *Units) Names() []string { return slices.Clone(u.names) }

// Start starts every unit in order with `systemctl start`, which waits until
// each is up. A unit that fails to start does not stop the others; all
// failures are returned joined.
func (u *Units) Start(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var errs []error
	for _, n := range u.names {
		errs = append(errs, u.systemctlDo(ctx, "start", n))
	}
	return errors.Join(errs...)
}

// Stop stops every unit in reverse order with `systemctl stop`, which waits
// until each is down. Stopping a stopped unit succeeds, so Stop is safe to
// repeat. All failures are returned joined.
func (u *Units) Stop(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var errs []error
	for _, n := range slices.Backward(u.names) {
		errs = append(errs, u.systemctlDo(ctx, "stop", n))
	}
	return errors.Join(errs...)
}

func (u *Units) systemctlDo(ctx context.Context, verb, unit string) error {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	start := time.Now()
	out, err := u.runner.Run(ctx, u.systemctl, verb, "--", unit)
	msg := strings.TrimSpace(string(out))
	if err != nil {
		if msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		u.logger.Error("primary unit "+verb+" failed", "unit", unit, "err", err)
		return fmt.Errorf("%s primary unit %s: %w", verb, unit, err)
	}
	u.logger.Info("primary unit "+verb, "unit", unit, "took", time.Since(start))
	return nil
}
