// Package nftban enforces guard's bans in the kernel: a table of its own,
// tandem-guard (family inet), whose input chain runs before the ordinary
// filter and drops every packet, new or established, from an address in
// one of two timeout sets (IPv4 and IPv6). Each element carries the time
// its ban has left, so the kernel lifts it on time even when tandem has
// crashed; the sets are never flushed at start, only reconciled, so a
// restarted agent keeps every ban the kernel holds.
package nftban

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/nft"
)

// Names of the kernel objects, for operators and tests ('nft list table
// inet tandem-guard').
const (
	Table = "tandem-guard"
	Chain = "input"
	Set4  = "bans4"
	Set6  = "bans6"
)

// Tolerance is how far an element's remaining time may drift from its
// ban's before the element is renewed: the kernel counts in jiffies and
// a sync takes a moment, so exact equality never holds.
const Tolerance = 2 * time.Second

var (
	v4 = nft.AddrSet{Table: Table, Name: Set4, Timeout: true}
	v6 = nft.AddrSet{Table: Table, Name: Set6, IPv6: true, Timeout: true}
)

// Enforcer keeps the ban sets of one network namespace in line.
type Enforcer struct {
	netnsFd int
	mu      sync.Mutex
	conn    *nft.Conn
	ready   bool
}

// New returns an Enforcer for the namespace open at netnsFd, or the
// caller's when netnsFd < 0. Nothing is touched until the first Enforce.
func New(netnsFd int) *Enforcer { return &Enforcer{netnsFd: netnsFd} }

// Enforce makes the sets hold exactly bans, each for its time left:
// missing addresses are added, lifted ones removed, and an element whose
// remaining time is off by more than Tolerance (a ban renewed or
// shortened) is replaced in the same transaction.
func (e *Enforcer) Enforce(_ context.Context, bans map[netip.Addr]time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		c, err := nft.Open(e.netnsFd)
		if err != nil {
			return err
		}
		e.conn = c
	}
	var err error
	// A failure may mean the table was deleted by hand: rebuild it and
	// try once more.
	for range 2 {
		if err = e.enforce(bans); err == nil {
			return nil
		}
		e.ready = false
	}
	return err
}

func (e *Enforcer) enforce(bans map[netip.Addr]time.Duration) error {
	if !e.ready {
		if err := e.conn.EnsureDropSources(Table, nft.InputBefore(Chain), v4, v6); err != nil {
			return err
		}
		e.ready = true
	}
	for _, s := range []nft.AddrSet{v4, v6} {
		if err := e.sync(s, bans); err != nil {
			return err
		}
	}
	return nil
}

func (e *Enforcer) sync(s nft.AddrSet, bans map[netip.Addr]time.Duration) error {
	have, err := e.conn.Timed(s)
	if err != nil {
		return err
	}
	var remove []netip.Addr
	var add []nft.Element
	present := map[netip.Addr]bool{}
	for _, el := range have {
		left, ok := bans[el.Addr]
		switch {
		case !ok || left <= 0:
			remove = append(remove, el.Addr)
		case el.Expires-left > Tolerance || left-el.Expires > Tolerance:
			remove = append(remove, el.Addr)
			add = append(add, nft.Element{Addr: el.Addr, Timeout: min(left, nft.MaxElementTimeout)})
			present[el.Addr] = true
		default:
			present[el.Addr] = true
		}
	}
	for a, left := range bans {
		if a.Is6() == s.IPv6 && !present[a] && left > 0 {
			add = append(add, nft.Element{Addr: a, Timeout: min(left, nft.MaxElementTimeout)})
		}
	}
	if err := e.conn.ChangeTimed(s, remove, add); err != nil {
		return fmt.Errorf("guard bans: %w", err)
	}
	return nil
}

// Banned lists the kernel's bans with the time each has left (for status
// and tests).
func (e *Enforcer) Banned() (map[netip.Addr]time.Duration, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		c, err := nft.Open(e.netnsFd)
		if err != nil {
			return nil, err
		}
		e.conn = c
	}
	out := map[netip.Addr]time.Duration{}
	for _, s := range []nft.AddrSet{v4, v6} {
		els, err := e.conn.Timed(s)
		if err != nil {
			return nil, err
		}
		for _, el := range els {
			out[el.Addr] = el.Expires
		}
	}
	return out, nil
}
