// Package testenv lets tests that need a tool, root or the network-namespace
// support skip on a developer's machine but fail in CI, where .ci/run has
// installed everything: a check that silently skips there cannot fail.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// StrictVar is the environment variable that turns missing prerequisites
// into failures. .ci/run sets it.
const StrictVar = "TANDEM_TEST_STRICT"

// Strict reports whether missing prerequisites fail tests.
func Strict() bool { return os.Getenv(StrictVar) != "" }

// Missing skips t because a prerequisite is missing, or fails it in strict
// mode.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (%s is set: install what .ci/run installs, or unset it to skip)", msg, StrictVar)
		return
	}
	t.Skip(msg)
}

// NeedRoot skips or fails t unless it runs as root.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root %s", why)
	}
}

// NeedCommand skips or fails t unless name is on PATH.
func NeedCommand(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		Missing(t, "needs %s (Debian package %s)", name, pkg)
	}
}

// NewNetns returns the descriptor of a new, empty network namespace that
// lives until t ends, so a test never touches the host's network or
// nftables; the calling goroutine stays in its own namespace. It needs
// root (why says for what).
func NewNetns(t testing.TB, why string) int {
	t.Helper()
	NeedRoot(t, why)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		Missing(t, "cannot create a network namespace: %v", err)
		return -1
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("return to the test's namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return int(ns)
}
