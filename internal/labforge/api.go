package labforge

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Handler serves the forge's API and its artifact blobs. Every request
// reads the state directory again, so builds published by another process
// are seen at once. log receives one line per request.
func (f *Forge) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		f.serve(rec, r)
		log.Info("forge request", "method", r.Method, "path", r.URL.RequestURI(), "status", rec.status, "remote", r.RemoteAddr)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (f *Forge) serve(w http.ResponseWriter, r *http.Request) {
	s, err := f.State()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": err.Error()})
		return
	}
	// Route on the escaped path: GitLab's :id may be "site%2Fpysite".
	path := r.URL.EscapedPath()
	switch {
	case strings.HasPrefix(path, "/api/v4/"):
		f.gitlab(w, r, s, strings.Split(strings.TrimPrefix(path, "/api/v4/"), "/"))
	case strings.HasPrefix(path, "/gh/"):
		f.github(w, r, s, strings.Split(strings.TrimPrefix(path, "/gh/"), "/"), false)
	case strings.HasPrefix(path, "/api/v1/"):
		f.github(w, r, s, strings.Split(strings.TrimPrefix(path, "/api/v1/"), "/"), true)
	case strings.HasPrefix(path, "/blob/"):
		f.blob(w, r, s, strings.TrimPrefix(path, "/blob/"))
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 Not Found"})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func sameToken(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// paging reads page and per_page (1-based page; per_page clamped to max).
func paging(q url.Values, def, max int) (page, per int) {
	page, per = 1, def
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
		per = min(v, max)
	}
	return page, per
}

func pageOf[T any](all []T, page, per int) []T {
	lo := (page - 1) * per
	if lo >= len(all) {
		return []T{}
	}
	return all[lo:min(lo+per, len(all))]
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// ---- GitLab (docs.gitlab.com/ee/api/pipelines.html, jobs.html, job_artifacts.html)

func gitlabPipelineURL(c Config, id int64) string {
	return fmt.Sprintf("%s/%s/-/pipelines/%d", c.BaseURL, c.GitLabProject, id)
}

func gitlabNotFound(w http.ResponseWriter, what string) {
	writeJSON(w, http.StatusNotFound, map[string]string{"message": "404 " + what + " Not Found"})
}

func (f *Forge) gitlab(w http.ResponseWriter, r *http.Request, s *State, seg []string) {
	c := s.Config
	tok := r.Header.Get("PRIVATE-TOKEN")
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok == "" {
		tok = b
	}
	if !sameToken(tok, c.Token) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"})
		return
	}
	if len(seg) < 3 || seg[0] != "projects" {
		gitlabNotFound(w, "")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "405 Method Not Allowed"})
		return
	}
	pid, err := url.PathUnescape(seg[1])
	if err != nil || (pid != strconv.FormatInt(c.GitLabProjectID, 10) && pid != c.GitLabProject) {
		gitlabNotFound(w, "Project")
		return
	}
	q := r.URL.Query()
	switch {
	case len(seg) == 3 && seg[2] == "pipelines":
		f.gitlabPipelines(w, q, s)
	case len(seg) >= 4 && seg[2] == "pipelines":
		p := findPipeline(s, seg[3])
		if p == nil {
			gitlabNotFound(w, "")
			return
		}
		switch {
		case len(seg) == 4:
			writeJSON(w, http.StatusOK, gitlabPipelineJSON(c, *p))
		case len(seg) == 5 && seg[4] == "jobs":
			scopes := append(q["scope[]"], q["scope"]...)
			jobs := []map[string]any{}
			if len(scopes) == 0 || slices.Contains(scopes, p.Status) {
				jobs = append(jobs, gitlabJobJSON(c, *p))
			}
			page, per := paging(q, 20, 100)
			setGitLabPaging(w, page, per, len(jobs))
			writeJSON(w, http.StatusOK, pageOf(jobs, page, per))
		default:
			gitlabNotFound(w, "")
		}
	case len(seg) >= 4 && seg[2] == "jobs":
		p := findJob(s, seg[3])
		if p == nil {
			gitlabNotFound(w, "")
			return
		}
		switch {
		case len(seg) == 4:
			writeJSON(w, http.StatusOK, gitlabJobJSON(c, *p))
		case len(seg) == 5 && seg[4] == "artifacts":
			if p.Artifact == "" {
				gitlabNotFound(w, "")
				return
			}
			f.serveZip(w, r, p.Artifact, "artifacts.zip")
		default:
			gitlabNotFound(w, "")
		}
	default:
		gitlabNotFound(w, "")
	}
}

