package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// TestWebhookTestCommand checks saved deliveries against a source the way
// the listener would, offline: exit 0 for accepted or ignored (with the
// reason), 1 for a refused one, 2 for a source the config lacks.
func TestWebhookTestCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := "It's a Secret to Everybody"
	secretFile := write("gh.secret", "an old secret\n"+secret+"\n")
	token := write("api.token", "t\n")
	cfg := write("tandem.toml", `[node]
name = "node1"
[cluster]
listen = "10.0.0.1:7946"
[vip]
provider = "linux"
address = "10.0.0.100/24"
[vip.linux]
interface = "eth0"
[[health]]
type = "http"
target = "http://127.0.0.1:8000/healthz"
[deploy]
packages = ["pysite"]
listen = ":8443"
insecure_http = true
[[deploy.source]]
name = "gh"
type = "github"
secret_file = "`+secretFile+`"
api_url = "https://api.github.example"
api_token_file = "`+token+`"
project = "site/pysite"
branches = ["main"]
`)
	fixture := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "webhook", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return write(name, string(b))
	}
	run, pr := fixture("github_workflow_run.json"), fixture("github_workflow_run_pull_request.json")
	headers := func(name, body, key string) string {
		b, err := os.ReadFile(body)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "X-GitHub-Event: workflow_run\nX-GitHub-Delivery: 72d3162e\nX-Hub-Signature-256: "+webhook.SignHex([]byte(key), b)+"\n")
	}
	tests := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"accepted", []string{"gh", run, "--headers", headers("good", run, secret)}, 0, "would answer 202"},
		{"a pull request's run", []string{"gh", pr, "--headers", headers("pr", pr, secret)}, 0, "ignored"},
		{"a wrong secret", []string{"gh", run, "--headers", headers("bad", run, "guess")}, ExitError, "would answer 401"},
		{"no headers", []string{"gh", run}, ExitError, "X-Hub-Signature-256"},
		{"no such source", []string{"gitlab", run}, ExitUsage, `no deploy.source named "gitlab"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(append([]string{"-c", cfg, "webhook", "test"}, tt.args...), nil, &out, &errb)
			if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.says) {
				t.Errorf("exit %d, output %q %q; want exit %d saying %q", code, out.String(), errb.String(), tt.code, tt.says)
			}
		})
	}
}
