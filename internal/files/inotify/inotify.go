// Package inotify watches a directory tree for changes with inotify,
// through fsnotify. It is the file-event provider of the files controller.
package inotify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher reports changes under a directory tree.
type Watcher struct {
	Logger *slog.Logger
	// Retry is how often a missing directory is looked for (default 1s).
	Retry time.Duration
}

// Watch calls changed for every change under dir (recursively) until ctx
// ends: path is the file changed (when known), at is when the event arrived, size the file's size when the event
// is a write or a create, and overflow says events were lost, so only a
// full comparison is safe. A dir that does not exist yet is waited for.
func (w Watcher) Watch(ctx context.Context, dir string, changed func(path string, at time.Time, size int64, overflow bool)) error {
	retry := w.Retry
	if retry <= 0 {
		retry = time.Second
	}
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
	fw, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return fmt.Errorf("inotify: %w (raise fs.inotify.max_user_instances?)", err)
	}
	defer fw.Close()
	if err := addTree(fw, dir); err != nil {
		return err
	}
	changed("", time.Now(), 0, true) // what happened before the watch began
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			now := time.Now()
			var size int64
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write) {
				if fi, err := os.Lstat(ev.Name); err == nil {
					if fi.IsDir() && ev.Has(fsnotify.Create) {
						// A new directory: watch it, and count what was
						// created in it before the watch began.
						if err := addTree(fw, ev.Name); err != nil && w.Logger != nil {
							w.Logger.Warn("inotify: cannot watch a new directory; full scans still cover it", "dir", ev.Name, "err", err)
						}
						changed(ev.Name, now, 0, true)
						continue
					}
					if fi.Mode().IsRegular() {
						size = fi.Size()
					}
				}
			}
			changed(ev.Name, now, size, false)
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				changed("", time.Now(), 0, true)
				continue
			}
			if w.Logger != nil {
				w.Logger.Warn("inotify", "dir", dir, "err", err)
			}
		}
	}
}

// addTree watches dir and every directory below it. A dir that is a
// symlink is followed (a trailing slash makes WalkDir resolve its root);
// symlinks below it are not, as rsync does not follow them either.
func addTree(fw *fsnotify.Watcher, dir string) error {
	root := strings.TrimSuffix(filepath.Clean(dir), "/") + "/"
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if err := fw.Add(filepath.Clean(path)); err != nil {
			return fmt.Errorf("inotify: watch %s: %w (raise fs.inotify.max_user_watches for large trees)", path, err)
		}
		return nil
	})
}
