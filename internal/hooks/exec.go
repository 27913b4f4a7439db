package hooks

import (
	"bytes"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// hookWaitDelay is how long a hook's output pipes may stay open after the
// hook exited or was killed (held by a background child it started) before
// they are closed and the run is considered over.
const hookWaitDelay = 500 * time.Millisecond

// setProcessGroup makes cmd the leader of a new process group and makes
// cancelling its context kill the whole group, so a timed-out script's
// children die with it.
func setProcessGroup(cmd *exec.Cmd, waitDelay time.Duration) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// With Setpgid the group id is the leader's pid.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = waitDelay
}

// maxLine bounds one logged line; longer output is logged in pieces.
const maxLine = 4096

// lineLogger logs what is written to it one line at a time.
type lineLogger struct {
	log    *slog.Logger
	stream string

	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			for len(l.buf) >= maxLine {
				l.emit(l.buf[:maxLine])
				l.buf = append(l.buf[:0], l.buf[maxLine:]...)
			}
			break
		}
		l.buf = append(l.buf, p[:i]...)
		p = p[i+1:]
		for len(l.buf) > maxLine {
			l.emit(l.buf[:maxLine])
			l.buf = append(l.buf[:0], l.buf[maxLine:]...)
		}
		l.emit(l.buf)
		l.buf = l.buf[:0]
	}
	return n, nil
}

// Flush logs a final line that had no newline.
func (l *lineLogger) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = l.buf[:0]
	}
}

func (l *lineLogger) emit(line []byte) {
	s := strings.ToValidUTF8(strings.TrimRight(string(line), "\r"), "\uFFFD")
	l.log.Info("hook output", "stream", l.stream, "line", s)
}
