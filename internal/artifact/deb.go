package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Control is what delivery reads from a .deb's control file.
type Control struct {
	Package      string
	Version      string
	Architecture string
	Fields       map[string]string // every field, by its name as written
}

const (
	maxControlTar  = 16 << 20 // decompressed control.tar read at most
	maxControlFile = 1 << 20
)

// ReadControl reads the control file of a .deb from r. It parses the ar
// archive itself (strictly: blakesmith/ar panics on some malformed
// headers), then control.tar, control.tar.gz, .xz or .zst, all bounded so a
// crafted file cannot exhaust memory.
func ReadControl(r io.Reader) (Control, error) {
	ar, err := newArReader(r)
	if err != nil {
		return Control{}, err
	}
	name, _, err := ar.next()
	if errors.Is(err, io.EOF) {
		return Control{}, fmt.Errorf("%w: empty ar archive, no debian-binary member", ErrCorrupt)
	}
	if err != nil {
		return Control{}, err
	}
	if name != "debian-binary" {
		return Control{}, fmt.Errorf("%w: first member is %q, not debian-binary", ErrCorrupt, name)
	}
	ver, err := io.ReadAll(io.LimitReader(ar, 64))
	if err != nil {
		return Control{}, fmt.Errorf("%w: debian-binary: %v", ErrCorrupt, err)
	}
	if !strings.HasPrefix(string(ver), "2.") {
		return Control{}, fmt.Errorf("%w: format %q, expected 2.0", ErrCorrupt, strings.TrimSpace(string(ver)))
	}
	for {
		name, _, err := ar.next()
		if errors.Is(err, io.EOF) {
			return Control{}, fmt.Errorf("%w: no control.tar member", ErrCorrupt)
		}
		if err != nil {
			return Control{}, err
		}
		if strings.HasPrefix(name, "_") {
			continue // dpkg skips members starting with '_'
		}
		if !strings.HasPrefix(name, "control.tar") {
			return Control{}, fmt.Errorf("%w: member %q before control.tar", ErrCorrupt, name)
		}
		tr, closeFn, err := decompress(name, ar)
		if err != nil {
			return Control{}, err
		}
		defer closeFn()
		return controlFromTar(io.LimitReader(tr, maxControlTar))
	}
}

func decompress(name string, r io.Reader) (io.Reader, func(), error) {
	nop := func() {}
	switch strings.TrimPrefix(name, "control.tar") {
	case "":
		return r, nop, nil
	case ".gz":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, nop, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		return z, nop, nil
	case ".xz":
		// Read the (small) compressed member whole, so its container can
		// be checked before the decoder allocates what it asks for.
		b, err := io.ReadAll(io.LimitReader(r, maxControlTar+1))
		if err != nil {
			return nil, nop, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		if len(b) > maxControlTar {
			return nil, nop, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, maxControlTar)
		}
		if err := checkXZ(b); err != nil {
			return nil, nop, err
		}
		z, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, nop, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		return z, nop, nil
	case ".zst":
		z, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(64<<20), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nop, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		return z, z.Close, nil
	}
	return nil, nop, fmt.Errorf("%w: unknown control archive %q (expected control.tar, .gz, .xz or .zst)", ErrCorrupt, name)
}

func controlFromTar(r io.Reader) (Control, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return Control{}, fmt.Errorf("%w: control.tar has no ./control file", ErrCorrupt)
		}
		if err != nil {
			return Control{}, fmt.Errorf("%w: control.tar: %v", ErrCorrupt, err)
		}
		if strings.TrimPrefix(h.Name, "./") != "control" || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > maxControlFile {
			return Control{}, fmt.Errorf("%w: control file is %d bytes, at most %d", ErrCorrupt, h.Size, maxControlFile)
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxControlFile))
		if err != nil {
			return Control{}, fmt.Errorf("%w: control file: %v", ErrCorrupt, err)
		}
		return ParseControl(b)
	}
}

// ParseControl parses a binary package's control file (deb-control(5)):
// "Field: value" lines, continuation lines starting with a space or tab.
// Package, Version and Architecture are required.
func ParseControl(b []byte) (Control, error) {
	c := Control{Fields: map[string]string{}}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxControlFile)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			if len(c.Fields) > 0 {
				break // one paragraph only
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return Control{}, fmt.Errorf("%w: control line %d continues no field", ErrCorrupt, n)
			}
			c.Fields[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		if line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return Control{}, fmt.Errorf("%w: control line %d is not \"Field: value\"", ErrCorrupt, n)
		}
		if _, dup := c.Fields[k]; dup {
			return Control{}, fmt.Errorf("%w: control field %s appears twice", ErrCorrupt, k)
		}
		c.Fields[k], last = strings.TrimSpace(v), k
	}
	if err := sc.Err(); err != nil {
		return Control{}, fmt.Errorf("%w: control file: %v", ErrCorrupt, err)
	}
	c.Package, c.Version, c.Architecture = c.Fields["Package"], c.Fields["Version"], c.Fields["Architecture"]
	for k, v := range map[string]string{"Package": c.Package, "Version": c.Version, "Architecture": c.Architecture} {
		if v == "" || strings.Contains(v, "\n") {
			return Control{}, fmt.Errorf("%w: control file has no single-line %s field", ErrCorrupt, k)
		}
	}
	return c, nil
}

// arReader reads a common-format ar archive (as dpkg writes), strictly.
type arReader struct {
	r      io.Reader
	remain int64 // unread bytes of the current member
	pad    int64
}

func newArReader(r io.Reader) (*arReader, error) {
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("%w: too short for an ar archive: %v", ErrCorrupt, err)
	}
	if string(magic[:]) != "!<arch>\n" {
		return nil, fmt.Errorf("%w: no ar archive signature", ErrCorrupt)
	}
	return &arReader{r: r}, nil
}

// next skips the rest of the current member and reads the next header.
// It returns io.EOF at the clean end of the archive.
func (a *arReader) next() (name string, size int64, err error) {
	if _, err := io.CopyN(io.Discard, a.r, a.remain+a.pad); err != nil {
		return "", 0, fmt.Errorf("%w: truncated ar member: %v", ErrCorrupt, err)
	}
	a.remain, a.pad = 0, 0
	var h [60]byte
	n, err := io.ReadFull(a.r, h[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return "", 0, io.EOF
	}
	if err != nil {
		return "", 0, fmt.Errorf("%w: truncated ar header: %v", ErrCorrupt, err)
	}
	if string(h[58:60]) != "`\n" {
		return "", 0, fmt.Errorf("%w: bad ar header terminator", ErrCorrupt)
	}
	name = strings.TrimRight(string(h[0:16]), " ")
	name = strings.TrimSuffix(name, "/") // GNU ar style
	size, err = strconv.ParseInt(strings.TrimRight(string(h[48:58]), " "), 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("%w: ar member %q has a bad size", ErrCorrupt, name)
	}
	a.remain, a.pad = size, size%2
	return name, size, nil
}

func (a *arReader) Read(p []byte) (int, error) {
	if a.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.remain {
		p = p[:a.remain]
	}
	n, err := a.r.Read(p)
	a.remain -= int64(n)
	if errors.Is(err, io.EOF) && a.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
