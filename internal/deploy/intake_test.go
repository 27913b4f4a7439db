package deploy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// TestIntakeAnswers drives the webhook listener's handler with the forge
// payload fixtures: what each delivery is answered, what is committed
// (only an accepted one, once) and what the counter records.
func TestIntakeAnswers(t *testing.T) {
	dir := t.TempDir()
	ghSecret, genKey := []byte("It's a Secret to Everybody"), []byte("0123456789abcdef0123456789abcdef")
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Two secrets at once: the old one is being rotated out.
	ghFile := write("gh", "an old secret\n"+string(ghSecret)+"\n")
	genFile := write("gen", "whsec_"+base64.StdEncoding.EncodeToString(genKey)+"\n")
	fixture := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "webhook", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	run, failed := fixture("github_workflow_run.json"), fixture("github_workflow_run_failure.json")
	release := fixture("generic_release.json")
	foreign := bytes.ReplaceAll(run, []byte(`"site/pysite"`), []byte(`"evil/pysite"`))
	otherBuild := bytes.Replace(release, []byte("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
		[]byte(strings.Repeat("e", 64)), 1)

	s := newSim(t, "node1", "node2")
	counts := map[string]int{}
	in := NewIntake(IntakeOptions{Name: "node1", Cluster: s, Machine: s.m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return s.now },
		Sources: []Source{
			{Name: "gh", Kind: webhook.GitHub, Rules: webhook.Rules{Branches: []string{"main"}, Project: "site/pysite"}, SecretFile: ghFile},
			{Name: "ci", Kind: webhook.Generic, Rules: webhook.Rules{Branches: []string{"main"}}, SecretFile: genFile},
		},
		OnDelivery: func(source, outcome string) { counts[source+" "+outcome]++ }})
	if err := in.Check(); err != nil {
		t.Fatal(err)
	}
	h := in.Handler()
	github := func(id string, body []byte, secret []byte) http.Header {
		return http.Header{"X-Github-Event": {"workflow_run"}, "X-Github-Delivery": {id},
			"X-Hub-Signature-256": {webhook.SignHex(secret, body)}}
	}
	generic := func(id string, body []byte, at time.Time) http.Header {
		ts, sig := webhook.SignStandard(genKey, id, at, body)
		return http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {sig}}
	}
	tests := []struct {
		name, path string
		h          http.Header
		body       []byte
		want       int
		status     string // the reply's status field
		stored     int    // deliveries committed by this one
		outcome    string // the counter it adds to
	}{
		{"a successful run", "/webhook/gh", github("g-1", run, ghSecret), run, 202, "queued", 1, "gh accepted"},
		{"GitHub's redelivery (same delivery ID)", "/webhook/gh", github("g-1", run, ghSecret), run, 200, "duplicate", 0, "gh duplicate"},
		{"the same build under a new delivery ID", "/webhook/gh", github("g-2", run, ghSecret), run, 200, "duplicate", 0, "gh duplicate"},
		{"no signature", "/webhook/gh", http.Header{"X-Github-Event": {"workflow_run"}}, run, 401, "error", 0, "gh bad_signature"},
		{"a wrong secret", "/webhook/gh", github("g-3", run, []byte("guess")), run, 401, "error", 0, "gh bad_signature"},
		{"a body over 1 MiB", "/webhook/gh", github("g-4", nil, ghSecret), bytes.Repeat([]byte(" "), webhook.MaxBody+1), 413, "error", 0, "gh too_large"},
		{"another project's run", "/webhook/gh", github("g-8", foreign, ghSecret), foreign, 200, "ignored", 0, "gh ignored"},
		{"a failed run", "/webhook/gh", github("g-5", failed, ghSecret), failed, 200, "ignored", 0, "gh ignored"},
		{"signed but not JSON", "/webhook/gh", github("g-6", []byte("{"), ghSecret), []byte("{"), 400, "error", 0, "gh malformed"},
		{"a source nobody configured", "/webhook/bitbucket", github("g-7", run, ghSecret), run, 404, "error", 0, UnknownSource + " unknown_source"},
		{"another made-up source", "/webhook/x0000001", github("g-9", run, ghSecret), run, 404, "error", 0, UnknownSource + " unknown_source"},
		{"a generic release", "/webhook/ci", generic("m-1", release, time.Now()), release, 202, "queued", 1, "ci accepted"},
		{"the same project, commit and digest under a new webhook-id", "/webhook/ci", generic("m-2", release, time.Now()), release, 200, "duplicate", 0, "ci duplicate"},
		{"the same commit, another build", "/webhook/ci", generic("m-3", otherBuild, time.Now()), otherBuild, 202, "queued", 1, "ci accepted"},
		{"signed 6 minutes ago", "/webhook/ci", generic("m-4", release, time.Now().Add(-6*time.Minute)), release, 401, "error", 0, "ci bad_signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.now = time.Now() // the generic timestamps are checked against it
			before := len(s.m.View().Deploy().Deliveries)
			counted := counts[tt.outcome]
			req := httptest.NewRequest(http.MethodPost, tt.path, bytes.NewReader(tt.body))
			req.RemoteAddr = "203.0.113.7:40000"
			for k, v := range tt.h {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var rep Reply
			if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
				t.Fatalf("reply %q is not JSON: %v", rec.Body, err)
			}
			if rec.Code != tt.want || rep.Status != tt.status {
				t.Fatalf("answered %d %+v; want %d %s", rec.Code, rep, tt.want, tt.status)
			}
			dels := s.m.View().Deploy().Deliveries
			if got := len(dels) - before; got != tt.stored {
				t.Errorf("%d deliveries committed; want %d", got, tt.stored)
			}
			if tt.stored == 1 && dels[len(dels)-1].ID != rep.Delivery {
				t.Errorf("answered delivery %q, committed %q", rep.Delivery, dels[len(dels)-1].ID)
			}
			if counts[tt.outcome] != counted+1 {
				t.Errorf("counter %q = %d; want %d (all: %v)", tt.outcome, counts[tt.outcome], counted+1, counts)
			}
			if rec.Code != 202 && rec.Code != 404 && rep.Reason == "" {
				t.Errorf("the answer gives no reason: %+v", rep)
			}
			if rec.Code == 401 && strings.Contains(rep.Reason, "secret") {
				t.Errorf("a 401 tells a stranger about the secret: %q", rep.Reason)
			}
		})
	}
	for k := range counts {
		if src, _, _ := strings.Cut(k, " "); src != "gh" && src != "ci" && src != UnknownSource {
			t.Errorf("a metrics label the sender chose: %q", k)
		}
	}
}

