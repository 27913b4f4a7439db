package viptest

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Register is an in-memory single-holder IP, for tests of code that drives
// providers (the failover controller, the agent). Each node gets a Provider
// from Node; faults are injected on the register.
type Register struct {
	mu      sync.Mutex
	holder  string
	delay   time.Duration
	failN   int
	failErr error
	calls   map[string]int
}

// NewRegister returns an unheld register.
func NewRegister() *Register { return &Register{calls: map[string]int{}} }

// Node returns the provider for the named node.
func (r *Register) Node(name string) *MemProvider { return &MemProvider{r: r, name: name} }

// Holder is the node holding the IP, "" for none.
func (r *Register) Holder() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holder
}

// SetHolder moves the IP at once, as a third party would.
func (r *Register) SetHolder(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holder = name
}

// SetDelay makes each later Acquire take d before the move lands.
func (r *Register) SetDelay(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay = d
}

// FailNext makes the next n Acquire attempts fail with err.
func (r *Register) FailNext(n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failN, r.failErr = n, err
}

// Calls counts calls by "node method", e.g. "n1 Acquire".
func (r *Register) Calls(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[key]
}

// MemProvider is one node's view of a Register; it implements Provider.
type MemProvider struct {
	r    *Register
	name string
}

// Acquire moves the IP here after the register's delay.
func (p *MemProvider) Acquire(ctx context.Context) error {
	p.r.mu.Lock()
	p.r.calls[p.name+" Acquire"]++
	delay := p.r.delay
	if p.r.failN > 0 {
		p.r.failN--
		err := p.r.failErr
		p.r.mu.Unlock()
		return fmt.Errorf("acquire on %s: %w", p.name, err)
	}
	p.r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acquire on %s: %w", p.name, err)
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("acquire on %s: %w", p.name, ctx.Err())
		case <-t.C:
		}
	}
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.r.holder = p.name
	return nil
}

// Release gives the IP up if this node holds it.
func (p *MemProvider) Release(ctx context.Context) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.r.calls[p.name+" Release"]++
	if p.r.holder == p.name {
		p.r.holder = ""
	}
	return nil
}

// Held reports whether this node holds the IP.
func (p *MemProvider) Held(ctx context.Context) (bool, error) {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	p.r.calls[p.name+" Held"]++
	return p.r.holder == p.name, nil
}

// Close does nothing.
func (p *MemProvider) Close() error { return nil }
