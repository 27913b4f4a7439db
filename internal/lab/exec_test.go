package lab

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An interrupted command is stopped with everything it started, the way an
// nsenter'd command and its children must be.
func TestRunExitCancelStopsTheTree(t *testing.T) {
	// forks: the root waits for its child, as nsenter --pid does, and is
	// left to exit by itself once the child is gone.
	for _, forks := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "forks"}[forks], func(t *testing.T) { testCancelStopsTheTree(t, forks) })
	}
}

func testCancelStopsTheTree(t *testing.T, forks bool) {
	pidFile := t.TempDir() + "/pid"
	ctx, cancel := context.WithCancel(t.Context())
	// sh starts a grandchild that writes its PID and would outlive sh.
	cmd := exec.CommandContext(ctx, "sh", "-c", `sh -c 'echo $$ > `+pidFile+`; exec sleep 60' & wait`)
	done := make(chan error, 1)
	go func() {
		_, err := runExit(cmd, forks, nil, io.Discard, io.Discard)
		done <- err
	}()
	var grandchild int
	deadline := time.Now().Add(5 * time.Second)
	for grandchild == 0 {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("grandchild did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("runExit after cancel = %v, want an 'interrupted' error", err)
		}
	case <-time.After(stopGrace + 2*time.Second):
		t.Fatal("runExit did not return after cancel")
	}
	// The grandchild is gone, or a zombie nobody has reaped yet.
	deadline = time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(grandchild) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(grandchild, syscall.SIGKILL)
			t.Fatalf("grandchild %d still running after the cancel: %s", grandchild, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunExitStatus(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", -1},
	} {
		code, err := runExit(exec.CommandContext(t.Context(), "sh", "-c", tc.script), false, nil, io.Discard, io.Discard)
		if code != tc.want || (tc.want >= 0) != (err == nil) {
			t.Errorf("%q: runExit = %d, %v; want %d", tc.script, code, err, tc.want)
		}
	}
}

func TestParentOf(t *testing.T) {
	if got := parentOf(os.Getpid()); got != os.Getppid() {
		t.Fatalf("parentOf(self) = %d, want %d", got, os.Getppid())
	}
	if got := parentOf(1 << 30); got != 0 {
		t.Fatalf("parentOf(no such pid) = %d, want 0", got)
	}
}
