// Package debversion parses and orders Debian package versions as Debian
// Policy 5.6.12 and deb-version(7) define them, so that delivery can tell
// whether a package is newer than the one a node runs without calling dpkg.
package debversion

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a parsed Debian version: [epoch:]upstream[-revision].
type Version struct {
	Epoch    uint32
	Upstream string
	Revision string // "" when absent, which orders like "0"
}

// Parse checks s against deb-version(7) and splits it. The error names the
// part that is wrong and gives an example of a valid version.
func Parse(s string) (Version, error) {
	bad := func(why string) error {
		return fmt.Errorf("%q is not a Debian version: %s (expected [epoch:]upstream[-revision], e.g. 1.2.3 or 1:1.2.3-1)", s, why)
	}
	if s == "" {
		return Version{}, bad("it is empty")
	}
	var v Version
	rest := s
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		e, err := strconv.ParseUint(rest[:i], 10, 32)
		if err != nil {
			return Version{}, bad("the epoch before ':' must be a non-negative number")
		}
		v.Epoch, rest = uint32(e), rest[i+1:]
	}
	v.Upstream = rest
	if i := strings.LastIndexByte(rest, '-'); i >= 0 {
		v.Upstream, v.Revision = rest[:i], rest[i+1:]
		if v.Revision == "" {
			return Version{}, bad("the revision after the last '-' is empty")
		}
		for _, c := range []byte(v.Revision) {
			if !isAlnum(c) && c != '+' && c != '.' && c != '~' {
				return Version{}, bad(fmt.Sprintf("the revision may contain only letters, digits and + . ~, not %q", c))
			}
		}
	}
	if v.Upstream == "" || !isDigit(v.Upstream[0]) {
		return Version{}, bad("the upstream version must start with a digit")
	}
	for _, c := range []byte(v.Upstream) {
		if !isAlnum(c) && c != '.' && c != '+' && c != '~' && c != '-' {
			return Version{}, bad(fmt.Sprintf("the upstream version may contain only letters, digits and . + ~ -, not %q", c))
		}
	}
	return v, nil
}

// String formats v the way dpkg does: the epoch only when it is not zero.
func (v Version) String() string {
	var b strings.Builder
	if v.Epoch != 0 {
		b.WriteString(strconv.FormatUint(uint64(v.Epoch), 10))
		b.WriteByte(':')
	}
	b.WriteString(v.Upstream)
	if v.Revision != "" {
		b.WriteByte('-')
		b.WriteString(v.Revision)
	}
	return b.String()
}

// Compare orders a and b: -1 when a is older, 0 when equal, +1 when newer.
func (a Version) Compare(b Version) int {
	switch {
	case a.Epoch < b.Epoch:
		return -1
	case a.Epoch > b.Epoch:
		return 1
	}
	if c := compareFragment(a.Upstream, b.Upstream); c != 0 {
		return c
	}
	return compareFragment(a.Revision, b.Revision)
}

// Compare parses both versions and orders them; see Version.Compare.
func Compare(a, b string) (int, error) {
	va, err := Parse(a)
	if err != nil {
		return 0, err
	}
	vb, err := Parse(b)
	if err != nil {
		return 0, err
	}
	return va.Compare(vb), nil
}

// compareFragment is Policy's algorithm for an upstream version or a
// revision: alternate non-digit runs, compared character by character with
// the modified ASCII order (~ before end, end before letters, letters before
// other characters), and digit runs, compared numerically.
func compareFragment(a, b string) int {
	for a != "" || b != "" {
		for a != "" && !isDigit(a[0]) || b != "" && !isDigit(b[0]) {
			ac, bc := order(a), order(b)
			if ac != bc {
				return sign(ac - bc)
			}
			a, b = a[1:], b[1:]
		}
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		da, db := digitRun(a), digitRun(b)
		// Without leading zeros, a longer run is a larger number.
		if len(da) != len(db) {
			return sign(len(da) - len(db))
		}
		if c := strings.Compare(da, db); c != 0 {
			return c
		}
		a, b = a[len(da):], b[len(db):]
	}
	return 0
}

// order ranks the first character of s in Policy's modified ASCII order.
// The loop in compareFragment only calls it when one side starts with a
// non-digit, so an empty s or a digit ranks as "end of the part".
func order(s string) int {
	if s == "" {
		return 0
	}
	switch c := s[0]; {
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

func digitRun(s string) string {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i]
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }
