package webhook

import (
	"strconv"
	"strings"
)

// githubRepo is the repository object of GitHub, Gitea and Forgejo.
type githubRepo struct {
	FullName string `json:"full_name"`
}

// githubRun is a workflow run as GitHub's workflow_run payload carries it
// (octokit/webhooks workflow_run/completed), and as Gitea's and Forgejo's
// action events carry it in the same shape.
type githubRun struct {
	ID             int64       `json:"id"`
	Status         string      `json:"status"`
	Conclusion     string      `json:"conclusion"`
	HeadBranch     string      `json:"head_branch"`
	HeadSHA        string      `json:"head_sha"`
	Event          string      `json:"event"`
	HTMLURL        string      `json:"html_url"`
	ArtifactsURL   string      `json:"artifacts_url"`
	HeadRepository *githubRepo `json:"head_repository"`
}

type githubPayload struct {
	Action      string      `json:"action"`
	WorkflowRun *githubRun  `json:"workflow_run"` // workflow_run
	Run         *githubRun  `json:"run"`          // Forgejo action_run
	Repository  *githubRepo `json:"repository"`
	Ref         string      `json:"ref"`   // push
	After       string      `json:"after"` // push
}

// parseGitHubLike handles GitHub, Gitea and Forgejo, which share payloads.
func parseGitHubLike(d *Delivery, event string, body []byte) error {
	switch event {
	case "workflow_run", "action_run", "push":
	case "":
		return malformed("no event header (X-GitHub-Event, X-Gitea-Event or X-Forgejo-Event)")
	case "ping":
		return irrelevant("ping: the webhook is set up")
	case "check_suite", "check_run":
		return irrelevant("%s events are not handled: subscribe the webhook to workflow runs", event)
	default:
		return irrelevant("event %q is not handled (subscribe to workflow runs)", event)
	}
	var p githubPayload
	if err := decode(body, &p); err != nil {
		return err
	}
	if p.Repository == nil || p.Repository.FullName == "" {
		return malformed("payload lacks repository.full_name")
	}
	d.Project = p.Repository.FullName
	if event == "push" {
		return parsePush(d, p)
	}
	run := p.WorkflowRun
	d.Event = EventWorkflowRun
	if event == "action_run" {
		run, d.Event = p.Run, EventActionRun
	}
	if run == nil {
		return malformed("%s payload lacks its run object", event)
	}
	d.RunID, d.Ref, d.Commit = run.ID, run.HeadBranch, strings.ToLower(run.HeadSHA)
	d.WebURL, d.ArtifactsURL = run.HTMLURL, run.ArtifactsURL
	d.Status = run.Conclusion
	if d.Status == "" {
		d.Status = run.Status // Forgejo's run carries the outcome in status
	}
	if d.RunID <= 0 || d.Ref == "" || d.Commit == "" {
		return malformed("run lacks id, head_branch or head_sha")
	}
	if event == "workflow_run" && p.Action != "completed" {
		return irrelevant("workflow run %d is %s, not completed", run.ID, p.Action)
	}
	if d.Status != "success" {
		return irrelevant("workflow run %d concluded %q; only success deploys", run.ID, d.Status)
	}
	// A pull request's run builds someone else's code, possibly from a
	// fork whose branch has an allowed name: never deploy it.
	if strings.HasPrefix(run.Event, "pull_request") {
		return irrelevant("workflow run %d was triggered by %s, not a push", run.ID, run.Event)
	}
	if run.HeadRepository != nil && run.HeadRepository.FullName != "" && run.HeadRepository.FullName != d.Project {
		return irrelevant("workflow run %d built %s, not %s", run.ID, run.HeadRepository.FullName, d.Project)
	}
	return nil
}

// parsePush reads a Gitea/Forgejo push: only a hint that a build may
// follow; the fetcher looks up the commit's successful run by API.
func parsePush(d *Delivery, p githubPayload) error {
	d.Event = EventPush
	d.Ref, d.RefKind = refFromGit(p.Ref)
	d.Commit = strings.ToLower(p.After)
	if d.RefKind == RefUnknown || d.Ref == "" {
		return malformed("push ref %q is neither refs/heads/... nor refs/tags/...", p.Ref)
	}
	if strings.Trim(d.Commit, "0") == "" {
		return irrelevant("push deleted %s %q", d.RefKind, d.Ref)
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
