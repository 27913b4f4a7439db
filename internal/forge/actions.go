package forge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// ghRepo is a repository object of GitHub, Gitea and Forgejo.
type ghRepo struct {
	FullName string `json:"full_name"`
}

// ghRun is a workflow run as GitHub's and Gitea's API return it, with
// Forgejo's own fields of its ActionRun beside them.
type ghRun struct {
	ID             int64   `json:"id"`
	Status         string  `json:"status"`
	Conclusion     string  `json:"conclusion"`
	HeadBranch     string  `json:"head_branch"`
	HeadSHA        string  `json:"head_sha"`
	Event          string  `json:"event"`
	HTMLURL        string  `json:"html_url"`
	Path           string  `json:"path"` // Gitea: "build.yml@refs/tags/v1"
	Repository     *ghRepo `json:"repository"`
	HeadRepository *ghRepo `json:"head_repository"`

	// Forgejo's ActionRun.
	PrettyRef         string `json:"prettyref"`
	CommitSHA         string `json:"commit_sha"`
	IsForkPullRequest bool   `json:"is_fork_pull_request"`
	EventPayload      string `json:"event_payload"`
}

type ghRuns struct {
	TotalCount   int64   `json:"total_count"`
	WorkflowRuns []ghRun `json:"workflow_runs"`
}

type ghArtifact struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	SizeInBytes int64  `json:"size_in_bytes"`
	Expired     bool   `json:"expired"`
}

type ghArtifacts struct {
	TotalCount int64        `json:"total_count"`
	Artifacts  []ghArtifact `json:"artifacts"`
}

// run is a run normalized across the three forges.
type run struct {
	ID       int64
	Success  bool
	State    string // for messages
	Ref      string
	RefKind  webhook.RefKind
	SHA      string
	Event    string
	Fork     bool
	Repo     string // repository.full_name
	HeadRepo string // head_repository.full_name
	WebURL   string
}

// normalize reads a run the way kind's API means it.
func (r ghRun) normalize(kind webhook.Source) run {
	n := run{ID: r.ID, Event: r.Event, Fork: r.IsForkPullRequest, WebURL: r.HTMLURL}
	n.SHA = strings.ToLower(r.HeadSHA)
	if n.SHA == "" {
		n.SHA = strings.ToLower(r.CommitSHA)
	}
	if r.Repository != nil {
		n.Repo = r.Repository.FullName
	}
	if r.HeadRepository != nil {
		n.HeadRepo = r.HeadRepository.FullName
	}
	switch {
	case r.Conclusion != "":
		n.Success = r.Status == "completed" && r.Conclusion == "success"
		n.State = r.Status + "/" + r.Conclusion
	case kind != webhook.GitHub:
		// Forgejo's run carries the outcome in its status.
		n.Success = r.Status == "success"
		n.State = r.Status
	default:
		n.State = r.Status
	}
	n.Ref = r.HeadBranch
	if kind == webhook.Forgejo && n.Ref == "" {
		n.Ref = r.PrettyRef
	}
	// Gitea's path ends with the full ref (its head_branch is empty for a
	// tag's run); Forgejo's event payload has it. GitHub says neither: the
	// kind stays unknown and the rules settle it.
	full := ""
	if _, after, ok := strings.Cut(r.Path, "@"); ok {
		full = after
	} else if kind == webhook.Forgejo && r.EventPayload != "" {
		var p struct {
			Ref string `json:"ref"`
		}
		if json.Unmarshal([]byte(r.EventPayload), &p) == nil {
			full = p.Ref
		}
	}
	if name, k := refFromGit(full); k != webhook.RefUnknown && (n.Ref == "" || n.Ref == name) {
		n.Ref, n.RefKind = name, k
	}
	return n
}

func refFromGit(ref string) (string, webhook.RefKind) {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return b, webhook.RefBranch
	}
	if t, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return t, webhook.RefTag
	}
	return ref, webhook.RefUnknown
}

