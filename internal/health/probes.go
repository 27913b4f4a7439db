package health

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxBody bounds how much of an HTTP response is read for body and JSON
// matching; health endpoints are small, and the body is untrusted.
const maxBody = 1 << 20

// bodyExcerpt is how much of the body is kept as the check's output.
const bodyExcerpt = 256

// killGrace is how long an exec'd check may hold its output pipes open after
// it was killed or exited (a daemonised grandchild, say) before they are closed.
const killGrace = 100 * time.Millisecond

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{}).DialContext,
			DisableKeepAlives:     true,
			DisableCompression:    true,
			TLSHandshakeTimeout:   0, // bounded by the probe's context
			ResponseHeaderTimeout: 0,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// plainHTTP returns a round trip that does a plain-HTTP request itself, on
// a fresh connection closed afterwards, and leaves https to client. An
// http.Transport starts a dialler, a reader and a writer goroutine for each
// new connection; at a check every 200 ms they were most of an idle app
// node's health-check cost. Redirects are not followed, as with client.
func plainHTTP(client *http.Client) func(*http.Request) (*http.Response, error) {
	return func(req *http.Request) (*http.Response, error) {
		if req.URL.Scheme != "http" {
			return client.Do(req)
		}
		resp, err := plainRoundTrip(req)
		if err != nil {
			return nil, &url.Error{Op: "Get", URL: req.URL.String(), Err: err}
		}
		return resp, nil
	}
}

func plainRoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	c, err := dialCheck(ctx, addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection's deadline is the context's: it can fire a
			// moment before the context's own timer does.
			return nil, context.DeadlineExceeded
		}
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(dl); err != nil {
			return fail(err)
		}
	}
	req.Close = true // "Connection: close": one request per connection
	// Into a buffer, which Write takes as it is, then in one write: given
	// the connection, Write would wrap it in a 4 KiB bufio.Writer.
	var out bytes.Buffer
	if err := req.Write(&out); err != nil {
		return fail(err)
	}
	if _, err := c.Write(out.Bytes()); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 1024), req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &connBody{ReadCloser: resp.Body, conn: c, stop: stop}
	return resp, nil
}

// connBody closes the connection with the body.
type connBody struct {
	io.ReadCloser
	conn net.Conn
	stop func() bool
}

func (b *connBody) Close() error {
	b.stop()
	err := b.ReadCloser.Close()
	b.conn.Close()
	return err
}

func httpProbe(do func(*http.Request) (*http.Response, error), s Check) probeFunc {
	return func(ctx context.Context) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Target, nil)
		if err != nil {
			return "", fmt.Errorf("build request: %w", err)
		}
		req.Header.Set("User-Agent", "tandem-health/1")
		resp, err := do(req)
		if err != nil {
			return "", err // *url.Error already names the method and URL
		}
		defer resp.Body.Close()
		limit := int64(bodyExcerpt)
		if s.Body != "" || s.JSONPath != "" {
			limit = maxBody
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, limit))
		out := fmt.Sprintf("HTTP %s", resp.Status)
		if ex := bytes.TrimSpace(body[:min(len(body), bodyExcerpt)]); len(ex) > 0 {
			out += ": " + string(ex)
		}
		if resp.StatusCode != s.Status {
			return out, fmt.Errorf("status %d, want %d", resp.StatusCode, s.Status)
		}
		if rerr != nil {
			return out, fmt.Errorf("read body: %w", rerr)
		}
		if s.Body != "" && !bytes.Contains(body, []byte(s.Body)) {
			return out, fmt.Errorf("body does not contain %q", s.Body)
		}
		if s.JSONPath != "" {
			if err := matchJSON(body, s.JSONPath, s.JSONWant); err != nil {
				return out, err
			}
		}
		return out, nil
	}
}

// dialCheck connects an HTTP or TCP check. Its connection lasts one check,
// so it sets no TCP keepalive, which would never be sent and costs four
// setsockopt calls per connection, several times a second.
func dialCheck(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: -1}
	return d.DialContext(ctx, "tcp", addr)
}

func tcpProbe(target string) probeFunc {
	return func(ctx context.Context) (string, error) {
		conn, err := dialCheck(ctx, target)
		if err != nil {
			return "", err // *net.OpError names the address
		}
		out := "connected to " + conn.RemoteAddr().String()
		_ = conn.Close()
		return out, nil
	}
}

func execProbe(argv []string) probeFunc {
	return func(ctx context.Context) (string, error) {
		return runCommand(ctx, argv)
	}
}

func systemdProbe(systemctl, unit string) probeFunc {
	return func(ctx context.Context) (string, error) {
		// Without --quiet, is-active prints the state, which is the useful
		// output ("failed", "activating"); "--" keeps an odd unit name from
		// being read as an option.
		out, err := runCommand(ctx, []string{systemctl, "is-active", "--", unit})
		state := strings.TrimSpace(out)
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) && state != "" {
				return state, fmt.Errorf("unit %s is %s", unit, state)
			}
			return state, fmt.Errorf("unit %s: %w", unit, err)
		}
		return state, nil
	}
}

// runCommand runs argv in its own process group, so that a timeout kills the
// command and everything it started, and returns the tail of its combined
// output. A non-zero exit is returned as an *exec.ExitError.
func runCommand(ctx context.Context, argv []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out := &tailBuffer{max: MaxOutput}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group id equals the leader's pid because of Setpgid.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = killGrace
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		err = nil // it passed; only a leftover child kept the pipe open
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%s: killed: %w", argv[0], ctx.Err())
		} else {
			err = fmt.Errorf("%s: %w", argv[0], err)
		}
	}
	return out.String(), err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.dropped = t.dropped || len(t.buf) > 0 || len(p) > t.max
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.dropped {
		// Skip a partial rune at the cut.
		for len(b) > 0 && !isRuneStart(b[0]) {
			b = b[1:]
		}
		return strings.ToValidUTF8("…"+string(b), "\uFFFD")
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
