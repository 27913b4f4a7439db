package cli

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/integrity"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHardenScan(t *testing.T) {
	root := t.TempDir()
	sum := md5.Sum([]byte("ELF bash"))
	writeFile(t, filepath.Join(root, "var/lib/dpkg/info/bash.md5sums"), hex.EncodeToString(sum[:])+"  bin/bash\n")
	writeFile(t, filepath.Join(root, "bin/bash"), "ELF bash")

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		e := &env{stdout: &out, stderr: &out, logger: slog.New(slog.DiscardHandler)}
		cmd := newHardenScanCmd(e)
		cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the root command
		cmd.SetArgs(append([]string{"--root", root}, args...))
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	out, err := run()
	if err != nil || !strings.Contains(out, "1 files of 1 packages checked") {
		t.Fatalf("clean scan: %v\n%s", err, out)
	}
	if _, err := integrity.LoadReport(filepath.Join(root, integrity.DefaultStatePath)); err != nil {
		t.Fatalf("the report was not saved: %v", err)
	}

	writeFile(t, filepath.Join(root, "bin/bash"), "ELF bash, patched")
	out, err = run("--json")
	if err == nil {
		t.Fatalf("a changed file did not fail the scan:\n%s", out)
	}
	var r integrity.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if len(r.Findings) != 1 || r.Findings[0].Path != "/bin/bash" || r.Findings[0].Kind != integrity.Changed {
		t.Errorf("findings %+v, want /bin/bash changed", r.Findings)
	}
}

func TestHardenScanNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs only as a normal user")
	}
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out, logger: slog.New(slog.DiscardHandler)}
	cmd := newHardenScanCmd(e)
	cmd.SetArgs([]string{})
	err := cmd.ExecuteContext(context.Background())
	if err == nil || exitCode(err) != ExitNotReady {
		t.Errorf("a non-root scan: %v (exit %d), want exit %d", err, exitCode(err), ExitNotReady)
	}
}
