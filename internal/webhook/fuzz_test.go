package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// The fuzzers hold a fixed secret the fuzzer does not know how to use:
// Verify may accept a delivery only when its headers carry exactly the
// signature an independent computation gives.
const fuzzSecret = "fuzz-secret"

func hexMAC(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func fuzzVerify(f *testing.F, src Source, names []string, signedOK func(h http.Header, body []byte) bool) {
	sec := secrets(f, fuzzSecret, whsec)
	body := []byte(`{"object_kind":"pipeline"}`)
	good := hexMAC([]byte(fuzzSecret), body)
	f.Add(good, "sha256="+good, "id", "1795870800", "v1,AAAA", body)
	f.Add(fuzzSecret, "", "", "", "", body)
	f.Add("", "", "msg", "x", "v1,"+strings.Repeat("A", 44), []byte("{}"))
	f.Fuzz(func(t *testing.T, a, b, id, ts, sig string, body []byte) {
		h := http.Header{}
		for i, v := range []string{a, b} {
			if i < len(names) && v != "" {
				h.Set(names[i], v)
			}
		}
		if id != "" || ts != "" || sig != "" {
			h.Set("Webhook-Id", id)
			h.Set("Webhook-Timestamp", ts)
			h.Set("Webhook-Signature", sig)
		}
		err := Intake{Source: src, Secrets: sec}.Verify(h, body, now)
		if err == nil && !signedOK(h, body) {
			t.Fatalf("%s accepted a delivery that is not signed: %v %q", src, h, body)
		}
		if err != nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrStale) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: error wraps no sentinel: %v", src, err)
		}
	})
}

func hexSigned(names ...string) func(http.Header, []byte) bool {
	return func(h http.Header, body []byte) bool {
		for _, n := range names {
			if v := h.Get(n); v != "" {
				return strings.EqualFold(strings.TrimPrefix(strings.TrimSpace(v), "sha256="), hexMAC([]byte(fuzzSecret), body))
			}
		}
		return false
	}
}

func standardSigned(h http.Header, body []byte) bool {
	msg := append([]byte(h.Get("Webhook-Id")+"."+h.Get("Webhook-Timestamp")+"."), body...)
	m := hmac.New(sha256.New, whKey)
	m.Write(msg)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, s := range strings.Fields(h.Get("Webhook-Signature")) {
		if s == want {
			return true
		}
	}
	return false
}

func FuzzVerifyGitLab(f *testing.F) {
	fuzzVerify(f, GitLab, []string{"X-Gitlab-Token"}, func(h http.Header, body []byte) bool {
		if h.Get("Webhook-Signature") != "" {
			return standardSigned(h, body)
		}
		return h.Get("X-Gitlab-Token") == fuzzSecret || h.Get("X-Gitlab-Token") == whsec
	})
}

func FuzzVerifyGitHub(f *testing.F) {
	fuzzVerify(f, GitHub, []string{"X-Hub-Signature-256"}, hexSigned("X-Hub-Signature-256"))
}

func FuzzVerifyGitea(f *testing.F) {
	fuzzVerify(f, Gitea, []string{"X-Gitea-Signature", "X-Hub-Signature-256"}, hexSigned("X-Gitea-Signature", "X-Hub-Signature-256"))
}

func FuzzVerifyForgejo(f *testing.F) {
	fuzzVerify(f, Forgejo, []string{"X-Forgejo-Signature", "X-Hub-Signature-256"}, hexSigned("X-Forgejo-Signature", "X-Hub-Signature-256"))
}

func FuzzVerifyGeneric(f *testing.F) {
	fuzzVerify(f, Generic, nil, standardSigned)
}

// fuzzParse feeds event names and bodies, starting from the fixtures, and
// checks that Parse never panics, every error wraps a sentinel, and an
// accepted delivery has what the fetcher needs.
func fuzzParse(f *testing.F, src Source, eventHeader string, seeds map[string]string) {
	for event, file := range seeds {
		f.Add(event, fixture(f, file), "")
	}
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"00","repository":{"full_name":"a/b"}}`), "deb")
	f.Fuzz(func(t *testing.T, event string, body []byte, job string) {
		h := http.Header{}
		if eventHeader != "" {
			h.Set(eventHeader, event)
		}
		d, err := Parse(src, h, body, job)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrIrrelevant) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if d.ID == "" || d.Ref == "" || strings.HasPrefix(d.Ref, "refs/") || !shaRe.MatchString(d.Commit) && d.Commit != "" {
			t.Fatalf("accepted an incomplete delivery: %+v", d)
		}
		switch d.Event {
		case EventPipeline, EventJob:
			if d.Status != "success" || d.PipelineID == 0 && d.JobID == 0 || d.Project == "" {
				t.Fatalf("accepted a GitLab delivery that cannot deploy: %+v", d)
			}
		case EventWorkflowRun, EventActionRun:
			if d.Status != "success" || d.RunID <= 0 || d.Project == "" {
				t.Fatalf("accepted a run that cannot deploy: %+v", d)
			}
		case EventRelease:
			if d.Release == nil || !digestRe.MatchString(d.Release.SHA256) {
				t.Fatalf("accepted a release without a digest: %+v", d)
			}
		case EventPush:
			if d.RefKind == RefUnknown || d.Commit == "" {
				t.Fatalf("accepted a push without ref kind or commit: %+v", d)
			}
		default:
			t.Fatalf("accepted unknown event %q", d.Event)
		}
	})
}

func FuzzParseGitLab(f *testing.F) {
	fuzzParse(f, GitLab, "X-Gitlab-Event", map[string]string{"Pipeline Hook": "gitlab_pipeline.json", "Job Hook": "gitlab_job.json"})
}

func FuzzParseGitHub(f *testing.F) {
	fuzzParse(f, GitHub, "X-GitHub-Event", map[string]string{"workflow_run": "github_workflow_run.json", "check_suite": "github_workflow_run_fork.json"})
}

func FuzzParseGitea(f *testing.F) {
	fuzzParse(f, Gitea, "X-Gitea-Event", map[string]string{"workflow_run": "gitea_workflow_run.json", "push": "gitea_push.json"})
}

func FuzzParseForgejo(f *testing.F) {
	fuzzParse(f, Forgejo, "X-Forgejo-Event", map[string]string{"action_run": "forgejo_action_run.json", "push": "gitea_push.json"})
}

func FuzzParseGeneric(f *testing.F) {
	fuzzParse(f, Generic, "", map[string]string{"": "generic_release.json"})
}
