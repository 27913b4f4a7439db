package install

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSystemd answers systemctl show and journalctl like systemd would for
// one unit whose state a test scripts by call count.
type fakeSystemd struct {
	mu    sync.Mutex
	shows int
	// state returns the n-th (0-based) systemctl show answer.
	state func(n int) (active string, entered time.Time)
}

func (f *fakeSystemd) run(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	switch name {
	case "systemctl":
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		f.mu.Lock()
		n := f.shows
		f.shows++
		f.mu.Unlock()
		active, entered := f.state(n)
		ts := "n/a"
		if !entered.IsZero() {
			ts = entered.UTC().Format("Mon 2006-01-02 15:04:05.000000 UTC")
		}
		sub := map[string]string{"active": "running", "activating": "start", "failed": "failed", "inactive": "dead"}[active]
		return fmt.Appendf(nil, "ActiveState=%s\nSubState=%s\nResult=success\nActiveEnterTimestamp=%s\nLoadState=loaded\n", active, sub, ts), nil
	case "journalctl":
		return []byte("2026-11-28T18:00:01+00:00 node1 pysite[42]: Traceback (most recent call last)\n2026-11-28T18:00:01+00:00 node1 pysite[42]: ImportError: no module named flask\n"), nil
	}
	return nil, fmt.Errorf("unexpected command %s", name)
}

// health serves the health endpoint from a function of the request count.
func health(t *testing.T, h func(n int) (int, string)) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body := h(int(n.Add(1) - 1))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func okBody(v string) string {
	return `{"status":"ok","version":"` + v + `","node":"node1"}`
}

func TestGate(t *testing.T) {
	since := time.Now().Add(-time.Minute)
	before, after := since.Add(-time.Hour), since.Add(2*time.Second)
	restarted := func(n int) (string, time.Time) { return "active", after }
	tests := []struct {
		name    string
		unit    func(n int) (string, time.Time)
		health  func(n int) (int, string) // nil: no health URL
		spec    GateSpec
		cancelU int // cancel the context at this systemctl call (1-based)
		cancelH int // cancel the context at this health probe (1-based)
		wantErr []string
		gateErr bool // errors.Is(err, ErrGate)
	}{
		{
			name: "passes", unit: restarted,
			health: func(n int) (int, string) { return 200, okBody("0.2.0") },
		},
		{
			name: "passes after starting up",
			unit: func(n int) (string, time.Time) {
				if n < 3 {
					return "activating", time.Time{}
				}
				return "active", after
			},
			health: func(n int) (int, string) {
				if n < 3 {
					return 503, `{"status":"starting"}`
				}
				return 200, okBody("0.2.0")
			},
		},
		{
			name: "epoch and revision stripped, pre-release in Python form", unit: restarted,
			health: func(n int) (int, string) { return 200, okBody("0.3.0rc1") },
			spec:   GateSpec{Version: "2:0.3.0~rc1-1"},
		},
		{
			name: "not JSON: status alone counts", unit: restarted,
			health: func(n int) (int, string) { return 200, "OK" },
		},
		{name: "unit only", unit: restarted},
		{
			name:    "unit not restarted after Since",
			unit:    func(n int) (string, time.Time) { return "active", before },
			health:  func(n int) (int, string) { return 200, okBody("0.2.0") },
			spec:    GateSpec{Timeout: 60 * time.Millisecond},
			wantErr: []string{"pysite.service", "was not restarted after the install began", "postinst", "ImportError: no module named flask"},
			gateErr: true,
		},
		{
			name: "health 500",
			unit: restarted, health: func(n int) (int, string) { return 500, `{"error":"db down"}` },
			spec:    GateSpec{Timeout: 60 * time.Millisecond},
			wantErr: []string{"did not pass within", "status 500", "db down", "/healthz", "pysite.service", "last journal lines of pysite.service", "Traceback"},
			gateErr: true,
		},
		{
			name: "wrong version", unit: restarted,
			health:  func(n int) (int, string) { return 200, okBody("0.1.0") },
			spec:    GateSpec{Timeout: 60 * time.Millisecond},
			wantErr: []string{`version "0.1.0", want "0.2.0"`, "status 200"},
			gateErr: true,
		},
		{
			name: "flaps during soak", unit: restarted,
			health: func(n int) (int, string) {
				if n == 4 {
					return 502, "bad gateway"
				}
				return 200, okBody("0.2.0")
			},
			spec:    GateSpec{Soak: time.Second},
			wantErr: []string{"failed after passing", "into the soak", "status 502", "bad gateway"},
			gateErr: true,
		},
		{
			name: "wrong version during soak", unit: restarted,
			health: func(n int) (int, string) {
				if n >= 3 {
					return 200, okBody("0.1.0")
				}
				return 200, okBody("0.2.0")
			},
			spec:    GateSpec{Soak: time.Second},
			wantErr: []string{"failed after passing", `version "0.1.0"`},
			gateErr: true,
		},
		{
			name: "unit restarts during soak",
			unit: func(n int) (string, time.Time) {
				if n == 0 {
					return "active", after
				}
				return "active", after.Add(time.Second)
			},
			health:  func(n int) (int, string) { return 200, okBody("0.2.0") },
			wantErr: []string{"restarted or stopped during the soak"},
			gateErr: true,
		},
		{
			name:    "timeout: unit never active",
			unit:    func(n int) (string, time.Time) { return "activating", time.Time{} },
			spec:    GateSpec{Timeout: 50 * time.Millisecond},
			wantErr: []string{"unit pysite.service is activating/start", "after 50ms"},
			gateErr: true,
		},
		{
			name:    "context cancelled while probing",
			unit:    restarted,
			health:  func(n int) (int, string) { return 503, "starting" },
			spec:    GateSpec{Timeout: time.Minute},
			cancelH: 3,
			wantErr: []string{"context canceled", "status 503"},
		},
		{
			name:    "context cancelled waiting for the unit",
			unit:    func(n int) (string, time.Time) { return "failed", time.Time{} },
			spec:    GateSpec{Timeout: time.Minute},
			cancelU: 3,
			wantErr: []string{"context canceled", "failed/failed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			unit, probe := tt.unit, tt.health
			if tt.cancelU > 0 {
				unit = func(n int) (string, time.Time) {
					if n+1 == tt.cancelU {
						cancel()
					}
					return tt.unit(n)
				}
			}
			if tt.cancelH > 0 {
				probe = func(n int) (int, string) {
					if n+1 == tt.cancelH {
						cancel()
					}
					return tt.health(n)
				}
			}
			sd := &fakeSystemd{state: unit}
			g := tt.spec
			g.Unit, g.Since = "pysite.service", since
			if g.Version == "" {
				g.Version = "0.2.0-1"
			}
			if g.Soak == 0 {
				g.Soak = 30 * time.Millisecond
			}
			if probe != nil {
				g.HealthURL = health(t, probe).URL + "/healthz"
			}
			err := Gater{Run: sd.run, Interval: 5 * time.Millisecond}.Gate(ctx, g)
			checkErr(t, err, tt.wantErr, nil)
			if err != nil && errors.Is(err, ErrGate) != tt.gateErr {
				t.Errorf("errors.Is(err, ErrGate) = %v, want %v", !tt.gateErr, tt.gateErr)
			}
			if tt.cancelU+tt.cancelH > 0 && !errors.Is(err, context.Canceled) {
				t.Errorf("error %v does not wrap context.Canceled", err)
			}
		})
	}
}

