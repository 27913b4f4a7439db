package forge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// glPipeline is GitLab's pipeline (GET /projects/:id/pipelines/:id, and
// the list, which lacks tag).
type glPipeline struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
	Ref    string `json:"ref"`
	SHA    string `json:"sha"`
	Tag    *bool  `json:"tag"`
	Source string `json:"source"`
	WebURL string `json:"web_url"`
}

// glJob is GitLab's job (GET /projects/:id/jobs/:id and the pipeline's
// job list).
type glJob struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Ref    string `json:"ref"`
	Tag    bool   `json:"tag"`
	WebURL string `json:"web_url"`
	Commit *struct {
		ID string `json:"id"`
	} `json:"commit"`
	Pipeline *struct {
		ID     int64  `json:"id"`
		Status string `json:"status"`
	} `json:"pipeline"`
	ArtifactsFile *struct {
		Filename string `json:"filename"`
		Size     int64  `json:"size"`
	} `json:"artifacts_file"`
}

func (j glJob) commit() string {
	if j.Commit == nil {
		return ""
	}
	return strings.ToLower(j.Commit.ID)
}

func (j glJob) hasArtifacts() bool {
	return j.ArtifactsFile != nil && j.ArtifactsFile.Filename != ""
}

// parseGitLabPipeline, parseGitLabJob and parseGitLabJobs decode and check
// API answers; they are what the fuzzers drive.
func parseGitLabPipeline(b []byte) (glPipeline, error) {
	var p glPipeline
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%w: pipeline: %v", ErrForgeAPI, err)
	}
	if p.ID <= 0 {
		return p, fmt.Errorf("%w: pipeline without an id", ErrForgeAPI)
	}
	return p, nil
}

func parseGitLabJob(b []byte) (glJob, error) {
	var j glJob
	if err := json.Unmarshal(b, &j); err != nil {
		return j, fmt.Errorf("%w: job: %v", ErrForgeAPI, err)
	}
	if j.ID <= 0 {
		return j, fmt.Errorf("%w: job without an id", ErrForgeAPI)
	}
	return j, nil
}

func parseGitLabJobs(b []byte) ([]glJob, error) {
	var js []glJob
	if err := json.Unmarshal(b, &js); err != nil {
		return nil, fmt.Errorf("%w: job list: %v", ErrForgeAPI, err)
	}
	return js, nil
}

// mergeRequestSources are pipelines that build a merge request's code,
// possibly from a fork: never deployed.
var mergeRequestSources = []string{"merge_request_event", "external_pull_request_event"}

func untrustedPipeline(p glPipeline) error {
	if slices.Contains(mergeRequestSources, p.Source) || strings.HasPrefix(p.Ref, "refs/merge-requests/") {
		return fmt.Errorf("%w: pipeline %d builds a merge request (source %q, ref %q), not a branch or tag of the project", ErrUntrusted, p.ID, p.Source, p.Ref)
	}
	return nil
}

// glProject returns the configured project, URL-encoded for the API. A
// delivery that names another project is refused; the API is only ever
// asked about the configured one.
func (c *conn) glProject(d webhook.Delivery) (string, string, error) {
	p := c.s.Project
	switch {
	case p == "" && d.ProjectID > 0:
		p = itoa(d.ProjectID)
	case p == "":
		p = strings.TrimPrefix(d.Project, "id:")
	}
	if p == "" {
		return "", "", fmt.Errorf("gitlab source: no project configured and the delivery names none")
	}
	if c.s.Project != "" {
		_, perr := strconv.ParseInt(p, 10, 64)
		differ := false
		if perr == nil { // a numeric ID: compare IDs
			differ = d.ProjectID > 0 && itoa(d.ProjectID) != p || strings.HasPrefix(d.Project, "id:") && d.Project != "id:"+p
		} else {
			differ = d.Project != "" && !strings.HasPrefix(d.Project, "id:") && !strings.EqualFold(d.Project, p)
		}
		if differ {
			return "", "", fmt.Errorf("%w: the delivery is from project %s (id %d), the source is configured for %s", ErrUntrusted, d.Project, d.ProjectID, p)
		}
	}
	name := c.s.Project
	if name == "" {
		name = d.Project
	}
	return url.PathEscape(p), name, nil
}

func (c *conn) glGet(ctx context.Context, path string, q url.Values, parse func([]byte) error) (hdr map[string][]string, err error) {
	u, err := c.endpoint(path, q)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	h, err := c.getJSON(ctx, u, &raw)
	if err != nil {
		return nil, err
	}
	return h, parse(raw)
}

