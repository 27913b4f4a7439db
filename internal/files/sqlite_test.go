package files

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestFindSQLite(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"photo.jpg":          "\xff\xd8 not a database",
		"data/app.sqlite3":   "SQLite format 3\x00 and pages",
		"cache.db-wal":       "wal frames",
		"cache.db":           "", // empty until its first write
		"notes.db":           "a text file named .db",
		"deep/x/y.bin":       "SQLite format 3\x00",
		"short":              "SQLite",
		"journals/j-journal": "rollback journal",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := FindSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cache.db", "data/app.sqlite3", "deep/x/y.bin", "journals/j"}
	if !slices.Equal(got, want) {
		t.Errorf("FindSQLite = %q; want %q", got, want)
	}
	for _, tt := range []struct {
		path string
		db   string
		ok   bool
	}{
		{"data/app.sqlite3", "data/app.sqlite3", true},
		{"cache.db-wal", "cache.db", true},
		{"photo.jpg", "", false},
		{"notes.db", "", false},
	} {
		db, ok := SQLiteFile(dir, filepath.Join(dir, tt.path))
		if db != tt.db || ok != tt.ok {
			t.Errorf("SQLiteFile(%s) = %q, %v; want %q, %v", tt.path, db, ok, tt.db, tt.ok)
		}
	}
	if got, _ := FindSQLite(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("a missing dir has databases: %q", got)
	}
	pats := SkipPatterns([]string{"a*b.db"})
	if !slices.Equal(pats, []string{`/a\*b.db`, `/a\*b.db-wal`, `/a\*b.db-journal`, `/a\*b.db-shm`}) {
		t.Errorf("SkipPatterns = %q", pats)
	}
}

// TestFindSQLiteUsersTrees: the trees users have. A declared path that is
// a symlink to the real directory is followed (a database behind it was
// missed before); symlinks below it are not (rsync copies them as links);
// nested, unicode and space-containing names are found and named as is.
func TestFindSQLiteUsersTrees(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real-uploads")
	outside := filepath.Join(base, "outside")
	for name, content := range map[string]string{
		"real-uploads/2026/11/photo été.jpg":      "\xff\xd8",
		"real-uploads/2026/11/base de données.db": "SQLite format 3\x00 pages",
		"real-uploads/-rf.sqlite":                 "SQLite format 3\x00 pages",
		"outside/elsewhere.db":                    "SQLite format 3\x00 pages",
	} {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(real, "link-out")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "uploads")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	want := []string{"-rf.sqlite", "2026/11/base de données.db"}
	for _, dir := range []string{real, link, link + "/"} {
		got, err := FindSQLite(dir)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("FindSQLite(%s) = %q, %v; want %q (and nothing through link-out)", dir, got, err, want)
		}
	}
	if db, ok := SQLiteFile(link, filepath.Join(link, "2026/11/base de données.db")); !ok || db != "2026/11/base de données.db" {
		t.Errorf("SQLiteFile through the symlinked path = %q, %v", db, ok)
	}
	if _, ok := SQLiteFile(link, filepath.Join(base, "outside/elsewhere.db")); ok {
		t.Error("SQLiteFile took a file outside the path for one of its databases")
	}
}
