package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Element is one address of a timeout set (AddrSet.Timeout): Timeout is
// the time it was added for; Expires, when listed, the time it has left.
type Element struct {
	Addr    netip.Addr
	Timeout time.Duration
	Expires time.Duration
}

// MaxElementTimeout bounds an element's timeout: the kernel keeps it in
// jiffies, and a year is far beyond any ban.
const MaxElementTimeout = 400 * 24 * time.Hour

// ChangeTimed takes remove out of a timeout set and puts add in, each with
// its own timeout (rounded up to a millisecond), in one transaction: a
// reader never sees an address missing while its timeout is renewed
// (remove it and add it again in one call). Every address in remove must
// be in the set, or nothing changes.
func (c *Conn) ChangeTimed(s AddrSet, remove []netip.Addr, add []Element) error {
	if !s.Timeout {
		return fmt.Errorf("nftables set %s: not a timeout set", s.Name)
	}
	dels, err := s.elements(remove)
	if err != nil {
		return err
	}
	adds := make([]nftables.SetElement, 0, len(add))
	for _, e := range add {
		one, err := s.elements([]netip.Addr{e.Addr})
		if err != nil {
			return err
		}
		if e.Timeout <= 0 || e.Timeout > MaxElementTimeout {
			return fmt.Errorf("nftables set %s: timeout %v of %v must be positive and at most %v", s.Name, e.Timeout, e.Addr, MaxElementTimeout)
		}
		one[0].Timeout = e.Timeout.Round(time.Millisecond)
		if one[0].Timeout < e.Timeout {
			one[0].Timeout += time.Millisecond
		}
		adds = append(adds, one[0])
	}
	if len(dels) == 0 && len(adds) == 0 {
		return nil
	}
	set := s.set()
	if len(dels) > 0 {
		if err := c.c.SetDeleteElements(set, dels); err != nil {
			return fmt.Errorf("nftables: delete from set %s: %w", s.Name, err)
		}
	}
	if len(adds) > 0 {
		if err := c.c.SetAddElements(set, adds); err != nil {
			return fmt.Errorf("nftables: add to set %s: %w", s.Name, err)
		}
	}
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: change set %s (-%d +%d): %w", s.Name, len(dels), len(adds), err)
	}
	return nil
}

// Timed lists a timeout set's elements with their timeouts and the time
// each has left, sorted by address.
func (c *Conn) Timed(s AddrSet) ([]Element, error) {
	t, err := c.table(s.Table)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, fmt.Errorf("nftables: no table %s", s.Table)
	}
	set, err := c.c.GetSetByName(t, s.Name)
	if err != nil {
		return nil, fmt.Errorf("nftables: set %s: %w", s.Name, err)
	}
	els, err := c.c.GetSetElements(set)
	if err != nil {
		return nil, fmt.Errorf("nftables: list set %s: %w", s.Name, err)
	}
	out := make([]Element, 0, len(els))
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("nftables: set %s holds a key that is no address", s.Name)
		}
		out = append(out, Element{Addr: a, Timeout: e.Timeout, Expires: e.Expires})
	}
	slices.SortFunc(out, func(a, b Element) int { return a.Addr.Compare(b.Addr) })
	return out, nil
}

// EnsureDropSources makes the inet table called table exist with the
// given sets (created if missing, their elements kept) and a base chain
// at h that drops every packet whose source address is in one of them,
// new connections and established ones alike, in one transaction. The
// chain's rules are rewritten; the sets' elements are not touched, so a
// restart keeps the bans the kernel holds.
func (c *Conn) EnsureDropSources(table string, h Hook, sets ...AddrSet) error {
	t := c.c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	ch := c.c.AddChain(&nftables.Chain{
		Name: h.Chain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: h.Hooknum, Priority: h.Priority, Policy: ptr(nftables.ChainPolicyAccept),
	})
	c.c.FlushChain(ch)
	for _, s := range sets {
		if s.Table != table {
			return fmt.Errorf("nftables: set %s belongs to table %s, not %s", s.Name, s.Table, table)
		}
		set := s.set()
		if err := c.c.AddSet(set, nil); err != nil {
			return fmt.Errorf("nftables: set %s: %w", s.Name, err)
		}
		nfproto, offset, length := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
		if s.IPv6 {
			nfproto, offset, length = unix.NFPROTO_IPV6, 8, 16
		}
		c.c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
			&expr.Counter{},
			Drop(),
		}})
	}
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: write %s %s: %w", table, h.Chain, err)
	}
	return nil
}

// InputBefore is a filter chain on the input hook that runs before the
// ordinary filter chains (priority filter - 10).
func InputBefore(chain string) Hook {
	return Hook{Chain: chain, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 10)}
}

func ptr[T any](v T) *T { return &v }
