package labforge

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// fixture is a forge in a temp directory with its API and blob listeners.
type fixture struct {
	f    *Forge
	c    Config
	api  *httptest.Server
	blob *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{}
	// The handler reads the state on every request, so it may exist before Init.
	h := (&Forge{dir: dir, now: time.Now}).Handler(nil)
	fx.api, fx.blob = httptest.NewServer(h), httptest.NewServer(h)
	t.Cleanup(fx.api.Close)
	t.Cleanup(fx.blob.Close)
	// The blob listener must be another host, as GitHub's storage is:
	// reach it as "localhost" while the API is "127.0.0.1".
	blobURL := strings.Replace(fx.blob.URL, "127.0.0.1", "localhost", 1)
	c, err := NewConfig(fx.api.URL, blobURL)
	if err != nil {
		t.Fatal(err)
	}
	fx.f, fx.c, err = Init(dir, c)
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

// deb writes a small file named like a .deb and returns its path.
func deb(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pysite_0.2.0_amd64.deb")
	if err := os.WriteFile(p, []byte("!<arch>\nnot really a deb, but bytes to checksum\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (fx *fixture) publish(t *testing.T, b Build) Published {
	t.Helper()
	if b.Files == nil {
		files, _, err := DebFiles(deb(t), DebOptions{SigningKey: fx.c.SigningKey})
		if err != nil {
			t.Fatal(err)
		}
		b.Files = files
	}
	p, err := fx.f.Publish(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// get requests path on the API with the given headers and returns the
// status, body and response headers.
func get(t *testing.T, hc *http.Client, u string, hdr map[string]string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if hc == nil {
		hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func TestGitLabAPI(t *testing.T) {
	fx := newFixture(t)
	p := fx.publish(t, Build{Source: SourceGitLab, Ref: "main"})
	failed := fx.publish(t, Build{Source: SourceGitLab, Ref: "main", Status: "failed"})
	tag := fx.publish(t, Build{Source: SourceGitLab, Ref: "v0.2.0", Tag: true})
	tok := map[string]string{"PRIVATE-TOKEN": fx.c.Token}
	api := fx.api.URL + "/api/v4/projects/"
	byPath := api + url.PathEscape(fx.c.GitLabProject)
	byID := api + "7"
	tests := []struct {
		name   string
		url    string
		hdr    map[string]string
		status int
		want   []string // substrings of the body
	}{
		{"no token", byID + "/pipelines/" + itoa(p.ID), nil, 401, []string{`"401 Unauthorized"`}},
		{"wrong token", byID + "/pipelines/" + itoa(p.ID), map[string]string{"PRIVATE-TOKEN": "nope"}, 401, nil},
		{"bearer token", byID + "/pipelines/" + itoa(p.ID), map[string]string{"Authorization": "Bearer " + fx.c.Token}, 200, nil},
		{"pipeline by id", byID + "/pipelines/" + itoa(p.ID), tok, 200,
			[]string{`"status":"success"`, `"ref":"main"`, `"sha":"` + p.Commit + `"`, `"tag":false`, `"web_url":`}},
		{"pipeline by path", byPath + "/pipelines/" + itoa(p.ID), tok, 200, []string{`"id":` + itoa(p.ID)}},
		{"tag pipeline", byPath + "/pipelines/" + itoa(tag.ID), tok, 200, []string{`"tag":true`, `"ref":"v0.2.0"`}},
		{"unknown project", api + "99/pipelines/" + itoa(p.ID), tok, 404, []string{"404 Project Not Found"}},
		{"unknown pipeline", byID + "/pipelines/1", tok, 404, nil},
		{"jobs", byID + "/pipelines/" + itoa(p.ID) + "/jobs?scope[]=success&per_page=100", tok, 200,
			[]string{`"id":` + itoa(p.Artifact), `"name":"package"`, `"artifacts_file":{"filename":"artifacts.zip"`}},
		{"jobs of a failed pipeline, success scope", byID + "/pipelines/" + itoa(failed.ID) + "/jobs?scope[]=success", tok, 200, []string{`[]`}},
		{"job", byID + "/jobs/" + itoa(p.Artifact), tok, 200,
			[]string{`"commit":{"id":"` + p.Commit + `"`, `"pipeline":{"id":` + itoa(p.ID), `"status":"success"`}},
		{"unknown job", byID + "/jobs/5", tok, 404, nil},
		{"poll", byID + "/pipelines?status=success&ref=main&order_by=id&sort=desc&per_page=5", tok, 200,
			[]string{`"id":` + itoa(p.ID)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := get(t, nil, tc.url, tc.hdr)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("body lacks %s:\n%s", w, body)
				}
			}
		})
	}

	// The poll lists only successful pipelines on the ref, newest first.
	_, body, hdr := get(t, nil, byID+"/pipelines?status=success&ref=main&order_by=id&sort=desc&per_page=5", tok)
	var list []struct {
		ID     int64  `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != p.ID || hdr.Get("X-Total") != "1" {
		t.Errorf("poll = %+v (X-Total %s), want only pipeline %d", list, hdr.Get("X-Total"), p.ID)
	}

	// The artifact archive holds what the pipeline published.
	st, zipBody, _ := get(t, nil, byID+"/jobs/"+itoa(p.Artifact)+"/artifacts", tok)
	if st != 200 {
		t.Fatalf("artifacts: %d %s", st, zipBody)
	}
	checkZip(t, zipBody, fx.c)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// checkZip checks an artifact archive: the .deb, a sha256sum line that
// matches it, and a signature by the forge's key.
func checkZip(t *testing.T, b []byte, c Config) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	const name = "pysite_0.2.0_amd64.deb"
	debData, ok := files["dist/"+name]
	if !ok {
		t.Fatalf("zip lacks dist/%s: %v", name, files)
	}
	sum, err := artifact.ParseChecksum(files["dist/"+name+".sha256"], name)
	if err != nil {
		t.Fatal(err)
	}
	_, digest, _ := DebFiles(writeTemp(t, name, debData), DebOptions{})
	if sum != digest {
		t.Errorf("published checksum %s, .deb's %s", sum, digest)
	}
	pub, err := artifact.ParsePublicKey(c.SigningPublic)
	if err != nil {
		t.Fatal(err)
	}
	if err := artifact.VerifySignature(files["dist/"+name+".sig"], digest, []ed25519.PublicKey{pub}); err != nil {
		t.Error(err)
	}
}

func writeTemp(t *testing.T, name string, b []byte) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGitHubAPI(t *testing.T) {
	fx := newFixture(t)
	r := fx.publish(t, Build{Source: SourceGitHub, Ref: "main"})
	pr := fx.publish(t, Build{Source: SourceGitHub, Ref: "feature", Event: "pull_request", HeadRepo: "fork/pysite"})
	fail := fx.publish(t, Build{Source: SourceGitHub, Ref: "main", Status: "failure"})
	bearer := map[string]string{"Authorization": "Bearer " + fx.c.Token, "Accept": "application/vnd.github+json",
		"X-GitHub-Api-Version": "2022-11-28"}
	gh := fx.api.URL + "/gh/repos/site/pysite/actions/"
	gitea := fx.api.URL + "/api/v1/repos/site/pysite/actions/"
	tests := []struct {
		name   string
		url    string
		hdr    map[string]string
		status int
		want   []string
	}{
		{"no token", gh + "runs/" + itoa(r.ID), nil, 401, []string{"Requires authentication"}},
		{"bad token", gh + "runs/" + itoa(r.ID), map[string]string{"Authorization": "Bearer x"}, 401, []string{"Bad credentials"}},
		{"run", gh + "runs/" + itoa(r.ID), bearer, 200, []string{`"conclusion":"success"`, `"status":"completed"`,
			`"head_branch":"main"`, `"head_sha":"` + r.Commit + `"`, `"event":"push"`, `"full_name":"site/pysite"`, `"html_url":`}},
		{"fork run", gh + "runs/" + itoa(pr.ID), bearer, 200, []string{`"event":"pull_request"`, `"head_repository":{"full_name":"fork/pysite"`}},
		{"failed run", gh + "runs/" + itoa(fail.ID), bearer, 200, []string{`"conclusion":"failure"`}},
		{"unknown run", gh + "runs/3", bearer, 404, []string{`"message":"Not Found"`}},
		{"other repo", fx.api.URL + "/gh/repos/x/y/actions/runs/" + itoa(r.ID), bearer, 404, nil},
		{"artifacts", gh + "runs/" + itoa(r.ID) + "/artifacts", bearer, 200, []string{`"total_count":1`,
			`"id":` + itoa(r.Artifact), `"name":"package"`, `"expired":false`, `"archive_download_url":`, `"digest":"sha256:`}},
		{"artifact", gh + "artifacts/" + itoa(r.Artifact), bearer, 200, []string{`"size_in_bytes":`}},
		{"unknown artifact", gh + "artifacts/3/zip", bearer, 404, nil},
		{"poll", gh + "runs?status=success&branch=main&per_page=5", bearer, 200,
			[]string{`"total_count":1`, `"id":` + itoa(r.ID)}},
		{"gitea token", gitea + "runs/" + itoa(r.ID), map[string]string{"Authorization": "token " + fx.c.Token}, 200,
			[]string{`"artifacts_url":"` + fx.api.URL + `/api/v1/repos/`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := get(t, nil, tc.url, tc.hdr)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("body lacks %s:\n%s", w, body)
				}
			}
		})
	}

	// The zip endpoint redirects to the storage host.
	st, _, hdr := get(t, nil, gh+"artifacts/"+itoa(r.Artifact)+"/zip", bearer)
	loc := hdr.Get("Location")
	if st != http.StatusFound || !strings.HasPrefix(loc, strings.Replace(fx.blob.URL, "127.0.0.1", "localhost", 1)+"/blob/") {
		t.Fatalf("zip: status %d Location %q, want 302 to the blob host", st, loc)
	}
	// Followed with the token still attached (Go keeps it for a redirect
	// to the same IP), the storage host refuses, as a real one does.
	if st, body, _ := get(t, nil, loc, map[string]string{"Authorization": "Bearer " + fx.c.Token}); st != http.StatusBadRequest {
		t.Errorf("blob with Authorization: %d %s, want 400", st, body)
	}
	// A client that drops the token on the redirect gets the archive.
	strip := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != via[0].URL.Host {
			req.Header.Del("Authorization")
		}
		return nil
	}}
	st, body, _ := get(t, strip, gh+"artifacts/"+itoa(r.Artifact)+"/zip", bearer)
	if st != 200 {
		t.Fatalf("download: %d %s", st, body)
	}
	checkZip(t, body, fx.c)
	if st, _, _ := get(t, nil, fx.blob.URL+"/blob/guess", nil); st != 404 {
		t.Errorf("unknown blob: %d, want 404", st)
	}
}

// TestPublishSeenByServer: a build published through another handle on the
// same directory (another process, in the lab) is served at once.
func TestPublishSeenByServer(t *testing.T) {
	fx := newFixture(t)
	other, err := Open(fx.f.Dir())
	if err != nil {
		t.Fatal(err)
	}
	files, _, err := DebFiles(deb(t), DebOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := other.Publish(Build{Source: SourceGitLab, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	st, body, _ := get(t, nil, fx.api.URL+"/api/v4/projects/7/pipelines/"+itoa(p.ID), map[string]string{"PRIVATE-TOKEN": fx.c.Token})
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	// Init on an existing forge keeps its configuration.
	c2, _ := NewConfig("http://other.invalid", "")
	_, kept, err := Init(fx.f.Dir(), c2)
	if err != nil || kept.Token != fx.c.Token {
		t.Errorf("Init over an existing forge: token %q (err %v), want the first one kept", kept.Token, err)
	}
	if _, err := Open(t.TempDir()); !errors.Is(err, ErrNoForge) {
		t.Errorf("Open of an empty dir: %v, want ErrNoForge", err)
	}
}

func TestDebFiles(t *testing.T) {
	p := deb(t)
	_, priv, _ := artifact.GenerateKey()
	tests := []struct {
		name  string
		o     DebOptions
		names []string
	}{
		{"plain", DebOptions{}, []string{"dist/pysite_0.2.0_amd64.deb", "dist/pysite_0.2.0_amd64.deb.sha256"}},
		{"signed", DebOptions{SigningKey: priv}, []string{"dist/pysite_0.2.0_amd64.deb", "dist/pysite_0.2.0_amd64.deb.sha256", "dist/pysite_0.2.0_amd64.deb.sig"}},
		{"no checksum", DebOptions{NoChecksum: true}, []string{"dist/pysite_0.2.0_amd64.deb"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, digest, err := DebFiles(p, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range files {
				names = append(names, f.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.names, ",") {
				t.Errorf("files %v, want %v", names, tc.names)
			}
			if len(files) > 1 {
				sum, err := artifact.ParseChecksum(files[1].Data, "pysite_0.2.0_amd64.deb")
				if err != nil || sum != digest {
					t.Errorf("checksum file %q parses to %q (%v), want %s", files[1].Data, sum, err, digest)
				}
			}
		})
	}
	files, digest, _ := DebFiles(p, DebOptions{Checksum: strings.Repeat("0", 64)})
	if sum, _ := artifact.ParseChecksum(files[1].Data, "pysite_0.2.0_amd64.deb"); sum == digest {
		t.Error("a wrong checksum was asked for, the real one published")
	}
	if _, _, err := DebFiles(filepath.Join(t.TempDir(), "x.deb"), DebOptions{}); err == nil {
		t.Error("a missing file published")
	}
}

// TestHooks checks the webhooks against tandem's own intake: verified with
// the forge's secret, parsed into the build they announce, refused with a
// wrong secret or an oversized body.
func TestHooks(t *testing.T) {
	fx := newFixture(t)
	gl := fx.publish(t, Build{Source: SourceGitLab, Ref: "main"})
	gh := fx.publish(t, Build{Source: SourceGitHub, Ref: "main"})
	secrets := func(s string) webhook.Secrets {
		sec, err := webhook.ParseSecrets([]byte(s+"\n"), "test")
		if err != nil {
			t.Fatal(err)
		}
		return sec
	}
	rules := webhook.Rules{Branches: []string{"main"}, Job: JobName}
	intakes := map[string]webhook.Intake{
		SourceGitLab: {Source: webhook.GitLab, Secrets: secrets(fx.c.GitLabSecret), Rules: rules},
		SourceGitHub: {Source: webhook.GitHub, Secrets: secrets(fx.c.GitHubSecret), Rules: rules},
	}
	tests := []struct {
		name   string
		source string
		build  Published
		o      HookOptions
		err    error
	}{
		{"gitlab", SourceGitLab, gl, HookOptions{}, nil},
		{"github", SourceGitHub, gh, HookOptions{}, nil},
		{"gitlab wrong secret", SourceGitLab, gl, HookOptions{WrongSecret: true}, webhook.ErrBadSignature},
		{"github wrong secret", SourceGitHub, gh, HookOptions{WrongSecret: true}, webhook.ErrBadSignature},
		{"github oversize", SourceGitHub, gh, HookOptions{Oversize: true}, webhook.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := fx.f.MakeHook(tc.source, tc.build.ID, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			in := intakes[tc.source]
			body, err := webhook.ReadBody(bytes.NewReader(h.Body))
			var d webhook.Delivery
			if err == nil {
				d, err = in.Receive(h.Header, body, time.Now())
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("Receive: %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if d.ID != h.ID || d.Commit != tc.build.Commit || d.Ref != "main" || d.Project != DefaultProject {
				t.Errorf("delivery %+v does not describe build %+v (hook ID %s)", d, tc.build, h.ID)
			}
			switch tc.source {
			case SourceGitLab:
				if d.PipelineID != gl.ID || d.JobID != gl.Artifact {
					t.Errorf("pipeline %d job %d, want %d %d", d.PipelineID, d.JobID, gl.ID, gl.Artifact)
				}
			case SourceGitHub:
				if d.RunID != gh.ID {
					t.Errorf("run %d, want %d", d.RunID, gh.ID)
				}
			}
			// A replay is the same delivery, byte for byte.
			last, err := fx.f.LastHook("")
			if err != nil || last.ID != h.ID || !bytes.Equal(last.Body, h.Body) {
				t.Errorf("LastHook = %s (err %v), want %s", last.ID, err, h.ID)
			}
		})
	}
	if _, err := fx.f.MakeHook(SourceGitLab, 1, HookOptions{}); err == nil {
		t.Error("a hook for an unknown pipeline was made")
	}
}

func TestSend(t *testing.T) {
	fx := newFixture(t)
	p := fx.publish(t, Build{Source: SourceGitLab})
	h, err := fx.f.MakeHook(SourceGitLab, p.ID, HookOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"delivery":"d1"}`))
	}))
	defer srv.Close()
	resp, err := Send(context.Background(), nil, srv.URL+"/webhook/gitlab", h)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 202 || resp.Body != `{"delivery":"d1"}` {
		t.Errorf("response %+v", resp)
	}
	for _, k := range []string{"X-Gitlab-Event", "X-Gitlab-Token", "X-Gitlab-Event-Uuid", "Idempotency-Key"} {
		if got.Get(k) == "" {
			t.Errorf("header %s not sent", k)
		}
	}
}
