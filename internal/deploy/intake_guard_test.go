package deploy

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/guard"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// TestRefusedWebhookFeedsGuard checks that a delivery refused for its
// signature is logged with the sender's address in the line guard's
// built-in tandem-webhook filter reads (the agent's logger, as journald
// stores it), and that the attacker-controlled parts of the request cannot
// name another host.
func TestRefusedWebhookFeedsGuard(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	filter, err := guard.Builtin("tandem-webhook", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote, want string
		header             map[string]string
	}{
		{"IPv4, no signature", "203.0.113.7:51234", "203.0.113.7", nil},
		{"IPv6, wrong token", "[2001:db8::7]:51235", "2001:db8::7", map[string]string{"X-Gitlab-Token": "guess"}},
		{"forged remote in a header", "203.0.113.9:1", "203.0.113.9", map[string]string{"X-Gitlab-Token": "x status=401 remote=10.0.0.5:1 "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil)).With("component", "deploy")
			in := NewIntake(IntakeOptions{Logger: log, Sources: []Source{{Name: "gitlab", Kind: webhook.GitLab,
				Rules: webhook.Rules{Branches: []string{"main"}}, SecretFile: secret}}})
			req := httptest.NewRequest(http.MethodPost, "/webhook/gitlab", strings.NewReader(`{"object_kind":"pipeline"}`))
			req.RemoteAddr = tt.remote
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			in.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status %d; want 401 (body %s)", rec.Code, rec.Body)
			}
			var found bool
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				res := filter.Match("tandem", []byte(line))
				if !res.Match {
					continue
				}
				found = true
				if res.Addr != netip.MustParseAddr(tt.want) {
					t.Errorf("filter names %v; want %s in %s", res.Addr, tt.want, line)
				}
			}
			if !found {
				t.Errorf("no log line the tandem-webhook filter matches:\n%s", logs.String())
			}
		})
	}
}
