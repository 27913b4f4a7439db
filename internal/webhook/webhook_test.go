package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	now = time.Date(2026, 11, 28, 13, 45, 0, 0, time.UTC)
	// whKey is a Standard Webhooks key and whsec its configured form.
	whKey = []byte("0123456789abcdef0123456789abcdef")
	whsec = "whsec_" + base64.StdEncoding.EncodeToString(whKey)
)

func secrets(t testing.TB, lines ...string) Secrets {
	t.Helper()
	s, err := ParseSecrets([]byte(strings.Join(lines, "\n")), "test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestGitHubDocumentedVector is GitHub's own example from "Validating
// webhook deliveries".
func TestGitHubDocumentedVector(t *testing.T) {
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	body := []byte("Hello, World!")
	if got := SignHex([]byte("It's a Secret to Everybody"), body); got != want {
		t.Fatalf("SignHex = %s, want %s", got, want)
	}
	in := Intake{Source: GitHub, Secrets: secrets(t, "It's a Secret to Everybody")}
	if err := in.Verify(header("X-Hub-Signature-256", want), body, now); err != nil {
		t.Fatalf("Verify(documented vector) = %v", err)
	}
	if err := in.Verify(header("X-Hub-Signature-256", want), []byte("Hello, World?"), now); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Verify(changed body) = %v, want ErrBadSignature", err)
	}
}

func standardHeaders(key []byte, id string, at time.Time, body []byte, extra ...string) http.Header {
	ts, sig := SignStandard(key, id, at, body)
	if len(extra) > 0 {
		sig = strings.Join(append(extra, sig), " ")
	}
	return header("Webhook-Id", id, "Webhook-Timestamp", ts, "Webhook-Signature", sig)
}

func TestVerify(t *testing.T) {
	body := []byte(`{"object_kind":"pipeline"}`)
	big := bytes.Repeat([]byte("x"), MaxBody+1)
	oldKey := []byte("an old key that is being rotated")
	oldSec := "whsec_" + base64.StdEncoding.EncodeToString(oldKey)
	gh := SignHex([]byte("s3cret"), body)
	bare := strings.TrimPrefix(gh, "sha256=")
	tests := []struct {
		name    string
		src     Source
		secrets []string
		h       http.Header
		body    []byte
		want    error // nil: verifies
	}{
		{"gitlab token", GitLab, []string{"tok"}, header("X-Gitlab-Token", "tok"), body, nil},
		{"gitlab token rotated", GitLab, []string{"old", "new"}, header("X-Gitlab-Token", "new"), body, nil},
		{"gitlab wrong token", GitLab, []string{"tok"}, header("X-Gitlab-Token", "tok2"), body, ErrBadSignature},
		{"gitlab prefix of token", GitLab, []string{"token"}, header("X-Gitlab-Token", "tok"), body, ErrBadSignature},
		{"gitlab no token", GitLab, []string{"tok"}, header(), body, ErrBadSignature},
		{"gitlab signed", GitLab, []string{"tok", whsec}, standardHeaders(whKey, "idem-1", now, body), body, nil},
		{"gitlab signed but bad, token ok", GitLab, []string{"tok", whsec},
			func() http.Header {
				h := standardHeaders(oldKey, "idem-1", now, body)
				h.Set("X-Gitlab-Token", "tok")
				return h
			}(), body, ErrBadSignature},
		{"gitlab signed stale", GitLab, []string{whsec}, standardHeaders(whKey, "idem-1", now.Add(-6*time.Minute), body), body, ErrStale},
		{"github", GitHub, []string{"s3cret"}, header("X-Hub-Signature-256", gh), body, nil},
		{"github rotated", GitHub, []string{"other", "s3cret"}, header("X-Hub-Signature-256", gh), body, nil},
		{"github wrong secret", GitHub, []string{"other"}, header("X-Hub-Signature-256", gh), body, ErrBadSignature},
		{"github missing", GitHub, []string{"s3cret"}, header("X-Hub-Signature", "sha1=abc"), body, ErrBadSignature},
		{"github not hex", GitHub, []string{"s3cret"}, header("X-Hub-Signature-256", "sha256=zz"), body, ErrBadSignature},
		{"github truncated", GitHub, []string{"s3cret"}, header("X-Hub-Signature-256", gh[:40]), body, ErrBadSignature},
		{"github too large", GitHub, []string{"s3cret"}, header("X-Hub-Signature-256", SignHex([]byte("s3cret"), big)), big, ErrTooLarge},
		{"github no secrets", GitHub, nil, header("X-Hub-Signature-256", gh), body, ErrBadSignature},
		{"gitea", Gitea, []string{"s3cret"}, header("X-Gitea-Signature", bare), body, nil},
		{"gitea via hub header", Gitea, []string{"s3cret"}, header("X-Hub-Signature-256", gh), body, nil},
		{"gitea bad own header wins", Gitea, []string{"s3cret"}, header("X-Gitea-Signature", strings.Repeat("0", 64), "X-Hub-Signature-256", gh), body, ErrBadSignature},
		{"forgejo", Forgejo, []string{"s3cret"}, header("X-Forgejo-Signature", bare), body, nil},
		{"forgejo via gitea header", Forgejo, []string{"s3cret"}, header("X-Gitea-Signature", bare), body, nil},
		{"forgejo wrong", Forgejo, []string{"nope"}, header("X-Forgejo-Signature", bare), body, ErrBadSignature},
		{"forgejo with only the hub header", Forgejo, []string{"s3cret"}, header("X-Hub-Signature-256", gh), body, nil},
		{"forgejo bad own header wins over a good hub header", Forgejo, []string{"s3cret"}, header("X-Forgejo-Signature", strings.Repeat("0", 64), "X-Hub-Signature-256", gh), body, ErrBadSignature},
		{"forgejo no signature at all", Forgejo, []string{"s3cret"}, header("X-Forgejo-Event", "action_run"), body, ErrBadSignature},
		{"generic", Generic, []string{whsec}, standardHeaders(whKey, "msg_1", now, body), body, nil},
		{"generic rotated, several signatures", Generic, []string{oldSec}, standardHeaders(whKey, "msg_1", now, body, "v1a,AAAA", "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))), body, ErrBadSignature},
		{"generic old key still active", Generic, []string{whsec, oldSec}, standardHeaders(oldKey, "msg_1", now, body), body, nil},
		{"generic two signatures one good", Generic, []string{whsec}, standardHeaders(whKey, "msg_1", now, body, "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32))), body, nil},
		{"generic 4m59s late", Generic, []string{whsec}, standardHeaders(whKey, "msg_1", now.Add(-299*time.Second), body), body, nil},
		{"generic 5m01s late", Generic, []string{whsec}, standardHeaders(whKey, "msg_1", now.Add(-301*time.Second), body), body, ErrStale},
		{"generic from the future", Generic, []string{whsec}, standardHeaders(whKey, "msg_1", now.Add(6*time.Minute), body), body, ErrStale},
		{"generic id changed", Generic, []string{whsec},
			func() http.Header {
				h := standardHeaders(whKey, "msg_1", now, body)
				h.Set("Webhook-Id", "msg_2")
				return h
			}(), body, ErrBadSignature},
		{"generic timestamp changed", Generic, []string{whsec},
			func() http.Header {
				h := standardHeaders(whKey, "msg_1", now, body)
				h.Set("Webhook-Timestamp", fmt.Sprint(now.Unix()+1))
				return h
			}(), body, ErrBadSignature},
		{"generic raw secret is not a whsec key", Generic, []string{string(whKey)}, standardHeaders(whKey, "msg_1", now, body), body, ErrBadSignature},
		{"generic missing headers", Generic, []string{whsec}, header("Webhook-Id", "x"), body, ErrBadSignature},
		{"generic bad timestamp", Generic, []string{whsec}, header("Webhook-Id", "x", "Webhook-Timestamp", "soon", "Webhook-Signature", "v1,AA=="), body, ErrBadSignature},
		{"unknown source", Source("bitbucket"), []string{"x"}, header(), body, ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Secrets
			if tc.secrets != nil {
				s = secrets(t, tc.secrets...)
			}
			err := Intake{Source: tc.src, Secrets: s}.Verify(tc.h, tc.body, now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		src     Source
		h       http.Header
		fixture string
		job     string
		want    Delivery
		wantErr error
	}{
		{name: "gitlab pipeline", src: GitLab, fixture: "gitlab_pipeline.json",
			h: header("X-Gitlab-Event", "Pipeline Hook", "Idempotency-Key", "f4f1c9a6-7ad5-4d3e-9b0e-2c0a5b1d2e3f", "X-Gitlab-Event-UUID", "other"),
			want: Delivery{Source: GitLab, ID: "f4f1c9a6-7ad5-4d3e-9b0e-2c0a5b1d2e3f", Event: EventPipeline, Project: "site/pysite", ProjectID: 1,
				Ref: "main", RefKind: RefBranch, Commit: "bcbb5ec396a2c0f828686f14fac9b80b780504f2", Status: "success",
				WebURL: "https://gitlab.example/site/pysite/-/pipelines/31", PipelineID: 31, JobID: 380, JobName: "deb"}},
		{name: "gitlab pipeline named job", src: GitLab, fixture: "gitlab_pipeline.json", job: "test",
			h:    header("X-Gitlab-Event", "Pipeline Hook", "X-Gitlab-Event-UUID", "uuid-1"),
			want: Delivery{Source: GitLab, ID: "uuid-1", Event: EventPipeline, Project: "site/pysite", ProjectID: 1, Ref: "main", RefKind: RefBranch, Commit: "bcbb5ec396a2c0f828686f14fac9b80b780504f2", Status: "success", WebURL: "https://gitlab.example/site/pysite/-/pipelines/31", PipelineID: 31, JobID: 377, JobName: "test"}},
		{name: "gitlab pipeline missing job", src: GitLab, fixture: "gitlab_pipeline.json", job: "deploy-deb",
			h: header("X-Gitlab-Event", "Pipeline Hook"), wantErr: ErrIrrelevant},
		{name: "gitlab job", src: GitLab, fixture: "gitlab_job.json", job: "deb",
			h: header("X-Gitlab-Event", "Job Hook", "X-Gitlab-Event-UUID", "uuid-2"),
			want: Delivery{Source: GitLab, ID: "uuid-2", Event: EventJob, Project: "site/pysite", ProjectID: 380, Ref: "v0.2.0", RefKind: RefTag,
				Commit: "95790bf891e76fee5e1747ab589903a6a1f80f22", Status: "success", WebURL: "https://gitlab.example/site/pysite",
				PipelineID: 2366, JobID: 1977, JobName: "deb"}},
		{name: "gitlab job other name", src: GitLab, fixture: "gitlab_job.json", job: "wheel", h: header("X-Gitlab-Event", "Job Hook"), wantErr: ErrIrrelevant},
		{name: "gitlab push hook", src: GitLab, fixture: "gitlab_job.json", h: header("X-Gitlab-Event", "Push Hook"), wantErr: ErrIrrelevant},
		{name: "gitlab kind mismatch", src: GitLab, fixture: "gitlab_job.json", h: header("X-Gitlab-Event", "Pipeline Hook"), wantErr: ErrMalformed},
		{name: "github workflow_run", src: GitHub, fixture: "github_workflow_run.json",
			h: header("X-GitHub-Event", "workflow_run", "X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
			want: Delivery{Source: GitHub, ID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Event: EventWorkflowRun, Project: "site/pysite",
				Ref: "main", Commit: "acb5820ced9479c074f688cc328bf03f341a511d", Status: "success",
				WebURL: "https://github.example/site/pysite/actions/runs/30433642", RunID: 30433642,
				ArtifactsURL: "https://api.github.example/repos/site/pysite/actions/runs/30433642/artifacts"}},
		{name: "github failed run", src: GitHub, fixture: "github_workflow_run_failure.json", h: header("X-GitHub-Event", "workflow_run"), wantErr: ErrIrrelevant},
		{name: "github pull request run", src: GitHub, fixture: "github_workflow_run_pull_request.json", h: header("X-GitHub-Event", "workflow_run"), wantErr: ErrIrrelevant},
		{name: "github fork run", src: GitHub, fixture: "github_workflow_run_fork.json", h: header("X-GitHub-Event", "workflow_run"), wantErr: ErrIrrelevant},
		{name: "github ping", src: GitHub, fixture: "github_workflow_run.json", h: header("X-GitHub-Event", "ping"), wantErr: ErrIrrelevant},
		{name: "github check_suite", src: GitHub, fixture: "github_workflow_run.json", h: header("X-GitHub-Event", "check_suite"), wantErr: ErrIrrelevant},
		{name: "github no event", src: GitHub, fixture: "github_workflow_run.json", h: header(), wantErr: ErrMalformed},
		{name: "gitea workflow_run", src: Gitea, fixture: "gitea_workflow_run.json",
			h: header("X-Gitea-Event", "workflow_run", "X-Gitea-Delivery", "0b9f3c2e-1111-4a4a-9c9c-123456789abc", "X-GitHub-Delivery", "other"),
			want: Delivery{Source: Gitea, ID: "0b9f3c2e-1111-4a4a-9c9c-123456789abc", Event: EventWorkflowRun, Project: "site/pysite",
				Ref: "main", Commit: "d3f2e1c0b9a8978675645342312f0e1d2c3b4a59", Status: "success",
				WebURL: "https://gitea.example/site/pysite/actions/runs/12", RunID: 87,
				ArtifactsURL: "https://gitea.example/api/v1/repos/site/pysite/actions/runs/87/artifacts"}},
		{name: "gitea push tag", src: Gitea, fixture: "gitea_push.json", h: header("X-Gitea-Event", "push", "X-Gitea-Delivery", "d-3"),
			want: Delivery{Source: Gitea, ID: "d-3", Event: EventPush, Project: "site/pysite", Ref: "v0.2.0", RefKind: RefTag, Commit: "d3f2e1c0b9a8978675645342312f0e1d2c3b4a59"}},
		{name: "forgejo action_run", src: Forgejo, fixture: "forgejo_action_run.json",
			h: header("X-Forgejo-Event", "action_run", "X-Forgejo-Delivery", "a7b2c4d5-e8f9-4a5b-9c7e-1f2a3b4c5d6e"),
			want: Delivery{Source: Forgejo, ID: "a7b2c4d5-e8f9-4a5b-9c7e-1f2a3b4c5d6e", Event: EventActionRun, Project: "site/pysite",
				Ref: "main", Commit: "a1b2c3d4e5f6789012345678901234567890abcd", Status: "success",
				WebURL: "https://forgejo.example/site/pysite/actions/runs/41", RunID: 12345}},
		// Forgejo's action_run as it sends it: action success, failure or
		// recover (a success after a failure), the outcome in status and
		// conclusion; the SHA may come in capitals.
		{name: "forgejo action_run recover", src: Forgejo, fixture: "forgejo_action_run_recover.json",
			h: header("X-Forgejo-Event", "action_run", "X-Forgejo-Delivery", "e1", "X-Gitea-Delivery", "e1"),
			want: Delivery{Source: Forgejo, ID: "e1", Event: EventActionRun, Project: "site/pysite",
				Ref: "main", Commit: "b7e2c1d0a9f8e7d6c5b4a3928170f6e5d4c3b2a1", Status: "success",
				WebURL: "https://forgejo.example/site/pysite/actions/runs/42", RunID: 12346}},
		{name: "forgejo action_run failure", src: Forgejo, fixture: "forgejo_action_run_failure.json",
			h: header("X-Forgejo-Event", "action_run"), wantErr: ErrIrrelevant},
		{name: "forgejo action_run of a pull request", src: Forgejo, fixture: "forgejo_action_run_pull_request.json",
			h: header("X-Forgejo-Event", "action_run"), wantErr: ErrIrrelevant},
		{name: "forgejo action_run under Gitea's event header", src: Forgejo, fixture: "forgejo_action_run_failure.json",
			h: header("X-Gitea-Event", "action_run"), wantErr: ErrIrrelevant},
		{name: "generic release", src: Generic, fixture: "generic_release.json", h: header("Webhook-Id", "msg_2fX"),
			want: Delivery{Source: Generic, ID: "msg_2fX", Event: EventRelease, Project: "site/pysite", Ref: "main", RefKind: RefBranch,
				Commit: "bcbb5ec396a2c0f828686f14fac9b80b780504f2", Status: "success",
				Release: &Release{Package: "pysite", Version: "0.2.0-1", URL: "https://ci.example/builds/77/pysite_0.2.0-1_amd64.deb",
					SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", SignatureURL: "https://ci.example/builds/77/pysite_0.2.0-1_amd64.deb.sig",
					Ref: "main", RefType: "branch", Commit: "bcbb5ec396a2c0f828686f14fac9b80b780504f2", Project: "site/pysite"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.src, tc.h, fixture(t, tc.fixture), tc.job)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Parse = %+v, %v; want %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if fmt.Sprintf("%+v", deref(got)) != fmt.Sprintf("%+v", deref(tc.want)) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", deref(got), deref(tc.want))
			}
		})
	}
}

// deref prints a Delivery with its Release expanded.
func deref(d Delivery) string {
	r := d.Release
	d.Release = nil
	if r == nil {
		return fmt.Sprintf("%+v", d)
	}
	return fmt.Sprintf("%+v release %+v", d, *r)
}

func TestParseGenericRejects(t *testing.T) {
	ok := `"package":"pysite","version":"0.2.0","url":"https://ci.example/p.deb","sha256":"` + strings.Repeat("a", 64) + `","ref":"main"`
	for _, tc := range []struct{ name, body, want string }{
		{"valid", "{" + ok + "}", ""},
		{"bad package", "{" + strings.Replace(ok, "pysite", "Py_Site", 1) + "}", "not a Debian package name"},
		{"bad version", "{" + strings.Replace(ok, "0.2.0", "v0.2", 1) + "}", "not a Debian version"},
		{"file url", "{" + strings.Replace(ok, "https://ci.example/p.deb", "file:///etc/passwd", 1) + "}", "not an http(s) URL"},
		{"short digest", "{" + strings.Replace(ok, strings.Repeat("a", 64), "abc", 1) + "}", "not 64 hex digits"},
		{"refs prefix", "{" + strings.Replace(ok, `"main"`, `"refs/heads/main"`, 1) + "}", "bare branch or tag"},
		{"bad ref_type", "{" + ok + `,"ref_type":"commit"}`, "ref_type"},
		{"bad commit", "{" + ok + `,"commit":"HEAD"}`, "not a full hex SHA"},
		{"bad signature url", "{" + ok + `,"signature_url":"ftp://x"}`, "signature_url"},
		{"trailing data", "{" + ok + "} {}", "data after"},
		{"not json", "package=pysite", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(Generic, header("Webhook-Id", "m"), []byte(tc.body), "")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want ErrMalformed containing %q", err, tc.want)
			}
		})
	}
}

func TestRules(t *testing.T) {
	r := Rules{Branches: []string{"main", "release"}, Tags: []string{"v*", "rc-[0-9]*"}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		kind RefKind
		want bool
	}{
		{"main", RefBranch, true},
		{"main", RefUnknown, true},
		{"main", RefTag, false}, // a tag named main is not the branch
		{"feature/x", RefBranch, false},
		{"v1.2.3", RefTag, true},
		{"v1.2.3", RefUnknown, true},
		{"v1.2.3", RefBranch, false},
		{"rc-7", RefTag, true},
		{"rc-x", RefTag, false},
		{"", RefBranch, false},
	} {
		if got := r.Allows(tc.ref, tc.kind); got != tc.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tc.ref, tc.kind, got, tc.want)
		}
	}
	err := r.Check(Delivery{Ref: "dev", RefKind: RefBranch})
	if !errors.Is(err, ErrIrrelevant) || !strings.Contains(err.Error(), `branch "dev" may not deploy`) {
		t.Errorf("Check(dev) = %v", err)
	}
	if err := (Rules{}).Check(Delivery{Ref: "main"}); !errors.Is(err, ErrIrrelevant) || !strings.Contains(err.Error(), "configure branches or tags") {
		t.Errorf("empty rules Check = %v", err)
	}
	if err := (Rules{Tags: []string{"v["}}).Validate(); err == nil || !strings.Contains(err.Error(), `"v["`) {
		t.Errorf("Validate(bad pattern) = %v", err)
	}
	if err := (Rules{Branches: []string{"refs/heads/main"}}).Validate(); err == nil {
		t.Error("Validate accepted refs/heads/main as a branch")
	}
}

func TestReceive(t *testing.T) {
	body := fixture(t, "github_workflow_run.json")
	in := Intake{Source: GitHub, Secrets: secrets(t, "s3cret"), Rules: Rules{Branches: []string{"main"}}}
	h := header("X-GitHub-Event", "workflow_run", "X-GitHub-Delivery", "del-1", "X-Hub-Signature-256", SignHex([]byte("s3cret"), body))
	d, err := in.Receive(h, body, now)
	if err != nil || d.RunID != 30433642 {
		t.Fatalf("Receive = %+v, %v", d, err)
	}
	if keys := d.DedupeKeys(); len(keys) != 2 || keys[0] != "github/id/del-1" || keys[1] != "github/commit/site/pysite@acb5820ced9479c074f688cc328bf03f341a511d" {
		t.Errorf("DedupeKeys = %q", keys)
	}
	in.Rules = Rules{Branches: []string{"prod"}}
	if _, err := in.Receive(h, body, now); !errors.Is(err, ErrIrrelevant) {
		t.Errorf("Receive(branch not allowed) = %v, want ErrIrrelevant", err)
	}
	// A body that is not JSON at all is refused for its signature first.
	h.Set("X-Hub-Signature-256", SignHex([]byte("wrong"), body))
	if _, err := in.Receive(h, []byte("{{{"), now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Receive(unsigned garbage) = %v, want ErrBadSignature", err)
	}
}

func TestDeliveryIDFallback(t *testing.T) {
	body := fixture(t, "github_workflow_run.json")
	a, _ := Parse(GitHub, header("X-GitHub-Event", "workflow_run"), body, "")
	b, _ := Parse(GitHub, header("X-GitHub-Event", "workflow_run"), body, "")
	if !strings.HasPrefix(a.ID, "body:") || a.ID != b.ID {
		t.Errorf("IDs without a delivery header = %q, %q; want the same body: digest", a.ID, b.ID)
	}
}

func TestSecretsRedacted(t *testing.T) {
	s := secrets(t, "# comment", "", "  hunter2  ", whsec)
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "secrets", s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), logged.String()} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "whsec_") {
			t.Errorf("secret shown: %s", out)
		}
	}
	for _, tc := range []struct{ text, want string }{
		{"", "holds no secret"},
		{"# only a comment\n", "holds no secret"},
		{"whsec_!!!notbase64", "line 1: a whsec_ secret must be base64"},
		{"ok\nwhsec_", "line 2"},
	} {
		_, err := ParseSecrets([]byte(tc.text), "/etc/tandem/gitlab.secret")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/tandem/gitlab.secret") {
			t.Errorf("ParseSecrets(%q) = %v, want an error with the path and %q", tc.text, err, tc.want)
		}
	}
}

