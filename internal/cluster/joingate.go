package cluster

import (
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrTooManyJoins is a join turned away before any check: too many are in
// progress, or its source address sent too many lately. Retry later.
var ErrTooManyJoins = errors.New("too many join attempts; wait a few seconds and retry")

// Join admission limits. A real join is rare and one at a time; these
// bound what anonymous callers can make a node do.
const (
	maxJoinsInFlight = 2 * maxAnonymousPerSource // joins checking or waiting for the join lock: more than one address can hold
	joinRate         = rate.Limit(0.5)           // sustained join attempts per source address per second
	joinBurst        = 10                        // attempts a source may make at once
	maxJoinSources   = 4096                      // remembered source addresses
	joinSourceIdle   = 10 * time.Minute          // a source unseen this long is forgotten
)

// joinGate admits join attempts: a bounded number at once, and a token
// bucket per source address.
type joinGate struct {
	slots chan struct{}

	mu      sync.Mutex
	sources map[string]*joinSource
}

type joinSource struct {
	lim  *rate.Limiter
	seen time.Time
}

func newJoinGate() *joinGate {
	return &joinGate{slots: make(chan struct{}, maxJoinsInFlight), sources: map[string]*joinSource{}}
}

// enter admits one attempt from remote (host:port) at now, or returns
// ErrTooManyJoins. A nil release means refused.
func (g *joinGate) enter(remote string, now time.Time) (release func(), err error) {
	if !g.allow(remote, now) {
		return nil, ErrTooManyJoins
	}
	select {
	case g.slots <- struct{}{}:
		return func() { <-g.slots }, nil
	default:
		return nil, ErrTooManyJoins
	}
}

func (g *joinGate) allow(remote string, now time.Time) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	src, ok := g.sources[host]
	if !ok {
		if len(g.sources) >= maxJoinSources {
			for h, s := range g.sources {
				if now.Sub(s.seen) > joinSourceIdle {
					delete(g.sources, h)
				}
			}
			if len(g.sources) >= maxJoinSources {
				return false // a flood from many addresses: refuse newcomers
			}
		}
		src = &joinSource{lim: rate.NewLimiter(joinRate, joinBurst)}
		g.sources[host] = src
	}
	src.seen = now
	return src.lim.AllowN(now, 1)
}
