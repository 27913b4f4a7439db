package guard

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// LineReader splits a stream into lines without allocating per line. A
// line longer than its buffer is cut: the first part is returned and the
// rest skipped. At the end of the input a partial last line stays
// buffered, so a followed file's half-written line is completed by the
// next read; Rest takes it when the file is done with.
type LineReader struct {
	r          io.Reader
	buf        []byte
	start, end int
	skipping   bool
}

// DefaultLineBuffer is LineReader's buffer size, and so the longest line.
const DefaultLineBuffer = 256 << 10

// NewLineReader reads r with a buffer of size bytes (0: DefaultLineBuffer).
func NewLineReader(r io.Reader, size int) *LineReader {
	if size <= 0 {
		size = DefaultLineBuffer
	}
	return &LineReader{r: r, buf: make([]byte, size)}
}

// Reset starts reading r, dropping anything buffered.
func (lr *LineReader) Reset(r io.Reader) {
	lr.r, lr.start, lr.end, lr.skipping = r, 0, 0, false
}

// Next returns the next line without its "\n" (or "\r\n"), valid until
// the next call, or the reader's error (io.EOF at the end of the input).
func (lr *LineReader) Next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.start:lr.end], '\n'); i >= 0 {
			line := lr.buf[lr.start : lr.start+i]
			lr.start += i + 1
			if lr.skipping {
				lr.skipping = false
				continue
			}
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		if lr.start > 0 {
			lr.end = copy(lr.buf, lr.buf[lr.start:lr.end])
			lr.start = 0
		}
		if lr.end == len(lr.buf) { // a line longer than the buffer
			lr.start = lr.end
			if lr.skipping {
				continue
			}
			lr.skipping = true
			return lr.buf[:lr.end], nil
		}
		n, err := lr.r.Read(lr.buf[lr.end:])
		lr.end += n
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return nil, err
		}
	}
}

// Rest returns and drops a buffered partial line (nil if none).
func (lr *LineReader) Rest() []byte {
	if lr.start == lr.end || lr.skipping {
		lr.start, lr.end, lr.skipping = 0, 0, false
		return nil
	}
	line := lr.buf[lr.start:lr.end]
	lr.start, lr.end = 0, 0
	if n := len(line); line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// fileSource follows a log file like tail -F: from its end (or start),
// across rotation by rename (the old file is read to its end, then the
// new one from its start) and truncation in place (copytruncate).
type fileSource struct {
	path      string
	fromStart bool
	poll      time.Duration
	log       *slog.Logger
}

func (s *fileSource) run(ctx context.Context, emit func(line []byte)) {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	lr := NewLineReader(nil, 0)
	seekEnd := !s.fromStart
	missing := false
	drain := func() {
		for {
			line, err := lr.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrNoProgress) {
					s.log.Warn("read log file", "err", err)
				}
				return
			}
			emit(line)
		}
	}
	wake := s.watch(ctx)
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		if f == nil {
			nf, err := os.Open(s.path)
			if err == nil && seekEnd {
				_, err = nf.Seek(0, io.SeekEnd)
			}
			switch {
			case err != nil && !missing:
				s.log.Warn("log file not readable yet; waiting for it", "err", err)
				missing, seekEnd = true, false // a file created later is new: read it whole
			case err == nil:
				if missing {
					s.log.Info("log file appeared")
				}
				f, missing, seekEnd = nf, false, false
				lr.Reset(f)
			}
		}
		if f != nil {
			drain()
			if s.rotated(f, lr) {
				drain() // lines written before the rename
				if rest := lr.Rest(); rest != nil {
					emit(rest)
				}
				f.Close()
				f = nil
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		}
	}
}

// watch wakes the follower as soon as the file is written, created or
// renamed (inotify on its directory), so a line is read within
// milliseconds; the ticker stays as the fallback (a directory that does not
// exist yet, a file system without inotify). The channel is never closed.
func (s *fileSource) watch(ctx context.Context) <-chan struct{} {
	wake := make(chan struct{}, 1)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Debug("no inotify; polling the log file", "err", err)
		return wake
	}
	if err := w.Add(filepath.Dir(s.path)); err != nil {
		s.log.Debug("cannot watch the log file's directory; polling it", "err", err)
		w.Close()
		return wake
	}
	name := filepath.Base(s.path)
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Base(ev.Name) != name {
					continue
				}
				select {
				case wake <- struct{}{}:
				default:
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return wake
}

// rotated reports whether the path now names another file. A file
// truncated below the read position is rewound instead.
func (s *fileSource) rotated(f *os.File, lr *LineReader) bool {
	cur, err := f.Stat()
	if err != nil {
		return true
	}
	st, err := os.Stat(s.path)
	if err != nil {
		return false // renamed, not yet re-created: keep reading the old one
	}
	if !os.SameFile(st, cur) {
		return true
	}
	pos, err := f.Seek(0, io.SeekCurrent)
	if err == nil && cur.Size() < pos {
		s.log.Info("log file truncated; reading it from the start")
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return true
		}
		lr.Reset(f) // a half-read line was cut by the truncation: drop it
		return false
	}
	return false
}
