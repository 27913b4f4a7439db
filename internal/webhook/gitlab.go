package webhook

import "strings"

// gitlabProject is the project object of GitLab's hook payloads.
type gitlabProject struct {
	ID                int64  `json:"id"`
	PathWithNamespace string `json:"path_with_namespace"`
	WebURL            string `json:"web_url"`
}

// gitlabPipeline is the part of a Pipeline Hook payload we read
// (webhook_events.md §Pipeline events).
type gitlabPipeline struct {
	ObjectKind       string `json:"object_kind"`
	ObjectAttributes struct {
		ID     int64  `json:"id"`
		Ref    string `json:"ref"`
		Tag    bool   `json:"tag"`
		SHA    string `json:"sha"`
		Status string `json:"status"`
		URL    string `json:"url"`
	} `json:"object_attributes"`
	Project gitlabProject `json:"project"`
	Builds  []struct {
		ID            int64  `json:"id"`
		Name          string `json:"name"`
		Status        string `json:"status"`
		ArtifactsFile struct {
			Filename string `json:"filename"`
		} `json:"artifacts_file"`
	} `json:"builds"`
}

// gitlabJob is the part of a Job Hook payload we read
// (webhook_events.md §Job events). Its commit.id is the pipeline's ID, so
// pipeline_id is read instead.
type gitlabJob struct {
	ObjectKind  string        `json:"object_kind"`
	Ref         string        `json:"ref"`
	Tag         bool          `json:"tag"`
	SHA         string        `json:"sha"`
	BuildID     int64         `json:"build_id"`
	BuildName   string        `json:"build_name"`
	BuildStatus string        `json:"build_status"`
	PipelineID  int64         `json:"pipeline_id"`
	ProjectID   int64         `json:"project_id"`
	Project     gitlabProject `json:"project"`
}

func parseGitLab(d *Delivery, event string, body []byte, job string) error {
	switch event {
	case "Pipeline Hook":
		return parseGitLabPipeline(d, body, job)
	case "Job Hook":
		return parseGitLabJob(d, body, job)
	case "":
		return malformed("no X-Gitlab-Event header")
	}
	return irrelevant("GitLab event %q is not handled (enable Pipeline events or Job events)", event)
}

func parseGitLabPipeline(d *Delivery, body []byte, job string) error {
	var p gitlabPipeline
	if err := decode(body, &p); err != nil {
		return err
	}
	if p.ObjectKind != "pipeline" {
		return malformed("Pipeline Hook with object_kind %q", p.ObjectKind)
	}
	a := p.ObjectAttributes
	d.Event, d.PipelineID, d.Commit, d.Status, d.WebURL = EventPipeline, a.ID, strings.ToLower(a.SHA), a.Status, a.URL
	d.Project, d.ProjectID = p.Project.PathWithNamespace, p.Project.ID
	d.Ref, d.RefKind = a.Ref, RefBranch
	if a.Tag {
		d.RefKind = RefTag
	}
	if d.PipelineID <= 0 || d.Project == "" || d.Ref == "" || d.Commit == "" {
		return malformed("pipeline payload lacks object_attributes.id, ref, sha or project.path_with_namespace")
	}
	if a.Status != "success" {
		return irrelevant("pipeline %d is %s; only a successful pipeline deploys", a.ID, a.Status)
	}
	var found []int
	for i, b := range p.Builds {
		if b.Status != "success" {
			continue
		}
		if job != "" && b.Name == job || job == "" && b.ArtifactsFile.Filename != "" {
			found = append(found, i)
		}
	}
	switch {
	case len(found) == 1:
		b := p.Builds[found[0]]
		d.JobID, d.JobName = b.ID, b.Name
	case job != "" && len(found) == 0:
		return irrelevant("pipeline %d has no successful job named %q", a.ID, job)
	case job != "":
		// A retried job appears once per try: take the newest.
		best := p.Builds[found[0]]
		for _, i := range found[1:] {
			if p.Builds[i].ID > best.ID {
				best = p.Builds[i]
			}
		}
		d.JobID, d.JobName = best.ID, best.Name
	case len(found) == 0:
		return irrelevant("pipeline %d has no successful job with artifacts", a.ID)
	default:
		return irrelevant("pipeline %d has %d successful jobs with artifacts; name the one holding the .deb (job)", a.ID, len(found))
	}
	return nil
}

func parseGitLabJob(d *Delivery, body []byte, job string) error {
	var j gitlabJob
	if err := decode(body, &j); err != nil {
		return err
	}
	if j.ObjectKind != "build" {
		return malformed("Job Hook with object_kind %q", j.ObjectKind)
	}
	d.Event, d.Commit, d.Status = EventJob, strings.ToLower(j.SHA), j.BuildStatus
	d.PipelineID, d.JobID, d.JobName = j.PipelineID, j.BuildID, j.BuildName
	d.Project, d.ProjectID = j.Project.PathWithNamespace, j.ProjectID
	if d.ProjectID == 0 {
		d.ProjectID = j.Project.ID
	}
	if d.Project == "" && d.ProjectID > 0 {
		// Before GitLab 16.3 the Job Hook had no project object.
		d.Project = "id:" + itoa(d.ProjectID)
	}
	d.WebURL = j.Project.WebURL
	d.Ref, d.RefKind = j.Ref, RefBranch
	if j.Tag {
		d.RefKind = RefTag
	}
	if d.JobID <= 0 || d.Project == "" || d.Ref == "" || d.Commit == "" {
		return malformed("job payload lacks build_id, project, ref or sha")
	}
	if j.BuildStatus != "success" {
		return irrelevant("job %d is %s; only a successful job deploys", j.BuildID, j.BuildStatus)
	}
	if job != "" && j.BuildName != job {
		return irrelevant("job %q is not the configured job %q", j.BuildName, job)
	}
	return nil
}