func (f *Forge) gitlabPipelines(w http.ResponseWriter, q url.Values, s *State) {
	var list []Pipeline
	for _, p := range s.Pipelines {
		if st := q.Get("status"); st != "" && p.Status != st {
			continue
		}
		if ref := q.Get("ref"); ref != "" && p.Ref != ref {
			continue
		}
		if sha := q.Get("sha"); sha != "" && p.SHA != sha {
			continue
		}
		switch q.Get("scope") {
		case "branches":
			if p.Tag {
				continue
			}
		case "tags":
			if !p.Tag {
				continue
			}
		case "finished":
			if p.Status != "success" && p.Status != "failed" && p.Status != "canceled" {
				continue
			}
		}
		list = append(list, p)
	}
	// order_by id (the default and the only order the lab needs), sort desc by default.
	slices.SortFunc(list, func(a, b Pipeline) int { return int(b.ID - a.ID) })
	if q.Get("sort") == "asc" {
		slices.Reverse(list)
	}
	page, per := paging(q, 20, 100)
	setGitLabPaging(w, page, per, len(list))
	out := []map[string]any{}
	for _, p := range pageOf(list, page, per) {
		out = append(out, gitlabPipelineJSON(s.Config, p))
	}
	writeJSON(w, http.StatusOK, out)
}

func setGitLabPaging(w http.ResponseWriter, page, per, total int) {
	pages := max(1, (total+per-1)/per)
	h := w.Header()
	h.Set("X-Page", strconv.Itoa(page))
	h.Set("X-Per-Page", strconv.Itoa(per))
	h.Set("X-Total", strconv.Itoa(total))
	h.Set("X-Total-Pages", strconv.Itoa(pages))
	next := ""
	if page < pages {
		next = strconv.Itoa(page + 1)
	}
	h.Set("X-Next-Page", next)
}

func findPipeline(s *State, id string) *Pipeline {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	for i := range s.Pipelines {
		if s.Pipelines[i].ID == n {
			return &s.Pipelines[i]
		}
	}
	return nil
}

func findJob(s *State, id string) *Pipeline {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	for i := range s.Pipelines {
		if s.Pipelines[i].JobID == n {
			return &s.Pipelines[i]
		}
	}
	return nil
}

func gitlabPipelineJSON(c Config, p Pipeline) map[string]any {
	return map[string]any{
		"id": p.ID, "iid": p.IID, "project_id": c.GitLabProjectID, "status": p.Status, "source": p.Source,
		"ref": p.Ref, "sha": p.SHA, "tag": p.Tag, "web_url": gitlabPipelineURL(c, p.ID),
		"created_at": ts(p.Created), "updated_at": ts(p.Created),
	}
}

func gitlabJobJSON(c Config, p Pipeline) map[string]any {
	j := map[string]any{
		"id": p.JobID, "name": JobName, "stage": "package", "status": p.Status, "ref": p.Ref, "tag": p.Tag,
		"created_at": ts(p.Created), "finished_at": ts(p.Created),
		"web_url": fmt.Sprintf("%s/%s/-/jobs/%d", c.BaseURL, c.GitLabProject, p.JobID),
		"commit":  map[string]any{"id": p.SHA, "short_id": p.SHA[:min(8, len(p.SHA))], "title": "lab build"},
		"pipeline": map[string]any{"id": p.ID, "project_id": c.GitLabProjectID, "ref": p.Ref, "sha": p.SHA,
			"status": p.Status},
		"artifacts": []any{},
	}
	if p.Artifact != "" {
		j["artifacts_file"] = map[string]any{"filename": "artifacts.zip", "size": p.ArtifactSize}
		j["artifacts"] = []any{map[string]any{"file_type": "archive", "size": p.ArtifactSize,
			"filename": "artifacts.zip", "file_format": "zip"}}
		j["artifacts_expire_at"] = ts(p.Created.Add(30 * 24 * time.Hour))
	}
	return j
}

