package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRunner records every command and fails those listed in fail.
type fakeRunner struct {
	mu        sync.Mutex
	calls     []string
	deadlines []bool
	fail      map[string]string // "verb unit" -> output
}

func (f *fakeRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := name + " " + strings.Join(args, " ")
	f.calls = append(f.calls, call)
	_, ok := ctx.Deadline()
	f.deadlines = append(f.deadlines, ok)
	if len(args) == 3 {
		if out, bad := f.fail[args[0]+" "+args[2]]; bad {
			return []byte(out + "\n"), errors.New("exit status 1")
		}
	}
	return nil, nil
}

func (f *fakeRunner) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func TestUnits(t *testing.T) {
	names := []string{"scheduler.service", "mailer.service", "cron-jobs.timer"}
	tests := []struct {
		name      string
		op        func(*Units, context.Context) error
		fail      map[string]string
		wantCalls []string
		wantErr   []string
	}{
		{
			name: "start in order",
			op:   (*Units).Start,
			wantCalls: []string{
				"/bin/systemctl start -- scheduler.service",
				"/bin/systemctl start -- mailer.service",
				"/bin/systemctl start -- cron-jobs.timer",
			},
		},
		{
			name: "stop in reverse order",
			op:   (*Units).Stop,
			wantCalls: []string{
				"/bin/systemctl stop -- cron-jobs.timer",
				"/bin/systemctl stop -- mailer.service",
				"/bin/systemctl stop -- scheduler.service",
			},
		},
		{
			name: "a failure does not stop the others",
			op:   (*Units).Start,
			fail: map[string]string{"start mailer.service": "Job for mailer.service failed."},
			wantCalls: []string{
				"/bin/systemctl start -- scheduler.service",
				"/bin/systemctl start -- mailer.service",
				"/bin/systemctl start -- cron-jobs.timer",
			},
			wantErr: []string{"start primary unit mailer.service: exit status 1: Job for mailer.service failed."},
		},
		{
			name: "every failure is reported",
			op:   (*Units).Stop,
			fail: map[string]string{"stop mailer.service": "a", "stop scheduler.service": "b"},
			wantCalls: []string{
				"/bin/systemctl stop -- cron-jobs.timer",
				"/bin/systemctl stop -- mailer.service",
				"/bin/systemctl stop -- scheduler.service",
			},
			wantErr: []string{"stop primary unit mailer.service", "stop primary unit scheduler.service"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeRunner{fail: tt.fail}
			log, _ := newRecorder()
			u, err := NewUnits(names, log, UnitsOptions{Runner: fake, Systemctl: "/bin/systemctl", Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.op(u, t.Context())
			if got := fake.Calls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls = %q; want %q", got, tt.wantCalls)
			}
			if !slices.Equal(fake.deadlines, []bool{true, true, true}) {
				t.Errorf("calls had deadlines %v; every systemctl call must be bounded", fake.deadlines)
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("err = %v; want nil", err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v; want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestNewUnitsValidates(t *testing.T) {
	log, _ := newRecorder()
	for _, bad := range []string{"", "a b.service", "../x.service", "--now"} {
		if _, err := NewUnits([]string{"ok.service", bad}, log, UnitsOptions{}); err == nil {
			t.Errorf("NewUnits(%q) succeeded", bad)
		}
	}
	u, err := NewUnits(nil, log, UnitsOptions{Runner: &fakeRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(t.Context()); err != nil {
		t.Errorf("Start with no units = %v", err)
	}
	names := []string{"a.service"}
	u, _ = NewUnits(names, log, UnitsOptions{})
	names[0] = "changed"
	if got := u.Names(); !slices.Equal(got, []string{"a.service"}) {
		t.Errorf("Names() = %q; NewUnits must copy its input", got)
	}
}

// TestRunnerOrdersHooksAndUnits checks setup and teardown order: on promote
// the hook runs before the units start; on demote and fault the units stop
// before the hook runs.
func TestRunnerOrdersHooksAndUnits(t *testing.T) {
	dir := t.TempDir()
	// The hook records itself through the same fake, via a file the test reads.
	trace := filepath.Join(dir, "trace")
	script := writeScript(t, dir, "notify", fmt.Sprintf("echo \"hook $1\" >> %s\n", trace))
	fake := &tracingRunner{trace: trace}
	log, _ := newRecorder()
	u, err := NewUnits([]string{"a.service", "b.service"}, log, UnitsOptions{Runner: fake})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(log, Options{Promote: script, Demote: script, Fault: script, Units: u})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	for _, ev := range []Event{EventPromote, EventDemote, EventFault} {
		if err := r.Exec(t.Context(), ev, 1, ""); err != nil {
			t.Fatalf("%s: %v", ev, err)
		}
	}
	b, _ := os.ReadFile(trace)
	want := "hook MASTER\nstart a.service\nstart b.service\n" +
		"stop b.service\nstop a.service\nhook BACKUP\n" +
		"stop b.service\nstop a.service\nhook FAULT\n"
	if string(b) != want {
		t.Errorf("trace:\n%s\nwant:\n%s", b, want)
	}
}

func TestRunnerReportsUnitFailure(t *testing.T) {
	log, _ := newRecorder()
	fake := &fakeRunner{fail: map[string]string{"start a.service": "Unit a.service not found."}}
	u, err := NewUnits([]string{"a.service"}, log, UnitsOptions{Runner: fake})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(log, Options{Units: u})
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	err = r.Exec(t.Context(), EventPromote, 4, "")
	if err == nil || !strings.Contains(err.Error(), "Unit a.service not found.") {
		t.Errorf("Exec() = %v; want the unit failure", err)
	}
}

// tracingRunner appends "verb unit" to the trace file the hook also writes.
type tracingRunner struct{ trace string }

func (r *tracingRunner) Run(_ context.Context, _ string, args ...string) ([]byte, error) {
	f, err := os.OpenFile(r.trace, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s\n", args[0], args[len(args)-1])
	return nil, err
}

func TestExecRunner(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		timeout time.Duration
		wantOut string
		wantErr string
	}{
		{name: "output", script: "echo out; echo err >&2", wantOut: "out\nerr\n"},
		{name: "exit code", script: "echo nope; exit 5", wantOut: "nope\n", wantErr: "exit status 5"},
		{name: "killed on ctx", script: "sleep 30", timeout: 200 * time.Millisecond, wantErr: "killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			start := time.Now()
			out, err := ExecRunner{}.Run(ctx, "sh", "-c", tt.script)
			if string(out) != tt.wantOut && tt.wantOut != "" {
				t.Errorf("output = %q; want %q", out, tt.wantOut)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v; want %q", err, tt.wantErr)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
	t.Run("output bounded", func(t *testing.T) {
		out, err := ExecRunner{}.Run(t.Context(), "sh", "-c", "head -c 100000 /dev/zero")
		if err != nil || len(out) != maxCommandOutput {
			t.Errorf("len(out) = %d, err %v; want %d", len(out), err, maxCommandOutput)
		}
	})
}
