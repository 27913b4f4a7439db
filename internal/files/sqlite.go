package files

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// sqliteMagic opens every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// sqliteSuffixes are the journals SQLite keeps beside a database.
var sqliteSuffixes = []string{"-wal", "-journal", "-shm"}

// FindSQLite returns the SQLite databases under dir, relative to it and
// sorted: files that start with SQLite's header, and the databases named
// by a -wal, -journal or -shm file. A missing dir has none. A dir that is
// a symlink is followed (rsync follows it too, as "dir/"); symlinks below
// it are not.
func FindSQLite(dir string) ([]string, error) {
	found := map[string]bool{}
	root := WalkRoot(dir)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && path == root {
				return fs.SkipAll
			}
			return nil // unreadable entries are rsync's to report
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return nil
		}
		for _, s := range sqliteSuffixes {
			if db, ok := strings.CutSuffix(rel, s); ok && db != "" {
				found[db] = true
				return nil
			}
		}
		if isSQLite(path) {
			found[rel] = true
		}
		return nil
	})
	out := make([]string, 0, len(found))
	for db := range found {
		out = append(out, db)
	}
	slices.Sort(out)
	return out, err
}

// WalkRoot is dir as the root of a filepath.WalkDir that follows dir
// itself when it is a symlink: WalkDir never follows its root, but a
// trailing slash makes the kernel resolve it.
func WalkRoot(dir string) string {
	return strings.TrimSuffix(filepath.Clean(dir), "/") + "/"
}

// SQLiteFile reports whether path, a file under dir, is a SQLite
// database or one of its journals, and names the database relative to dir.
func SQLiteFile(dir, path string) (string, bool) {
	rel, err := filepath.Rel(dir, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", false
	}
	for _, s := range sqliteSuffixes {
		if db, ok := strings.CutSuffix(rel, s); ok && db != "" {
			return db, true
		}
	}
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() || fi.Size() < int64(len(sqliteMagic)) {
		return "", false
	}
	if !isSQLite(path) {
		return "", false
	}
	return rel, true
}

func isSQLite(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var hdr [16]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return false
	}
	return bytes.Equal(hdr[:], sqliteMagic)
}

// SkipPatterns are the rsync exclude patterns that leave databases and
// their journals out: anchored at the transfer's root, wildcards escaped.
func SkipPatterns(dbs []string) []string {
	var out []string
	for _, db := range dbs {
		p := "/" + escapePattern(filepath.ToSlash(db))
		out = append(out, p)
		for _, s := range sqliteSuffixes {
			out = append(out, p+s)
		}
	}
	return out
}

func escapePattern(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
