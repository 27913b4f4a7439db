package pyproject

import (
	"fmt"
	"strconv"
	"strings"
)

// Requirement is a parsed PEP 508 dependency specifier.
type Requirement struct {
	Raw        string
	Name       string // as written
	Extras     []string
	Specifiers []Specifier
	URL        string  // "name @ url" form
	Marker     *Marker // nil when there is none
}

// Specifier is one "op version" clause, e.g. {">=", "2.0"}.
type Specifier struct {
	Op      string
	Version string
}

// Normalized is the PEP 503 form of the requirement's name.
func (r Requirement) Normalized() string { return NormalizeName(r.Name) }

var specOps = []string{"===", "==", "!=", "<=", ">=", "~=", "<", ">"}

// ParseRequirement parses one PEP 508 string such as
// `Django[argon2]>=4.2,<5; python_version >= "3.10"`.
func ParseRequirement(s string) (Requirement, error) {
	r := Requirement{Raw: s}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return r, fmt.Errorf("empty requirement")
	}
	// The marker starts at the first ';' (URLs may contain ';' only when
	// followed by no space, which PEP 508 forbids for the separator).
	if i := strings.Index(rest, ";"); i >= 0 {
		m, err := ParseMarker(rest[i+1:])
		if err != nil {
			return r, fmt.Errorf("%q: marker: %w", s, err)
		}
		r.Marker = m
		rest = strings.TrimSpace(rest[:i])
	}
	n := 0
	for n < len(rest) && isNameByte(rest[n]) {
		n++
	}
	r.Name = rest[:n]
	if r.Name == "" || !nameRe.MatchString(r.Name) {
		return r, fmt.Errorf("%q: expected a project name first (letters, digits, '.', '_', '-')", s)
	}
	rest = strings.TrimSpace(rest[n:])
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return r, fmt.Errorf("%q: unclosed '[' in extras", s)
		}
		for _, e := range strings.Split(rest[1:end], ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if !nameRe.MatchString(e) {
				return r, fmt.Errorf("%q: bad extra %q", s, e)
			}
			r.Extras = append(r.Extras, e)
		}
		rest = strings.TrimSpace(rest[end+1:])
	}
	if strings.HasPrefix(rest, "@") {
		r.URL = strings.TrimSpace(rest[1:])
		if r.URL == "" || strings.ContainsAny(r.URL, " \t") {
			return r, fmt.Errorf("%q: bad URL after '@'", s)
		}
		return r, nil
	}
	if strings.HasPrefix(rest, "(") {
		if !strings.HasSuffix(rest, ")") {
			return r, fmt.Errorf("%q: unclosed '(' in version specifier", s)
		}
		rest = strings.TrimSpace(rest[1 : len(rest)-1])
	}
	if rest == "" {
		return r, nil
	}
	for _, clause := range strings.Split(rest, ",") {
		clause = strings.TrimSpace(clause)
		op := ""
		for _, o := range specOps {
			if strings.HasPrefix(clause, o) {
				op = o
				break
			}
		}
		if op == "" {
			return r, fmt.Errorf("%q: %q is not a version clause (use ==, !=, <=, >=, <, >, ~= or ===)", s, clause)
		}
		v := strings.TrimSpace(clause[len(op):])
		if v == "" || strings.IndexFunc(v, func(c rune) bool { return !isVersionRune(c) }) >= 0 {
			return r, fmt.Errorf("%q: bad version %q", s, v)
		}
		if strings.Contains(v, "*") && (op != "==" && op != "!=" || !strings.HasSuffix(v, ".*") || strings.Count(v, "*") != 1) {
			return r, fmt.Errorf("%q: wildcard only allowed as a trailing .* with == or !=", s)
		}
		r.Specifiers = append(r.Specifiers, Specifier{Op: op, Version: v})
	}
	return r, nil
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func isVersionRune(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-+!*", c)
}

// Marker is a parsed PEP 508 environment marker.
type Marker struct {
	op          string // "and", "or", or a comparison operator
	left, right *Marker
	lhs, rhs    markerValue // for comparisons
}

type markerValue struct {
	variable string // set when the value is a marker variable
	literal  string
}

var markerVars = map[string]bool{
	"python_version": true, "python_full_version": true, "os_name": true, "sys_platform": true,
	"platform_release": true, "platform_system": true, "platform_version": true, "platform_machine": true,
	"platform_python_implementation": true, "implementation_name": true, "implementation_version": true,
	"extra": true,
}

// ParseMarker parses a marker expression such as
// `python_version >= "3.8" and sys_platform == "linux"`.
func ParseMarker(s string) (*Marker, error) {
	toks, err := tokenizeMarker(s)
	if err != nil {
		return nil, err
	}
	p := &markerParser{toks: toks}
	m, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos].text)
	}
	return m, nil
}

type markerTok struct {
	kind byte // 's' string, 'i' identifier, 'o' operator, '(' or ')'
	text string
}

func tokenizeMarker(s string) ([]markerTok, error) {
	var toks []markerTok
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')':
			toks = append(toks, markerTok{kind: c, text: string(c)})
			i++
		case c == '"' || c == '\'':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, markerTok{kind: 's', text: s[i+1 : i+1+end]})
			i += end + 2
		case strings.IndexByte("<>=!~", c) >= 0:
			j := i
			for j < len(s) && strings.IndexByte("<>=!~", s[j]) >= 0 {
				j++
			}
			op := s[i:j]
			switch op {
			case "<", "<=", "!=", "==", ">=", ">", "~=", "===":
			default:
				return nil, fmt.Errorf("bad operator %q", op)
			}
			toks = append(toks, markerTok{kind: 'o', text: op})
			i = j
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_':
			j := i
			for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_' || s[j] == '.') {
				j++
			}
			toks = append(toks, markerTok{kind: 'i', text: s[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected character %q", c)
		}
	}
	return toks, nil
}

