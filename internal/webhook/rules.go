package webhook

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Rules say which deliveries of a source may deploy. They are checked only
// after the delivery verified.
type Rules struct {
	// Branches that may deploy, by exact name (e.g. "main").
	Branches []string
	// Tags that may deploy, as path.Match patterns (e.g. "v*").
	Tags []string
	// Job is the GitLab job whose artifacts hold the .deb, or the GitHub
	// or Gitea artifact's name. "" means: the one successful job with
	// artifacts (GitLab), any artifact (GitHub, resolved when fetching).
	Job string
	// Project is the source's configured project ("group/site", a GitLab
	// numeric ID, or "owner/repo"); "" accepts any. A delivery naming
	// another project is answered 200 with the reason (the forge's API
	// would refuse to fetch it anyway).
	Project string
}

// Validate checks the tag patterns, naming the bad one.
func (r Rules) Validate() error {
	for _, p := range r.Tags {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("tag pattern %q: %w (use path.Match syntax, e.g. v* or release-[0-9]*)", p, err)
		}
	}
	for _, b := range r.Branches {
		if b == "" || strings.HasPrefix(b, "refs/") {
			return fmt.Errorf("branch %q: give the bare branch name, e.g. main", b)
		}
	}
	return nil
}

// Check returns nil when d's ref may deploy, else an error wrapping
// ErrIrrelevant that says which ref and what is allowed.
func (r Rules) Check(d Delivery) error {
	if !r.ownProject(d) {
		return fmt.Errorf("%w: the delivery is from project %s, this source is configured for %s", ErrIrrelevant, d.projectName(), r.Project)
	}
	if r.Allows(d.Ref, d.RefKind) {
		return nil
	}
	if len(r.Branches) == 0 && len(r.Tags) == 0 {
		return fmt.Errorf("%w: no branch or tag may deploy from this source (configure branches or tags)", ErrIrrelevant)
	}
	return fmt.Errorf("%w: %s %q may not deploy (allowed branches %v, tag patterns %v)", ErrIrrelevant, d.RefKind.orRef(), d.Ref, r.Branches, r.Tags)
}

// Allows reports whether ref may deploy. A ref of unknown kind (GitHub's
// workflow_run names a tag or a branch the same way) is allowed if it
// matches either list; the forge's API settles it before fetching.
func (r Rules) Allows(ref string, kind RefKind) bool {
	if ref == "" {
		return false
	}
	if kind != RefTag && slices.Contains(r.Branches, ref) {
		return true
	}
	if kind != RefBranch {
		for _, p := range r.Tags {
			if ok, _ := path.Match(p, ref); ok {
				return true
			}
		}
	}
	return false
}

// ownProject reports whether d names the configured project, or names
// none (a generic release may leave it out).
func (r Rules) ownProject(d Delivery) bool {
	if r.Project == "" || d.Project == "" && d.ProjectID == 0 {
		return true
	}
	if id, err := strconv.ParseInt(r.Project, 10, 64); err == nil {
		return d.ProjectID == id || d.Project == "id:"+r.Project
	}
	if strings.HasPrefix(d.Project, "id:") {
		return true // an older GitLab's Job Hook names the ID only: the API settles it
	}
	return strings.EqualFold(d.Project, r.Project)
}

func (d Delivery) projectName() string {
	if d.Project == "" {
		return "id:" + itoa(d.ProjectID)
	}
	return d.Project
}

func (k RefKind) orRef() string {
	if k == RefUnknown {
		return "ref"
	}
	return string(k)
}
