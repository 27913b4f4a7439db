// Package health runs a node's local health checks (http, tcp, exec and
// systemd) and turns their raw pass/fail results into a stable verdict with
// keepalived-style rise/fall hysteresis.
//
// Each check runs on its own goroutine and ticker, so a slow or hung check
// never delays the others, and every probe is bounded by its timeout through
// its context. A check starts unhealthy and becomes healthy after Rise
// consecutive passes; a healthy check becomes unhealthy after Fall consecutive
// failures. Any transition is signalled on Changes so that the failover
// controller can react at once instead of waiting for its next poll.
//
// The package deliberately knows nothing about tandem.toml: the agent maps
// the configuration into Check values made of standard types.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Check types.
const (
	TypeHTTP    = "http"
	TypeTCP     = "tcp"
	TypeExec    = "exec"
	TypeSystemd = "systemd"
)

// Defaults applied to zero fields of a Check; they match tandem.toml's.
const (
	DefaultInterval   = 200 * time.Millisecond
	DefaultMaxTimeout = time.Second // the default timeout is min(10 × interval, this)
	DefaultRise       = 3
	DefaultFall       = 2
	DefaultStatus     = http.StatusOK
)

// MaxOutput bounds the output and error text kept per check, so a chatty
// check cannot bloat status reports or memory. Exec checks keep the last
// MaxOutput bytes of their combined output.
const MaxOutput = 4096

// Check is the specification of one health check.
type Check struct {
	Name string
	Type string // TypeHTTP, TypeTCP, TypeExec or TypeSystemd

	// Target is the URL for http checks and HOST:PORT for tcp checks.
	Target string

	// http only.
	Status   int    // expected status code; 0 means 200
	Body     string // substring the body must contain; "" skips the test
	JSONPath string // dotted path of a field in a JSON body, e.g. "checks.db.status"
	JSONWant string // the value that field must have, compared as text

	Command []string // exec: argv; exit status 0 passes
	Unit    string   // systemd: the unit that must be active

	Interval time.Duration // time between the starts of two probes
	Timeout  time.Duration // bound on one probe
	Rise     int           // consecutive passes to become healthy
	Fall     int           // consecutive failures to become unhealthy
}

// Options tunes a Runner. The zero value is usable.
type Options struct {
	// OnResult, if set, is called after every probe with its raw outcome
	// (before hysteresis). It is meant for metrics and must not block.
	OnResult func(name string, ok bool, d time.Duration)

	// HTTPClient overrides the client used by http checks. The default does
	// not follow redirects (so Status can name a 3xx), uses no proxy and no
	// keep-alive, so every probe exercises the server's accept path.
	HTTPClient *http.Client

	// Systemctl is the systemctl binary used by systemd checks; default
	// "systemctl" from PATH.
	Systemctl string
}

// Report is a point-in-time view of every check.
type Report struct {
	// Healthy is true when every check is healthy. A node with no checks
	// is healthy.
	Healthy bool `json:"healthy"`
	// Since is when Healthy last changed, or when Run started if it never
	// has; zero before Run and when there are no checks.
	Since  time.Time     `json:"since,omitzero"`
	Checks []CheckStatus `json:"checks"`
}

// UnhealthyFor returns how long the node has been unhealthy at now, or 0 if
// it is healthy. The failover controller uses it to date a fault.
func (r Report) UnhealthyFor(now time.Time) time.Duration {
	if r.Healthy || r.Since.IsZero() {
		return 0
	}
	return max(now.Sub(r.Since), 0)
}

// CheckStatus is the state of one check.
type CheckStatus struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Healthy bool   `json:"healthy"`
	// Passes and Fails count consecutive raw results; one of them is zero
	// once the check has run.
	Passes int `json:"consecutive_passes"`
	Fails  int `json:"consecutive_fails"`
	// Output is what the last probe produced (bounded by MaxOutput): the
	// exec output tail, the HTTP status line and body excerpt, the unit state.
	Output string `json:"output,omitempty"`
	// Error says why the last probe failed; "" when it passed.
	Error        string        `json:"error,omitempty"`
	LastDuration time.Duration `json:"last_duration_ns"`
	LastRun      time.Time     `json:"last_run,omitzero"` // zero until the first probe ends
	Since        time.Time     `json:"since,omitzero"`    // last change of Healthy; zero if never
}

