package forge

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// entry is one file of a test archive.
type entry struct{ name, body string }

func makeZip(t testing.TB, files ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.Create(f.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(f.body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const (
	debFile = "pysite_0.2.0-1_amd64.deb"
	debBody = "!<arch>\nnot really a deb, but bytes to hash"
)

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// goodZip is what `tandem ci init` pipelines publish.
func goodZip(t testing.TB, sig bool) []byte {
	files := []entry{
		{"dist/" + debFile, debBody},
		{"dist/" + debFile + ".sha256", sum(debBody) + "  dist/" + debFile + "\n"},
	}
	if sig {
		files = append(files, entry{"dist/" + debFile + ".sig", "c2lnbmF0dXJl\n"})
	}
	return makeZip(t, files...)
}

// fakeArt is a GitLab job or a GitHub/Gitea/Forgejo artifact.
type fakeArt struct {
	ID      int64
	Name    string
	Status  string // GitLab job status; "" = success
	Zip     []byte // nil: no artifacts
	Expired bool
}

// fakeBuild is a GitLab pipeline or an actions run.
type fakeBuild struct {
	ID       int64
	Ref      string
	Tag      bool
	SHA      string
	Status   string // "success", "failed", "running"
	Event    string // actions event ("push"); GitLab source ("push", "merge_request_event")
	HeadRepo string // a fork's full name
	Arts     []fakeArt
}

// fakeForge serves one forge kind's API for one project, the way the
// forge's documentation describes it: a token is required (401 without),
// unknown ids are 404, lists paginate, GitHub's artifact zip redirects to
// another host and Gitea's to a signed URL on its own.
type fakeForge struct {
	t       *testing.T
	kind    webhook.Source
	token   string
	project string
	projID  int64
	api     *httptest.Server
	blob    *httptest.Server // GitHub's artifact storage: another host

	mu             sync.Mutex
	builds         map[int64]*fakeBuild
	noArtifactsAPI bool     // a Forgejo without the artifacts API
	redirectGitLab bool     // GitLab answers the artifacts with a redirect to the blob host
	blobAuth       []string // credentials the blob host was sent
	apiPaths       []string
}

func newFakeForge(t *testing.T, kind webhook.Source) *fakeForge {
	f := &fakeForge{t: t, kind: kind, token: "tok-" + string(kind), builds: map[int64]*fakeBuild{}}
	f.project, f.projID = "site/pysite", 42
	f.api = httptest.NewServer(http.HandlerFunc(f.serveAPI))
	f.blob = httptest.NewServer(http.HandlerFunc(f.serveBlob))
	t.Cleanup(f.api.Close)
	t.Cleanup(f.blob.Close)
	return f
}

func (f *fakeForge) add(b fakeBuild) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b.Status == "" {
		b.Status = "success"
	}
	if b.Event == "" {
		b.Event = "push"
	}
	if b.SHA == "" {
		b.SHA = fmt.Sprintf("%040x", b.ID)
	}
	f.builds[b.ID] = &b
}

func (f *fakeForge) apiURL() string {
	switch f.kind {
	case webhook.GitLab:
		return f.api.URL + "/api/v4"
	case webhook.GitHub:
		return f.api.URL
	}
	return f.api.URL + "/api/v1"
}

func (f *fakeForge) source(r webhook.Rules) Source {
	return Source{Kind: f.kind, APIURL: f.apiURL(), Token: f.token, Project: f.project, Rules: r, HTTP: f.api.Client()}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeForge) authorized(r *http.Request) bool {
	switch f.kind {
	case webhook.GitLab:
		return r.Header.Get("PRIVATE-TOKEN") == f.token
	case webhook.GitHub:
		return r.Header.Get("Authorization") == "Bearer "+f.token
	}
	return r.Header.Get("Authorization") == "token "+f.token
}

func (f *fakeForge) serveBlob(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobAuth = append(f.blobAuth, r.Header.Get("Authorization")+r.Header.Get("PRIVATE-TOKEN"))
	if r.URL.Query().Get("sig") != "signed" {
		http.Error(w, "AuthenticationFailed", http.StatusForbidden)
		return
	}
	id, _ := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/blob/"), 10, 64)
	if a := f.art(id); a != nil && a.Zip != nil {
		w.Header().Set("Content-Type", "application/zip")
		w.Write(a.Zip)
		return
	}
	http.NotFound(w, r)
}

// art finds an artifact (or GitLab job) by ID; f.mu is held.
func (f *fakeForge) art(id int64) *fakeArt {
	for _, b := range f.builds {
		for i := range b.Arts {
			if b.Arts[i].ID == id {
				return &b.Arts[i]
			}
		}
	}
	return nil
}

func (f *fakeForge) buildOf(id int64) *fakeBuild {
	for _, b := range f.builds {
		for _, a := range b.Arts {
			if a.ID == id {
				return b
			}
		}
	}
	return nil
}

func (f *fakeForge) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	path := r.URL.EscapedPath()
	f.apiPaths = append(f.apiPaths, path)
	// Gitea's signed raw download needs no token.
	if f.kind == webhook.Gitea && strings.HasSuffix(path, "/zip/raw") {
		f.blobAuth = append(f.blobAuth, r.Header.Get("Authorization"))
		if r.URL.Query().Get("sig") != "signed" {
			writeJSON(w, 401, map[string]string{"message": "invalid signature"})
			return
		}
		parts := strings.Split(path, "/")
		id, _ := strconv.ParseInt(parts[len(parts)-3], 10, 64)
		if a := f.art(id); a != nil {
			w.Write(a.Zip)
			return
		}
		writeJSON(w, 404, map[string]string{"message": "artifact not found"})
		return
	}
	if !f.authorized(r) {
		msg := map[webhook.Source]string{webhook.GitLab: "401 Unauthorized", webhook.GitHub: "Bad credentials"}[f.kind]
		if msg == "" {
			msg = "token is required"
		}
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": msg})
		return
	}
	if f.kind == webhook.GitLab {
		f.serveGitLab(w, r, path)
		return
	}
	f.serveActions(w, r, path)
}

func notFound(w http.ResponseWriter, what string) {
	writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 " + what + " Not Found"})
}

// page cuts a list to the request's page (per_page or limit, page).
func page[T any](r *http.Request, all []T, sizeParam string) ([]T, bool) {
	q := r.URL.Query()
	size, _ := strconv.Atoi(q.Get(sizeParam))
	if size <= 0 {
		size = 20
	}
	p, _ := strconv.Atoi(q.Get("page"))
	if p <= 0 {
		p = 1
	}
	start := min((p-1)*size, len(all))
	end := min(start+size, len(all))
	return all[start:end], end < len(all)
}

func (f *fakeForge) glPipelineJSON(b *fakeBuild) map[string]any {
	src := b.Event
	return map[string]any{"id": b.ID, "iid": b.ID, "project_id": f.projID, "status": b.Status, "ref": b.Ref, "sha": b.SHA,
		"tag": b.Tag, "source": src, "web_url": fmt.Sprintf("https://gitlab.example/%s/-/pipelines/%d", f.project, b.ID)}
}

func (f *fakeForge) glJobJSON(b *fakeBuild, a fakeArt) map[string]any {
	st := a.Status
	if st == "" {
		st = "success"
	}
	j := map[string]any{"id": a.ID, "name": a.Name, "status": st, "ref": b.Ref, "tag": b.Tag, "stage": "package",
		"commit": map[string]any{"id": b.SHA}, "pipeline": map[string]any{"id": b.ID, "status": b.Status},
		"web_url": fmt.Sprintf("https://gitlab.example/%s/-/jobs/%d", f.project, a.ID)}
	if a.Zip != nil {
		j["artifacts_file"] = map[string]any{"filename": "artifacts.zip", "size": len(a.Zip)}
	}
	return j
}

func (f *fakeForge) serveGitLab(w http.ResponseWriter, r *http.Request, path string) {
	rest, ok := strings.CutPrefix(path, "/api/v4/projects/")
	if !ok {
		notFound(w, "Route")
		return
	}
	id, rest, _ := strings.Cut(rest, "/")
	if id != url.PathEscape(f.project) && id != strconv.FormatInt(f.projID, 10) {
		notFound(w, "Project")
		return
	}
	seg := strings.Split(rest, "/")
	q := r.URL.Query()
	switch {
	case len(seg) == 1 && seg[0] == "pipelines":
		var list []map[string]any
		ids := make([]int64, 0, len(f.builds))
		for id := range f.builds {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		slices.Reverse(ids)
		for _, id := range ids {
			b := f.builds[id]
			if s := q.Get("status"); s != "" && b.Status != s {
				continue
			}
			if ref := q.Get("ref"); ref != "" && b.Ref != ref {
				continue
			}
			if q.Get("scope") == "tags" && !b.Tag {
				continue
			}
			p := f.glPipelineJSON(b)
			delete(p, "tag") // the list has no tag field
			list = append(list, p)
		}
		list, _ = page(r, list, "per_page")
		writeJSON(w, 200, list)
	case len(seg) >= 2 && seg[0] == "pipelines":
		pid, _ := strconv.ParseInt(seg[1], 10, 64)
		b := f.builds[pid]
		if b == nil {
			notFound(w, "Pipeline")
			return
		}
		if len(seg) == 2 {
			writeJSON(w, 200, f.glPipelineJSON(b))
			return
		}
		var jobs []map[string]any
		for _, a := range b.Arts {
			st := a.Status
			if st == "" {
				st = "success"
			}
			if sc := q["scope[]"]; len(sc) > 0 && !slices.Contains(sc, st) {
				continue
			}
			jobs = append(jobs, f.glJobJSON(b, a))
		}
		jobs, more := page(r, jobs, "per_page")
		if more {
			p, _ := strconv.Atoi(q.Get("page"))
			w.Header().Set("X-Next-Page", strconv.Itoa(max(p, 1)+1))
		} else {
			w.Header().Set("X-Next-Page", "")
		}
		writeJSON(w, 200, jobs)
	case len(seg) >= 2 && seg[0] == "jobs":
		jid, _ := strconv.ParseInt(seg[1], 10, 64)
		a, b := f.art(jid), f.buildOf(jid)
		if a == nil {
			notFound(w, "Job")
			return
		}
		if len(seg) == 2 {
			writeJSON(w, 200, f.glJobJSON(b, *a))
			return
		}
		if seg[2] != "artifacts" || a.Zip == nil {
			notFound(w, "File")
			return
		}
		if f.redirectGitLab {
			http.Redirect(w, r, f.blob.URL+"/blob/"+seg[1]+"?sig=signed", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "application/zip")
		w.Write(a.Zip)
	default:
		notFound(w, "Route")
	}
}

func (f *fakeForge) runJSON(b *fakeBuild) map[string]any {
	full := f.project
	head := full
	if b.HeadRepo != "" {
		head = b.HeadRepo
	}
	status, concl := "completed", b.Status
	if b.Status == "running" {
		status, concl = "in_progress", ""
	}
	fullRef := "refs/heads/" + b.Ref
	if b.Tag {
		fullRef = "refs/tags/" + b.Ref
	}
	html := fmt.Sprintf("https://%s.example/%s/actions/runs/%d", f.kind, full, b.ID)
	switch f.kind {
	case webhook.GitHub:
		return map[string]any{"id": b.ID, "status": status, "conclusion": concl, "head_branch": b.Ref, "head_sha": b.SHA,
			"event": b.Event, "html_url": html, "path": ".github/workflows/package.yml",
			"repository": map[string]any{"full_name": full}, "head_repository": map[string]any{"full_name": head}}
	case webhook.Gitea:
		branch := b.Ref
		if b.Tag {
			branch = "" // git.RefName(run.Ref).BranchName()
		}
		return map[string]any{"id": b.ID, "status": status, "conclusion": concl, "head_branch": branch, "head_sha": b.SHA,
			"event": b.Event, "html_url": html, "path": "package.yml@" + fullRef,
			"repository": map[string]any{"full_name": full}}
	}
	// Forgejo's ActionRun.
	payload, _ := json.Marshal(map[string]any{"ref": fullRef, "after": b.SHA})
	return map[string]any{"id": b.ID, "title": "release", "status": b.Status, "prettyref": b.Ref, "commit_sha": b.SHA,
		"event": b.Event, "trigger_event": b.Event, "event_payload": string(payload), "html_url": html,
		"is_fork_pull_request": b.HeadRepo != "", "workflow_id": "package.yml", "index_in_repo": b.ID,
		"repository": map[string]any{"full_name": full}}
}

func (f *fakeForge) serveActions(w http.ResponseWriter, r *http.Request, path string) {
	prefix := "/api/v1/repos/"
	if f.kind == webhook.GitHub {
		prefix = "/repos/"
	}
	rest, ok := strings.CutPrefix(path, prefix)
	owner, repo, _ := strings.Cut(f.project, "/")
	if !ok || !strings.HasPrefix(rest, owner+"/"+repo+"/actions/") {
		notFound(w, "Repository")
		return
	}
	seg := strings.Split(strings.TrimPrefix(rest, owner+"/"+repo+"/actions/"), "/")
	q := r.URL.Query()
	sizeParam := "per_page"
	if f.kind != webhook.GitHub {
		sizeParam = "limit"
	}
	switch {
	case len(seg) == 1 && seg[0] == "runs":
		var runs []map[string]any
		ids := make([]int64, 0, len(f.builds))
		for id := range f.builds {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		slices.Reverse(ids)
		for _, id := range ids {
			b := f.builds[id]
			if s := q.Get("status"); s != "" && b.Status != s {
				continue
			}
			if br := q.Get("branch"); br != "" && f.kind != webhook.Forgejo && b.Ref != br {
				continue
			}
			if sha := q.Get("head_sha"); sha != "" && b.SHA != sha {
				continue
			}
			if ev := q.Get("event"); ev != "" && b.Event != ev {
				continue
			}
			runs = append(runs, f.runJSON(b))
		}
		total := len(runs)
		runs, _ = page(r, runs, sizeParam)
		writeJSON(w, 200, map[string]any{"total_count": total, "workflow_runs": runs})
	case len(seg) >= 2 && seg[0] == "runs":
		id, _ := strconv.ParseInt(seg[1], 10, 64)
		b := f.builds[id]
		if b == nil {
			notFound(w, "Run")
			return
		}
		if len(seg) == 2 {
			writeJSON(w, 200, f.runJSON(b))
			return
		}
		if seg[2] != "artifacts" || f.noArtifactsAPI {
			notFound(w, "Route")
			return
		}
		var arts []map[string]any
		for _, a := range b.Arts {
			arts = append(arts, map[string]any{"id": a.ID, "name": a.Name, "size_in_bytes": len(a.Zip), "expired": a.Expired,
				"archive_download_url": fmt.Sprintf("%s/actions/artifacts/%d/zip", f.apiURL(), a.ID)})
		}
		total := len(arts)
		arts, _ = page(r, arts, sizeParam)
		if f.kind == webhook.Forgejo {
			writeJSON(w, 200, arts) // a bare array, with the total in a header
			return
		}
		writeJSON(w, 200, map[string]any{"total_count": total, "artifacts": arts})
	case len(seg) == 3 && seg[0] == "artifacts" && seg[2] == "zip":
		id, _ := strconv.ParseInt(seg[1], 10, 64)
		a := f.art(id)
		if a == nil || a.Expired || f.noArtifactsAPI {
			notFound(w, "Artifact")
			return
		}
		switch f.kind {
		case webhook.GitHub:
			http.Redirect(w, r, fmt.Sprintf("%s/blob/%d?sig=signed", f.blob.URL, id), http.StatusFound)
		case webhook.Gitea:
			http.Redirect(w, r, fmt.Sprintf("%s/api/v1/repos/%s/actions/artifacts/%d/zip/raw?sig=signed&expires=1", f.api.URL, f.project, id), http.StatusFound)
		default:
			w.Header().Set("Content-Type", "application/zip")
			w.Write(a.Zip)
		}
	default:
		notFound(w, "Route")
	}
}
