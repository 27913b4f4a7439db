package state

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// GuardDomain names the guard domain: the bans every node enforces in its
// kernel, and each banned address's offence history, from which a repeat
// offender's bantime grows.
const GuardDomain = "guard"

// guardLevel is the state level that introduced the ban commands.
const guardLevel = 5

// Bounds on the guard domain. A ban beyond MaxActiveBans is refused (the
// kernel sets and every node's memory stay bounded, and a flood of
// decisions cannot grow the raft log's snapshots without end); offence
// history older than HistoryKeep is forgotten, and beyond MaxHistory the
// oldest is.
const (
	MaxActiveBans = 100_000
	MaxHistory    = 200_000
	HistoryKeep   = 30 * 24 * time.Hour
	// MaxBantime bounds any single ban: a longer one is a typo.
	MaxBantime = 366 * 24 * time.Hour
	// maxGrowthSteps bounds the bantime's growth loop (a factor of 1.0001
	// never reaches a cap in reasonable steps).
	maxGrowthSteps = 64
	maxJail        = 64
	maxReason      = 256
	maxLine        = 512
)

// The limits Apply enforces; tests lower them.
var (
	activeBanLimit = MaxActiveBans
	historyLimit   = MaxHistory
)

// ErrBanLimit is a ban refused because MaxActiveBans bans are active.
var ErrBanLimit = errors.New("too many active bans")

// ErrNotBanned is an unban of an address that is not banned.
var ErrNotBanned = errors.New("address is not banned")

// ErrMemberAddress is a ban of a cluster member's address: it would cut
// the cluster apart, so the state refuses it whoever proposes it.
var ErrMemberAddress = errors.New("address belongs to a cluster member")

// Ban is one active ban.
type Ban struct {
	Addr   netip.Addr `json:"addr"`
	Jail   string     `json:"jail"`             // the deciding jail, or "manual"
	Reason string     `json:"reason,omitempty"` // an operator's words
	Line   string     `json:"line,omitempty"`   // the last failure's log line
	By     string     `json:"by"`               // the app node that decided it
	At     time.Time  `json:"at"`
	Until  time.Time  `json:"until"`
	// Offence counts this address's bans, this one included (1 = first).
	Offence int `json:"offence"`
}

// Active reports whether the ban still holds at now.
func (b Ban) Active(now time.Time) bool { return now.Before(b.Until) }

// Offence is one address's ban history: how many times it was banned and
// when last, so a repeat offender's bantime grows.
type Offence struct {
	Count int       `json:"count"`
	Last  time.Time `json:"last"`
}

// Guard is the guard domain's state. Read-only once published.
type Guard struct {
	Bans    map[netip.Addr]Ban     `json:"bans"`
	History map[netip.Addr]Offence `json:"history"`
}

