// Package hostrun runs the host commands the baseline areas read from
// (sshd -T, ssh -Q, apt-config dump, dpkg-query, systemctl is-enabled) and
// joins paths under a test root. The areas take a Func so their tests use a
// fake instead of the host's tools.
package hostrun

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Func runs a command (argv[0] looked up in PATH) and returns its standard
// output. A command that cannot start or exits non-zero returns an error
// that quotes the tail of its standard error. harden.ExecRunner{}.Run has
// this shape.
type Func func(ctx context.Context, argv ...string) ([]byte, error)

// maxStderr is how much of a failing command's standard error an error
// quotes: the tail, where tools put the reason.
const maxStderr = 2048

// Exec is the real Func: os/exec with the process's environment.
func Exec(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("run: empty command")
	}
	name, args := argv[0], argv[1:]
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > maxStderr {
			msg = "…" + msg[len(msg)-maxStderr:]
		}
		if msg != "" {
			return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

// OrExec returns run, or Exec when run is nil.
func OrExec(run Func) Func {
	if run == nil {
		return Exec
	}
	return run
}

// Under joins an absolute host path under root ("" or "/" is the host
// itself), so tests point an area at a temporary tree.
func Under(root, path string) string {
	if root == "" || root == "/" {
		return filepath.Clean(path)
	}
	return filepath.Join(root, filepath.Clean("/"+path))
}