// parseRun, parseRuns and parseArtifacts decode API answers; the fuzzers
// drive them.
func parseRun(b []byte, kind webhook.Source) (run, error) {
	var r ghRun
	if err := json.Unmarshal(b, &r); err != nil {
		return run{}, fmt.Errorf("%w: run: %v", ErrForgeAPI, err)
	}
	if r.ID <= 0 {
		return run{}, fmt.Errorf("%w: run without an id", ErrForgeAPI)
	}
	return r.normalize(kind), nil
}

func parseRuns(b []byte, kind webhook.Source) ([]run, error) {
	var rs ghRuns
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("%w: run list: %v", ErrForgeAPI, err)
	}
	out := make([]run, 0, len(rs.WorkflowRuns))
	for _, r := range rs.WorkflowRuns {
		if r.ID > 0 {
			out = append(out, r.normalize(kind))
		}
	}
	return out, nil
}

// parseArtifacts reads a page of a run's artifacts: GitHub's and Gitea's
// {"total_count", "artifacts"}, or a bare array as some Forgejo versions
// answer. total is -1 when the answer does not say.
func parseArtifacts(b []byte) (arts []ghArtifact, total int64, err error) {
	trimmed := strings.TrimSpace(string(b))
	if strings.HasPrefix(trimmed, "[") {
		if err := json.Unmarshal(b, &arts); err != nil {
			return nil, 0, fmt.Errorf("%w: artifact list: %v", ErrForgeAPI, err)
		}
		return arts, -1, nil
	}
	var a ghArtifacts
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, 0, fmt.Errorf("%w: artifact list: %v", ErrForgeAPI, err)
	}
	return a.Artifacts, a.TotalCount, nil
}

// repoPath is /repos/{owner}/{repo}, escaped.
func (c *conn) repoPath() (string, error) {
	owner, repo, err := ownerRepo(c.s.Project)
	if err != nil {
		return "", fmt.Errorf("%s source: %w", c.s.Kind, err)
	}
	return "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo), nil
}

// pageQuery sets a page size the way the kind's API reads it.
func (c *conn) pageQuery(q url.Values, n int) url.Values {
	q.Set("per_page", strconv.Itoa(n))
	if c.s.Kind != webhook.GitHub {
		q.Set("limit", strconv.Itoa(n)) // Gitea and Forgejo page with page/limit
	}
	return q
}

// trusted checks that a run is a push build of the configured repository.
func (c *conn) trusted(r run, what string) error {
	switch {
	case strings.HasPrefix(r.Event, "pull_request"):
		return fmt.Errorf("%w: %s was triggered by %s: a pull request's code never deploys", ErrUntrusted, what, r.Event)
	case r.Fork:
		return fmt.Errorf("%w: %s builds a pull request from a fork", ErrUntrusted, what)
	case r.Repo != "" && !strings.EqualFold(r.Repo, c.s.Project):
		return fmt.Errorf("%w: %s belongs to %s, the source is configured for %s", ErrUntrusted, what, r.Repo, c.s.Project)
	case r.HeadRepo != "" && r.Repo != "" && !strings.EqualFold(r.HeadRepo, r.Repo):
		return fmt.Errorf("%w: %s built %s, a fork of %s", ErrUntrusted, what, r.HeadRepo, r.Repo)
	}
	return nil
}

