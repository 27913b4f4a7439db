package labforge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// HookOptions vary a webhook for the refusal scenarios.
type HookOptions struct {
	// WrongSecret signs (or authenticates) with a secret the cluster does
	// not know: the receiver must answer 401 and store nothing.
	WrongSecret bool
	// Oversize pads the body past webhook.MaxBody: the receiver must
	// answer 413.
	Oversize bool
}

// MakeHook builds the webhook the forge sends when the pipeline or run
// with the given ID finishes (GitLab Pipeline Hook, GitHub workflow_run
// "completed"), records it for a later replay, and returns it.
func (f *Forge) MakeHook(source string, build int64, o HookOptions) (Hook, error) {
	var h Hook
	err := f.update(func(s *State) error {
		var err error
		switch source {
		case SourceGitLab:
			h, err = gitlabHook(s, build, o, f.now())
		case SourceGitHub:
			h, err = githubHook(s, build, o, f.now())
		default:
			err = fmt.Errorf("webhook: unknown source %q: use %s or %s", source, SourceGitLab, SourceGitHub)
		}
		if err != nil {
			return err
		}
		s.Hooks = append(s.Hooks, h)
		if len(s.Hooks) > maxHooks {
			s.Hooks = s.Hooks[len(s.Hooks)-maxHooks:]
		}
		return nil
	})
	return h, err
}

// LastHook returns the webhook built last (to replay it), or the one whose
// delivery ID is id when id is not empty.
func (f *Forge) LastHook(id string) (Hook, error) {
	s, err := f.State()
	if err != nil {
		return Hook{}, err
	}
	for i := len(s.Hooks) - 1; i >= 0; i-- {
		if id == "" || s.Hooks[i].ID == id {
			return s.Hooks[i], nil
		}
	}
	if id != "" {
		return Hook{}, fmt.Errorf("the forge sent no webhook with delivery ID %q", id)
	}
	return Hook{}, errors.New("the forge has sent no webhook yet: push a build first")
}

func uuid4() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b)
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:], nil
}

// pad adds a filler field that takes the body past the intake's cap.
func pad(m map[string]any, o HookOptions) {
	if o.Oversize {
		m["padding"] = strings.Repeat("x", webhook.MaxBody)
	}
}

func wrong(secret string, o HookOptions) string {
	if o.WrongSecret {
		return "not-" + secret
	}
	return secret
}

// gitlabHook is a Pipeline Hook as GitLab sends it (webhook_events.md
// §Pipeline events; headers per webhooks.md §Delivery headers).
func gitlabHook(s *State, id int64, o HookOptions, now time.Time) (Hook, error) {
	p := findPipeline(s, fmt.Sprint(id))
	if p == nil {
		return Hook{}, fmt.Errorf("webhook: the forge has no pipeline %d", id)
	}
	c := s.Config
	gt := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }
	build := map[string]any{
		"id": p.JobID, "stage": "package", "name": JobName, "status": p.Status,
		"created_at": gt(p.Created), "finished_at": gt(p.Created), "when": "on_success",
		"manual": false, "allow_failure": false, "runner": nil, "environment": nil,
		"artifacts_file": map[string]any{"filename": nil, "size": nil},
	}
	if p.Artifact != "" {
		build["artifacts_file"] = map[string]any{"filename": "artifacts.zip", "size": p.ArtifactSize}
	}
	webURL := c.BaseURL + "/" + c.GitLabProject
	body := map[string]any{
		"object_kind": "pipeline",
		"object_attributes": map[string]any{
			"id": p.ID, "iid": p.IID, "name": "Pipeline for " + p.Ref, "ref": p.Ref, "tag": p.Tag,
			"sha": p.SHA, "before_sha": strings.Repeat("0", 40), "source": p.Source, "status": p.Status,
			"detailed_status": map[bool]string{true: "passed", false: p.Status}[p.Status == "success"],
			"stages":          []string{"test", "package"}, "created_at": gt(p.Created), "finished_at": gt(p.Created),
			"duration": 63, "url": gitlabPipelineURL(c, p.ID),
		},
		"merge_request": nil,
		"user":          map[string]any{"id": 1, "name": "Lab", "username": "lab"},
		"project": map[string]any{
			"id": c.GitLabProjectID, "name": projectName(c.GitLabProject), "web_url": webURL,
			"path_with_namespace": c.GitLabProject, "default_branch": "main",
			"namespace": strings.Split(c.GitLabProject, "/")[0],
		},
		"commit": map[string]any{"id": p.SHA, "message": "lab build\n", "url": webURL + "/-/commit/" + p.SHA},
		"builds": []any{build},
	}
	pad(body, o)
	b, err := json.Marshal(body)
	if err != nil {
		return Hook{}, fmt.Errorf("webhook: %w", err)
	}
	ev, err := uuid4()
	if err != nil {
		return Hook{}, err
	}
	idem, err := uuid4()
	if err != nil {
		return Hook{}, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitLab/17.6.0")
	h.Set("X-Gitlab-Event", "Pipeline Hook")
	h.Set("X-Gitlab-Token", wrong(c.GitLabSecret, o))
	h.Set("X-Gitlab-Instance", c.BaseURL)
	h.Set("X-Gitlab-Webhook-UUID", "3b2f6a8e-0c1d-4e5f-9a7b-6c5d4e3f2a1b")
	h.Set("X-Gitlab-Event-UUID", ev)
	h.Set("Idempotency-Key", idem)
	return Hook{ID: idem, Source: SourceGitLab, Header: h, Body: b, Build: p.ID, Made: now.UTC()}, nil
}

