package sshd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// setting is one keyword line of sshd's configuration text, in the order
// sshd reads it (Include expanded in place).
type setting struct {
	File    string // host path
	Line    int
	Keyword string // lower case
	Value   string
	Match   string // the Match line's criteria when inside a Match block; "" when global
}

func (s setting) where() string { return fmt.Sprintf("%s:%d", s.File, s.Line) }

// maxIncludeDepth bounds Include recursion, as sshd does (it allows 16).
const maxIncludeDepth = 16

// scanConfig reads sshd's configuration files under root, starting at main,
// and returns their settings in the order sshd reads them. It only reads
// what decides precedence: it is no validator (sshd -t is). virtual holds
// files (by host path) read as if they were on disk with that content: the
// drop-in a plan is about to write.
func scanConfig(root, main string, virtual map[string][]byte) ([]setting, error) {
	sc := scanner{root: root, virtual: virtual}
	err := sc.file(main, "", 0)
	return sc.out, err
}

type scanner struct {
	root    string
	virtual map[string][]byte
	out     []setting
}

// glob returns the host paths matching pattern, on disk or virtual, sorted
// as sshd reads them.
func (sc *scanner) glob(pattern string) ([]string, error) {
	matches, err := filepath.Glob(hostrun.Under(sc.root, pattern))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		if sc.root != "" && sc.root != "/" {
			m = "/" + strings.TrimPrefix(strings.TrimPrefix(m, filepath.Clean(sc.root)), "/")
		}
		out = append(out, m)
	}
	for path := range sc.virtual {
		if ok, _ := filepath.Match(pattern, path); ok && !slices.Contains(out, path) {
			out = append(out, path)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (sc *scanner) file(path, match string, depth int) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("%s: Include nested more than %d deep", path, maxIncludeDepth)
	}
	data, ok := sc.virtual[path]
	if !ok {
		var err error
		if data, err = os.ReadFile(hostrun.Under(sc.root, path)); err != nil {
			return fmt.Errorf("reading sshd configuration: %w", err)
		}
	}
	settings, err := parseConfig(path, data, match)
	if err != nil {
		return err
	}
	for _, s := range settings {
		if s.Keyword != "include" {
			sc.out = append(sc.out, s)
			continue
		}
		for _, pattern := range strings.Fields(s.Value) {
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join("/etc/ssh", pattern)
			}
			matches, err := sc.glob(pattern)
			if err != nil {
				return fmt.Errorf("%s: Include %q: %w", s.where(), pattern, err)
			}
			for _, m := range matches {
				if err := sc.file(m, s.Match, depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// parseConfig splits one configuration file into its keyword lines. A
// Match line starts a block that lasts to the next Match or the end of the
// file; match is the block the file was included from.
func parseConfig(path string, data []byte, match string) ([]setting, error) {
	var out []setting
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// A keyword ends at the first space, tab or '='.
		end := strings.IndexAny(line, " \t=")
		key, value := line, ""
		if end >= 0 {
			key, value = line[:end], strings.TrimLeft(line[end:], " \t=")
		}
		key = strings.ToLower(key)
		if key == "match" {
			match = value
			if match == "" {
				match = "(empty)"
			}
			continue
		}
		out = append(out, setting{File: path, Line: n, Keyword: key, Value: strings.TrimSpace(value), Match: match})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return out, nil
}

// conflict is a setting that keeps one of the drop-in's values from taking
// effect.
type conflict struct {
	setting
	Wanted string
}

func (c conflict) String() string {
	if c.Match != "" {
		return fmt.Sprintf("%s sets %s %s inside \"Match %s\" (tandem wants %s)", c.where(), c.Keyword, c.Value, c.Match, c.Wanted)
	}
	return fmt.Sprintf("%s sets %s %s before tandem's drop-in is read (tandem wants %s)", c.where(), c.Keyword, c.Value, c.Wanted)
}

// matchKeywords are the drop-in's keywords sshd allows inside a Match
// block, where they override the global value for matching connections.
var matchKeywords = map[string]bool{
	"permitrootlogin": true, "passwordauthentication": true, "kbdinteractiveauthentication": true,
}

// conflicts finds the settings that override the drop-in at dropIn: for
// each keyword it sets, a global line read before it (sshd keeps the first
// value), any other Port line (ports add up), and a Match block that sets
// it to another value.
func conflicts(settings []setting, dropIn string, want map[string]string) []conflict {
	var out []conflict
	seen := map[string]bool{}
	for _, s := range settings {
		wanted, ok := want[s.Keyword]
		if !ok {
			continue
		}
		same := strings.EqualFold(s.Value, wanted)
		switch {
		case s.Match != "":
			if matchKeywords[s.Keyword] && !same {
				out = append(out, conflict{s, wanted})
			}
		case s.File == dropIn:
			seen[s.Keyword] = true
		case s.Keyword == "port":
			if !same {
				out = append(out, conflict{s, wanted})
			}
		case !seen[s.Keyword]:
			seen[s.Keyword] = true
			if !same {
				out = append(out, conflict{s, wanted})
			}
		}
	}
	return out
}
