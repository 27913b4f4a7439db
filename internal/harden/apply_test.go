package harden

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// fakeRunner records commands and fails those whose first word is in fail.
type fakeRunner struct {
	mu   sync.Mutex
	cmds [][]string
	fail map[string]error
}

func (f *fakeRunner) Run(_ context.Context, argv ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, argv)
	if err := f.fail[argv[0]]; err != nil {
		return nil, err
	}
	return nil, nil
}

// scheduled returns the command the revert timer would run (systemd-run's
// ExecStart), or nil.
func (f *fakeRunner) scheduled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cmds {
		if c[0] == "systemd-run" {
			i := slices.Index(c, "/bin/sh")
			return c[i:]
		}
	}
	return nil
}

type fixture struct {
	t      *testing.T
	root   string
	run    *fakeRunner
	host   *Host
	reload string // the file the plan's reload command appends to
}

func newFixture(t *testing.T) *fixture {
	root := t.TempDir()
	r := &fakeRunner{fail: map[string]error{}}
	f := &fixture{t: t, root: root, run: r, host: &Host{Root: root, Run: r}, reload: filepath.Join(root, "reloads")}
	f.write("/etc/ssh/sshd_config.d/10-old.conf", "PermitRootLogin yes\n", 0o640)
	f.write("/etc/keep.conf", "keep\n", 0o600)
	return f
}

func (f *fixture) write(p, content string, mode os.FileMode) {
	f.t.Helper()
	full := filepath.Join(f.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), mode); err != nil {
		f.t.Fatal(err)
	}
	os.Chmod(full, mode)
}

// snapshot maps every file under /etc to its mode and content.
func (f *fixture) snapshot() map[string]string {
	out := map[string]string{}
	filepath.Walk(filepath.Join(f.root, "etc"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			out[strings.TrimPrefix(p, f.root)] = info.Mode().Perm().String() + " " + string(b)
		}
		return nil
	})
	return out
}

func (f *fixture) plans(risky bool) []check.Plan {
	return []check.Plan{{
		Area: "sshd",
		Files: []check.File{
			{Path: "/etc/ssh/sshd_config.d/10-old.conf", Content: []byte("PermitRootLogin no\n"), Mode: 0o644},
			{Path: "/etc/ssh/sshd_config.d/50-tandem.conf", Content: []byte("PasswordAuthentication no\n"), Mode: 0o600},
			{Path: "/etc/keep.conf", Content: []byte("keep\n"), Mode: 0o600}, // unchanged: not touched
		},
		Validate: [][]string{{"sshd", "-t"}},
		Reload:   [][]string{{"sh", "-c", "echo reloaded >> " + f.reload}},
		Risky:    risky,
	}}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestApplyThenRevertRestoresExactly(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	res, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{Confirm: MinConfirm})
	if err != nil {
		t.Fatal(err)
	}
	if res.Pending == "" || len(res.Changes) != 2 {
		t.Fatalf("apply = %+v; want pending with 2 changed files", res)
	}
	if got := f.snapshot()["/etc/ssh/sshd_config.d/50-tandem.conf"]; got != "-rw------- PasswordAuthentication no\n" {
		t.Errorf("new file = %q", got)
	}
	if _, err := f.host.Revert(t.Context()); err != nil {
		t.Fatal(err)
	}
	if after := f.snapshot(); !equalMaps(before, after) {
		t.Errorf("after revert:\n%v\nwant:\n%v", after, before)
	}
	if b, _ := os.ReadFile(f.reload); string(b) != "reloaded\n" {
		t.Errorf("reload after revert ran %q; want once", b)
	}
	if m, _ := f.host.Pending(); m != nil {
		t.Errorf("still pending after revert: %+v", m)
	}
	if _, err := f.host.Confirm(t.Context()); !errors.Is(err, ErrNothingPending) || !strings.Contains(err.Error(), "was reverted") {
		t.Errorf("confirm after revert = %v; want nothing pending, naming the reverted apply", err)
	}
}

func TestScheduledRevertRunsWithoutTandem(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	if _, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{Confirm: MinConfirm}); err != nil {
		t.Fatal(err)
	}
	argv := f.run.scheduled()
	if len(argv) != 2 {
		t.Fatalf("systemd-run not called with /bin/sh SCRIPT: %v", f.run.cmds)
	}
	// tandem is "killed" here: the timer's command runs on its own.
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
	if after := f.snapshot(); !equalMaps(before, after) {
		t.Errorf("after the timer's revert:\n%v\nwant:\n%v", after, before)
	}
	// The script is kept with the reverted apply; running it again is
	// harmless.
	kept := strings.Replace(argv[1], "/pending/", "/reverted/", 1)
	if out, err := exec.Command(argv[0], kept).CombinedOutput(); err != nil || !strings.Contains(string(out), "nothing to revert") {
		t.Errorf("second run: %v %s", err, out)
	}
}

