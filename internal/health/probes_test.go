package health

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// probeOnce builds a one-check Runner from spec and runs its probe once with
// the spec's timeout, as the runner would.
func probeOnce(t *testing.T, spec Check, opts Options) (string, time.Duration, error) {
	t.Helper()
	r, err := New([]Check{spec}, discard(), opts)
	if err != nil {
		t.Fatalf("New(%+v) = %v", spec, err)
	}
	c := r.checks[0]
	ctx, cancel := context.WithTimeout(t.Context(), c.spec.Timeout)
	defer cancel()
	start := time.Now()
	out, err := c.probe(ctx)
	return out, time.Since(start), err
}

func TestHTTPProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "all good") })
	mux.HandleFunc("/down", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "maintenance")
	})
	mux.HandleFunc("/json", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":"ok","checks":{"db":{"status":"degraded","lag":1.0}},"nodes":[{"up":true}]}`)
	})
	mux.HandleFunc("/notjson", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "<html>ok</html>") })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name    string
		spec    Check
		wantErr string // "" means pass
		wantOut string // substring of the output
	}{
		{name: "status ok", spec: Check{Target: "/ok"}, wantOut: "HTTP 200 OK: all good"},
		{name: "status wrong", spec: Check{Target: "/down"}, wantErr: "status 503, want 200", wantOut: "maintenance"},
		{name: "expected 503", spec: Check{Target: "/down", Status: 503}},
		{name: "body contains", spec: Check{Target: "/ok", Body: "good"}},
		{name: "body missing", spec: Check{Target: "/ok", Body: "bad"}, wantErr: `body does not contain "bad"`},
		{name: "json top field", spec: Check{Target: "/json", JSONPath: "status", JSONWant: "ok"}},
		{name: "json nested mismatch", spec: Check{Target: "/json", JSONPath: "checks.db.status", JSONWant: "ok"},
			wantErr: `json field "checks.db.status" is "degraded", want "ok"`},
		{name: "json number", spec: Check{Target: "/json", JSONPath: "checks.db.lag", JSONWant: "1"}},
		{name: "json array bool", spec: Check{Target: "/json", JSONPath: "nodes.0.up", JSONWant: "true"}},
		{name: "json missing", spec: Check{Target: "/json", JSONPath: "version", JSONWant: "1"}, wantErr: `json field "version" not found`},
		{name: "not json", spec: Check{Target: "/notjson", JSONPath: "status", JSONWant: "ok"}, wantErr: "body is not JSON"},
		{name: "redirect not followed", spec: Check{Target: "/redirect"}, wantErr: "status 302, want 200"},
		{name: "redirect expected", spec: Check{Target: "/redirect", Status: 302}},
		{name: "404", spec: Check{Target: "/nope"}, wantErr: "status 404"},
		{name: "timeout", spec: Check{Target: "/slow", Timeout: 100 * time.Millisecond}, wantErr: "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.Type = TypeHTTP
			spec.Target = srv.URL + spec.Target
			out, d, err := probeOnce(t, spec, Options{})
			checkResult(t, out, err, tt.wantErr, tt.wantOut)
			if d > 2*time.Second {
				t.Errorf("probe took %s; the timeout was not enforced", d)
			}
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		addr := closedAddr(t)
		_, _, err := probeOnce(t, Check{Type: TypeHTTP, Target: "http://" + addr + "/"}, Options{})
		checkResult(t, "", err, "connection refused", "")
	})
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tests := []struct {
		name, target, wantErr, wantOut string
	}{
		{name: "open", target: ln.Addr().String(), wantOut: "connected to " + ln.Addr().String()},
		{name: "closed", target: closedAddr(t), wantErr: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := probeOnce(t, Check{Type: TypeTCP, Target: tt.target}, Options{})
			checkResult(t, out, err, tt.wantErr, tt.wantOut)
		})
	}
}

func TestExecProbe(t *testing.T) {
	long := strings.Repeat("x", 3000)
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		wantErr string
		wantOut string
		maxTime time.Duration
	}{
		{name: "pass", script: "echo fine", wantOut: "fine"},
		{name: "fail with stderr", script: "echo broken >&2; exit 3", wantErr: "exit status 3", wantOut: "broken"},
		{name: "combined output order", script: "echo one; echo two >&2; echo three", wantOut: "one\ntwo\nthree"},
		{name: "tail kept", script: "echo head; echo " + long + "; echo " + long + "; echo tail", wantOut: "x\ntail"},
		{name: "timeout kills the group", script: "sleep 30 & sleep 30; echo never",
			timeout: 200 * time.Millisecond, wantErr: "killed", maxTime: 2 * time.Second},
		{name: "background child does not hold it", script: "(sleep 3 &) ; echo done", wantOut: "done", maxTime: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := Check{Type: TypeExec, Command: []string{"sh", "-c", tt.script}, Timeout: tt.timeout, Interval: 10 * time.Second}
			out, d, err := probeOnce(t, spec, Options{})
			checkResult(t, out, err, tt.wantErr, tt.wantOut)
			if len(out) > MaxOutput+len("…") {
				t.Errorf("output is %d bytes; want at most %d", len(out), MaxOutput)
			}
			if tt.maxTime > 0 && d > tt.maxTime {
				t.Errorf("probe took %s; want under %s", d, tt.maxTime)
			}
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		_, _, err := probeOnce(t, Check{Type: TypeExec, Command: []string{"/nonexistent/check"}}, Options{})
		checkResult(t, "", err, "no such file", "")
	})
}

func TestExecTimeoutKillsChildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// The child records its pid, then both wait; the timeout must kill both.
	script := fmt.Sprintf("sleep 30 & echo $! > %s; wait", pidFile)
	_, _, err := probeOnce(t, Check{Type: TypeExec, Command: []string{"sh", "-c", script}, Timeout: 300 * time.Millisecond}, Options{})
	if err == nil {
		t.Fatal("probe passed; want a timeout")
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatalf("child pid not written: %v", rerr)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		// Gone, or a zombie waiting for init to reap it, both mean killed.
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %s still alive after the check timed out", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSystemdProbe(t *testing.T) {
	dir := t.TempDir()
	// A fake systemctl: "web.service" is active, "db.service" failed, and
	// "hang.service" never answers.
	fake := filepath.Join(dir, "systemctl")
	script := `#!/bin/sh
[ "$1" = is-active ] && [ "$2" = -- ] || { echo "bad args: $*" >&2; exit 64; }
case "$3" in
web.service) echo active ;;
db.service) echo failed; exit 3 ;;
hang.service) sleep 30 ;;
*) echo inactive; exit 3 ;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		unit, wantErr, wantOut string
	}{
		{unit: "web.service", wantOut: "active"},
		{unit: "db.service", wantErr: "unit db.service is failed", wantOut: "failed"},
		{unit: "other.service", wantErr: "unit other.service is inactive"},
		{unit: "hang.service", wantErr: "killed"},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			spec := Check{Type: TypeSystemd, Unit: tt.unit, Timeout: 300 * time.Millisecond}
			out, d, err := probeOnce(t, spec, Options{Systemctl: fake})
			checkResult(t, out, err, tt.wantErr, tt.wantOut)
			if d > 2*time.Second {
				t.Errorf("probe took %s", d)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		specs   []Check
		wantErr string
	}{
		{name: "unknown type", specs: []Check{{Type: "ping"}}, wantErr: `unknown type "ping"`},
		{name: "bad url", specs: []Check{{Type: TypeHTTP, Target: "localhost:80"}}, wantErr: "not an http:// or https:// URL"},
		{name: "json half", specs: []Check{{Type: TypeHTTP, Target: "http://x/", JSONPath: "a"}}, wantErr: "go together"},
		{name: "json empty segment", specs: []Check{{Type: TypeHTTP, Target: "http://x/", JSONPath: "a..b", JSONWant: "1"}}, wantErr: "empty segment"},
		{name: "tcp no port", specs: []Check{{Type: TypeTCP, Target: "localhost"}}, wantErr: "not HOST:PORT"},
		{name: "exec no command", specs: []Check{{Type: TypeExec}}, wantErr: "needs a command"},
		{name: "systemd no unit", specs: []Check{{Type: TypeSystemd}}, wantErr: "needs a unit"},
		{name: "negative rise", specs: []Check{{Type: TypeTCP, Target: "a:1", Rise: -1}}, wantErr: "at least 1"},
		{name: "duplicate", specs: []Check{{Name: "a", Type: TypeTCP, Target: "a:1"}, {Name: "a", Type: TypeTCP, Target: "a:2"}}, wantErr: `duplicate name "a"`},
		{name: "ok", specs: []Check{{Type: TypeTCP, Target: "a:1"}, {Type: TypeSystemd, Unit: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.specs, discard(), Options{})
			checkResult(t, "", err, tt.wantErr, "")
		})
	}
}

func TestDefaults(t *testing.T) {
	r, err := New([]Check{{Type: TypeHTTP, Target: "http://127.0.0.1/"}, {Type: TypeTCP, Target: "a:1", Interval: 5 * time.Second},
		{Name: "fast", Type: TypeTCP, Target: "a:1", Interval: 20 * time.Millisecond}}, discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := r.checks[0].spec
	if got.Name != "http" || got.Interval != DefaultInterval || got.Timeout != time.Second ||
		got.Rise != DefaultRise || got.Fall != DefaultFall || got.Status != 200 {
		t.Errorf("defaults = %+v", got)
	}
	if got := r.checks[1].spec.Timeout; got != time.Second {
		t.Errorf("timeout for a 5s interval = %s; want 1s", got)
	}
	if got := r.checks[2].spec.Timeout; got != 200*time.Millisecond {
		t.Errorf("timeout for a 20ms interval = %s; want 200ms (10 intervals)", got)
	}
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		max    int
		want   string
	}{
		{name: "fits", writes: []string{"ab", "cd"}, max: 8, want: "abcd"},
		{name: "exact", writes: []string{"abcd"}, max: 4, want: "abcd"},
		{name: "overflow across writes", writes: []string{"abc", "def"}, max: 4, want: "…cdef"},
		{name: "one big write", writes: []string{"abcdefgh"}, max: 4, want: "…efgh"},
		{name: "big write after small", writes: []string{"a", "wxyz"}, max: 4, want: "…wxyz"},
		{name: "partial rune dropped", writes: []string{"aé"}, max: 1, want: "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: tt.max}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("String() = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc…"},
		{"aéb", 2, "a…"}, // é is two bytes; never cut inside it
		{"bad\xffutf8", 100, "bad\uFFFDutf8"},
	}
	for _, tt := range tests {
		if got := truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q; want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func checkResult(t *testing.T, out string, err error, wantErr, wantOut string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("err = %v; want nil (output %q)", err, out)
	case wantErr != "" && err == nil:
		t.Errorf("err = nil; want one containing %q (output %q)", wantErr, out)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("err = %v; want one containing %q", err, wantErr)
	}
	if wantOut != "" && !strings.Contains(out, wantOut) {
		t.Errorf("output = %q; want it to contain %q", out, wantOut)
	}
}

// closedAddr returns a loopback address with nothing listening on it.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