// ---- GitHub (docs.github.com/en/rest/actions/workflow-runs, .../artifacts)
// and Gitea/Forgejo, which serve the same shapes under /api/v1.

func githubRunURL(c Config, id int64) string {
	return fmt.Sprintf("%s/%s/actions/runs/%d", c.BaseURL, c.GitHubRepo, id)
}

func githubError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg,
		"documentation_url": "https://docs.github.com/rest", "status": strconv.Itoa(status)})
}

func (f *Forge) github(w http.ResponseWriter, r *http.Request, s *State, seg []string, gitea bool) {
	c := s.Config
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "token ")
	}
	if !ok {
		githubError(w, http.StatusUnauthorized, "Requires authentication")
		return
	}
	if !sameToken(tok, c.Token) {
		githubError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		githubError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	// repos/OWNER/REPO/actions/...
	if len(seg) < 5 || seg[0] != "repos" || seg[1]+"/"+seg[2] != c.GitHubRepo || seg[3] != "actions" {
		githubError(w, http.StatusNotFound, "Not Found")
		return
	}
	api := c.BaseURL + "/gh"
	if gitea {
		api = c.BaseURL + "/api/v1"
	}
	q := r.URL.Query()
	rest := seg[4:]
	switch {
	case len(rest) == 1 && rest[0] == "runs":
		var list []Run
		for _, run := range s.Runs {
			if st := q.Get("status"); st != "" && st != run.Conclusion && st != "completed" {
				continue
			}
			if b := q.Get("branch"); b != "" && b != run.HeadBranch {
				continue
			}
			if e := q.Get("event"); e != "" && e != run.Event {
				continue
			}
			if sha := q.Get("head_sha"); sha != "" && sha != run.HeadSHA {
				continue
			}
			list = append(list, run)
		}
		slices.SortFunc(list, func(a, b Run) int { return int(b.ID - a.ID) }) // newest first
		page, per := paging(q, 30, 100)
		runs := []map[string]any{}
		for _, run := range pageOf(list, page, per) {
			runs = append(runs, githubRunJSON(c, api, run))
		}
		writeJSON(w, http.StatusOK, map[string]any{"total_count": len(list), "workflow_runs": runs})
	case len(rest) >= 2 && rest[0] == "runs":
		run := findRun(s, rest[1], false)
		if run == nil {
			githubError(w, http.StatusNotFound, "Not Found")
			return
		}
		switch {
		case len(rest) == 2:
			writeJSON(w, http.StatusOK, githubRunJSON(c, api, *run))
		case len(rest) == 3 && rest[2] == "artifacts":
			arts := []map[string]any{}
			if run.Artifact != "" && (q.Get("name") == "" || q.Get("name") == JobName) {
				arts = append(arts, githubArtifactJSON(c, api, *run))
			}
			writeJSON(w, http.StatusOK, map[string]any{"total_count": len(arts), "artifacts": arts})
		default:
			githubError(w, http.StatusNotFound, "Not Found")
		}
	case len(rest) >= 2 && rest[0] == "artifacts":
		run := findRun(s, rest[1], true)
		if run == nil || run.Artifact == "" {
			githubError(w, http.StatusNotFound, "Not Found")
			return
		}
		switch {
		case len(rest) == 2:
			writeJSON(w, http.StatusOK, githubArtifactJSON(c, api, *run))
		case len(rest) == 3 && rest[2] == "zip":
			// GitHub answers 302 with a short-lived URL on its storage
			// host; the client must follow it without the API's token.
			w.Header().Set("Location", blobBase(c)+"/blob/"+run.BlobKey)
			w.WriteHeader(http.StatusFound)
		default:
			githubError(w, http.StatusNotFound, "Not Found")
		}
	default:
		githubError(w, http.StatusNotFound, "Not Found")
	}
}

