package confine

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain doubles as the confined program's launcher: with
// CONFINE_TEST_DIR set, this test binary confines itself to it and runs
// its arguments.
func TestMain(m *testing.M) {
	if dir := os.Getenv("CONFINE_TEST_DIR"); dir != "" {
		if err := Exec(dir, os.Args[1:]); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(3)
		}
	}
	os.Exit(m.Run())
}

func TestExec(t *testing.T) {
	if Supported() == 0 {
		if os.Getenv("TANDEM_TEST_STRICT") != "" {
			t.Fatal("this kernel has no Landlock: the serving rsync would run unconfined")
		}
		t.Skip("this kernel has no Landlock")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	served := t.TempDir()
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(served, "upload.txt"), []byte("an upload\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secretDir, "shadow"), []byte("root:$y$secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "CONFINE_TEST_DIR="+served)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	tests := []struct {
		name    string
		args    []string
		wantOK  bool
		wantOut string
	}{
		{"reads the served directory", []string{cat, filepath.Join(served, "upload.txt")}, true, "an upload"},
		{"reads /etc/passwd (owner names)", []string{cat, "/etc/passwd"}, true, "root:"},
		{"cannot read outside it", []string{cat, filepath.Join(secretDir, "shadow")}, false, "Permission denied"},
		{"cannot read /etc/shadow", []string{cat, "/etc/shadow"}, false, "Permission denied"},
		{"cannot write in the served directory", []string{sh, "-c", "echo x > " + filepath.Join(served, "new")}, false, "Permission denied"},
		{"a program found on PATH", []string{"cat", filepath.Join(served, "upload.txt")}, true, "an upload"},
		{"a program that does not exist", []string{"no-such-program-here"}, false, "executable file not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(tt.args...)
			if (err == nil) != tt.wantOK {
				t.Fatalf("ok = %v (%v), want %v; output %q", err == nil, err, tt.wantOK, out)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("output %q; want it to contain %q", out, tt.wantOut)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(served, "new")); err == nil {
		t.Error("the confined program created a file in the served directory")
	}
}
