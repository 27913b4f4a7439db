// Package hooks runs the operator's transition hooks and the primary-only
// systemd units when this node gains or loses the floating IP.
//
// Hooks follow keepalived's notify_* semantics: the configured command is
// run as `COMMAND... STATE`, where STATE is keepalived's word for the new
// state (MASTER, BACKUP or FAULT), with the details in the environment:
//
//	TANDEM_STATE   MASTER | BACKUP | FAULT
//	TANDEM_EVENT   promote | demote | fault
//	TANDEM_NODE    this node's name
//	TANDEM_VIP     the floating IP
//	TANDEM_EPOCH   the holder epoch of the transition (decimal)
//	TANDEM_REASON  why, for fault events; empty otherwise
//
// Like keepalived, every event runs: events are queued and handled one at a
// time in the order they were submitted, never concurrently and never
// dropped, so a promote followed by a demote always runs both, in that
// order. Each hook runs in its own process group under a timeout that kills
// the whole group. Its output is logged line by line. A failing hook is
// logged and reported to the submitter; it never stops the queue.
//
// Primary units are systemd units that must run only on the holder (a job
// scheduler, say). On promote the hook runs first and the units are then
// started in order; on demote and fault the units are stopped first, in
// reverse order, and the hook runs after: teardown mirrors setup.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/shellwords"
)

// Event is a holder transition.
type Event string

// The events, named for what happened to this node.
const (
	EventPromote Event = "promote" // it acquired the floating IP
	EventDemote  Event = "demote"  // it released it in an orderly way
	EventFault   Event = "fault"   // it dropped it because of a fault (lost quorum)
)

// State returns keepalived's name for the state the event enters:
// MASTER, BACKUP or FAULT, or "" for an unknown event.
func (e Event) State() string {
	switch e {
	case EventPromote:
		return "MASTER"
	case EventDemote:
		return "BACKUP"
	case EventFault:
		return "FAULT"
	}
	return ""
}

// DefaultTimeout bounds one hook run when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// ErrStopped is returned for events submitted after Run has returned.
var ErrStopped = errors.New("hooks: runner stopped")

// Options configures a Runner.
type Options struct {
	Node string // TANDEM_NODE
	VIP  string // TANDEM_VIP

	// Command lines for each event; "" runs nothing. A line is split into
	// words like a shell would without expanding anything: whitespace
	// separates, and single quotes, double quotes and backslashes quote.
	Promote string
	Demote  string
	Fault   string

	// Timeout bounds each hook run; zero means DefaultTimeout.
	Timeout time.Duration

	// Units, if set, are started after the promote hook and stopped before
	// the demote and fault hooks.
	Units *Units

	// OnResult, if set, is called after each event has been handled, with
	// the joined hook and unit errors. It is meant for metrics and must not block.
	OnResult func(ev Event, err error, d time.Duration)
}

type item struct {
	ev     Event
	epoch  uint64
	reason string
	done   chan error // buffered; receives exactly one value
}

// Runner queues transition events and handles them one at a time.
type Runner struct {
	logger   *slog.Logger
	node     string
	vip      string
	cmds     map[Event][]string
	timeout  time.Duration
	units    *Units
	onResult func(Event, error, time.Duration)
	wake     chan struct{}

	mu      sync.Mutex
	queue   []*item
	started bool
	stopped bool
}

// New parses the hook command lines and returns a Runner. Events submitted
// before Run starts are kept and run once it does.
func New(logger *slog.Logger, opts Options) (*Runner, error) {
	if logger == nil {
		return nil, errors.New("hooks: nil logger")
	}
	r := &Runner{
		logger:   logger,
		node:     opts.Node,
		vip:      opts.VIP,
		cmds:     map[Event][]string{},
		timeout:  opts.Timeout,
		units:    opts.Units,
		onResult: opts.OnResult,
		wake:     make(chan struct{}, 1),
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	for ev, line := range map[Event]string{EventPromote: opts.Promote, EventDemote: opts.Demote, EventFault: opts.Fault} {
		argv, err := shellwords.Split(line)
		if err != nil {
			return nil, fmt.Errorf("%s hook %q: %w", ev, line, err)
		}
		if len(argv) > 0 {
			r.cmds[ev] = argv
		}
	}
	return r, nil
}

// Promote queues a promote event. It never blocks; the outcome is logged.
// With Demote and Fault it satisfies the failover controller's Events seam.
func (r *Runner) Promote(epoch uint64) { r.Submit(EventPromote, epoch, "") }

// Demote queues a demote event. It never blocks; the outcome is logged.
func (r *Runner) Demote(epoch uint64) { r.Submit(EventDemote, epoch, "") }

// Fault queues a fault event with its reason. It never blocks; the outcome
// is logged.
func (r *Runner) Fault(epoch uint64, reason string) { r.Submit(EventFault, epoch, reason) }

// Submit queues an event behind every event submitted before it and returns
// a channel that receives the outcome once it has been handled: nil, or the
// hook's and units' errors joined. Submit never blocks and never drops an
// event; the caller may ignore the channel.
func (r *Runner) Submit(ev Event, epoch uint64, reason string) <-chan error {
	done := make(chan error, 1)
	if ev.State() == "" {
		done <- fmt.Errorf("hooks: unknown event %q", ev)
		return done
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		done <- fmt.Errorf("%s epoch %d: %w", ev, epoch, ErrStopped)
		return done
	}
	r.queue = append(r.queue, &item{ev: ev, epoch: epoch, reason: reason, done: done})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default: // the worker is already due to look at the queue
	}
	return done
}

