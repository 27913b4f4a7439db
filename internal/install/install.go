// Package install is the OS side of one node's install of a release: apt
// installs the .deb (dependencies resolved from the local file), dpkg-query
// says which version is installed, and Gate waits until the app's systemd
// unit has restarted on the new code and its health endpoint answers 200
// with the new version for a soak period.
//
// Everything that touches the OS goes through a RunFunc and an *http.Client,
// so the package is tested without root, apt or systemd. It imports no raft,
// configuration or controller: delivery calls it through an interface it
// declares.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// RunFunc runs a command and returns its combined stdout and stderr (the
// tail of it when long) and an error when it could not start or exited
// non-zero. env holds extra NAME=value pairs added to the environment.
type RunFunc func(ctx context.Context, env []string, name string, args ...string) ([]byte, error)

// maxOutput is how much of a command's output is kept: the tail, which is
// where apt and dpkg put the reason they failed.
const maxOutput = 64 << 10

// tailLines is how many lines of output an error quotes.
const tailLines = 20

// Exec is the real RunFunc: os/exec with the current environment plus env.
// It keeps only the last 64 KiB of output, so a chatty command cannot
// exhaust memory.
func Exec(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// tailBuffer keeps the last maxOutput bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= maxOutput {
		t.b = append(t.b[:0], p[len(p)-maxOutput:]...)
		return n, nil
	}
	if over := len(t.b) + len(p) - maxOutput; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte { return t.b }

var _ io.Writer = (*tailBuffer)(nil)

// Apt installs release packages with apt-get and reads the installed
// version with dpkg-query. The zero Apt runs the real commands and logs
// nowhere.
type Apt struct {
	Log *slog.Logger
	// Run runs apt-get and dpkg-query; nil means Exec.
	Run RunFunc
}

func (a *Apt) run() RunFunc {
	if a.Run != nil {
		return a.Run
	}
	return Exec
}

func (a *Apt) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

// aptEnv keeps apt and debconf from asking anything.
var aptEnv = []string{"DEBIAN_FRONTEND=noninteractive"}

// installArgs is the apt-get command line for one local .deb: downgrades
// are allowed (a rollback installs the previous release), changed conffiles
// keep the admin's version without asking, and apt waits up to a minute for
// the dpkg lock (unattended-upgrades may hold it) instead of failing.
func installArgs(debPath string) []string {
	return []string{
		// --reinstall: a rebuild may carry the version that runs.
		"install", "-y", "--allow-downgrades", "--reinstall",
		"-o", "Dpkg::Options::=--force-confdef",
		"-o", "Dpkg::Options::=--force-confold",
		"-o", "DPkg::Lock::Timeout=60",
		debPath,
	}
}

// Install installs the .deb at debPath with apt-get, which resolves its
// dependencies from the configured repositories. On failure the error
// carries the tail of apt's output. A cancelled ctx does not stop apt once
// it started: Install returns when apt ends.
func (a *Apt) Install(ctx context.Context, debPath string) error {
	if !strings.HasSuffix(debPath, ".deb") {
		return fmt.Errorf("install %s: not a .deb file name; pass the path of the release's .deb", debPath)
	}
	// apt-get treats an argument as a file only when it contains a slash.
	path := debPath
	if !filepath.IsAbs(path) {
		path = "./" + filepath.Clean(path)
	}
	a.log().Info("installing release", "deb", path)
	// apt is not interrupted when ctx ends: a killed dpkg leaves the
	// package half-installed, which is worse than a late return.
	out, err := a.run()(context.WithoutCancel(ctx), aptEnv, "apt-get", installArgs(path)...)
	if err != nil {
		return fmt.Errorf("apt-get install %s: %w; fix the cause apt gives below (a missing dependency, a failing maintainer script, a held dpkg lock), then deploy again:\n%s", path, err, tail(out, tailLines))
	}
	a.log().Info("release installed", "deb", path)
	return nil
}

// pkgName is a Debian package name (Policy 5.6.1), optionally with an
// architecture qualifier; it keeps a name from being read as an option.
var pkgName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$`)

// ErrBrokenPackage says dpkg holds a package in a half-installed state: a
// previous install failed midway.
var ErrBrokenPackage = errors.New("package is only partly installed")

// Installed returns the installed version of pkg, or "" when it is not
// installed (never installed, removed, or only its conffiles are left).
// A package dpkg left half-installed is an error wrapping ErrBrokenPackage.
func (a *Apt) Installed(ctx context.Context, pkg string) (string, error) {
	if !pkgName.MatchString(pkg) {
		return "", fmt.Errorf("installed version of %q: not a Debian package name", pkg)
	}
	out, err := a.run()(ctx, nil, "dpkg-query", "--show", "--showformat=${Status}\t${Version}\n", pkg)
	if err != nil {
		if bytes.Contains(out, []byte("no packages found matching")) {
			return "", nil
		}
		return "", fmt.Errorf("dpkg-query --show %s: %w\n%s", pkg, err, tail(out, tailLines))
	}
	v, err := parseStatus(out)
	if err != nil {
		return "", fmt.Errorf("installed version of %s: %w", pkg, err)
	}
	return v, nil
}

// parseStatus reads dpkg-query's "${Status}\t${Version}" lines (one per
// architecture of a multi-arch package) and returns the installed version.
func parseStatus(out []byte) (string, error) {
	version := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		line = strings.TrimRight(line, "\r")
		status, ver, ok := strings.Cut(line, "\t")
		f := strings.Fields(status)
		if !ok || len(f) != 3 {
			return "", fmt.Errorf("unexpected dpkg-query output %q", line)
		}
		switch f[2] {
		case "installed", "triggers-pending", "triggers-awaited":
			ver = strings.TrimSpace(ver)
			if ver == "" {
				return "", fmt.Errorf("dpkg-query reports %s without a version", f[2])
			}
			if version != "" && version != ver {
				return "", fmt.Errorf("dpkg-query reports two installed versions, %s and %s", version, ver)
			}
			version = ver
		case "not-installed", "config-files":
		case "half-installed", "unpacked", "half-configured":
			return "", fmt.Errorf("%w: dpkg status %q (version %s); run 'dpkg --configure -a' or reinstall the package, then deploy again", ErrBrokenPackage, f[2], strings.TrimSpace(ver))
		default:
			return "", fmt.Errorf("unknown dpkg status %q in %q", f[2], line)
		}
	}
	return version, nil
}

// tail returns the last n lines of out, indented, for an error message.
func tail(out []byte, n int) string {
	s := strings.TrimRight(string(out), "\n")
	if s == "" {
		return "  (no output)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