// Failing returns the names and last errors of the unhealthy checks, as
// "name: error" strings, for status output and failover reasons.
func (r Report) Failing() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Healthy {
			continue
		}
		msg := c.Error
		switch {
		case c.LastRun.IsZero():
			msg = "not run yet"
		case msg == "":
			msg = fmt.Sprintf("rising (%d consecutive passes)", c.Passes)
		}
		out = append(out, c.Name+": "+msg)
	}
	return out
}

// probeFunc performs one probe. It returns what the probe produced and a
// non-nil error when the check failed. It must honour ctx.
type probeFunc func(ctx context.Context) (output string, err error)

type check struct {
	spec  Check
	probe probeFunc
	st    CheckStatus // guarded by Runner.mu
}

// Runner runs a set of checks and keeps their hysteresis state.
type Runner struct {
	logger   *slog.Logger
	onResult func(string, bool, time.Duration)
	checks   []*check
	changes  chan struct{}

	mu           sync.Mutex
	started      bool
	overall      bool      // every check healthy, as of the last record
	overallSince time.Time // when overall last changed, or Run's start
}

// New validates specs, fills zero fields with defaults and returns a Runner.
// Nothing runs until Run is called.
func New(specs []Check, logger *slog.Logger, opts Options) (*Runner, error) {
	if logger == nil {
		return nil, errors.New("health: nil logger")
	}
	do := plainHTTP(defaultHTTPClient())
	if opts.HTTPClient != nil {
		do = opts.HTTPClient.Do
	}
	systemctl := opts.Systemctl
	if systemctl == "" {
		systemctl = "systemctl"
	}
	r := &Runner{
		logger:   logger,
		onResult: opts.OnResult,
		changes:  make(chan struct{}, 1),
	}
	seen := map[string]bool{}
	var errs []error
	for i, s := range specs {
		s = withDefaults(s)
		if err := validate(s); err != nil {
			errs = append(errs, fmt.Errorf("health check %d (%q): %w", i, s.Name, err))
			continue
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("health check %d: duplicate name %q", i, s.Name))
			continue
		}
		seen[s.Name] = true
		c := &check{spec: s, st: CheckStatus{Name: s.Name, Type: s.Type}}
		switch s.Type {
		case TypeHTTP:
			c.probe = httpProbe(do, s)
		case TypeTCP:
			c.probe = tcpProbe(s.Target)
		case TypeExec:
			c.probe = execProbe(s.Command)
		case TypeSystemd:
			c.probe = systemdProbe(systemctl, s.Unit)
		}
		r.checks = append(r.checks, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func withDefaults(s Check) Check {
	if s.Name == "" {
		s.Name = s.Type
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout == 0 {
		s.Timeout = min(10*s.Interval, DefaultMaxTimeout)
	}
	if s.Rise == 0 {
		s.Rise = DefaultRise
	}
	if s.Fall == 0 {
		s.Fall = DefaultFall
	}
	if s.Type == TypeHTTP && s.Status == 0 {
		s.Status = DefaultStatus
	}
	return s
}

func validate(s Check) error {
	switch s.Type {
	case TypeHTTP:
		u, err := url.Parse(s.Target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("target %q is not an http:// or https:// URL", s.Target)
		}
		if s.Status < 100 || s.Status > 599 {
			return fmt.Errorf("status %d is not an HTTP status code", s.Status)
		}
		if (s.JSONPath == "") != (s.JSONWant == "") {
			return errors.New("json path and wanted value go together; set both or neither")
		}
		if s.JSONPath != "" {
			if err := validPath(s.JSONPath); err != nil {
				return err
			}
		}
	case TypeTCP:
		if i := strings.LastIndexByte(s.Target, ':'); i <= 0 || i == len(s.Target)-1 {
			return fmt.Errorf("target %q is not HOST:PORT", s.Target)
		}
	case TypeExec:
		if len(s.Command) == 0 || s.Command[0] == "" {
			return errors.New("exec check needs a command")
		}
	case TypeSystemd:
		if s.Unit == "" {
			return errors.New("systemd check needs a unit")
		}
	default:
		return fmt.Errorf("unknown type %q; use http, tcp, exec or systemd", s.Type)
	}
	if s.Interval <= 0 || s.Timeout <= 0 {
		return errors.New("interval and timeout must be positive")
	}
	if s.Rise < 1 || s.Fall < 1 {
		return errors.New("rise and fall must be at least 1")
	}
	return nil
}

// Changes returns a channel that receives a value after any check changes
// between healthy and unhealthy. Notifications coalesce: a reader that falls
// behind sees one value for many transitions, so it should re-read Snapshot
// rather than count values.
func (r *Runner) Changes() <-chan struct{} { return r.changes }

// Snapshot returns the current state of every check, in the order given to New.
func (r *Runner) Snapshot() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{Healthy: r.allHealthy(), Since: r.overallSince, Checks: make([]CheckStatus, len(r.checks))}
	for i, c := range r.checks {
		rep.Checks[i] = c.st
	}
	return rep
}

// Run probes every check on its own ticker until ctx ends, then returns nil
// once every probe has stopped. The first probe of each check starts at once.
// Run may be called only once.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("health: Run called twice")
	}
	r.started = true
	if len(r.checks) > 0 {
		r.overallSince = time.Now()
	}
	r.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range r.checks {
		wg.Go(func() { r.loop(ctx, c) })
	}
	wg.Wait()
	return nil
}

