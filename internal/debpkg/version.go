package debpkg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrNotGit means the project is not inside a git work tree with commits.
var ErrNotGit = errors.New("not a git repository with commits")

// GitInfo is what the build takes from git.
type GitInfo struct {
	Describe   string    // raw `git describe` output, "" when no v* tag exists
	Count      int       // commits since the tag (or since the root without a tag)
	SHA        string    // abbreviated HEAD commit (12 hex digits)
	CommitTime time.Time // HEAD's committer time
	Tag        string    // the v* tag, "" when none
}

// git runs a read-only git command in dir. safe.directory=* is set because
// CI checkouts are often owned by another user than the one building; we
// only read from the repository.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "safe.directory=*", "-C", dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

var describeRe = regexp.MustCompile(`^(v.+)-(\d+)-g([0-9a-f]+)$`)

// ReadGit collects version information for the repository containing dir.
func ReadGit(ctx context.Context, dir string) (*GitInfo, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("%w (git is not installed)", ErrNotGit)
	}
	sha, err := git(ctx, dir, "rev-parse", "--short=12", "HEAD")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotGit, err)
	}
	ct, err := git(ctx, dir, "log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return nil, err
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("git commit time %q: %w", ct, err)
	}
	gi := &GitInfo{SHA: sha, CommitTime: time.Unix(secs, 0).UTC()}
	desc, err := git(ctx, dir, "describe", "--tags", "--long", "--abbrev=12", "--match", "v[0-9]*", "HEAD")
	if err == nil {
		m := describeRe.FindStringSubmatch(desc)
		if m == nil {
			return nil, fmt.Errorf("cannot parse git describe output %q", desc)
		}
		gi.Describe, gi.Tag = desc, m[1]
		gi.Count, _ = strconv.Atoi(m[2])
		return gi, nil
	}
	n, err := git(ctx, dir, "rev-list", "--count", "HEAD")
	if err != nil {
		return nil, err
	}
	gi.Count, _ = strconv.Atoi(n)
	return gi, nil
}

// Version derives the Debian version from git: tag v1.2.3 on HEAD gives
// 1.2.3; N commits later gives 1.2.3+gitN.gSHA. Without a v* tag, base (the
// pyproject version, or "0.0.0") is used: base+gitN.gSHA.
func (g *GitInfo) Version(base string) (string, error) {
	if g.Tag != "" {
		v, err := FromPEP440(strings.TrimPrefix(g.Tag, "v"))
		if err != nil {
			return "", fmt.Errorf("tag %s: %w; tag releases like v1.2.3", g.Tag, err)
		}
		if g.Count == 0 {
			return v, nil
		}
		return fmt.Sprintf("%s+git%d.g%s", v, g.Count, g.SHA), nil
	}
	if base == "" {
		base = "0.0.0"
	}
	v, err := FromPEP440(base)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s+git%d.g%s", v, g.Count, g.SHA), nil
}

var pep440Re = regexp.MustCompile(`(?i)^(?:(\d+)!)?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?(?:(?:-(\d+))|(?:[-_.]?(post|rev|r)[-_.]?(\d*)))?(?:[-_.]?(dev)[-_.]?(\d*))?(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?$`)

// FromPEP440 turns a PEP 440 version into a Debian upstream version that
// sorts the same way: 1.0rc1 -> 1.0~rc1, 1.0.dev2 -> 1.0~dev2,
// 1.0.post1 -> 1.0+post1, 1.0.dev1 -> 1.0~~dev1,, 1.0+local -> 1.0+local.
func FromPEP440(v string) (string, error) {
	m := pep440Re.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return "", fmt.Errorf("%q is not a PEP 440 version (e.g. 1.2.3, 1.2.3rc1, 1.2.3.post1)", v)
	}
	var b strings.Builder
	if m[1] != "" && m[1] != "0" {
		b.WriteString(m[1] + ":")
	}
	b.WriteString(m[2])
	if m[3] != "" {
		pre := strings.ToLower(m[3])
		switch pre {
		case "alpha":
			pre = "a"
		case "beta":
			pre = "b"
		case "c", "pre", "preview":
			pre = "rc"
		}
		b.WriteString("~" + pre + numOrZero(m[4]))
	}
	switch {
	case m[5] != "":
		b.WriteString("+post" + m[5])
	case m[6] != "":
		b.WriteString("+post" + numOrZero(m[7]))
	}
	if m[8] != "" {
		// A bare dev release sorts before all pre-releases of its version.
		tilde := "~~"
		if m[3] != "" || m[5] != "" || m[6] != "" {
			tilde = "~"
		}
		b.WriteString(tilde + "dev" + numOrZero(m[9]))
	}
	if m[10] != "" {
		b.WriteString("+" + strings.NewReplacer("_", ".", "-", ".").Replace(strings.ToLower(m[10])))
	}
	return b.String(), nil
}

func numOrZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

var (
	upstreamRe = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*$`)
	revisionRe = regexp.MustCompile(`^[A-Za-z0-9.+~]+$`)
)

// ValidateVersion checks Debian version syntax (deb-version(7)):
// [epoch:]upstream[-revision], upstream starting with a digit.
func ValidateVersion(v string) error {
	bad := func(why string) error {
		return fmt.Errorf("%q is not a valid Debian version: %s (expected [epoch:]upstream[-revision], e.g. 1.2.3 or 1.2.3-1)", v, why)
	}
	rest := v
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		if _, err := strconv.ParseUint(rest[:i], 10, 32); err != nil {
			return bad("the epoch must be a number")
		}
		rest = rest[i+1:]
	}
	upstream := rest
	if i := strings.LastIndexByte(rest, '-'); i >= 0 {
		upstream = rest[:i]
		if !revisionRe.MatchString(rest[i+1:]) {
			return bad("bad revision after the last '-'")
		}
	}
	if upstream == "" || upstream[0] < '0' || upstream[0] > '9' {
		return bad("the upstream version must start with a digit")
	}
	if !upstreamRe.MatchString(upstream) {
		return bad("only letters, digits and . + ~ - are allowed")
	}
	return nil
}

// splitEpoch separates "1:2.0" into 1 and "2.0".
func splitEpoch(v string) (uint, string) {
	i := strings.IndexByte(v, ':')
	if i < 0 {
		return 0, v
	}
	e, _ := strconv.ParseUint(v[:i], 10, 32)
	return uint(e), v[i+1:]
}
