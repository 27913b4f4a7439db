package guard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"
)

// The journal is read through `journalctl --follow --output=export`, so
// tandem stays free of cgo and of libsystemd's ABI. The export format
// (systemd's JOURNAL_EXPORT_FORMATS) is chosen over --output=json because
// it frames binary fields (a MESSAGE with control bytes or invalid UTF-8)
// by length instead of turning them into arrays of numbers, and needs no
// JSON decoding per entry. Each run starts with --lines=0 (only what is
// written from now on); when journalctl exits (journald restarted, say),
// it is restarted with --after-cursor at the last entry read, so nothing
// is read twice or skipped.

// JournalEntry is the part of a journal entry the engine reads. Its slices
// are valid until the next call to ExportReader.Next.
type JournalEntry struct {
	Message    []byte
	Identifier []byte // SYSLOG_IDENTIFIER, or _COMM when absent
	Cursor     []byte
}

// maxJournalField is the longest field value kept; the rest is skipped.
const maxJournalField = 64 << 10

// maxBinaryField refuses a binary field length no journal can hold: a
// corrupt stream, not a message.
const maxBinaryField = 1 << 30

// ExportReader parses journalctl's export format.
type ExportReader struct {
	br                  *bufio.Reader
	msg, ident, comm, c []byte
}

// NewExportReader reads the export format from r.
func NewExportReader(r io.Reader) *ExportReader {
	return &ExportReader{br: bufio.NewReaderSize(r, 256<<10)}
}

// ErrCorrupt is returned for a stream that is not in the export format.
var ErrCorrupt = errors.New("journal export stream is corrupt")

// Next reads the next entry into e. It returns io.EOF at the end of the
// stream (a partial last entry is dropped).
func (x *ExportReader) Next(e *JournalEntry) error {
	x.msg, x.ident, x.comm, x.c = x.msg[:0], x.ident[:0], x.comm[:0], x.c[:0]
	fields := 0
	for {
		line, err := x.br.ReadSlice('\n')
		full := err == nil
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return err
		}
		if full && len(line) == 1 { // the blank line ending an entry
			if fields == 0 {
				continue
			}
			e.Message, e.Cursor, e.Identifier = x.msg, x.c, x.ident
			if len(e.Identifier) == 0 {
				e.Identifier = x.comm
			}
			return nil
		}
		fields++
		eq := bytes.IndexByte(line, '=')
		if eq < 0 {
			if !full {
				return fmt.Errorf("%w: a field name longer than %d bytes", ErrCorrupt, x.br.Size())
			}
			if err := x.binaryField(line[:len(line)-1]); err != nil {
				return err
			}
			continue
		}
		dst := x.field(line[:eq])
		value := line[eq+1:]
		if full {
			value = value[:len(value)-1]
		}
		if dst != nil {
			*dst = appendCapped(*dst, value)
		}
		for !full { // a text value longer than the buffer
			line, err = x.br.ReadSlice('\n')
			full = err == nil
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				if errors.Is(err, io.EOF) {
					return io.EOF
				}
				return err
			}
			if full {
				line = line[:len(line)-1]
			}
			if dst != nil {
				*dst = appendCapped(*dst, line)
			}
		}
	}
}

// field returns where a field's value goes, or nil to skip it.
func (x *ExportReader) field(name []byte) *[]byte {
	switch string(name) {
	case "MESSAGE":
		return &x.msg
	case "SYSLOG_IDENTIFIER":
		return &x.ident
	case "_COMM":
		return &x.comm
	case "__CURSOR":
		return &x.c
	}
	return nil
}

// binaryField reads a field written as NAME\n, a little-endian uint64
// length, the data and \n.
func (x *ExportReader) binaryField(name []byte) error {
	var n [8]byte
	if _, err := io.ReadFull(x.br, n[:]); err != nil {
		return eofOr(err)
	}
	size := binary.LittleEndian.Uint64(n[:])
	if size > maxBinaryField {
		return fmt.Errorf("%w: field %.64q claims %d bytes", ErrCorrupt, name, size)
	}
	dst := x.field(name)
	remaining := int(size)
	for remaining > 0 {
		chunk, err := x.br.Peek(min(remaining, x.br.Size()))
		if len(chunk) == 0 && err != nil {
			return eofOr(err)
		}
		if dst != nil {
			*dst = appendCapped(*dst, chunk)
		}
		_, _ = x.br.Discard(len(chunk))
		remaining -= len(chunk)
	}
	c, err := x.br.ReadByte()
	if err != nil {
		return eofOr(err)
	}
	if c != '\n' {
		return fmt.Errorf("%w: no newline after binary field %.64q", ErrCorrupt, name)
	}
	return nil
}

func eofOr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.EOF
	}
	return err
}

func appendCapped(dst, src []byte) []byte {
	if room := maxJournalField - len(dst); len(src) > room {
		src = src[:max(room, 0)]
	}
	return append(dst, src...)
}

// journalSource follows the journal entries of some units or identifiers.
type journalSource struct {
	bin         string
	units       []string
	identifiers []string
	fromStart   bool
	log         *slog.Logger
}

// args builds journalctl's arguments; matches on different fields are
// joined by "+" (OR).
func (s *journalSource) args(cursor string) []string {
	args := []string{"--follow", "--output=export", "--no-pager", "--quiet"}
	switch {
	case cursor != "":
		args = append(args, "--after-cursor="+cursor)
	case s.fromStart:
		args = append(args, "--lines=all")
	default:
		args = append(args, "--lines=0")
	}
	var matches []string
	for _, u := range s.units {
		if !strings.Contains(u, ".") {
			u += ".service"
		}
		matches = append(matches, "_SYSTEMD_UNIT="+u)
	}
	for _, id := range s.identifiers {
		matches = append(matches, "SYSLOG_IDENTIFIER="+id)
	}
	for i, m := range matches {
		if i > 0 {
			args = append(args, "+")
		}
		args = append(args, m)
	}
	return args
}

func (s *journalSource) run(ctx context.Context, emit func(prog string, msg []byte)) {
	var cursor string
	backoff := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		err := s.once(ctx, cursor, func(e *JournalEntry) {
			if len(e.Cursor) > 0 {
				cursor = string(e.Cursor)
			}
			emit(program(e.Identifier), e.Message)
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		s.log.Warn("journalctl ended; restarting it", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func (s *journalSource) once(ctx context.Context, cursor string, emit func(*JournalEntry)) error {
	cmd := exec.CommandContext(ctx, s.bin, s.args(cursor)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	x := NewExportReader(out)
	var e JournalEntry
	var readErr error
	for {
		if readErr = x.Next(&e); readErr != nil {
			break
		}
		emit(&e)
	}
	_ = cmd.Process.Kill()
	werr := cmd.Wait()
	if !errors.Is(readErr, io.EOF) {
		return readErr
	}
	if werr != nil {
		return fmt.Errorf("%w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return errors.New("journalctl exited")
}