type markerParser struct {
	toks []markerTok
	pos  int
}

func (p *markerParser) peek() (markerTok, bool) {
	if p.pos >= len(p.toks) {
		return markerTok{}, false
	}
	return p.toks[p.pos], true
}

func (p *markerParser) or() (*Marker, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != 'i' || t.text != "or" {
			return l, nil
		}
		p.pos++
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &Marker{op: "or", left: l, right: r}
	}
}

func (p *markerParser) and() (*Marker, error) {
	l, err := p.atom()
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != 'i' || t.text != "and" {
			return l, nil
		}
		p.pos++
		r, err := p.atom()
		if err != nil {
			return nil, err
		}
		l = &Marker{op: "and", left: l, right: r}
	}
}

func (p *markerParser) atom() (*Marker, error) {
	t, ok := p.peek()
	if !ok {
		return nil, fmt.Errorf("unexpected end of marker")
	}
	if t.kind == '(' {
		p.pos++
		m, err := p.or()
		if err != nil {
			return nil, err
		}
		if t, ok := p.peek(); !ok || t.kind != ')' {
			return nil, fmt.Errorf("missing ')'")
		}
		p.pos++
		return m, nil
	}
	lhs, err := p.value()
	if err != nil {
		return nil, err
	}
	op, err := p.operator()
	if err != nil {
		return nil, err
	}
	rhs, err := p.value()
	if err != nil {
		return nil, err
	}
	return &Marker{op: op, lhs: lhs, rhs: rhs}, nil
}

func (p *markerParser) value() (markerValue, error) {
	t, ok := p.peek()
	if !ok {
		return markerValue{}, fmt.Errorf("unexpected end of marker")
	}
	p.pos++
	switch {
	case t.kind == 's':
		return markerValue{literal: t.text}, nil
	case t.kind == 'i' && markerVars[t.text]:
		return markerValue{variable: t.text}, nil
	}
	return markerValue{}, fmt.Errorf("unknown marker variable %q", t.text)
}

func (p *markerParser) operator() (string, error) {
	t, ok := p.peek()
	if !ok {
		return "", fmt.Errorf("expected an operator")
	}
	p.pos++
	switch {
	case t.kind == 'o':
		return t.text, nil
	case t.kind == 'i' && t.text == "in":
		return "in", nil
	case t.kind == 'i' && t.text == "not":
		if n, ok := p.peek(); ok && n.kind == 'i' && n.text == "in" {
			p.pos++
			return "not in", nil
		}
	}
	return "", fmt.Errorf("expected an operator, got %q", t.text)
}

// Eval evaluates the marker in env (marker variable -> value); variables
// missing from env are "".
func (m *Marker) Eval(env map[string]string) bool {
	switch m.op {
	case "and":
		return m.left.Eval(env) && m.right.Eval(env)
	case "or":
		return m.left.Eval(env) || m.right.Eval(env)
	}
	get := func(v markerValue) string {
		if v.variable != "" {
			return env[v.variable]
		}
		return v.literal
	}
	l, r := get(m.lhs), get(m.rhs)
	switch m.op {
	case "in":
		return strings.Contains(r, l)
	case "not in":
		return !strings.Contains(r, l)
	case "===":
		return l == r
	}
	if c, ok := compareVersions(l, r); ok {
		switch m.op {
		case "==":
			return c == 0
		case "!=":
			return c != 0
		case "<":
			return c < 0
		case "<=":
			return c <= 0
		case ">":
			return c > 0
		case ">=":
			return c >= 0
		case "~=":
			return c >= 0 && compatiblePrefix(l, r)
		}
	}
	switch m.op {
	case "==":
		return l == r
	case "!=":
		return l != r
	}
	return false
}

// Mentions reports whether the marker refers to the variable.
func (m *Marker) Mentions(variable string) bool {
	if m == nil {
		return false
	}
	if m.op == "and" || m.op == "or" {
		return m.left.Mentions(variable) || m.right.Mentions(variable)
	}
	return m.lhs.variable == variable || m.rhs.variable == variable
}

// compareVersions compares dotted numeric versions ("3.11", "3.9.1"); ok is
// false when either side is not purely numeric.
func compareVersions(a, b string) (int, bool) {
	pa, oka := numericParts(a)
	pb, okb := numericParts(b)
	if !oka || !okb {
		return 0, false
	}
	for len(pa) < len(pb) {
		pa = append(pa, 0)
	}
	for len(pb) < len(pa) {
		pb = append(pb, 0)
	}
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1, true
			}
			return 1, true
		}
	}
	return 0, true
}

func numericParts(v string) ([]int, bool) {
	if v == "" {
		return nil, false
	}
	var out []int
	for _, f := range strings.Split(v, ".") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// compatiblePrefix implements the prefix half of "~=": l must match r with
// r's last component dropped.
func compatiblePrefix(l, r string) bool {
	pl, _ := numericParts(l)
	pr, _ := numericParts(r)
	if len(pr) < 2 {
		return false
	}
	for i := 0; i < len(pr)-1; i++ {
		if i >= len(pl) || pl[i] != pr[i] {
			return false
		}
	}
	return true
}
