package hooks

import (
	"bytes"
	"errors"
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

// Errors from SplitCommand.
var (
	errUnterminatedQuote = errors.New("unterminated quote")
	errTrailingBackslash = errors.New("trailing backslash")
)

// SplitCommand splits a hook command line into words the way a POSIX shell
// would, without expanding variables, globs or anything else: unquoted
// whitespace separates words; single quotes keep everything literally;
// double quotes keep everything except that a backslash escapes ", \, $
// and `; outside quotes a backslash escapes any character. An empty or
// blank line gives no words.
func SplitCommand(line string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 >= len(line) {
				return nil, errTrailingBackslash
			}
			i++
			if line[i] != '\n' { // backslash-newline continues the line
				cur.WriteByte(line[i])
				inWord = true
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errUnterminatedQuote
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += 1 + j
			inWord = true
		case c == '"':
			inWord = true
			closed := false
			for i++; i < len(line); i++ {
				d := line[i]
				if d == '"' {
					closed = true
					break
				}
				if d == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
					d = line[i]
				}
				cur.WriteByte(d)
			}
			if !closed {
				return nil, errUnterminatedQuote
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
