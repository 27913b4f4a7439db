// Package guard is tandem's ban-deciding engine, the part of fail2ban that
// reads logs: sources (the systemd journal through journalctl, log files
// followed across rotation and truncation), filters (RE2 regexes with a
// <HOST> placeholder, built in for sshd, nginx and tandem's webhook) and
// jails (maxretry failures within findtime). A jail's verdict is a
// Decision; what becomes of it (a ban every node enforces, growing for
// repeat offenders) is the cluster's business, not this package's.
package guard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is the engine's configuration, in standard types; internal/config
// maps tandem.toml's [guard] section onto it.
type Config struct {
	// Ignore lists networks never banned (admin CIDRs). Loopback is always
	// ignored; SetIgnore adds the cluster's members at run time.
	Ignore  []netip.Prefix
	Jails   []JailConfig
	Filters []FilterSpec // user filters, referred to by JailConfig.Filter
	// FromStart reads files from their beginning and the journal's whole
	// history instead of only what is written from now on (tests, replay).
	FromStart bool
	// Journalctl is the journalctl binary (default "journalctl").
	Journalctl string
	// PollInterval is how often a followed file is checked for new lines,
	// rotation and truncation besides inotify's wake-ups (default 250ms).
	PollInterval time.Duration
	// Now is the clock (default time.Now); tests inject theirs.
	Now func() time.Time
}

// JailConfig is one jail: a filter applied to some sources, and the
// thresholds that turn failures into a ban decision.
type JailConfig struct {
	Name   string
	Filter string // a built-in filter or a FilterSpec's name
	Mode   string // the built-in filter's mode ("" for its default)
	// JournalUnits and JournalIdentifiers select journal entries by
	// _SYSTEMD_UNIT ("ssh" means ssh.service) or SYSLOG_IDENTIFIER; an entry
	// matching any of them is read.
	JournalUnits       []string
	JournalIdentifiers []string
	Files              []string // log files, followed across rotation
	MaxRetry           int
	FindTime           time.Duration
	BanTime            time.Duration
	BanTimeMax         time.Duration // 0: bans do not grow
	BanTimeFactor      float64
	MaxTracked         int // hosts counted at once (default DefaultMaxTracked)
}

// Engine reads the jails' sources and calls decide when a host reaches a
// jail's maxretry.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	jails  []*jail
	ignore atomic.Pointer[[]netip.Prefix] // configured + SetIgnore's
	static []netip.Prefix

	decideMu sync.Mutex
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// New checks cfg and compiles the jails' filters.
func New(cfg Config, log *slog.Logger) (*Engine, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Journalctl == "" {
		cfg.Journalctl = "journalctl"
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	e := &Engine{cfg: cfg, log: log, now: cfg.Now}
	e.static = append(slices.Clone(loopback), cfg.Ignore...)
	e.SetIgnore(nil)
	names := map[string]bool{}
	for _, jc := range cfg.Jails {
		if names[jc.Name] {
			return nil, fmt.Errorf("jail %q is defined twice", jc.Name)
		}
		names[jc.Name] = true
		if err := checkJail(jc); err != nil {
			return nil, fmt.Errorf("jail %s: %w", jc.Name, err)
		}
		f, err := ResolveFilter(jc.Filter, jc.Mode, cfg.Filters)
		if err != nil {
			return nil, fmt.Errorf("jail %s: %w", jc.Name, err)
		}
		e.jails = append(e.jails, newJail(jc, f))
	}
	return e, nil
}

func checkJail(jc JailConfig) error {
	switch {
	case jc.Name == "":
		return errors.New("a jail needs a name")
	case jc.MaxRetry < 1:
		return fmt.Errorf("maxretry %d must be at least 1", jc.MaxRetry)
	case jc.FindTime <= 0:
		return fmt.Errorf("findtime %s must be positive", jc.FindTime)
	case jc.BanTime <= 0:
		return fmt.Errorf("bantime %s must be positive", jc.BanTime)
	case jc.BanTimeMax != 0 && jc.BanTimeMax < jc.BanTime:
		return fmt.Errorf("bantime_max %s is below bantime %s", jc.BanTimeMax, jc.BanTime)
	case jc.BanTimeMax != 0 && jc.BanTimeFactor < 1:
		return fmt.Errorf("bantime_factor %g must be at least 1", jc.BanTimeFactor)
	case len(jc.Files) == 0 && len(jc.JournalUnits) == 0 && len(jc.JournalIdentifiers) == 0:
		return errors.New("no source: give journal units or identifiers, or files")
	}
	return nil
}

// ResolveFilter finds a filter by name: a user filter of specs first (so
// a user may redefine a built-in), then a built-in one in mode.
func ResolveFilter(name, mode string, specs []FilterSpec) (*Filter, error) {
	for _, s := range specs {
		if s.Name == name {
			if mode != "" {
				return nil, fmt.Errorf("filter %s is a user filter; it has no modes (remove mode)", name)
			}
			f, err := NewFilter(s)
			if err != nil {
				return nil, fmt.Errorf("filter %s: %w", name, err)
			}
			return f, nil
		}
	}
	if IsBuiltin(name) {
		return Builtin(name, mode)
	}
	msg := fmt.Sprintf("no filter %q: the built-in filters are %s", name, strings.Join(BuiltinNames(), ", "))
	if len(specs) > 0 {
		user := make([]string, 0, len(specs))
		for _, s := range specs {
			user = append(user, s.Name)
		}
		msg += "; the configured ones " + strings.Join(user, ", ")
	}
	return nil, errors.New(msg)
}

// SetIgnore replaces the networks ignored besides the configured ones and
// loopback; the agent passes the cluster members' addresses here.
func (e *Engine) SetIgnore(prefixes []netip.Prefix) {
	all := append(slices.Clone(e.static), prefixes...)
	for i, p := range all {
		all[i] = netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), p.Addr().Unmap().BitLen())).Masked()
	}
	e.ignore.Store(&all)
}

