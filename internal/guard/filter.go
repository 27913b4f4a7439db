package guard

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"
)

// HostTag is the placeholder a failregex uses for the source address.
const HostTag = "<HOST>"

// hostPattern is what HostTag expands to: an IPv4 or IPv6 address in a
// capture named host. It is deliberately loose (netip.ParseAddr decides);
// a regex ends the capture with the text that follows the tag.
const hostPattern = `(?P<host>(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3})?)`

// MaxLine is the longest line a filter looks at. Longer lines are cut
// here: no message any built-in filter matches comes near it, and it
// bounds the regex work an attacker can cause with one line.
const MaxLine = 16 << 10

// FilterSpec is a user-defined filter: failregex lines name failures,
// ignoreregex lines exempt a line that a failregex matched.
type FilterSpec struct {
	Name        string
	FailRegex   []string
	IgnoreRegex []string
}

// Filter decides whether a log message is a failure and which host it
// names. It is safe for concurrent use.
type Filter struct {
	name     string
	mode     string
	programs []string // syslog identifiers the messages must come from; nil: any
	rules    []rule
	ignore   []rule
}

// rule is one compiled failregex or ignoreregex.
type rule struct {
	src     string         // as written, for tandem guard test
	re      *regexp.Regexp // anchored at the start of the message
	literal []byte         // a substring every match contains: a cheap prefilter
	host    int            // index of the host capture's start in FindSubmatchIndex; -1 for ignoreregex
}

// Name returns the filter's name (and mode, for built-ins with modes).
func (f *Filter) Name() string {
	if f.mode != "" {
		return f.name + "[mode=" + f.mode + "]"
	}
	return f.name
}

// Rules returns the failregex sources, in order.
func (f *Filter) Rules() []string {
	out := make([]string, len(f.rules))
	for i, r := range f.rules {
		out[i] = r.src
	}
	return out
}

// Result is what a filter made of one message.
type Result struct {
	Addr    netip.Addr // the failing host, when Match
	Rule    int        // index of the failregex that matched, when Match or Ignored
	Match   bool       // a failure of Addr
	Ignored bool       // a failregex matched but an ignoreregex exempts the line
}

// Match tests one message (the text after any syslog prefix). prog is the
// syslog identifier when known ("" for a plain log file line).
func (f *Filter) Match(prog string, msg []byte) Result {
	if f.programs != nil && prog != "" && !containsString(f.programs, prog) {
		return Result{}
	}
	if len(msg) > MaxLine {
		msg = msg[:MaxLine]
	}
	for i := range f.rules {
		r := &f.rules[i]
		if r.literal != nil && !bytes.Contains(msg, r.literal) {
			continue
		}
		loc := r.re.FindSubmatchIndex(msg)
		if loc == nil || loc[r.host] < 0 {
			continue
		}
		addr, ok := parseHost(msg[loc[r.host]:loc[r.host+1]])
		if !ok {
			continue
		}
		for j := range f.ignore {
			ig := &f.ignore[j]
			if (ig.literal == nil || bytes.Contains(msg, ig.literal)) && ig.re.Match(msg) {
				return Result{Rule: i, Ignored: true}
			}
		}
		return Result{Addr: addr, Rule: i, Match: true}
	}
	return Result{}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseHost parses a captured address; IPv4-mapped IPv6 becomes IPv4 and
// a zone is dropped (a ban is per address).
func parseHost(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 45 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// ErrNoHost is returned for a failregex without the <HOST> placeholder.
var ErrNoHost = errors.New("a failregex needs the " + HostTag + " placeholder where the source address is")

// compileFail compiles one failregex. It is anchored at the start of the
// message: text an attacker controls (a user name, a URL) comes after
// what the program itself wrote, so a host found from the start is the
// one the program logged. Write ".*" first to search anywhere.
func compileFail(src string) (rule, error) {
	if n := strings.Count(src, HostTag); n != 1 {
		if n == 0 {
			return rule{}, ErrNoHost
		}
		return rule{}, fmt.Errorf("%s appears %d times; a failregex names exactly one host", HostTag, n)
	}
	if strings.Contains(src, "(?P<host>") {
		return rule{}, errors.New(`the capture name "host" is reserved for ` + HostTag)
	}
	expanded := strings.Replace(src, HostTag, hostPattern, 1)
	r, err := compileAnchored(src, expanded)
	if err != nil {
		return rule{}, err
	}
	r.host = 2 * r.re.SubexpIndex("host")
	return r, nil
}

// compileIgnore compiles one ignoreregex, anchored like a failregex.
func compileIgnore(src string) (rule, error) {
	if strings.Contains(src, HostTag) {
		return rule{}, errors.New("an ignoreregex has no " + HostTag + "; it only exempts lines a failregex matched")
	}
	r, err := compileAnchored(src, src)
	r.host = -1
	return r, err
}

func compileAnchored(src, expanded string) (rule, error) {
	if !utf8.ValidString(src) {
		return rule{}, errors.New("the regex is not valid UTF-8")
	}
	pattern := `^(?:` + expanded + `)`
	re, err := regexp.Compile(pattern)
	if err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			return rule{}, fmt.Errorf("not a valid RE2 regex: %s in %q (RE2 has no look-around or backreferences)", se.Code, se.Expr)
		}
		return rule{}, fmt.Errorf("not a valid RE2 regex: %w", err)
	}
	return rule{src: src, re: re, literal: requiredLiteral(pattern)}, nil
}

// requiredLiteral returns the longest literal that every match of pattern
// contains, or nil. It looks at the top-level sequence only, which is
// where the distinctive words of a log message are.
func requiredLiteral(pattern string) []byte {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	re = re.Simplify()
	var best []rune
	var walk func(*syntax.Regexp)
	walk = func(n *syntax.Regexp) {
		switch n.Op {
		case syntax.OpCapture:
			walk(n.Sub[0])
		case syntax.OpConcat:
			for _, s := range n.Sub {
				walk(s)
			}
		case syntax.OpLiteral:
			if n.Flags&syntax.FoldCase == 0 && len(n.Rune) > len(best) {
				best = n.Rune
			}
		}
	}
	walk(re)
	if len(best) < 3 {
		return nil
	}
	return []byte(string(best))
}

// NewFilter builds a filter from a user's failregex and ignoreregex lines.
// Every error names the line (failregex[i]) and what is wrong.
func NewFilter(spec FilterSpec) (*Filter, error) {
	f := &Filter{name: spec.Name}
	if len(spec.FailRegex) == 0 {
		return nil, errors.New("failregex: missing; give at least one regex with " + HostTag)
	}
	for i, src := range spec.FailRegex {
		r, err := compileFail(src)
		if err != nil {
			return nil, &RegexError{Field: "failregex", Index: i, Err: err}
		}
		f.rules = append(f.rules, r)
	}
	for i, src := range spec.IgnoreRegex {
		r, err := compileIgnore(src)
		if err != nil {
			return nil, &RegexError{Field: "ignoreregex", Index: i, Err: err}
		}
		f.ignore = append(f.ignore, r)
	}
	return f, nil
}

// RegexError names the regex of a filter that does not compile.
type RegexError struct {
	Field string // failregex or ignoreregex
	Index int
	Err   error
}

func (e *RegexError) Error() string { return fmt.Sprintf("%s[%d]: %v", e.Field, e.Index, e.Err) }
func (e *RegexError) Unwrap() error { return e.Err }

// Regex builds a one-rule filter from a failregex given on the command line.
func Regex(src string) (*Filter, error) {
	return NewFilter(FilterSpec{Name: "regex", FailRegex: []string{src}})
}