func TestReadBody(t *testing.T) {
	b, err := ReadBody(bytes.NewReader(make([]byte, MaxBody)))
	if err != nil || len(b) != MaxBody {
		t.Fatalf("ReadBody(MaxBody) = %d, %v", len(b), err)
	}
	if _, err := ReadBody(bytes.NewReader(make([]byte, MaxBody+1))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ReadBody(MaxBody+1) = %v, want ErrTooLarge", err)
	}
}

func TestParseSource(t *testing.T) {
	if s, err := ParseSource("forgejo"); err != nil || s != Forgejo {
		t.Errorf("ParseSource(forgejo) = %q, %v", s, err)
	}
	if _, err := ParseSource("GitLab"); err == nil {
		t.Error("ParseSource accepted GitLab (names are lowercase)")
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 202},
		{fmt.Errorf("%w: ref", ErrIrrelevant), 200},
		{fmt.Errorf("%w: x", ErrBadSignature), 401},
		{fmt.Errorf("%w: x", ErrStale), 401},
		{fmt.Errorf("%w: x", ErrTooLarge), 413},
		{fmt.Errorf("%w: x", ErrMalformed), 400},
		{errors.New("disk"), 500},
	} {
		if got := HTTPStatus(tc.err); got != tc.want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestIntakeValidate(t *testing.T) {
	rules := Rules{Branches: []string{"main"}}
	for _, tc := range []struct {
		name string
		in   Intake
		want string
	}{
		{"ok", Intake{Source: GitHub, Secrets: secrets(t, "x"), Rules: rules}, ""},
		{"ok generic", Intake{Source: Generic, Secrets: secrets(t, whsec), Rules: rules}, ""},
		{"unknown source", Intake{Source: "svn", Secrets: secrets(t, "x")}, "unknown webhook source"},
		{"no secret", Intake{Source: GitLab, Rules: rules}, "has no secret"},
		{"generic raw secret", Intake{Source: Generic, Secrets: secrets(t, whsec, "raw"), Rules: rules}, "whsec_"},
		{"negative tolerance", Intake{Source: Generic, Secrets: secrets(t, whsec), Tolerance: -time.Second}, "negative"},
		{"bad pattern", Intake{Source: Gitea, Secrets: secrets(t, "x"), Rules: Rules{Tags: []string{"["}}}, "tag pattern"},
	} {
		err := tc.in.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestDeliveryJSON: a Delivery survives the journal's JSON encoding.
func TestDeliveryJSON(t *testing.T) {
	d, err := Parse(Generic, header("Webhook-Id", "msg_1"), fixture(t, "generic_release.json"), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back Delivery
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if deref(back) != deref(d) || !strings.Contains(string(b), `"ref_kind":"branch"`) {
		t.Errorf("round trip = %s\n%s", deref(back), b)
	}
}

// TestRulesProject: a delivery naming another project than the source's
// is irrelevant (200 with the reason), by path (any case) or GitLab ID.
func TestRulesProject(t *testing.T) {
	tests := []struct {
		project string
		d       Delivery
		ok      bool
	}{
		{"", Delivery{Project: "evil/site"}, true},
		{"site/pysite", Delivery{Project: "site/pysite"}, true},
		{"site/pysite", Delivery{Project: "Site/PySite"}, true},
		{"site/pysite", Delivery{Project: "evil/pysite"}, false},
		{"site/pysite", Delivery{}, true}, // a generic release may leave it out
		{"42", Delivery{Project: "site/pysite", ProjectID: 42}, true},
		{"42", Delivery{Project: "site/other", ProjectID: 43}, false},
		{"42", Delivery{Project: "id:42", ProjectID: 42}, true},
		{"42", Delivery{Project: "id:7"}, false},
		{"site/pysite", Delivery{Project: "id:380", ProjectID: 380}, true}, // GitLab before 16.3: the fetcher asks the API
	}
	for _, tt := range tests {
		d := tt.d
		d.Ref, d.RefKind = "main", RefBranch
		err := Rules{Branches: []string{"main"}, Project: tt.project}.Check(d)
		if (err == nil) != tt.ok || err != nil && (!errors.Is(err, ErrIrrelevant) || !strings.Contains(err.Error(), tt.project)) {
			t.Errorf("project %q, delivery %+v: %v; want ok=%v", tt.project, tt.d, err, tt.ok)
		}
	}
}