func (c *conn) fetchGitLab(ctx context.Context, d webhook.Delivery, dir string) (Build, error) {
	proj, name, err := c.glProject(d)
	if err != nil {
		return Build{}, err
	}
	r := c.s.Rules
	b := Build{Project: name}
	var job glJob
	getJob := func(id int64) error {
		_, err := c.glGet(ctx, "/projects/"+proj+"/jobs/"+itoa(id), nil, func(raw []byte) (err error) {
			job, err = parseGitLabJob(raw)
			return err
		})
		return err
	}
	switch {
	case d.PipelineID > 0 && d.Event != webhook.EventJob:
		var p glPipeline
		_, err := c.glGet(ctx, "/projects/"+proj+"/pipelines/"+itoa(d.PipelineID), nil, func(raw []byte) (err error) {
			p, err = parseGitLabPipeline(raw)
			return err
		})
		if err != nil {
			return Build{}, err
		}
		what := "pipeline " + itoa(p.ID)
		if p.ID != d.PipelineID {
			return Build{}, fmt.Errorf("%w: asked for pipeline %d, the API answered %d", ErrForgeAPI, d.PipelineID, p.ID)
		}
		if p.Status != "success" {
			return Build{}, fmt.Errorf("%w: %s is %q", ErrNotSuccessful, what, p.Status)
		}
		if err := untrustedPipeline(p); err != nil {
			return Build{}, err
		}
		kind := webhook.RefBranch
		if p.Tag != nil && *p.Tag {
			kind = webhook.RefTag
		}
		if b.RefKind, err = settleRef(r, p.Ref, kind, what); err != nil {
			return Build{}, err
		}
		if err := sameCommit(d, p.SHA, what); err != nil {
			return Build{}, err
		}
		b.Ref, b.Commit, b.WebURL = p.Ref, strings.ToLower(p.SHA), p.WebURL
		if d.JobID > 0 {
			if err := getJob(d.JobID); err != nil {
				return Build{}, err
			}
			if job.Pipeline == nil || job.Pipeline.ID != p.ID {
				return Build{}, fmt.Errorf("%w: job %d is not part of %s", ErrUntrusted, d.JobID, what)
			}
		} else {
			jobs, err := c.glJobs(ctx, proj, p.ID)
			if err != nil {
				return Build{}, err
			}
			if job, err = pickJob(jobs, r.Job, what); err != nil {
				return Build{}, err
			}
		}
	case d.JobID > 0:
		if err := getJob(d.JobID); err != nil {
			return Build{}, err
		}
		what := "job " + itoa(job.ID)
		if d.PipelineID > 0 && (job.Pipeline == nil || job.Pipeline.ID != d.PipelineID) {
			return Build{}, fmt.Errorf("%w: %s is not part of pipeline %d", ErrUntrusted, what, d.PipelineID)
		}
		if strings.HasPrefix(job.Ref, "refs/merge-requests/") {
			return Build{}, fmt.Errorf("%w: %s builds a merge request (ref %q)", ErrUntrusted, what, job.Ref)
		}
		kind := webhook.RefBranch
		if job.Tag {
			kind = webhook.RefTag
		}
		if b.RefKind, err = settleRef(r, job.Ref, kind, what); err != nil {
			return Build{}, err
		}
		if err := sameCommit(d, job.commit(), what); err != nil {
			return Build{}, err
		}
		b.Ref, b.Commit, b.WebURL = job.Ref, job.commit(), job.WebURL
	default:
		return Build{}, fmt.Errorf("%w: the gitlab delivery names no pipeline or job", ErrNoArtifact)
	}

	what := fmt.Sprintf("job %d (%s)", job.ID, job.Name)
	if job.Status != "success" {
		return Build{}, fmt.Errorf("%w: %s is %q", ErrNotSuccessful, what, job.Status)
	}
	if r.Job != "" && job.Name != r.Job {
		return Build{}, fmt.Errorf("%w: %s is not the configured job %q", ErrNoArtifact, what, r.Job)
	}
	if !job.hasArtifacts() {
		return Build{}, fmt.Errorf("%w: %s has no artifacts archive (did it expire? does the job declare artifacts: paths: [dist/]?)", ErrNoArtifact, what)
	}
	if max := c.s.maxSize() + zipSlack; job.ArtifactsFile.Size > max {
		return Build{}, fmt.Errorf("%w: %s's artifacts are %d bytes, the limit is %d (max_size)", ErrTooLarge, what, job.ArtifactsFile.Size, max)
	}
	u, err := c.endpoint("/projects/"+proj+"/jobs/"+itoa(job.ID)+"/artifacts", nil)
	if err != nil {
		return Build{}, err
	}
	got, err := c.fetchZip(ctx, u, dir)
	if err != nil {
		return Build{}, fmt.Errorf("%s: %w", what, err)
	}
	b.DebPath, b.Expect = got.DebPath, got.Expect
	return b, nil
}

