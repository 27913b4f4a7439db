package inotify

import (
	"context"
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
