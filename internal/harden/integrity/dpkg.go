package integrity

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// Entry is one line of a package's md5sums file.
type Entry struct {
	Sum  [16]byte
	Path string // absolute host path
}

// maxMD5Sums bounds one md5sums file; the largest in Debian are a few MB.
const maxMD5Sums = 64 << 20

// ParseMD5Sums parses a dpkg md5sums file: lines of 32 hex digits, two
// spaces (or a space and '*', md5sum's binary mark) and a path relative to
// /. md5sum writes a name holding a backslash or newline with a leading
// backslash and escapes; those are undone. A line that is not of this form,
// or a path that leaves / (".."), is an error naming the line.
func ParseMD5Sums(data []byte) ([]Entry, error) {
	if len(data) > maxMD5Sums {
		return nil, fmt.Errorf("md5sums file is %d bytes, more than the %d expected", len(data), maxMD5Sums)
	}
	var out []Entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		escaped := strings.HasPrefix(line, `\`)
		if escaped {
			line = line[1:]
		}
		if len(line) < 35 || (line[32] != ' ') || (line[33] != ' ' && line[33] != '*') {
			return nil, fmt.Errorf("md5sums line %d: want 32 hex digits, two spaces and a path", n)
		}
		var e Entry
		if _, err := hex.Decode(e.Sum[:], []byte(line[:32])); err != nil {
			return nil, fmt.Errorf("md5sums line %d: the checksum is not hex: %w", n, err)
		}
		path := line[34:]
		if escaped {
			var err error
			if path, err = unescapeName(path); err != nil {
				return nil, fmt.Errorf("md5sums line %d: %w", n, err)
			}
		}
		if strings.IndexByte(path, 0) >= 0 {
			return nil, fmt.Errorf("md5sums line %d: the path holds a NUL byte", n)
		}
		// Lines may end in CRLF, so a carriage return in a name cannot
		// be told from a line end.
		if strings.IndexByte(path, '\r') >= 0 {
			return nil, fmt.Errorf("md5sums line %d: the path holds a carriage return", n)
		}
		clean := filepath.Clean("/" + path)
		for part := range strings.SplitSeq(path, "/") {
			if part == ".." {
				return nil, fmt.Errorf("md5sums line %d: the path %q leaves /", n, path)
			}
		}
		if clean == "/" {
			return nil, fmt.Errorf("md5sums line %d: the path is empty", n)
		}
		e.Path = clean
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading md5sums: %w", err)
	}
	return out, nil
}

// unescapeName undoes md5sum's escaping of "\\" and "\n" in a file name.
func unescapeName(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("the path ends in a lone backslash")
		}
		i++
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		default:
			return "", fmt.Errorf("unknown escape \\%c in the path", s[i])
		}
	}
	return b.String(), nil
}

// readLines returns a file's non-empty lines under root; a missing file is
// no lines.
func readLines(root, path string) ([]string, error) {
	data, err := os.ReadFile(hostrun.Under(root, path))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// diversions reads dpkg's diversions: for each diverted path, where the
// file now lives and which package diverted it (":" for a local one).
type diversion struct{ to, by string }

func readDiversions(root string) (map[string]diversion, error) {
	data, err := os.ReadFile(hostrun.Under(root, "/var/lib/dpkg/diversions"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	out := map[string]diversion{}
	for i := 0; i+2 < len(lines); i += 3 {
		out[lines[i]] = diversion{to: lines[i+1], by: lines[i+2]}
	}
	return out, nil
}

// location is where a package's file lives: diverted to another path
// unless the package itself made the diversion.
func location(div map[string]diversion, pkg, path string) string {
	d, ok := div[path]
	if !ok || d.by == pkg || strings.SplitN(d.by, ":", 2)[0] == strings.SplitN(pkg, ":", 2)[0] {
		return path
	}
	return d.to
}

// pathFilter is dpkg's path-exclude and path-include options: files dpkg
// did not unpack are not checked.
type pathFilter struct {
	rules []pathRule
}

type pathRule struct {
	include bool
	re      *regexp.Regexp
}

// readPathFilter reads path-exclude/path-include from dpkg.cfg and
// dpkg.cfg.d/* under root, in dpkg's order.
func readPathFilter(root string) (pathFilter, error) {
	var f pathFilter
	files := []string{"/etc/dpkg/dpkg.cfg"}
	matches, _ := filepath.Glob(hostrun.Under(root, "/etc/dpkg/dpkg.cfg.d/*"))
	for _, m := range matches {
		files = append(files, "/etc/dpkg/dpkg.cfg.d/"+filepath.Base(m))
	}
	for _, file := range files {
		lines, err := readLines(root, file)
		if err != nil {
			return f, fmt.Errorf("reading dpkg's configuration: %w", err)
		}
		for _, l := range lines {
			if l[0] == '#' {
				continue
			}
			l = strings.TrimPrefix(l, "--")
			end := strings.IndexAny(l, " \t=")
			if end < 0 {
				continue
			}
			opt, val := l[:end], strings.TrimSpace(strings.TrimLeft(l[end:], " \t="))
			if opt != "path-exclude" && opt != "path-include" {
				continue
			}
			re, err := fnmatchRegexp(val)
			if err != nil {
				return f, fmt.Errorf("%s: %s %q: %w", file, opt, val, err)
			}
			f.rules = append(f.rules, pathRule{include: opt == "path-include", re: re})
		}
	}
	return f, nil
}

// excluded reports whether dpkg skipped path: the last matching rule wins.
func (f pathFilter) excluded(path string) bool {
	ex := false
	for _, r := range f.rules {
		if r.re.MatchString(path) {
			ex = !r.include
		}
	}
	return ex
}

// fnmatchRegexp translates a glob as fnmatch(3) reads it without flags
// (dpkg's use: '*' also matches '/') into an anchored regexp.
func fnmatchRegexp(glob string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString(`^`)
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '[':
			end := strings.IndexByte(glob[i+1:], ']')
			if end < 0 {
				b.WriteString(`\[`)
				continue
			}
			class := glob[i+1 : i+1+end]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += end + 1
		case '\\':
			if i+1 < len(glob) {
				i++
				b.WriteString(regexp.QuoteMeta(string(glob[i])))
			}
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`$`)
	return regexp.Compile(b.String())
}

// conffile is one conffile of an installed package with the checksum dpkg
// recorded when it installed it.
type conffile struct {
	pkg  string
	path string
	sum  [16]byte
}

// readConffiles reads the conffiles of installed packages from dpkg's
// status file. Obsolete conffiles and ones dpkg has not installed yet
// ("newconffile") are left out.
func readConffiles(root string) ([]conffile, error) {
	data, err := os.ReadFile(hostrun.Under(root, "/var/lib/dpkg/status"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var (
		out       []conffile
		pkg       string
		installed bool
		pending   []conffile
		inConf    bool
	)
	flush := func() {
		if installed {
			out = append(out, pending...)
		}
		pkg, installed, pending, inConf = "", false, nil, false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, " ") && inConf:
			f := strings.Fields(line)
			if len(f) < 2 || (len(f) > 2 && f[2] == "obsolete") {
				continue
			}
			var c conffile
			if _, err := hex.Decode(c.sum[:], []byte(f[1])); err != nil || len(f[1]) != 32 {
				continue // "newconffile" or damage: nothing to compare with
			}
			c.pkg, c.path = pkg, filepath.Clean(f[0])
			pending = append(pending, c)
		default:
			inConf = false
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimSpace(value)
			switch name {
			case "Package":
				pkg = value
			case "Status":
				installed = strings.HasSuffix(value, " installed")
			case "Conffiles":
				inConf = true
			}
		}
	}
	flush()
	return out, nil
}