// Exec submits an event and waits for its outcome. If ctx ends first, Exec
// returns ctx's error but the event stays queued and still runs.
func (r *Runner) Exec(ctx context.Context, ev Event, epoch uint64, reason string) error {
	select {
	case err := <-r.Submit(ev, epoch, reason):
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s epoch %d: %w", ev, epoch, context.Cause(ctx))
	}
}

// Pending returns the number of queued events not yet started.
func (r *Runner) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// Run handles queued events in order until ctx ends. It then drains: events
// already queued, and any submitted while it drains, still run with their own
// timeouts (a final demote must stop the primary units even on shutdown), and
// a running hook is not killed by ctx ending. Run returns nil once the queue is
// empty; later submissions fail with ErrStopped. Run may be called only once.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("hooks: Run called twice")
	}
	r.started = true
	r.mu.Unlock()

	hctx := context.WithoutCancel(ctx)
	for {
		if it := r.pop(ctx.Err() != nil); it != nil {
			r.handle(hctx, it)
			continue
		}
		if ctx.Err() != nil {
			return nil // pop marked the runner stopped
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
		}
	}
}

// pop takes the oldest event. If the queue is empty and stopping is set,
// it marks the runner stopped under the same lock, so no event can be
// queued after the last look.
func (r *Runner) pop(stopping bool) *item {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		r.stopped = stopping
		return nil
	}
	it := r.queue[0]
	r.queue[0] = nil
	r.queue = r.queue[1:]
	return it
}

func (r *Runner) handle(ctx context.Context, it *item) {
	start := time.Now()
	err := r.transition(ctx, it)
	d := time.Since(start)
	if err != nil {
		r.logger.Error("transition hooks failed", "event", it.ev, "epoch", it.epoch, "took", d, "err", err)
	} else {
		r.logger.Info("transition hooks done", "event", it.ev, "epoch", it.epoch, "took", d)
	}
	if r.onResult != nil {
		r.onResult(it.ev, err, d)
	}
	it.done <- err
}

// transition runs the hook and the units for one event in setup/teardown order.
func (r *Runner) transition(ctx context.Context, it *item) (err error) {
	defer func() {
		// A hook must never take the agent down with it.
		if p := recover(); p != nil {
			err = fmt.Errorf("%s epoch %d: panic: %v", it.ev, it.epoch, p)
		}
	}()
	var errs []error
	if it.ev == EventPromote {
		errs = append(errs, r.runHook(ctx, it))
		if r.units != nil {
			errs = append(errs, r.units.Start(ctx))
		}
	} else {
		if r.units != nil {
			errs = append(errs, r.units.Stop(ctx))
		}
		errs = append(errs, r.runHook(ctx, it))
	}
	return errors.Join(errs...)
}

func (r *Runner) runHook(ctx context.Context, it *item) error {
	argv := r.cmds[it.ev]
	if len(argv) == 0 {
		return nil
	}
	state := it.ev.State()
	hctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()

	args := append(append([]string(nil), argv[1:]...), state)
	cmd := exec.CommandContext(hctx, argv[0], args...)
	// Later entries win, so these override anything inherited.
	cmd.Env = append(os.Environ(),
		"TANDEM_STATE="+state,
		"TANDEM_EVENT="+string(it.ev),
		"TANDEM_NODE="+r.node,
		"TANDEM_VIP="+r.vip,
		"TANDEM_EPOCH="+strconv.FormatUint(it.epoch, 10),
		"TANDEM_REASON="+it.reason,
	)
	log := r.logger.With("event", it.ev, "epoch", it.epoch, "hook", argv[0])
	stdout := &lineLogger{log: log, stream: "stdout"}
	stderr := &lineLogger{log: log, stream: "stderr"}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd, hookWaitDelay)

	log.Info("running hook", "state", state)
	start := time.Now()
	err := cmd.Run()
	stdout.Flush()
	stderr.Flush()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		err = nil // it succeeded; only a leftover background child held its output
	}
	switch {
	case err == nil:
		log.Info("hook succeeded", "took", time.Since(start))
		return nil
	case errors.Is(hctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s hook %s: timed out after %s, killed: %w", it.ev, argv[0], r.timeout, err)
	default:
		return fmt.Errorf("%s hook %s: %w", it.ev, argv[0], err)
	}
}