func (c *conn) fetchActions(ctx context.Context, d webhook.Delivery, dir string) (Build, error) {
	repo, err := c.repoPath()
	if err != nil {
		return Build{}, err
	}
	if d.Project != "" && !strings.EqualFold(d.Project, c.s.Project) {
		return Build{}, fmt.Errorf("%w: the delivery is from %s, the source is configured for %s", ErrUntrusted, d.Project, c.s.Project)
	}
	var r run
	switch {
	case d.RunID > 0:
		u, err := c.endpoint(repo+"/actions/runs/"+itoa(d.RunID), nil)
		if err != nil {
			return Build{}, err
		}
		var raw json.RawMessage
		if _, err := c.getJSON(ctx, u, &raw); err != nil {
			return Build{}, err
		}
		if r, err = parseRun(raw, c.s.Kind); err != nil {
			return Build{}, err
		}
		if r.ID != d.RunID {
			return Build{}, fmt.Errorf("%w: asked for run %d, the API answered %d", ErrForgeAPI, d.RunID, r.ID)
		}
	case d.Commit != "":
		// A push: find the commit's successful run.
		if r, err = c.runForCommit(ctx, repo, d.Commit); err != nil {
			return Build{}, err
		}
	default:
		return Build{}, fmt.Errorf("%w: the %s delivery names no run or commit", ErrNoArtifact, c.s.Kind)
	}
	what := "run " + itoa(r.ID)
	if !r.Success {
		return Build{}, fmt.Errorf("%w: %s is %q", ErrNotSuccessful, what, r.State)
	}
	if err := c.trusted(r, what); err != nil {
		return Build{}, err
	}
	b := Build{Ref: r.Ref, Commit: r.SHA, Project: c.s.Project, WebURL: r.WebURL}
	if b.RefKind, err = settleRef(c.s.Rules, r.Ref, r.RefKind, what); err != nil {
		return Build{}, err
	}
	if err := sameCommit(d, r.SHA, what); err != nil {
		return Build{}, err
	}
	arts, err := c.artifacts(ctx, repo, r.ID)
	if err != nil {
		return Build{}, err
	}
	a, err := pickArtifact(arts, c.s.Rules.Job, what)
	if err != nil {
		return Build{}, err
	}
	if max := c.s.maxSize() + zipSlack; a.SizeInBytes > max {
		return Build{}, fmt.Errorf("%w: artifact %q of %s is %d bytes, the limit is %d (max_size)", ErrTooLarge, a.Name, what, a.SizeInBytes, max)
	}
	// The download URL is built from the configured API, never taken from
	// the answer.
	u, err := c.endpoint(repo+"/actions/artifacts/"+itoa(a.ID)+"/zip", nil)
	if err != nil {
		return Build{}, err
	}
	got, err := c.fetchZip(ctx, u, dir)
	if err != nil {
		return Build{}, fmt.Errorf("artifact %q of %s: %w", a.Name, what, err)
	}
	b.DebPath, b.Expect = got.DebPath, got.Expect
	return b, nil
}

// runForCommit finds the newest successful run of a commit.
func (c *conn) runForCommit(ctx context.Context, repo, sha string) (run, error) {
	q := c.pageQuery(url.Values{"head_sha": {sha}, "status": {"success"}}, 30)
	u, err := c.endpoint(repo+"/actions/runs", q)
	if err != nil {
		return run{}, err
	}
	var raw json.RawMessage
	if _, err := c.getJSON(ctx, u, &raw); err != nil {
		return run{}, err
	}
	runs, err := parseRuns(raw, c.s.Kind)
	if err != nil {
		return run{}, err
	}
	var best run
	for _, r := range runs {
		if r.Success && strings.EqualFold(r.SHA, sha) && r.ID > best.ID {
			best = r
		}
	}
	if best.ID == 0 {
		return run{}, fmt.Errorf("%w: commit %s has no successful run yet (the poll fallback picks it up once one succeeds)", ErrNotSuccessful, sha)
	}
	return best, nil
}

