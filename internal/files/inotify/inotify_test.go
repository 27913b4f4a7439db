package inotify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestWatchSeesWritesInNewSubdirectories(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	var events, overflows int
	var bytes int64
	done := make(chan error, 1)
	go func() {
		done <- Watcher{Retry: 10 * time.Millisecond}.Watch(ctx, dir, func(path string, at time.Time, size int64, overflow bool) {
			mu.Lock()
			defer mu.Unlock()
			events++
			bytes = max(bytes, size)
			if overflow {
				overflows++
			}
		})
	}()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	wait("the initial full pass", func() bool { return overflows == 1 })
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	wait("the new directory", func() bool { return overflows >= 2 })
	time.Sleep(50 * time.Millisecond) // the subdirectory's watch is in place
	if err := os.WriteFile(filepath.Join(dir, "a", "b", "f"), make([]byte, 1234), 0o644); err != nil {
		t.Fatal(err)
	}
	wait("the write in the new subdirectory", func() bool { return bytes == 1234 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchWaitsForMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan struct{}, 100)
	go Watcher{Retry: 10 * time.Millisecond}.Watch(ctx, dir, func(string, time.Time, int64, bool) { got <- struct{}{} })
	time.Sleep(30 * time.Millisecond)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no event once the directory appeared")
	}
}

// TestWatchFollowsSymlinkedPath: a declared path that is a symlink to the
// real directory is watched (it produced no events before: WalkDir does
// not follow its root), and so are the real directory's subdirectories.
func TestWatchFollowsSymlinkedPath(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.MkdirAll(filepath.Join(real, "2026", "11"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "uploads")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	paths := make(chan string, 100)
	ready := make(chan struct{}, 1)
	go Watcher{Retry: 10 * time.Millisecond}.Watch(ctx, link, func(path string, _ time.Time, _ int64, overflow bool) {
		if overflow && path == "" {
			select {
			case ready <- struct{}{}:
			default:
			}
			return
		}
		paths <- path
	})
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch never started")
	}
	name := "photo été 1.jpg"
	if err := os.WriteFile(filepath.Join(real, "2026", "11", name), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(link, "2026", "11", name)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-paths:
			if p == want {
				return
			}
		case <-deadline:
			t.Fatalf("no event named %q for a write below the symlinked path", want)
		}
	}
}

// TestWatchReportsQueueOverflow: when the kernel's event queue overflows
// (the consumer stalled), the watcher says so, so the controller falls
// back to a full comparison instead of trusting the events it got.
func TestWatchReportsQueueOverflow(t *testing.T) {
	limit, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skipf("no inotify limits here: %v", err)
	}
	var queued int
	if _, err := fmt.Sscan(string(limit), &queued); err != nil || queued > 1<<17 {
		t.Skipf("max_queued_events is %q: too many files to overflow it in a test", limit)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stall := make(chan struct{})
	var mu sync.Mutex
	var overflows int
	first := make(chan struct{})
	go Watcher{Retry: 10 * time.Millisecond}.Watch(ctx, dir, func(path string, _ time.Time, _ int64, overflow bool) {
		mu.Lock()
		n := overflows
		if overflow && path == "" {
			overflows++
		}
		mu.Unlock()
		if n == 0 && overflow {
			close(first) // the initial full pass
			return
		}
		<-stall // a stalled consumer: the kernel's queue fills
	})
	<-first
	// The watcher's own buffer (4096) and the kernel's queue both fill.
	for i := range queued + 4096 + 100 {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%06d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	close(stall)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := overflows
		mu.Unlock()
		if n >= 2 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no overflow reported after the kernel's queue overflowed")
}
