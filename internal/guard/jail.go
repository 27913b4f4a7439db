package guard

import (
	"container/list"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// DefaultMaxTracked bounds the hosts a jail counts failures for. Under an
// attack from more sources than that, the host whose last failure is the
// oldest is forgotten first; a source that keeps failing stays tracked.
const DefaultMaxTracked = 50000

// maxDecisionLine bounds Decision.Line.
const maxDecisionLine = 512

// jail counts failures per host in a sliding window and decides a ban
// when a host reaches maxretry within findtime.
type jail struct {
	cfg    JailConfig
	filter *Filter
	stats  *JailStats

	mu    sync.Mutex
	hosts map[netip.Addr]*list.Element // of *track
	order *list.List                   // tracks, least recently failed first
}

// track is one host's failures still inside the window, oldest first.
type track struct {
	addr  netip.Addr
	times []time.Time // at most maxretry
	last  time.Time
}

// JailStats are a jail's counters, for metrics. Read them with Load.
type JailStats struct {
	Lines     atomic.Uint64 // lines read by the jail's sources
	Matches   atomic.Uint64 // failures counted
	Ignored   atomic.Uint64 // failures of ignored hosts, or exempted by an ignoreregex
	Decisions atomic.Uint64 // bans decided
	Tracked   atomic.Int64  // hosts with failures in the window
	Evicted   atomic.Uint64 // hosts forgotten because the jail tracked too many
}

func newJail(cfg JailConfig, f *Filter) *jail {
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = DefaultMaxTracked
	}
	return &jail{cfg: cfg, filter: f, stats: &JailStats{}, hosts: map[netip.Addr]*list.Element{}, order: list.New()}
}

// failure counts one failure of addr at now and returns the decision when
// it reaches maxretry. line is the failing line, for the decision's record.
func (j *jail) failure(addr netip.Addr, now time.Time, line []byte) (Decision, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.expire(now)
	var t *track
	if el, ok := j.hosts[addr]; ok {
		t = el.Value.(*track)
		j.order.MoveToBack(el)
	} else {
		for len(j.hosts) >= j.cfg.MaxTracked {
			j.forget(j.order.Front())
			j.stats.Evicted.Add(1)
		}
		t = &track{addr: addr, times: make([]time.Time, 0, min(j.cfg.MaxRetry, 8))}
		j.hosts[addr] = j.order.PushBack(t)
	}
	// Drop failures that left the window; keep at most maxretry.
	cut := 0
	for cut < len(t.times) && now.Sub(t.times[cut]) >= j.cfg.FindTime {
		cut++
	}
	t.times = append(t.times[:0], t.times[cut:]...)
	if len(t.times) == j.cfg.MaxRetry {
		t.times = append(t.times[:0], t.times[1:]...)
	}
	t.times = append(t.times, now)
	t.last = now
	j.stats.Matches.Add(1)
	if len(t.times) < j.cfg.MaxRetry {
		j.stats.Tracked.Store(int64(len(j.hosts)))
		return Decision{}, false
	}
	// Decided: start counting afresh, so a host the cluster does not
	// ban (or unbans) needs maxretry new failures for the next decision.
	j.forget(j.hosts[addr])
	j.stats.Decisions.Add(1)
	j.stats.Tracked.Store(int64(len(j.hosts)))
	return Decision{
		Addr:       addr,
		Jail:       j.cfg.Name,
		Failures:   j.cfg.MaxRetry,
		Bantime:    j.cfg.BanTime,
		MaxBantime: j.cfg.BanTimeMax,
		Factor:     j.cfg.BanTimeFactor,
		Line:       recordLine(line),
		At:         now,
	}, true
}

// expire forgets hosts whose last failure left the window; the list is
// ordered by last failure, so it stops at the first recent one.
func (j *jail) expire(now time.Time) {
	for el := j.order.Front(); el != nil; el = j.order.Front() {
		if now.Sub(el.Value.(*track).last) < j.cfg.FindTime {
			return
		}
		j.forget(el)
	}
}

func (j *jail) forget(el *list.Element) {
	t := j.order.Remove(el).(*track)
	delete(j.hosts, t.addr)
}

// recordLine makes a failing line fit for a ban's record: valid UTF-8,
// no control characters, at most maxDecisionLine bytes.
func recordLine(line []byte) string {
	if len(line) > maxDecisionLine*2 {
		line = line[:maxDecisionLine*2]
	}
	s := strings.ToValidUTF8(string(line), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxDecisionLine {
		cut := maxDecisionLine
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