func TestConfirmKeepsTheChange(t *testing.T) {
	f := newFixture(t)
	res, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{Confirm: MinConfirm})
	if err != nil {
		t.Fatal(err)
	}
	applied := f.snapshot()
	m, err := f.host.Confirm(t.Context())
	if err != nil || m.ID != res.Pending {
		t.Fatalf("confirm = %+v, %v", m, err)
	}
	stopped := slices.ContainsFunc(f.run.cmds, func(c []string) bool {
		return slices.Equal(c, []string{"systemctl", "stop", UnitPrefix + res.Pending + ".timer"})
	})
	if !stopped {
		t.Errorf("confirm did not stop the timer: %v", f.run.cmds)
	}
	// A timer that fires anyway (its stop failed) finds no script and
	// nothing to revert.
	argv := f.run.scheduled()
	exec.Command(argv[0], argv[1:]...).Run()
	if got := f.snapshot(); !equalMaps(applied, got) {
		t.Errorf("a late timer changed files after confirm")
	}
	again, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{Confirm: MinConfirm})
	if err != nil || !again.Nothing || again.Pending != "" {
		t.Errorf("second apply = %+v, %v; want nothing to change", again, err)
	}
}

func TestValidateFailureReverts(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	f.run.fail["sshd"] = errors.New("line 1: Bad configuration option")
	_, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{Confirm: MinConfirm})
	var ve *ValidateError
	if !errors.As(err, &ve) || ve.Area != "sshd" || !strings.Contains(err.Error(), "Bad configuration option") {
		t.Fatalf("err = %v; want the validation error of sshd", err)
	}
	if after := f.snapshot(); !equalMaps(before, after) {
		t.Errorf("files not put back:\n%v", after)
	}
	if m, _ := f.host.Pending(); m != nil {
		t.Errorf("pending after a failed validation: %+v", m)
	}
}

func TestApplyRefusals(t *testing.T) {
	f := newFixture(t)
	before := f.snapshot()
	if _, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "--confirm") {
		t.Errorf("risky apply without --confirm = %v; want a refusal naming --confirm", err)
	}
	res, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{DryRun: true})
	if err != nil || len(res.Changes) != 2 || !strings.Contains(res.Changes[0].Diff, "-PermitRootLogin yes\n+PermitRootLogin no") {
		t.Errorf("dry run = %+v, %v", res, err)
	}
	if after := f.snapshot(); !equalMaps(before, after) || len(f.run.cmds) != 0 {
		t.Errorf("refused or dry-run applies changed the host: %v", f.run.cmds)
	}
	if _, err := f.host.Apply(t.Context(), f.plans(true), ApplyOptions{Confirm: MinConfirm}); err != nil {
		t.Fatal(err)
	}
	other := []check.Plan{{Area: "firewall", Files: []check.File{{Path: "/etc/x", Content: []byte("x"), Mode: 0o644}}}}
	if _, err := f.host.Apply(t.Context(), other, ApplyOptions{Confirm: MinConfirm}); !errors.Is(err, ErrPending) {
		t.Errorf("apply while one is pending = %v; want ErrPending", err)
	}
	if _, err := f.host.Apply(t.Context(), []check.Plan{{Area: "x", Files: []check.File{{Path: "etc/rel", Mode: 0o644}}}}, ApplyOptions{}); err == nil {
		t.Error("a relative plan path was accepted")
	}
}

func TestNotRiskyCommitsAtOnce(t *testing.T) {
	f := newFixture(t)
	res, err := f.host.Apply(t.Context(), f.plans(false), ApplyOptions{})
	if err != nil || res.Pending != "" || f.run.scheduled() != nil {
		t.Fatalf("apply = %+v, %v; want committed without a timer", res, err)
	}
	if m, _ := f.host.Pending(); m != nil {
		t.Errorf("pending: %+v", m)
	}
	if !slices.ContainsFunc(f.run.cmds, func(c []string) bool { return c[0] == "sh" }) {
		t.Errorf("reload not run: %v", f.run.cmds)
	}
}

func TestRevertScriptQuotesPaths(t *testing.T) {
	f := newFixture(t)
	odd := "/etc/it's $(touch pwned).conf"
	f.write(odd, "old\n", 0o644)
	plans := []check.Plan{{Area: "x", Files: []check.File{{Path: odd, Content: []byte("new\n"), Mode: 0o644}}, Risky: true}}
	if _, err := f.host.Apply(t.Context(), plans, ApplyOptions{Confirm: MinConfirm}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.host.Revert(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.root, odd)); !bytes.Equal(b, []byte("old\n")) {
		t.Errorf("odd path content = %q", b)
	}
	if _, err := os.Stat("pwned"); err == nil {
		os.Remove("pwned")
		t.Error("a path was run as a command")
	}
}

func TestDiff(t *testing.T) {
	tests := []struct{ old, new, want string }{
		{"a\nb\nc\n", "a\nB\nc\n", "--- a/f\n+++ b/f\n a\n-b\n+B\n c\n"},
		{"", "x\n", "--- /dev/null\n+++ b/f\n+x\n"},
		{"1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n", "--- a/f\n+++ b/f\n 7\n 8\n 9\n+10\n"},
	}
	for _, tt := range tests {
		var old []byte
		if tt.old != "" {
			old = []byte(tt.old)
		}
		if got := Diff("/f", old, []byte(tt.new)); got != tt.want {
			t.Errorf("Diff(%q, %q) =\n%s\nwant\n%s", tt.old, tt.new, got, tt.want)
		}
	}
}
