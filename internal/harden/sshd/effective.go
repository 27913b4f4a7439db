package sshd

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// Effective is the output of `sshd -T`: every keyword (lower case, as sshd
// prints it) with its values in order. Most keywords have one line;
// hostkey, port and listenaddress have one line per value.
type Effective map[string][]string

// maxEffective bounds the output ParseEffective accepts; sshd -T prints a
// few kilobytes.
const maxEffective = 1 << 20

// ParseEffective parses `sshd -T` output: one "keyword value" per line.
// A line whose first word is not a keyword (letters and digits) is an
// error naming the line, so a warning printed into the output is never
// read as a setting.
func ParseEffective(out []byte) (Effective, error) {
	if len(out) > maxEffective {
		return nil, fmt.Errorf("sshd -T output is %d bytes, more than the %d expected", len(out), maxEffective)
	}
	eff := Effective{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), maxEffective)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		key, value, _ := strings.Cut(line, " ")
		if !isKeyword(key) {
			return nil, fmt.Errorf("sshd -T output line %d: %q does not start with a keyword", n, truncate(line, 60))
		}
		eff[key] = append(eff[key], strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading sshd -T output: %w", err)
	}
	return eff, nil
}

// Get returns a keyword's first value and whether it was printed.
func (e Effective) Get(key string) (string, bool) {
	v, ok := e[key]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// List returns a comma-separated keyword (kexalgorithms, ciphers, ...) as
// its names.
func (e Effective) List(key string) []string {
	v, _ := e.Get(key)
	return splitList(v)
}

func splitList(v string) []string {
	var out []string
	for name := range strings.SplitSeq(v, ",") {
		if name = strings.TrimSpace(name); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func isKeyword(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