// ActiveBans returns the bans that hold at now, sorted by address.
func (g *Guard) ActiveBans(now time.Time) []Ban {
	out := make([]Ban, 0, len(g.Bans))
	for _, b := range g.Bans {
		if b.Active(now) {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b Ban) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Guard returns the guard domain's state.
func (s Snapshot) Guard() *Guard {
	if v, ok := s.sections[GuardDomain].(*Guard); ok {
		return v
	}
	return &Guard{}
}

type guardDomain struct{}

func (guardDomain) Name() string { return GuardDomain }

func (guardDomain) Commands() []CommandType {
	return []CommandType{
		{Name: BanAddr{}.Type(), Level: guardLevel, New: func() Command { return &BanAddr{} }},
		{Name: UnbanAddr{}.Type(), Level: guardLevel, New: func() Command { return &UnbanAddr{} }},
	}
}

func (guardDomain) Empty() any {
	return &Guard{Bans: map[netip.Addr]Ban{}, History: map[netip.Addr]Offence{}}
}

func (guardDomain) Clone(v any) any {
	g := v.(*Guard)
	return &Guard{Bans: maps.Clone(g.Bans), History: maps.Clone(g.History)}
}

func (guardDomain) Save(v any) (json.RawMessage, error) { return json.Marshal(v) }

func (d guardDomain) Restore(data json.RawMessage) (any, error) {
	g := d.Empty().(*Guard)
	if err := json.Unmarshal(data, g); err != nil {
		return nil, err
	}
	if g.Bans == nil {
		g.Bans = map[netip.Addr]Ban{}
	}
	if g.History == nil {
		g.History = map[netip.Addr]Offence{}
	}
	return g, nil
}

func readGuard(tx *Tx) *Guard { return tx.Read(GuardDomain).(*Guard) }
func editGuard(tx *Tx) *Guard { return tx.Edit(GuardDomain).(*Guard) }

// BanAddr bans an address on every node. A jail's ban (Manual false) of
// an address already banned changes nothing, so two nodes deciding on the
// same attacker at once count one offence; an operator's ban replaces the
// one in force. The bantime is Bantime × Factor^(earlier offences),
// capped at MaxBantime (no growth when it is zero), computed in Apply from
// the replicated history so every node agrees.
type BanAddr struct {
	Addr       netip.Addr    `json:"addr"`
	Jail       string        `json:"jail"`
	Reason     string        `json:"reason,omitempty"`
	Line       string        `json:"line,omitempty"`
	By         string        `json:"by"`
	At         time.Time     `json:"at"`
	Bantime    time.Duration `json:"bantime"`
	Factor     float64       `json:"factor,omitempty"`
	MaxBantime time.Duration `json:"max_bantime,omitempty"`
	Manual     bool          `json:"manual,omitempty"`
}

func (BanAddr) Type() string { return "ban_addr" }

// Authorize lets an app node ban in its own name only.
func (c BanAddr) Authorize(caller Member) error { return ownName(caller, c.By, "ban addresses") }

// UnbanAddr lifts an address's ban on every node and forgets its offence
// history: an operator who unbans says the address is not an attacker.
type UnbanAddr struct {
	Addr netip.Addr `json:"addr"`
	By   string     `json:"by"`
	At   time.Time  `json:"at"`
}

func (UnbanAddr) Type() string { return "unban_addr" }

// Authorize lets an app node unban in its own name only.
func (c UnbanAddr) Authorize(caller Member) error { return ownName(caller, c.By, "unban addresses") }

func ownName(caller Member, by, what string) error {
	if caller.Name != by || caller.Role != RoleApp {
		return fmt.Errorf("%w: %s (a %s) may not %s in the name of %q; only an app node may, in its own name",
			ErrForbidden, caller.Name, caller.Role, what, by)
	}
	return nil
}

// appMember checks, inside Apply, that name is a current app member: a
// command applied on the leader itself skips Authorize.
func appMember(tx *Tx, name string) error {
	if m, ok := readMembers(tx).Members[name]; !ok || m.Role != RoleApp {
		return fmt.Errorf("%w: %q is not an app member of this cluster", ErrForbidden, name)
	}
	return nil
}

// ValidBanAddr checks that a is an address a ban may name: a single
// unicast address, neither unspecified, loopback nor multicast.
func ValidBanAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%w: a ban needs an IP address", ErrInvalid)
	case a.Is4In6():
		return fmt.Errorf("%w: %s is an IPv4-mapped address; name the IPv4 address %s", ErrInvalid, a, a.Unmap())
	case a.Zone() != "":
		return fmt.Errorf("%w: %s has a zone; name the address alone", ErrInvalid, a)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return fmt.Errorf("%w: %s is not a unicast host address", ErrInvalid, a)
	}
	return nil
}

// MemberHolding returns the member whose recorded address is a, if any.
func (s Membership) MemberHolding(a netip.Addr) (string, bool) {
	for _, name := range s.Names() {
		ap, err := netip.ParseAddrPort(s.Members[name].Address)
		if err == nil && ap.Addr().Unmap() == a {
			return name, true
		}
	}
	return "", false
}

func checkText(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%w: %s is %d bytes; at most %d", ErrInvalid, what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	return nil
}