func TestGateUnitMissing(t *testing.T) {
	run := func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
		if name == "journalctl" {
			return []byte("-- No entries --\n"), nil
		}
		return []byte("ActiveState=inactive\nSubState=dead\nLoadState=not-found\nActiveEnterTimestamp=n/a\n"), nil
	}
	err := Gater{Run: run, Interval: time.Millisecond}.Gate(t.Context(), GateSpec{Unit: "nope.service", Version: "1-1", Since: time.Now()})
	checkErr(t, err, []string{"unit nope.service does not exist", "No entries"}, nil)
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"n/a", time.Time{}, false},
		{"", time.Time{}, false},
		{"@1795870800", time.Unix(1795870800, 0), false},
		{"@1795870800.25", time.Unix(1795870800, 250e6), false},
		{"Sat 2026-11-28 18:00:00.123456 UTC", time.Date(2026, 11, 28, 18, 0, 0, 123456000, time.UTC), false},
		{"Sat 2026-11-28 18:00:00 UTC", time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC), false},
		{"yesterday", time.Time{}, true},
		{"@x", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseTimestamp(tt.in)
		if (err != nil) != tt.err || !got.Equal(tt.want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestUpstream(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0.2.0-1", "0.2.0"},
		{"1:0.2.0-1", "0.2.0"},
		{"0.2.0", "0.2.0"},
		{"1.0-rc1-2", "1.0-rc1"},
		{"0.3.0~rc1-1", "0.3.0~rc1"},
	}
	for _, tt := range tests {
		if got := Upstream(tt.in); got != tt.want {
			t.Errorf("Upstream(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if !SameVersion("0.3.0rc1", "0.3.0~rc1") || SameVersion("0.3.0", "0.3.0~rc1") || !SameVersion("0.2.0", "0.2.0") {
		t.Error("SameVersion")
	}
	if v, ok := bodyVersion([]byte(`{"version":2}`)); !ok || SameVersion(v, "2") && v != "2" {
		t.Errorf("bodyVersion of a number = %q, %v", v, ok)
	}
	if _, ok := bodyVersion([]byte(`["x"]`)); ok {
		t.Error("bodyVersion of an array found a version")
	}
	if !strings.Contains(probe{status: 500, body: "x"}.String(), "status 500") {
		t.Error("probe.String")
	}
}