// Ignored reports whether addr is never banned.
func (e *Engine) Ignored(addr netip.Addr) bool {
	for _, p := range *e.ignore.Load() {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// JailCounters is a snapshot of one jail's counters.
type JailCounters struct {
	Jail      string
	Lines     uint64 // lines read by its sources
	Matches   uint64 // failures counted
	Ignored   uint64 // failures of ignored hosts or exempted lines
	Decisions uint64 // bans decided
	Tracked   int64  // hosts with failures in the window now
	Evicted   uint64 // hosts forgotten because too many were tracked
}

// Counters returns every jail's counters, in configuration order.
func (e *Engine) Counters() []JailCounters {
	out := make([]JailCounters, len(e.jails))
	for i, j := range e.jails {
		s := j.stats
		out[i] = JailCounters{Jail: j.cfg.Name, Lines: s.Lines.Load(), Matches: s.Matches.Load(), Ignored: s.Ignored.Load(),
			Decisions: s.Decisions.Load(), Tracked: s.Tracked.Load(), Evicted: s.Evicted.Load()}
	}
	return out
}

// Run reads every jail's sources until ctx ends and calls decide for each
// decision. Calls to decide are serialised; decide should return quickly
// (hand the decision to a queue), since reading waits for it. Run returns
// nil when ctx ends; a source that fails is retried, never fatal.
func (e *Engine) Run(ctx context.Context, decide func(Decision)) error {
	var wg sync.WaitGroup
	// One reader per file, shared by the jails that name it.
	files := map[string][]*jail{}
	var order []string
	for _, j := range e.jails {
		for _, p := range j.cfg.Files {
			if files[p] == nil {
				order = append(order, p)
			}
			files[p] = append(files[p], j)
		}
		if len(j.cfg.JournalUnits)+len(j.cfg.JournalIdentifiers) > 0 {
			wg.Go(func() {
				src := &journalSource{bin: e.cfg.Journalctl, units: j.cfg.JournalUnits, identifiers: j.cfg.JournalIdentifiers,
					fromStart: e.cfg.FromStart, log: e.log.With("jail", j.cfg.Name)}
				src.run(ctx, func(prog string, msg []byte) { e.handle(j, prog, msg, nil, decide) })
			})
		}
	}
	for _, p := range order {
		jails := files[p]
		wg.Go(func() {
			src := &fileSource{path: p, fromStart: e.cfg.FromStart, poll: e.cfg.PollInterval, log: e.log.With("file", p)}
			src.run(ctx, func(line []byte) {
				prog, msg := SplitSyslog(line)
				for _, j := range jails {
					e.handle(j, prog, msg, line, decide)
				}
			})
		})
	}
	wg.Wait()
	return nil
}

// handle runs one message through a jail. line is the whole line for the
// record (nil: prog and msg make it up).
func (e *Engine) handle(j *jail, prog string, msg, line []byte, decide func(Decision)) {
	j.stats.Lines.Add(1)
	res := j.filter.Match(prog, msg)
	if res.Ignored {
		j.stats.Ignored.Add(1)
		return
	}
	if !res.Match {
		return
	}
	if e.Ignored(res.Addr) {
		j.stats.Ignored.Add(1)
		return
	}
	if line == nil {
		line = append(append([]byte(prog), ": "...), msg...)
	}
	d, ok := j.failure(res.Addr, e.now(), line)
	if !ok {
		return
	}
	e.log.Info("ban decided", "jail", d.Jail, "addr", d.Addr, "failures", d.Failures)
	e.decideMu.Lock()
	defer e.decideMu.Unlock()
	decide(d)
}
