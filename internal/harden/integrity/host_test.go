package integrity

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestScanThisHost scans the machine it runs on, read-only (the report goes
// to a temp dir), and logs the figures. It runs only when asked:
// TANDEM_SCAN_HOST=1 go test -run TestScanThisHost -v ./internal/harden/integrity
func TestScanThisHost(t *testing.T) {
	if os.Getenv("TANDEM_SCAN_HOST") == "" {
		t.Skip("set TANDEM_SCAN_HOST=1 to scan this host")
	}
	root := os.Getenv("TANDEM_SCAN_ROOT")
	a := New(Options{Root: root, StatePath: filepath.Join(t.TempDir(), "integrity.json")})
	if root != "" {
		// The report goes outside the scanned tree.
		a.root, a.statePath = root, filepath.Join(t.TempDir(), "integrity.json")
	}
	start := time.Now()
	r, err := a.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packages, %d files, %d MB, %d skipped, %d findings, %d errors in %s",
		r.Packages, r.Files, r.Bytes>>20, r.Skipped, len(r.Findings), len(r.Errors), time.Since(start).Round(time.Millisecond))
	for _, f := range r.Findings[:min(20, len(r.Findings))] {
		t.Logf("%+v", f)
	}
	if r.Packages == 0 || r.Files == 0 {
		t.Fatalf("scanned nothing: %+v", r)
	}
}