func projectName(path string) string {
	i := strings.LastIndexByte(path, '/')
	return path[i+1:]
}

// githubHook is a workflow_run "completed" delivery as GitHub sends it
// (octokit/webhooks workflow_run/completed; headers per GitHub's webhook
// docs, signed with X-Hub-Signature-256 and the legacy X-Hub-Signature).
func githubHook(s *State, id int64, o HookOptions, now time.Time) (Hook, error) {
	r := findRun(s, fmt.Sprint(id), false)
	if r == nil {
		return Hook{}, fmt.Errorf("webhook: the forge has no run %d", id)
	}
	c := s.Config
	body := map[string]any{
		"action":       "completed",
		"workflow_run": githubRunJSON(c, c.BaseURL+"/gh", *r),
		"workflow":     map[string]any{"id": 159038, "name": "tandem", "path": ".github/workflows/tandem.yml"},
		"repository":   githubRepoJSON(c.GitHubRepo),
		"sender":       map[string]any{"login": "lab", "id": 1, "type": "User"},
	}
	pad(body, o)
	b, err := json.Marshal(body)
	if err != nil {
		return Hook{}, fmt.Errorf("webhook: %w", err)
	}
	delivery, err := uuid4()
	if err != nil {
		return Hook{}, err
	}
	secret := []byte(wrong(c.GitHubSecret, o))
	m := hmac.New(sha1.New, secret)
	m.Write(b)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "GitHub-Hookshot/7c3b2a1")
	h.Set("X-GitHub-Event", "workflow_run")
	h.Set("X-GitHub-Delivery", delivery)
	h.Set("X-GitHub-Hook-ID", "421337")
	h.Set("X-GitHub-Hook-Installation-Target-ID", "17273051")
	h.Set("X-GitHub-Hook-Installation-Target-Type", "repository")
	h.Set("X-Hub-Signature", "sha1="+hex.EncodeToString(m.Sum(nil)))
	h.Set("X-Hub-Signature-256", webhook.SignHex(secret, b))
	return Hook{ID: delivery, Source: SourceGitHub, Header: h, Body: b, Build: r.ID, Made: now.UTC()}, nil
}

// Response is what a webhook receiver answered.
type Response struct {
	Status int    `json:"status"`
	Body   string `json:"body"`
}

// Send POSTs h to url with hc (nil: a client with a 10 s timeout, as
// GitLab and GitHub give a receiver) and returns the answer.
func Send(ctx context.Context, hc *http.Client, url string, h Hook) (Response, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(h.Body))
	if err != nil {
		return Response{}, fmt.Errorf("webhook to %s: %w", url, err)
	}
	for k, v := range h.Header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("webhook to %s: %w (is the cluster's [deploy] listener up?)", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return Response{Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}, nil
}
