package cluster

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := newHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
	tests := []struct {
		name      string
		log       func()
		wantLevel string // "" when nothing is written
		wantMsg   string
		wantAttr  [2]string
	}{
		{"info", func() { l.Info("entering leader state", "term", 3) }, "INFO", "entering leader state", [2]string{"term", "3"}},
		{"error", func() { l.Error("failed to make TimeoutNow RPC") }, "ERROR", "failed to make TimeoutNow RPC", [2]string{}},
		{"heartbeat failure demoted", func() { l.Error("failed to heartbeat to", "peer", "n2") }, "DEBUG", "failed to heartbeat to", [2]string{"peer", "n2"}},
		{"append failure demoted", func() { l.Error("failed to appendEntries to", "peer", "n2") }, "WARN", "failed to appendEntries to", [2]string{}},
		{"election warning kept", func() { l.Warn("heartbeat timeout reached, starting election") }, "WARN", "heartbeat timeout reached, starting election", [2]string{}},
		{"trace below debug", func() { l.Trace("noise") }, "", "", [2]string{}},
		{"hclog.Fmt formatted", func() { l.Info("initial configuration", "servers", hclog.Fmt("%d servers", 3)) }, "INFO", "initial configuration", [2]string{"servers", "3 servers"}},
		{"named", func() { l.Named("transport").Warn("x") }, "WARN", "x", [2]string{"subsystem", "raft.transport"}},
		{"with", func() { l.With("a", "b").Info("y") }, "INFO", "y", [2]string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			tt.log()
			if tt.wantLevel == "" {
				if buf.Len() != 0 {
					t.Errorf("wrote %s; want nothing", buf.String())
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("record %q: %v", buf.String(), err)
			}
			if rec["level"] != tt.wantLevel || rec["msg"] != tt.wantMsg || rec["component"] != "raft" {
				t.Errorf("record = %v; want level %s msg %q component raft", rec, tt.wantLevel, tt.wantMsg)
			}
			if k := tt.wantAttr[0]; k != "" && strings.TrimSpace(jsonString(rec[k])) != tt.wantAttr[1] {
				t.Errorf("%s = %v; want %q", k, rec[k], tt.wantAttr[1])
			}
		})
	}
	if !l.IsDebug() || l.IsTrace() || l.GetLevel() != hclog.Debug {
		t.Errorf("IsDebug=%v IsTrace=%v GetLevel=%v; want the handler's debug level", l.IsDebug(), l.IsTrace(), l.GetLevel())
	}
}

func jsonString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}
