package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a slog.Handler that keeps every record, for asserting on logs.
type recorder struct {
	mu    *sync.Mutex
	recs  *[]slog.Record
	attrs []slog.Attr
}

func newRecorder() (*slog.Logger, *recorder) {
	r := &recorder{mu: &sync.Mutex{}, recs: &[]slog.Record{}}
	return slog.New(r), r
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.mu.Lock()
	*r.recs = append(*r.recs, rec)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(slices.Clone(r.attrs), as...)
	return &c
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

// lines returns the "line" attribute of every "hook output" record of stream.
func (r *recorder) lines(stream string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range *r.recs {
		if rec.Message != "hook output" {
			continue
		}
		var s, line string
		rec.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "stream":
				s = a.Value.String()
			case "line":
				line = a.Value.String()
			}
			return true
		})
		if s == stream {
			out = append(out, line)
		}
	}
	return out
}

// writeScript writes an executable shell script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts r.Run and stops it at the end of the test.
func run(t *testing.T, r *Runner) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return cancel
}

func TestHookArgumentsAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	// Prints its arguments and the environment it was given, one per line.
	script := writeScript(t, dir, "notify", fmt.Sprintf(`
{ for a in "$@"; do echo "arg=$a"; done
  echo "state=$TANDEM_STATE event=$TANDEM_EVENT node=$TANDEM_NODE vip=$TANDEM_VIP epoch=$TANDEM_EPOCH reason=$TANDEM_REASON"
} > %s
`, out))
	t.Setenv("TANDEM_STATE", "stale") // inherited values must be overridden

	tests := []struct {
		name   string
		opts   Options
		ev     Event
		epoch  uint64
		reason string
		want   string
	}{
		{name: "promote", opts: Options{Promote: script}, ev: EventPromote, epoch: 7,
			want: "arg=MASTER\nstate=MASTER event=promote node=node1 vip=10.0.0.100 epoch=7 reason="},
		{name: "demote", opts: Options{Demote: script}, ev: EventDemote, epoch: 8,
			want: "arg=BACKUP\nstate=BACKUP event=demote node=node1 vip=10.0.0.100 epoch=8 reason="},
		{name: "fault with reason", opts: Options{Fault: script}, ev: EventFault, epoch: 18446744073709551615, reason: "lost quorum lease",
			want: "arg=FAULT\nstate=FAULT event=fault node=node1 vip=10.0.0.100 epoch=18446744073709551615 reason=lost quorum lease"},
		{name: "extra arguments come first", opts: Options{Promote: script + ` 'two words' "x y" plain`}, ev: EventPromote, epoch: 1,
			want: "arg=two words\narg=x y\narg=plain\narg=MASTER\nstate=MASTER event=promote node=node1 vip=10.0.0.100 epoch=1 reason="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(out)
			opts := tt.opts
			opts.Node, opts.VIP = "node1", "10.0.0.100"
			log, _ := newRecorder()
			r, err := New(log, opts)
			if err != nil {
				t.Fatal(err)
			}
			run(t, r)
			if err := r.Exec(t.Context(), tt.ev, tt.epoch, tt.reason); err != nil {
				t.Fatalf("Exec() = %v", err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("hook did not run: %v", err)
			}
			if got := strings.TrimSpace(string(b)); got != tt.want {
				t.Errorf("hook saw:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestHookOutcome(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name       string
		body       string
		timeout    time.Duration
		wantErr    string // "" means success
		wantStdout []string
		wantStderr []string
		maxTime    time.Duration
	}{
		{name: "success logs lines", body: "echo one; echo two; printf 'no newline'",
			wantStdout: []string{"one", "two", "no newline"}},
		{name: "failure is returned", body: "echo 'cannot start' >&2; exit 3",
			wantErr: "exit status 3", wantStderr: []string{"cannot start"}},
		{name: "timeout", body: "echo started; sleep 30", timeout: 200 * time.Millisecond,
			wantErr: "timed out after 200ms, killed", wantStdout: []string{"started"}, maxTime: 3 * time.Second},
		{name: "background child does not block", body: "sleep 2 & echo ok",
			wantStdout: []string{"ok"}, maxTime: 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := writeScript(t, dir, strings.ReplaceAll(tt.name, " ", "_"), tt.body)
			log, rec := newRecorder()
			r, err := New(log, Options{Promote: script, Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			run(t, r)
			start := time.Now()
			err = r.Exec(t.Context(), EventPromote, 1, "")
			d := time.Since(start)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Exec() = %v; want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Exec() = %v; want an error containing %q", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "promote hook "+script) {
				t.Errorf("error %q does not name the event and the hook", err)
			}
			if got := rec.lines("stdout"); !slices.Equal(got, tt.wantStdout) {
				t.Errorf("stdout lines = %q; want %q", got, tt.wantStdout)
			}
			if got := rec.lines("stderr"); !slices.Equal(got, tt.wantStderr) {
				t.Errorf("stderr lines = %q; want %q", got, tt.wantStderr)
			}
			if tt.maxTime > 0 && d > tt.maxTime {
				t.Errorf("took %s; want under %s", d, tt.maxTime)
			}
		})
	}
}

func TestHookTimeoutKillsChildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := writeScript(t, dir, "hang", fmt.Sprintf("sleep 30 & echo $! > %s; wait\n", pidFile))
	log, _ := newRecorder()
	r, err := New(log, Options{Demote: script, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	if err := r.Exec(t.Context(), EventDemote, 1, ""); err == nil {
		t.Fatal("hook that hangs succeeded")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			return // gone, or a zombie: killed
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hook's child %s survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOrderPreservedNeverConcurrent(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log")
	lock := filepath.Join(dir, "lock")
	// mkdir is atomic: if two hooks overlapped, the second would fail it.
	body := fmt.Sprintf(`mkdir %[1]s || { echo CONCURRENT >> %[2]s; exit 1; }
sleep 0.0$(( $TANDEM_EPOCH %% 3 ))
echo "$TANDEM_EVENT $TANDEM_EPOCH" >> %[2]s
rmdir %[1]s
`, lock, logFile)
	script := writeScript(t, dir, "notify", body)
	log, _ := newRecorder()
	var mu sync.Mutex
	var seen []Event
	r, err := New(log, Options{Promote: script, Demote: script, Fault: script,
		OnResult: func(ev Event, err error, _ time.Duration) {
			mu.Lock()
			seen = append(seen, ev)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	// Queue everything before the worker starts, and more while it runs.
	events := []Event{EventPromote, EventDemote, EventPromote, EventFault, EventPromote, EventDemote}
	var want []string
	var results []<-chan error
	for i := range 30 {
		ev := events[i%len(events)]
		results = append(results, r.Submit(ev, uint64(i), ""))
		want = append(want, fmt.Sprintf("%s %d", ev, i))
		if i == 10 {
			run(t, r)
		}
	}
	for i, ch := range results {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("event %d: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("event %d never finished", i)
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !slices.Equal(got, want) {
		t.Errorf("hooks ran as\n%q\nwant\n%q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 30 {
		t.Errorf("OnResult called %d times; want 30", len(seen))
	}
}

func TestDrainOnShutdown(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log")
	script := writeScript(t, dir, "notify", fmt.Sprintf("sleep 0.1; echo $TANDEM_EVENT >> %s\n", logFile))
	log, _ := newRecorder()
	r, err := New(log, Options{Promote: script, Demote: script})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	p := r.Submit(EventPromote, 1, "")
	d := r.Submit(EventDemote, 1, "")
	cancel() // the queued demote must still run: it stops primary units
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if err := <-p; err != nil {
		t.Errorf("promote: %v", err)
	}
	if err := <-d; err != nil {
		t.Errorf("demote: %v", err)
	}
	if b, _ := os.ReadFile(logFile); string(b) != "promote\ndemote\n" {
		t.Errorf("ran %q; want promote then demote", b)
	}
	if err := <-r.Submit(EventPromote, 2, ""); !errors.Is(err, ErrStopped) {
		t.Errorf("Submit after Run returned: %v; want ErrStopped", err)
	}
	if err := r.Run(t.Context()); err == nil {
		t.Error("second Run() succeeded")
	}
}

func TestNoHooksConfigured(t *testing.T) {
	log, _ := newRecorder()
	r, err := New(log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	for _, ev := range []Event{EventPromote, EventDemote, EventFault} {
		if err := r.Exec(t.Context(), ev, 1, ""); err != nil {
			t.Errorf("Exec(%s) with no hook = %v", ev, err)
		}
	}
	if err := <-r.Submit("reboot", 1, ""); err == nil || !strings.Contains(err.Error(), "unknown event") {
		t.Errorf("unknown event: %v", err)
	}
}

func TestEventsSeamNeverBlocks(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log")
	script := writeScript(t, dir, "notify", fmt.Sprintf("echo \"$1 $TANDEM_EPOCH $TANDEM_REASON\" >> %s\n", logFile))
	log, _ := newRecorder()
	r, err := New(log, Options{Promote: script, Demote: script, Fault: script})
	if err != nil {
		t.Fatal(err)
	}
	// Without a worker, the calls still return at once.
	start := time.Now()
	r.Promote(1)
	r.Demote(1)
	r.Fault(2, "lost quorum lease")
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Promote/Demote/Fault took %s; they must not block", d)
	}
	if n := r.Pending(); n != 3 {
		t.Errorf("Pending() = %d; want 3", n)
	}
	run(t, r)
	if err := r.Exec(t.Context(), EventDemote, 3, ""); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(logFile)
	want := "MASTER 1 \nBACKUP 1 \nFAULT 2 lost quorum lease\nBACKUP 3 \n"
	if string(b) != want {
		t.Errorf("hooks ran as %q; want %q", b, want)
	}
}

func TestExecStopsWaitingOnCtx(t *testing.T) {
	log, _ := newRecorder()
	r, err := New(log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// No worker: the event stays queued, and Exec gives up with ctx.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := r.Exec(ctx, EventPromote, 1, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exec() = %v; want deadline exceeded", err)
	}
	if r.Pending() != 1 {
		t.Errorf("the event was dropped when Exec gave up")
	}
}

func TestNewRejectsBadCommandLines(t *testing.T) {
	log, _ := newRecorder()
	if _, err := New(log, Options{Demote: `/bin/notify "unterminated`}); err == nil || !strings.Contains(err.Error(), "demote hook") {
		t.Errorf("New() = %v; want an error naming the demote hook", err)
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil logger) succeeded")
	}
}

func TestLineLogger(t *testing.T) {
	long := strings.Repeat("a", maxLine+10)
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{name: "split writes", writes: []string{"he", "llo\nwor", "ld\n"}, want: []string{"hello", "world"}},
		{name: "blank lines kept", writes: []string{"a\n\nb\n"}, want: []string{"a", "", "b"}},
		{name: "crlf", writes: []string{"dos\r\n"}, want: []string{"dos"}},
		{name: "unterminated flushed", writes: []string{"tail"}, want: []string{"tail"}},
		{name: "long line split", writes: []string{long + "\n"}, want: []string{long[:maxLine], "aaaaaaaaaa"}},
		{name: "long partial split", writes: []string{long}, want: []string{long[:maxLine], "aaaaaaaaaa"}},
		{name: "invalid utf8", writes: []string{"bad\xff\n"}, want: []string{"bad\uFFFD"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, rec := newRecorder()
			l := &lineLogger{log: log, stream: "stdout"}
			for _, w := range tt.writes {
				if n, err := l.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			l.Flush()
			if got := rec.lines("stdout"); !slices.Equal(got, tt.want) {
				t.Errorf("lines = %q; want %q", got, tt.want)
			}
		})
	}
}
