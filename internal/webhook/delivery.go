package webhook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// RefKind says whether a Delivery's Ref names a branch or a tag.
type RefKind string

// Ref kinds. RefUnknown is GitHub-style workflow runs, whose head_branch
// names a branch or a tag alike.
const (
	RefUnknown RefKind = ""
	RefBranch  RefKind = "branch"
	RefTag     RefKind = "tag"
)

// Event is the normalized kind of a delivery.
type Event string

// Events that can lead to a deploy.
const (
	EventPipeline    Event = "pipeline"     // GitLab Pipeline Hook, status success
	EventJob         Event = "job"          // GitLab Job Hook, status success
	EventWorkflowRun Event = "workflow_run" // GitHub or Gitea, completed with success
	EventActionRun   Event = "action_run"   // Forgejo action_run, success
	EventPush        Event = "push"         // Gitea/Forgejo push: a hint, no build result yet
	EventRelease     Event = "release"      // generic: a built .deb, described by Release
)

// Delivery is one verified webhook, normalized across forges. It is a
// hint: the forge's API is asked again before anything is fetched.
type Delivery struct {
	Source Source `json:"source,omitempty"`
	// ID is the forge's delivery ID (Idempotency-Key, X-GitHub-Delivery,
	// webhook-id...). When a forge sent none it is "body:" and the body's
	// SHA-256, so a resent body still dedupes.
	ID        string  `json:"id,omitempty"`
	Event     Event   `json:"event,omitempty"`
	Project   string  `json:"project,omitempty"`    // GitLab path_with_namespace, GitHub/Gitea owner/name
	ProjectID int64   `json:"project_id,omitempty"` // GitLab's numeric project ID (its API takes either)
	Ref       string  `json:"ref,omitempty"`        // bare branch or tag name, never refs/...
	RefKind   RefKind `json:"ref_kind,omitempty"`
	Commit    string  `json:"commit,omitempty"`  // full commit SHA, lowercase hex
	Status    string  `json:"status,omitempty"`  // the forge's own status word ("success"), "" for push
	WebURL    string  `json:"web_url,omitempty"` // the pipeline's or run's page, for logs

	PipelineID int64  `json:"pipeline_id,omitempty"` // GitLab pipeline
	JobID      int64  `json:"job_id,omitempty"`      // GitLab job whose artifacts hold the .deb (0: resolve by API)
	JobName    string `json:"job_name,omitempty"`
	RunID      int64  `json:"run_id,omitempty"` // GitHub/Gitea/Forgejo workflow or action run
	// ArtifactsURL is GitHub's (and Gitea's) API URL listing the run's
	// artifacts; the fetcher still picks the artifact by its ID from there.
	ArtifactsURL string `json:"artifacts_url,omitempty"`

	Release *Release `json:"release,omitempty"` // generic source only
}

// DedupeKeys returns the keys under which a delivery is a redelivery:
// first the forge's delivery ID, then project and commit (plus the .deb's
// digest when the delivery names it), so a second pipeline or a manual
// resend for the same build does nothing either.
func (d Delivery) DedupeKeys() []string {
	keys := []string{string(d.Source) + "/id/" + d.ID}
	if d.Project != "" && d.Commit != "" {
		k := string(d.Source) + "/commit/" + d.Project + "@" + d.Commit
		if d.Release != nil {
			k += "/" + d.Release.SHA256
		}
		keys = append(keys, k)
	} else if d.Release != nil {
		keys = append(keys, string(d.Source)+"/sha256/"+d.Release.SHA256)
	}
	return keys
}

// Parse reads a verified delivery's payload. Call it only after Verify.
// job is Rules.Job: the GitLab job (or artifact name) that holds the .deb.
// An event that cannot deploy returns an error wrapping ErrIrrelevant.
func Parse(src Source, h http.Header, body []byte, job string) (Delivery, error) {
	d := Delivery{Source: src, ID: deliveryID(src, h, body)}
	var err error
	switch src {
	case GitLab:
		err = parseGitLab(&d, h.Get("X-Gitlab-Event"), body, job)
	case GitHub:
		err = parseGitHubLike(&d, h.Get("X-GitHub-Event"), body)
	case Gitea:
		err = parseGitHubLike(&d, firstHeader(h, "X-Gitea-Event", "X-GitHub-Event"), body)
	case Forgejo:
		err = parseGitHubLike(&d, firstHeader(h, "X-Forgejo-Event", "X-Gitea-Event", "X-GitHub-Event"), body)
	case Generic:
		err = parseGeneric(&d, body)
	default:
		err = fmt.Errorf("%w: unknown source %q", ErrMalformed, src)
	}
	if err != nil {
		return d, err
	}
	if d.Commit != "" && !shaRe.MatchString(d.Commit) {
		return d, fmt.Errorf("%w: commit %q is not a full hex SHA", ErrMalformed, d.Commit)
	}
	return d, nil
}

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// deliveryID takes the header that stays the same across the forge's
// retries and manual resends.
func deliveryID(src Source, h http.Header, body []byte) string {
	var names []string
	switch src {
	case GitLab:
		names = []string{"Idempotency-Key", "Webhook-Id", "X-Gitlab-Event-UUID"}
	case GitHub:
		names = []string{"X-GitHub-Delivery"}
	case Gitea:
		names = []string{"X-Gitea-Delivery", "X-GitHub-Delivery"}
	case Forgejo:
		names = []string{"X-Forgejo-Delivery", "X-Gitea-Delivery", "X-GitHub-Delivery"}
	case Generic:
		names = []string{"Webhook-Id"}
	}
	if id := firstHeader(h, names...); id != "" && len(id) <= 200 {
		return id
	}
	sum := sha256.Sum256(body)
	return "body:" + hex.EncodeToString(sum[:])
}

// decode unmarshals a JSON object, reporting where it is malformed.
func decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	return nil
}

// refFromGit turns "refs/heads/main" or "refs/tags/v1" into a bare name.
func refFromGit(ref string) (string, RefKind) {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return b, RefBranch
	}
	if t, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return t, RefTag
	}
	return ref, RefUnknown
}

func irrelevant(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrIrrelevant, fmt.Sprintf(format, args...))
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
