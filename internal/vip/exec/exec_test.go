package exec

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/viptest"
)

// scriptEnv backs the scripts with a state file naming the holder, the way an
// operator's scripts would drive some external register.
func scriptEnv(t *testing.T) viptest.Env {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	delay := filepath.Join(dir, "delay")
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\nset -e\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	acq := write("acquire", fmt.Sprintf(`[ -f %[1]s ] && sleep "$(cat %[1]s)"
[ -n "$TANDEM_VIP" ] || { echo "TANDEM_VIP unset" >&2; exit 1; }
echo "$TANDEM_NODE" > %[2]s
`, delay, state))
	rel := write("release", fmt.Sprintf(`if [ "$(cat %[1]s 2>/dev/null)" = "$TANDEM_NODE" ]; then : > %[1]s; fi
`, state))
	hold := write("holder", fmt.Sprintf("cat %s 2>/dev/null || true\n", state))
	mk := func(node string) *Provider {
		p, err := New(Options{
			VIP: "192.0.2.10", Node: node,
			Acquire: []string{acq}, Release: []string{rel}, Holder: []string{hold},
			Timeout: 10 * time.Second, PollInterval: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return viptest.Env{
		A: mk("node1"), B: mk("node2"),
		ReleaseDrops: true,
		ThirdParty: func(t *testing.T) {
			if err := os.WriteFile(state, []byte("node3\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		ActionDelay: func(t *testing.T, d time.Duration) {
			if err := os.WriteFile(delay, fmt.Appendf(nil, "%.3f", d.Seconds()), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestConformance(t *testing.T) {
	viptest.Run(t, scriptEnv)
}

func TestScriptFailureCarriesOutput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'no route to api' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{VIP: "v", Node: "n", Acquire: []string{bad}, Holder: []string{bad},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Acquire(t.Context())
	if err == nil || !strings.Contains(err.Error(), "no route to api") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Acquire error = %v, want the script's stderr and exit status", err)
	}
}

func TestScriptTimeout(t *testing.T) {
	dir := t.TempDir()
	slow := filepath.Join(dir, "slow")
	// The child sleep keeps the pipe open; the process-group kill must end it.
	if err := os.WriteFile(slow, []byte("#!/bin/sh\nsleep 60 &\nwait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{VIP: "v", Node: "n", Acquire: []string{slow}, Holder: []string{slow},
		Timeout: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.Acquire(t.Context())
	if err == nil || !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Fatalf("Acquire error = %v, want a timeout", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("timeout took %v", took)
	}
}

func TestNewRejects(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no acquire", Options{Node: "n", Holder: []string{"x"}, Logger: log}, "acquire command is empty"},
		{"no holder", Options{Node: "n", Acquire: []string{"x"}, Logger: log}, "holder command is empty"},
		{"bad node", Options{Node: "a b", Acquire: []string{"x"}, Holder: []string{"x"}, Logger: log}, "node name"},
		{"no logger", Options{Node: "n", Acquire: []string{"x"}, Holder: []string{"x"}}, "Logger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseHolder(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"", "", false},
		{"\n\n  \n", "", false},
		{"node1\n", "node1", false},
		{"  node-2  \r\n", "node-2", false},
		{"node1\nnode2\n", "", true},
		{"node 1", "", true},
		{"a\x00b", "", true},
		{"\xff\xfe", "", true},
		{strings.Repeat("a", 254), "", true},
	} {
		got, err := ParseHolder([]byte(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseHolder(%q) = %q, %v; want %q, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func FuzzParseHolder(f *testing.F) {
	for _, s := range []string{"", "node1\n", "a\nb", " x ", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := ParseHolder(b)
		if err != nil {
			return
		}
		if name != strings.TrimSpace(name) || strings.ContainsAny(name, "\r\n\t ") {
			t.Fatalf("ParseHolder(%q) = %q: not a clean name", b, name)
		}
		if name != "" && checkName(name) != nil {
			t.Fatalf("ParseHolder(%q) = %q fails checkName", b, name)
		}
	})
}