// TestSecretRotationWithoutRestart: the listener reads a source's secret
// file again when it changes, so an operator rotates by editing it.
func TestSecretRotationWithoutRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gh.secret")
	set := func(text string, mod time.Time) {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(-time.Hour)
	set("old-secret\n", t0)
	in := NewIntake(IntakeOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Sources: []Source{{Name: "gh", Kind: webhook.GitHub, Rules: webhook.Rules{Branches: []string{"main"}}, SecretFile: file}}})
	body := []byte(`{}`)
	answer := func(secret string) int {
		req := httptest.NewRequest(http.MethodPost, "/webhook/gh", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "ping")
		req.Header.Set("X-Hub-Signature-256", webhook.SignHex([]byte(secret), body))
		rec := httptest.NewRecorder()
		in.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	steps := []struct {
		file     string // "" = unchanged
		secret   string
		want     int
		whatText string
	}{
		{"", "old-secret", 200, "the configured secret"},
		{"old-secret\nnew-secret\n", "new-secret", 200, "the new secret while both are listed"},
		{"", "old-secret", 200, "the old secret while both are listed"},
		{"new-secret\n", "old-secret", 401, "the old secret once removed"},
		{"", "new-secret", 200, "the new secret once alone"},
	}
	for i, st := range steps {
		if st.file != "" {
			set(st.file, t0.Add(time.Duration(i)*time.Minute))
		}
		if got := answer(st.secret); got != st.want {
			t.Errorf("step %d, %s: %d; want %d", i, st.whatText, got, st.want)
		}
	}
}
