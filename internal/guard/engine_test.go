package guard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// decisions collects what an engine decides.
type decisions struct {
	mu  sync.Mutex
	got []Decision
	ch  chan Decision
}

func newDecisions() *decisions { return &decisions{ch: make(chan Decision, 100)} }

func (d *decisions) decide(x Decision) {
	d.mu.Lock()
	d.got = append(d.got, x)
	d.mu.Unlock()
	d.ch <- x
}

func (d *decisions) wait(t *testing.T, want netip.Addr) Decision {
	t.Helper()
	select {
	case x := <-d.ch:
		if x.Addr != want {
			t.Fatalf("decided on %v; want %v", x.Addr, want)
		}
		return x
	case <-time.After(5 * time.Second):
		t.Fatalf("no decision on %v within 5s", want)
	}
	return Decision{}
}

func (d *decisions) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case x := <-d.ch:
		t.Fatalf("unexpected decision %+v", x)
	case <-time.After(within):
	}
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func failures(host string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("Nov 28 21:00:%02d web1 sshd[%d]: Failed password for root from %s port %d ssh2", i, 100+i, host, 40000+i)
	}
	return out
}

func startEngine(t *testing.T, cfg Config) (*Engine, *decisions) {
	t.Helper()
	cfg.PollInterval = 5 * time.Millisecond
	e, err := New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	d := newDecisions()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx, d.decide) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e, d
}

func fileJail(path string) JailConfig {
	return JailConfig{Name: "sshd", Filter: "sshd", Files: []string{path}, MaxRetry: 3, FindTime: time.Minute, BanTime: time.Minute}
}

// waitLines waits until the engine has read n lines, so a test knows the
// follower has caught up before it rotates the file under it.
func waitLines(t *testing.T, e *Engine, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Counters()[0].Lines < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d lines; want %d", e.Counters()[0].Lines, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestFileSourceStartsAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendLines(t, path, failures("203.0.113.1", 5)...) // history: not replayed
	e, d := startEngine(t, Config{Jails: []JailConfig{fileJail(path)}})
	time.Sleep(50 * time.Millisecond)
	appendLines(t, path, failures("203.0.113.2", 3)...)
	d.wait(t, netip.MustParseAddr("203.0.113.2"))
	d.none(t, 50*time.Millisecond)
	if c := e.Counters()[0]; c.Lines != 3 || c.Matches != 3 || c.Decisions != 1 {
		t.Errorf("counters %+v; want 3 lines, 3 matches, 1 decision", c)
	}
}

func TestFileSourceFromStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendLines(t, path, failures("203.0.113.1", 3)...)
	_, d := startEngine(t, Config{FromStart: true, Jails: []JailConfig{fileJail(path)}})
	d.wait(t, netip.MustParseAddr("203.0.113.1"))
}

func TestFileSourceRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	appendLines(t, path, "start")
	e, d := startEngine(t, Config{Jails: []JailConfig{fileJail(path)}})
	time.Sleep(30 * time.Millisecond)
	lines := failures("203.0.113.3", 3)
	appendLines(t, path, lines[:2]...)
	waitLines(t, e, 2)
	// logrotate's default: rename, then a new file; a last line lands in
	// the old file after the rename (the writer still has it open).
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path+".1", "Nov 28 21:00:10 web1 sshd[1]: Server listening on 0.0.0.0 port 22.")
	appendLines(t, path, lines[2])
	d.wait(t, netip.MustParseAddr("203.0.113.3"))
	waitLines(t, e, 4)
}

func TestFileSourceCopyTruncate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendLines(t, path, "start")
	e, d := startEngine(t, Config{Jails: []JailConfig{fileJail(path)}})
	time.Sleep(30 * time.Millisecond)
	lines := failures("203.0.113.4", 3)
	appendLines(t, path, lines[:2]...)
	waitLines(t, e, 2)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond) // the follower sees the truncation before the file grows again
	appendLines(t, path, lines[2])
	d.wait(t, netip.MustParseAddr("203.0.113.4"))
}

func TestFileSourceWaitsForMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later.log")
	_, d := startEngine(t, Config{Jails: []JailConfig{fileJail(path)}})
	time.Sleep(30 * time.Millisecond)
	appendLines(t, path, failures("203.0.113.5", 3)...)
	d.wait(t, netip.MustParseAddr("203.0.113.5"))
}

func TestIgnoreList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendLines(t, path, "start")
	cfg := Config{Ignore: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Jails: []JailConfig{fileJail(path)}}
	e, d := startEngine(t, cfg)
	e.SetIgnore([]netip.Prefix{netip.MustParsePrefix("192.0.2.11/32"), netip.MustParsePrefix("2001:db8:1::/48")})
	time.Sleep(30 * time.Millisecond)
	for _, h := range []string{"198.51.100.7", "192.0.2.11", "2001:db8:1::5", "127.0.0.1", "::1"} {
		appendLines(t, path, failures(h, 4)...)
	}
	appendLines(t, path, failures("192.0.2.12", 3)...)
	d.wait(t, netip.MustParseAddr("192.0.2.12"))
	if c := e.Counters()[0]; c.Ignored != 20 {
		t.Errorf("ignored %d failures; want 20", c.Ignored)
	}
	// A member that left the cluster is no longer ignored.
	e.SetIgnore(nil)
	appendLines(t, path, failures("192.0.2.11", 3)...)
	d.wait(t, netip.MustParseAddr("192.0.2.11"))
}

func TestNewRefusesBadJails(t *testing.T) {
	ok := JailConfig{Name: "j", Filter: "sshd", Files: []string{"/x"}, MaxRetry: 1, FindTime: time.Second, BanTime: time.Second}
	tests := []struct {
		name string
		edit func(*JailConfig)
		want string
	}{
		{"unknown filter", func(j *JailConfig) { j.Filter = "nope" }, `no filter "nope"`},
		{"bad mode", func(j *JailConfig) { j.Mode = "fast" }, `no mode "fast"`},
		{"no source", func(j *JailConfig) { j.Files = nil }, "no source"},
		{"maxretry", func(j *JailConfig) { j.MaxRetry = 0 }, "maxretry"},
		{"bantime_max below bantime", func(j *JailConfig) { j.BanTimeMax = time.Millisecond; j.BanTimeFactor = 2 }, "bantime_max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := ok
			tt.edit(&j)
			_, err := New(Config{Jails: []JailConfig{j}}, discard())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := New(Config{Jails: []JailConfig{ok, ok}}, discard()); err == nil {
		t.Error("a jail defined twice was accepted")
	}
}

// TestEngineClock runs the engine on an injected clock: failures spread
// wider than findtime never ban; the decision carries the clock's time.
func TestEngineClock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.log")
	appendLines(t, path, "start")
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e, d := startEngine(t, Config{Now: clock, Jails: []JailConfig{fileJail(path)}}) // maxretry 3 in 1m
	time.Sleep(30 * time.Millisecond)
	lines := failures("203.0.113.6", 6)
	read := uint64(0)
	step := func(line string, gap time.Duration) {
		t.Helper()
		appendLines(t, path, line)
		read++
		waitLines(t, e, read)
		advance(gap)
	}
	step(lines[0], 40*time.Second)
	step(lines[1], 40*time.Second) // the first failure leaves the window
	step(lines[2], 40*time.Second)
	d.none(t, 50*time.Millisecond)
	step(lines[3], time.Second)
	step(lines[4], time.Second)
	x := d.wait(t, netip.MustParseAddr("203.0.113.6"))
	if want := t0.Add(40*time.Second*3 + time.Second); !x.At.Equal(want) {
		t.Errorf("decision at %v; want the injected clock's %v", x.At, want)
	}
}