func blobBase(c Config) string {
	if c.BlobURL != "" {
		return c.BlobURL
	}
	return c.BaseURL
}

func findRun(s *State, id string, byArtifact bool) *Run {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	for i := range s.Runs {
		if !byArtifact && s.Runs[i].ID == n || byArtifact && s.Runs[i].ArtifactID == n {
			return &s.Runs[i]
		}
	}
	return nil
}

func githubRepoJSON(fullName string) map[string]any {
	owner, name, _ := strings.Cut(fullName, "/")
	return map[string]any{"id": 17273051, "name": name, "full_name": fullName, "owner": map[string]any{"login": owner}}
}

func githubRunJSON(c Config, api string, r Run) map[string]any {
	head := c.GitHubRepo
	if r.HeadRepo != "" {
		head = r.HeadRepo
	}
	t := r.Created.UTC().Format(time.RFC3339)
	return map[string]any{
		"id": r.ID, "name": "tandem", "head_branch": r.HeadBranch, "head_sha": r.HeadSHA,
		"path": ".github/workflows/tandem.yml", "run_number": r.RunNumber, "run_attempt": 1,
		"event": r.Event, "status": "completed", "conclusion": r.Conclusion, "workflow_id": 159038,
		"url":           fmt.Sprintf("%s/repos/%s/actions/runs/%d", api, c.GitHubRepo, r.ID),
		"html_url":      githubRunURL(c, r.ID),
		"artifacts_url": fmt.Sprintf("%s/repos/%s/actions/runs/%d/artifacts", api, c.GitHubRepo, r.ID),
		"created_at":    t, "updated_at": t, "run_started_at": t,
		"repository": githubRepoJSON(c.GitHubRepo), "head_repository": githubRepoJSON(head),
	}
}

func githubArtifactJSON(c Config, api string, r Run) map[string]any {
	t := r.Created.UTC().Format(time.RFC3339)
	return map[string]any{
		"id": r.ArtifactID, "node_id": fmt.Sprintf("MDg6QXJ0aWZhY3Q%d", r.ArtifactID), "name": JobName,
		"size_in_bytes": r.ArtifactSize, "digest": r.ArtifactDigest, "expired": false,
		"url":                  fmt.Sprintf("%s/repos/%s/actions/artifacts/%d", api, c.GitHubRepo, r.ArtifactID),
		"archive_download_url": fmt.Sprintf("%s/repos/%s/actions/artifacts/%d/zip", api, c.GitHubRepo, r.ArtifactID),
		"created_at":           t, "updated_at": t,
		"expires_at":   r.Created.Add(90 * 24 * time.Hour).UTC().Format(time.RFC3339),
		"workflow_run": map[string]any{"id": r.ID, "head_branch": r.HeadBranch, "head_sha": r.HeadSHA},
	}
}

// blob serves a run's artifact as the storage host GitHub redirects to
// does: the key in the URL is the only credential, and a request still
// carrying the API's Authorization header is refused, as a real storage
// host refuses a second authentication scheme.
func (f *Forge) blob(w http.ResponseWriter, r *http.Request, s *State, key string) {
	if r.Header.Get("Authorization") != "" {
		http.Error(w, "the artifact URL is pre-signed: send it without an Authorization header (drop the API token on the redirect)", http.StatusBadRequest)
		return
	}
	for _, run := range s.Runs {
		if run.BlobKey != "" && subtle.ConstantTimeCompare([]byte(run.BlobKey), []byte(key)) == 1 {
			f.serveZip(w, r, run.Artifact, fmt.Sprintf("%s.zip", JobName))
			return
		}
	}
	http.Error(w, "blob not found", http.StatusNotFound)
}

func (f *Forge) serveZip(w http.ResponseWriter, r *http.Request, file, name string) {
	fh, err := os.Open(filepath.Join(f.dir, file))
	if err != nil {
		http.Error(w, "artifact file missing: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	http.ServeContent(w, r, name, st.ModTime(), fh)
}
