package debpkg

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestFromPEP440(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1.2.3", "1.2.3"},
		{"1.0rc1", "1.0~rc1"},
		{"1.0-rc.1", "1.0~rc1"},
		{"2.0a2", "2.0~a2"},
		{"2.0beta", "2.0~b0"},
		{"1.0.dev3", "1.0~~dev3"},
		{"1.0rc1.dev3", "1.0~rc1~dev3"},
		{"1.0.post2", "1.0+post2"},
		{"1.0-4", "1.0+post4"},
		{"1.0+local_7", "1.0+local.7"},
		{"1!2.0", "1:2.0"},
		{"0!2.0", "2.0"},
	} {
		got, err := FromPEP440(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("FromPEP440(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if err == nil {
			if verr := ValidateVersion(got); verr != nil {
				t.Errorf("FromPEP440(%q) = %q is not a Debian version: %v", tc.in, got, verr)
			}
		}
	}
	for _, bad := range []string{"", "abc", "1.0 beta", "v1.0", "1..0"} {
		if got, err := FromPEP440(bad); err == nil {
			t.Errorf("FromPEP440(%q) = %q, want an error", bad, got)
		}
	}
}

func TestValidateVersion(t *testing.T) {
	for _, ok := range []string{"1.2.3", "1.2.3-1", "1:2.0-1", "0.0.0+git3.gabc", "1.0~rc1", "2.0-1.1+deb12u1", "1.2-3-4"} {
		if err := ValidateVersion(ok); err != nil {
			t.Errorf("ValidateVersion(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "v1.0", "a1.0", "1.0_1", "1.0-", "x:1.0", "1.0 1", "1.0-a_b", ":1"} {
		if err := ValidateVersion(bad); err == nil {
			t.Errorf("ValidateVersion(%q) = nil, want an error", bad)
		}
	}
}

// TestDebianOrdering checks with dpkg that translated versions sort the
// way PEP 440 says.
func TestDebianOrdering(t *testing.T) {
	testenv.NeedCommand(t, "dpkg", "dpkg")
	order := []string{"1.0.dev1", "1.0a1", "1.0b2", "1.0rc1.dev1", "1.0rc1", "1.0", "1.0.post1.dev1", "1.0.post1", "1.0.1"}
	for i := 0; i+1 < len(order); i++ {
		a, _ := FromPEP440(order[i])
		b, _ := FromPEP440(order[i+1])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg says %s (%s) is not < %s (%s)", a, order[i], b, order[i+1])
		}
	}
}

func gitRepo(t *testing.T) (string, func(args ...string) string) {
	t.Helper()
	testenv.NeedCommand(t, "git", "git")
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@example.org", "GIT_AUTHOR_DATE=2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", "-b", "main")
	return dir, run
}

func TestGitVersion(t *testing.T) {
	dir, run := gitRepo(t)
	ctx := context.Background()
	if _, err := ReadGit(ctx, dir); err == nil {
		t.Fatal("ReadGit on a repository without commits succeeded")
	}
	commit := func(msg string) {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(msg), 0o644); err != nil {
			t.Fatal(err)
		}
		run("add", "f")
		run("commit", "-q", "-m", msg)
	}
	commit("one")
	sha := func() string { return run("rev-parse", "--short=12", "HEAD") }

	gi, err := ReadGit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if gi.CommitTime.Unix() != 1704164645 {
		t.Errorf("commit time = %v, want 2024-01-02T03:04:05Z", gi.CommitTime)
	}
	check := func(base, want string) {
		t.Helper()
		gi, err := ReadGit(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		got, err := gi.Version(base)
		if err != nil || got != want {
			t.Errorf("Version(%q) = %q, %v; want %q", base, got, err, want)
		}
	}
	check("", "0.0.0+git1.g"+sha())
	check("0.3.0", "0.3.0+git1.g"+sha())
	run("tag", "not-a-version")
	check("", "0.0.0+git1.g"+sha())
	run("tag", "v1.2.3")
	check("", "1.2.3")
	check("9.9.9", "1.2.3") // a tag wins over pyproject's version
	commit("two")
	commit("three")
	check("", "1.2.3+git2.g"+sha())
	run("tag", "-a", "-m", "rc", "v1.3.0rc1")
	check("", "1.3.0~rc1")
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(sha()) {
		t.Errorf("sha %q is not 12 hex digits", sha())
	}
}