// glJobs lists a pipeline's successful jobs, following X-Next-Page.
func (c *conn) glJobs(ctx context.Context, proj string, pipeline int64) ([]glJob, error) {
	var all []glJob
	page := "1"
	for range maxPages {
		q := url.Values{"scope[]": {"success"}, "per_page": {"100"}, "page": {page}}
		h, err := c.glGet(ctx, "/projects/"+proj+"/pipelines/"+itoa(pipeline)+"/jobs", q, func(raw []byte) error {
			js, err := parseGitLabJobs(raw)
			all = append(all, js...)
			return err
		})
		if err != nil {
			return nil, err
		}
		next := ""
		if v := h["X-Next-Page"]; len(v) > 0 {
			next = strings.TrimSpace(v[0])
		}
		if _, err := strconv.Atoi(next); err != nil || next == page {
			break
		}
		page = next
	}
	return all, nil
}

// pickJob chooses the job whose artifacts hold the .deb: the configured
// job (the newest try of it), else the one successful job with artifacts.
func pickJob(jobs []glJob, name, what string) (glJob, error) {
	var best glJob
	names := map[string]bool{}
	for _, j := range jobs {
		if j.Status != "success" || (name != "" && j.Name != name) || (name == "" && !j.hasArtifacts()) {
			continue
		}
		names[j.Name] = true
		if j.ID > best.ID {
			best = j
		}
	}
	switch {
	case len(names) == 0 && name != "":
		return best, fmt.Errorf("%w: %s has no successful job named %q", ErrNoArtifact, what, name)
	case len(names) == 0:
		return best, fmt.Errorf("%w: %s has no successful job with artifacts", ErrNoArtifact, what)
	case len(names) > 1:
		list := make([]string, 0, len(names))
		for n := range names {
			list = append(list, n)
		}
		slices.Sort(list)
		return best, fmt.Errorf("%w: %s has %d successful jobs with artifacts %v: set job to the one that builds the .deb", ErrNoArtifact, what, len(list), list)
	}
	return best, nil
}

func (c *conn) pollGitLab(ctx context.Context, limit int) ([]webhook.Delivery, error) {
	if c.s.Project == "" {
		return nil, fmt.Errorf("gitlab source: polling needs project")
	}
	proj := url.PathEscape(c.s.Project)
	r := c.s.Rules
	found := map[int64]webhook.Delivery{}
	list := func(q url.Values, kind webhook.RefKind) error {
		q.Set("status", "success")
		q.Set("order_by", "id")
		q.Set("sort", "desc")
		q.Set("per_page", strconv.Itoa(limit))
		var ps []glPipeline
		_, err := c.glGet(ctx, "/projects/"+proj+"/pipelines", q, func(raw []byte) error {
			return json.Unmarshal(raw, &ps)
		})
		if err != nil {
			return err
		}
		for _, p := range ps {
			k := kind
			if p.Tag != nil {
				k = webhook.RefBranch
				if *p.Tag {
					k = webhook.RefTag
				}
			}
			if p.ID <= 0 || p.Status != "success" || untrustedPipeline(p) != nil || !r.Allows(p.Ref, k) {
				continue
			}
			found[p.ID] = webhook.Delivery{
				Source: webhook.GitLab, ID: "poll:gitlab:" + itoa(p.ID), Event: webhook.EventPipeline,
				Project: c.s.Project, Ref: p.Ref, RefKind: k, Commit: strings.ToLower(p.SHA),
				Status: "success", WebURL: p.WebURL, PipelineID: p.ID, JobName: r.Job,
			}
		}
		return nil
	}
	for _, br := range r.Branches {
		if err := list(url.Values{"ref": {br}}, webhook.RefBranch); err != nil {
			return nil, fmt.Errorf("poll gitlab %s branch %s: %w", c.s.Project, br, err)
		}
	}
	if len(r.Tags) > 0 {
		if err := list(url.Values{"scope": {"tags"}}, webhook.RefTag); err != nil {
			return nil, fmt.Errorf("poll gitlab %s tags: %w", c.s.Project, err)
		}
	}
	return newest(found, limit), nil
}

// newest returns the deliveries by pipeline or run ID, newest first.
func newest(found map[int64]webhook.Delivery, limit int) []webhook.Delivery {
	ids := make([]int64, 0, len(found))
	for id := range found {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	if len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([]webhook.Delivery, 0, len(ids))
	for _, id := range ids {
		out = append(out, found[id])
	}
	return out
}