// loop runs c every interval. Probes start on multiples of the interval on
// the wall clock, as the liveness mesh's rounds do, so an idle agent's
// periodic work shares its wake-ups; a probe that overran its interval is
// followed by the next one at once.
func (r *Runner) loop(ctx context.Context, c *check) {
	every := c.spec.Interval
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		start := time.Now()
		r.runOnce(ctx, c)
		wait := time.Until(time.Now().Truncate(every).Add(every))
		if time.Since(start) >= every {
			wait = 0 // it overran: no further delay, as a ticker would
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) runOnce(ctx context.Context, c *check) {
	pctx, cancel := context.WithTimeout(ctx, c.spec.Timeout)
	start := time.Now()
	out, err := c.probe(pctx)
	d := time.Since(start)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe says nothing about health
	}
	if err != nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", c.spec.Timeout, err)
	}
	r.record(c, out, err, d, start.Add(d))
	if r.onResult != nil {
		r.onResult(c.spec.Name, err == nil, d)
	}
}

// allHealthy reports whether every check is healthy; r.mu must be held.
func (r *Runner) allHealthy() bool {
	for _, c := range r.checks {
		if !c.st.Healthy {
			return false
		}
	}
	return true
}

// record applies one raw result to the check's hysteresis state.
func (r *Runner) record(c *check, out string, err error, d time.Duration, at time.Time) {
	r.mu.Lock()
	st := &c.st
	was := st.Healthy
	st.Output = truncate(out, MaxOutput)
	st.Error = ""
	st.LastDuration = d
	st.LastRun = at
	if err == nil {
		st.Passes++
		st.Fails = 0
		if !st.Healthy && st.Passes >= c.spec.Rise {
			st.Healthy = true
		}
	} else {
		st.Error = truncate(err.Error(), MaxOutput)
		st.Fails++
		st.Passes = 0
		if st.Healthy && st.Fails >= c.spec.Fall {
			st.Healthy = false
		}
	}
	changed := st.Healthy != was
	if changed {
		st.Since = at
		if all := r.allHealthy(); all != r.overall {
			r.overall, r.overallSince = all, at
		}
	}
	snap := *st
	r.mu.Unlock()

	if !changed {
		if err != nil {
			r.logger.Debug("health check failed", "check", snap.Name, "error", snap.Error, "consecutive_fails", snap.Fails)
		}
		return
	}
	select {
	case r.changes <- struct{}{}:
	default: // a notification is already pending; the reader will see this state too
	}
	if snap.Healthy {
		r.logger.Info("health check is healthy", "check", snap.Name, "type", snap.Type, "consecutive_passes", snap.Passes)
	} else {
		r.logger.Warn("health check is unhealthy", "check", snap.Name, "type", snap.Type,
			"consecutive_fails", snap.Fails, "error", snap.Error, "output", truncate(snap.Output, 512))
	}
}

// truncate cuts s to at most n bytes on a rune boundary and makes it valid
// UTF-8, so it is safe to print and to encode as JSON.
func truncate(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && cut > n-4 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
