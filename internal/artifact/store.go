package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultStoreDir is where a node keeps its releases.
const DefaultStoreDir = "/var/lib/tandem/releases"

// DefaultKeep is how many releases Prune keeps besides the pinned ones.
const DefaultKeep = 5

// Store keeps .deb files by content under Dir/sha256/<hex>.deb. A file
// there is complete: Put writes to a temporary file in the same directory,
// syncs it and renames it into place.
type Store struct {
	dir string
	// createTemp makes Put's temporary file; tests swap it to inject a
	// full disk.
	createTemp func(dir, pattern string) (tempFile, error)
}

// tempFile is the part of *os.File that Put uses.
type tempFile interface {
	io.Writer
	Name() string
	Chmod(fs.FileMode) error
	Sync() error
	Close() error
}

func osCreateTemp(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }

// Entry is one stored release.
type Entry struct {
	SHA256  string
	Size    int64
	ModTime time.Time // when it was stored
}

// OpenStore creates the store's directory if needed.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("release store: %w", err)
	}
	return &Store{dir: dir, createTemp: osCreateTemp}, nil
}

// Dir is the store's directory, also scratch space for downloads.
func (s *Store) Dir() string { return s.dir }

// Path is where the release with this digest is (or would be) stored.
func (s *Store) Path(digest string) string {
	return filepath.Join(s.dir, "sha256", strings.ToLower(digest)+".deb")
}

// Put streams r into the store, at most max bytes (0: DefaultMaxSize), and
// returns its digest. When want is not "" the content must hash to it (a
// peer's transfer, a fetched artifact), else nothing is stored. A failed
// write (full disk, I/O error) leaves no file and names the path and cause.
func (s *Store) Put(r io.Reader, max int64, want string) (digest string, err error) {
	if max <= 0 {
		max = DefaultMaxSize
	}
	dir := filepath.Join(s.dir, "sha256")
	tmp, err := s.createTemp(dir, ".put-*.tmp")
	if err != nil {
		return "", fmt.Errorf("release store: create temporary file in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err != nil {
		return "", fmt.Errorf("release store: write %s: %w", tmp.Name(), err)
	}
	if n > max {
		return "", fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	digest = hex.EncodeToString(h.Sum(nil))
	if want != "" && !strings.EqualFold(want, digest) {
		return "", fmt.Errorf("%w: received %s, expected %s", ErrChecksum, digest, strings.ToLower(want))
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", fmt.Errorf("release store: chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("release store: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("release store: close %s: %w", tmp.Name(), err)
	}
	final := s.Path(digest)
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("release store: rename to %s: %w", final, err)
	}
	// The rename is durable only once the directory is synced.
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("release store: sync %s: %w", dir, err)
	}
	return digest, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open opens a stored release for reading.
func (s *Store) Open(digest string) (*os.File, error) {
	if !hexDigestRe.MatchString(digest) {
		return nil, fmt.Errorf("release store: %q is not a hex SHA-256", digest)
	}
	f, err := os.Open(s.Path(digest))
	if err != nil {
		return nil, fmt.Errorf("release store: %w", err)
	}
	return f, nil
}

// List returns the stored releases, newest first. Temporary files of
// interrupted Puts are not releases and are skipped.
func (s *Store) List() ([]Entry, error) {
	dir := filepath.Join(s.dir, "sha256")
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("release store: %w", err)
	}
	var out []Entry
	for _, de := range des {
		hexName, ok := strings.CutSuffix(de.Name(), ".deb")
		if !ok || !hexDigestRe.MatchString(hexName) || !de.Type().IsRegular() {
			continue
		}
		info, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("release store: %w", err)
		}
		out = append(out, Entry{SHA256: hexName, Size: info.Size(), ModTime: info.ModTime()})
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := b.ModTime.Compare(a.ModTime); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out, nil
}

// Prune removes all but the newest keep releases (0: DefaultKeep) and the
// pinned ones (the running release, the rollback target, a release being
// rolled out), plus leftovers of interrupted Puts older than an hour. It
// returns the digests it removed.
func (s *Store) Prune(keep int, pinned []string, now time.Time) ([]string, error) {
	if keep <= 0 {
		keep = DefaultKeep
	}
	entries, err := s.List()
	if err != nil {
		return nil, err
	}
	var removed []string
	for i, e := range entries {
		if i < keep || slices.ContainsFunc(pinned, func(p string) bool { return strings.EqualFold(p, e.SHA256) }) {
			continue
		}
		if err := os.Remove(s.Path(e.SHA256)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("release store: prune: %w", err)
		}
		removed = append(removed, e.SHA256)
	}
	dir := filepath.Join(s.dir, "sha256")
	tmps, _ := filepath.Glob(filepath.Join(dir, ".put-*.tmp"))
	for _, t := range tmps {
		if info, err := os.Stat(t); err == nil && now.Sub(info.ModTime()) > time.Hour {
			os.Remove(t)
		}
	}
	return removed, nil
}