// Apply implements Command.
func (c BanAddr) Apply(tx *Tx) error {
	if err := appMember(tx, c.By); err != nil {
		return err
	}
	if err := ValidBanAddr(c.Addr); err != nil {
		return err
	}
	if name, ok := readMembers(tx).MemberHolding(c.Addr); ok {
		return fmt.Errorf("%w: %s is %s's address", ErrMemberAddress, c.Addr, name)
	}
	if c.Jail == "" || strings.ContainsAny(c.Jail, " \t\n") {
		return fmt.Errorf("%w: a ban needs a jail name without spaces", ErrInvalid)
	}
	for _, f := range []struct {
		what, s string
		limit   int
	}{{"the jail name", c.Jail, maxJail}, {"the reason", c.Reason, maxReason}, {"the log line", c.Line, maxLine}} {
		if err := checkText(f.what, f.s, f.limit); err != nil {
			return err
		}
	}
	if c.Bantime <= 0 || c.Bantime > MaxBantime || c.MaxBantime < 0 || c.MaxBantime > MaxBantime {
		return fmt.Errorf("%w: bantime %v and its cap %v must be positive and at most %v", ErrInvalid, c.Bantime, c.MaxBantime, MaxBantime)
	}
	if c.MaxBantime > 0 && !(c.Factor >= 1 && c.Factor <= 1000) {
		return fmt.Errorf("%w: bantime factor %v must be between 1 and 1000", ErrInvalid, c.Factor)
	}
	if c.At.IsZero() {
		return fmt.Errorf("%w: a ban needs its time", ErrInvalid)
	}
	g := readGuard(tx)
	if old, ok := g.Bans[c.Addr]; ok && old.Active(c.At) && !c.Manual {
		return nil
	}
	pruneGuard(tx, c.At)
	g = readGuard(tx)
	if _, ok := g.Bans[c.Addr]; !ok && len(g.Bans) >= activeBanLimit {
		return fmt.Errorf("%w: %d bans are active, the most the cluster keeps; unban some or shorten the bantimes", ErrBanLimit, len(g.Bans))
	}
	prior := g.History[c.Addr].Count
	d := c.Bantime
	if !c.Manual {
		d = grownBantime(c.Bantime, c.Factor, c.MaxBantime, prior)
	}
	e := editGuard(tx)
	e.Bans[c.Addr] = Ban{Addr: c.Addr, Jail: c.Jail, Reason: c.Reason, Line: c.Line, By: c.By,
		At: c.At, Until: c.At.Add(d), Offence: prior + 1}
	e.History[c.Addr] = Offence{Count: prior + 1, Last: c.At}
	trimHistory(e)
	return nil
}

// grownBantime is base × factor^prior capped at limit, by repeated
// multiplication (bit-for-bit the same on every platform, unlike a
// library power function).
func grownBantime(base time.Duration, factor float64, limit time.Duration, prior int) time.Duration {
	if limit <= 0 {
		return base
	}
	d := float64(base)
	for i := 0; i < prior && i < maxGrowthSteps && d < float64(limit); i++ {
		d *= factor
	}
	return min(time.Duration(min(d, float64(limit))), limit)
}

// Apply implements Command.
func (c UnbanAddr) Apply(tx *Tx) error {
	if err := appMember(tx, c.By); err != nil {
		return err
	}
	g := readGuard(tx)
	b, ok := g.Bans[c.Addr]
	if !ok || !b.Active(c.At) {
		pruneGuard(tx, c.At)
		return fmt.Errorf("%w: %s", ErrNotBanned, c.Addr)
	}
	e := editGuard(tx)
	delete(e.Bans, c.Addr)
	delete(e.History, c.Addr)
	pruneGuard(tx, c.At)
	return nil
}

// pruneGuard drops the bans expired at now and the history older than
// HistoryKeep: driven by the command's time, never a clock, so every node
// prunes the same.
func pruneGuard(tx *Tx, now time.Time) {
	g := readGuard(tx)
	var e *Guard
	for a, b := range g.Bans {
		if !b.Active(now) {
			if e == nil {
				e = editGuard(tx)
			}
			delete(e.Bans, a)
		}
	}
	for a, o := range g.History {
		if now.Sub(o.Last) > HistoryKeep {
			if e == nil {
				e = editGuard(tx)
			}
			delete(e.History, a)
		}
	}
}

// trimHistory drops the oldest offences beyond MaxHistory (ties broken by
// address, so the choice is the same everywhere); an address with an
// active ban keeps its record.
func trimHistory(g *Guard) {
	extra := len(g.History) - historyLimit
	if extra <= 0 {
		return
	}
	type rec struct {
		addr netip.Addr
		last time.Time
	}
	var recs []rec
	for a, o := range g.History {
		if _, banned := g.Bans[a]; !banned {
			recs = append(recs, rec{a, o.Last})
		}
	}
	slices.SortFunc(recs, func(x, y rec) int {
		return cmp.Or(x.last.Compare(y.last), x.addr.Compare(y.addr))
	})
	for _, r := range recs[:min(extra, len(recs))] {
		delete(g.History, r.addr)
	}
}