// artifacts lists a run's artifacts, page by page.
func (c *conn) artifacts(ctx context.Context, repo string, id int64) ([]ghArtifact, error) {
	const size = 50 // Gitea's and Forgejo's default maximum page size
	var all []ghArtifact
	for page := 1; page <= maxPages; page++ {
		q := c.pageQuery(url.Values{"page": {strconv.Itoa(page)}}, size)
		u, err := c.endpoint(repo+"/actions/runs/"+itoa(id)+"/artifacts", q)
		if err != nil {
			return nil, err
		}
		var raw json.RawMessage
		if _, err := c.getJSON(ctx, u, &raw); err != nil {
			var ae *APIError
			if c.s.Kind != webhook.GitHub && errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				ae.Hint += fmt.Sprintf("; this %s may lack the actions artifacts API (GET /repos/{owner}/{repo}/actions/runs/{run}/artifacts; Gitea has it since 1.24): upgrade it, or announce builds through the generic source (a signed release URL)", c.s.Kind)
			}
			return nil, err
		}
		arts, total, err := parseArtifacts(raw)
		if err != nil {
			return nil, err
		}
		all = append(all, arts...)
		if len(arts) == 0 || (total >= 0 && int64(len(all)) >= total) || (total < 0 && len(arts) < size) {
			break
		}
	}
	return all, nil
}

// pickArtifact chooses the artifact holding the .deb: the one named job
// (the newest upload of it), else the run's only unexpired artifact.
func pickArtifact(arts []ghArtifact, name, what string) (ghArtifact, error) {
	var best ghArtifact
	var live, expired []string
	for _, a := range arts {
		if a.Expired {
			expired = append(expired, a.Name)
			continue
		}
		live = append(live, a.Name)
		if (name == "" || a.Name == name) && a.ID > best.ID {
			best = a
		}
	}
	switch {
	case name != "" && best.ID == 0 && slices.Contains(expired, name):
		return best, fmt.Errorf("%w: artifact %q of %s has expired", ErrNoArtifact, name, what)
	case name != "" && best.ID == 0:
		return best, fmt.Errorf("%w: %s has no artifact named %q (it has %v): set job to the artifact's name", ErrNoArtifact, what, name, live)
	case name == "" && len(live) == 0:
		return best, fmt.Errorf("%w: %s has no unexpired artifact (expired: %v)", ErrNoArtifact, what, expired)
	case name == "" && len(live) > 1:
		return best, fmt.Errorf("%w: %s has %d artifacts %v: set job to the name of the one holding the .deb", ErrNoArtifact, what, len(live), live)
	}
	return best, nil
}

func (c *conn) pollActions(ctx context.Context, limit int) ([]webhook.Delivery, error) {
	repo, err := c.repoPath()
	if err != nil {
		return nil, err
	}
	r := c.s.Rules
	event := webhook.EventWorkflowRun
	if c.s.Kind == webhook.Forgejo {
		event = webhook.EventActionRun
	}
	found := map[int64]webhook.Delivery{}
	list := func(q url.Values) error {
		q.Set("status", "success")
		u, err := c.endpoint(repo+"/actions/runs", c.pageQuery(q, limit))
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := c.getJSON(ctx, u, &raw); err != nil {
			return err
		}
		runs, err := parseRuns(raw, c.s.Kind)
		if err != nil {
			return err
		}
		for _, run := range runs {
			if !run.Success || c.trusted(run, "") != nil {
				continue
			}
			kind, err := settleRef(r, run.Ref, run.RefKind, "")
			if err != nil {
				continue
			}
			found[run.ID] = webhook.Delivery{
				Source: c.s.Kind, ID: "poll:" + string(c.s.Kind) + ":" + itoa(run.ID), Event: event,
				Project: c.s.Project, Ref: run.Ref, RefKind: kind, Commit: run.SHA,
				Status: "success", WebURL: run.WebURL, RunID: run.ID,
			}
		}
		return nil
	}
	for _, br := range r.Branches {
		if err := list(url.Values{"branch": {br}}); err != nil {
			return nil, fmt.Errorf("poll %s %s branch %s: %w", c.s.Kind, c.s.Project, br, err)
		}
	}
	if len(r.Tags) > 0 {
		if err := list(url.Values{"event": {"push"}}); err != nil {
			return nil, fmt.Errorf("poll %s %s tags: %w", c.s.Kind, c.s.Project, err)
		}
	}
	return newest(found, limit), nil
}
