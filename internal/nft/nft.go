// Package nft holds tandem's nftables tables and sets, shared by the drain
// of planned moves, the firewall and the ban sets: each owns a table of its
// own in family inet, replaced or removed whole and atomically, so tandem
// never edits rules it did not make.
package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Conn talks to nftables in one network namespace.
type Conn struct{ c *nftables.Conn }

// Open connects to nftables in the namespace open at netnsFd, or in the
// caller's when netnsFd < 0.
func Open(netnsFd int) (*Conn, error) {
	var c *nftables.Conn
	var err error
	if netnsFd >= 0 {
		c, err = nftables.New(nftables.WithNetNSFd(netnsFd))
	} else {
		c, err = nftables.New()
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Conn{c: c}, nil
}

// table returns the inet table called name, nil when there is none.
func (c *Conn) table(name string) (*nftables.Table, error) {
	tables, err := c.c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(t *nftables.Table) bool { return t.Name == name })
	if i < 0 {
		return nil, nil
	}
	return tables[i], nil
}

// HasTable reports whether the inet table called name exists.
func (c *Conn) HasTable(name string) (bool, error) {
	t, err := c.table(name)
	return t != nil, err
}

// DeleteTable removes the inet table called name, with its chains and sets,
// if it exists.
func (c *Conn) DeleteTable(name string) error {
	t, err := c.table(name)
	if err != nil || t == nil {
		return err
	}
	c.c.DelTable(t)
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove table %s: %w", name, err)
	}
	return nil
}

// Hook is a base chain's place in the packet path.
type Hook struct {
	Chain    string // chain name, e.g. "input"
	Hooknum  *nftables.ChainHook
	Priority *nftables.ChainPriority
}

// InputFilter is a filter chain on the input hook at the filter priority.
func InputFilter(chain string) Hook {
	return Hook{Chain: chain, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter}
}

// ReplaceChain makes the inet table called table exist with a base filter
// chain at h whose rules are exactly rules, in one transaction: the chain is
// never seen half-written. Other chains and sets of the table are kept.
func (c *Conn) ReplaceChain(table string, h Hook, rules ...[]expr.Any) error {
	t := c.c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	ch := c.c.AddChain(&nftables.Chain{
		Name: h.Chain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: h.Hooknum, Priority: h.Priority,
	})
	c.c.FlushChain(ch)
	for _, r := range rules {
		c.c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: write %s %s: %w", table, h.Chain, err)
	}
	return nil
}

// AddrSet is a named set of IPv4 or IPv6 addresses in a table, for rules to
// match against (bans, allow-lists).
type AddrSet struct {
	Table string
	Name  string
	IPv6  bool
	// Timeout makes a set whose elements carry their own timeout and
	// leave it by themselves when it runs out (see AddTimed).
	Timeout bool
}

func (s AddrSet) set() *nftables.Set {
	kt := nftables.TypeIPAddr
	if s.IPv6 {
		kt = nftables.TypeIP6Addr
	}
	return &nftables.Set{
		Table:      &nftables.Table{Family: nftables.TableFamilyINet, Name: s.Table},
		Name:       s.Name,
		KeyType:    kt,
		HasTimeout: s.Timeout,
	}
}

func (s AddrSet) elements(addrs []netip.Addr) ([]nftables.SetElement, error) {
	els := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.Is6() != s.IPv6 {
			return nil, fmt.Errorf("nftables set %s: %v is not an IPv%d address", s.Name, a, map[bool]int{false: 4, true: 6}[s.IPv6])
		}
		els = append(els, nftables.SetElement{Key: a.AsSlice()})
	}
	return els, nil
}

// EnsureSet creates the table and the set if they are missing, keeping the
// elements of an existing set.
func (c *Conn) EnsureSet(s AddrSet) error {
	c.c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: s.Table})
	if err := c.c.AddSet(s.set(), nil); err != nil {
		return fmt.Errorf("nftables: set %s: %w", s.Name, err)
	}
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: create set %s in %s: %w", s.Name, s.Table, err)
	}
	return nil
}

// AddAddrs puts addrs in the set; addresses already there are kept.
func (c *Conn) AddAddrs(s AddrSet, addrs ...netip.Addr) error {
	els, err := s.elements(addrs)
	if err != nil || len(els) == 0 {
		return err
	}
	if err := c.c.SetAddElements(s.set(), els); err != nil {
		return fmt.Errorf("nftables: add to set %s: %w", s.Name, err)
	}
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: add to set %s: %w", s.Name, err)
	}
	return nil
}

// DeleteAddrs takes addrs out of the set; each must be in it.
func (c *Conn) DeleteAddrs(s AddrSet, addrs ...netip.Addr) error {
	els, err := s.elements(addrs)
	if err != nil || len(els) == 0 {
		return err
	}
	if err := c.c.SetDeleteElements(s.set(), els); err != nil {
		return fmt.Errorf("nftables: delete from set %s: %w", s.Name, err)
	}
	if err := c.c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete from set %s: %w", s.Name, err)
	}
	return nil
}

// Addrs lists the set's addresses.
func (c *Conn) Addrs(s AddrSet) ([]netip.Addr, error) {
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
	out := make([]netip.Addr, 0, len(els))
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, errors.New("nftables: set " + s.Name + " holds a key that is no address")
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Rule expressions. Each returns the expressions of one match; a rule is
// their concatenation followed by a verdict. They use register 1 only.

// MatchDaddr matches packets to a (of its family only).
func MatchDaddr(a netip.Addr) []expr.Any {
	a = a.Unmap()
	nfproto, offset := byte(unix.NFPROTO_IPV4), uint32(16)
	if a.Is6() {
		nfproto, offset = unix.NFPROTO_IPV6, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// MatchNewTCP matches a TCP connection's first segment: SYN without ACK.
func MatchNewTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		// tcp flags & (syn|ack) == syn
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0x00}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
	}
}

// Drop is the verdict that drops the packet.
func Drop() expr.Any { return &expr.Verdict{Kind: expr.VerdictDrop} }

// Rule joins matches and a verdict into one rule's expressions.
func Rule(verdict expr.Any, matches ...[]expr.Any) []expr.Any {
	var r []expr.Any
	for _, m := range matches {
		r = append(r, m...)
	}
	return append(r, verdict)
}
