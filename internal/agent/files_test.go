package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestOutsideSandbox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "uploads")
	argv := []string{"rsync", "-a"}
	t.Setenv("INVOCATION_ID", "")
	if got := outsideSandbox(discard{})(dir, argv); !slices.Equal(got, argv) {
		t.Errorf("outside systemd: %q", got)
	}
	t.Setenv("INVOCATION_ID", "x")
	if got := outsideSandbox(discard{})(dir, argv); !slices.Equal(got, argv) {
		t.Errorf("writable dir under systemd: %q; want rsync as is", got)
	}
	if os.Geteuid() != 0 {
		ro := t.TempDir()
		if err := os.Chmod(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		got := outsideSandbox(discard{})(filepath.Join(ro, "uploads"), argv)
		if len(got) < 3 || got[0] != "systemd-run" || !slices.Equal(got[len(got)-2:], argv) {
			t.Errorf("read-only dir under systemd: %q; want systemd-run ... rsync -a", got)
		}
	}
}

type discard struct{}

func (discard) Debug(string, ...any) {}
