package labforge

import (
	"errors"
	"os"
	"testing"

	"github.com/tandem-ha/tandem/internal/forge"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// TestForgeClient runs tandem's own forge client (internal/forge) against
// the lab's fake forge, as the lab's nodes do: poll, then fetch, for
// GitLab (by path and by numeric ID), GitHub and Gitea (the GitHub shapes
// under /api/v1), on a branch and on a tag, and the refusals the
// delivery scenarios rely on.
func TestForgeClient(t *testing.T) {
	fx := newFixture(t)
	c := fx.c
	rules := webhook.Rules{Branches: []string{"main"}, Tags: []string{"v*"}, Job: JobName}
	sources := []forge.Source{
		{Kind: webhook.GitLab, APIURL: c.BaseURL + "/api/v4", Token: c.Token, Project: c.GitLabProject, Rules: rules},
		{Kind: webhook.GitLab, APIURL: c.BaseURL + "/api/v4", Token: c.Token, Project: "7", Rules: rules},
		{Kind: webhook.GitHub, APIURL: c.BaseURL + "/gh", Token: c.Token, Project: c.GitHubRepo, Rules: rules},
		{Kind: webhook.Gitea, APIURL: c.BaseURL + "/api/v1", Token: c.Token, Project: c.GitHubRepo, Rules: rules},
	}
	for _, src := range sources {
		t.Run(string(src.Kind)+" "+src.Project, func(t *testing.T) {
			from := SourceGitHub
			if src.Kind == webhook.GitLab {
				from = SourceGitLab
			}
			for _, b := range []Build{{Source: from}, {Source: from, Ref: "v0.2.0", Tag: true}} {
				p := fx.publish(t, b)
				ds, err := src.Poll(t.Context(), 5)
				if err != nil || len(ds) == 0 {
					t.Fatalf("Poll: %v, %v", ds, err)
				}
				if d := ds[0]; d.PipelineID != p.ID && d.RunID != p.ID {
					t.Fatalf("newest polled build %+v, published %d", d, p.ID)
				}
				got, err := src.Fetch(t.Context(), ds[0], t.TempDir())
				if err != nil {
					t.Fatalf("Fetch %s: %v", p.Ref, err)
				}
				if _, err := os.Stat(got.DebPath); err != nil || got.Ref != p.Ref || got.Commit != p.Commit || got.Expect.Signature == nil {
					t.Fatalf("Fetch %s = %+v (%v)", p.Ref, got, err)
				}
			}
		})
	}

	// Refusals: a failed build, a fork's run, a bad token.
	gl, gh := sources[0], sources[2]
	failed := fx.publish(t, Build{Source: SourceGitLab, Status: "failed"})
	if _, err := gl.Fetch(t.Context(), webhook.Delivery{Source: webhook.GitLab, Event: webhook.EventPipeline, PipelineID: failed.ID}, t.TempDir()); !errors.Is(err, forge.ErrNotSuccessful) {
		t.Errorf("failed pipeline: %v", err)
	}
	fork := fx.publish(t, Build{Source: SourceGitHub, HeadRepo: "mallory/pysite"})
	if _, err := gh.Fetch(t.Context(), webhook.Delivery{Source: webhook.GitHub, Event: webhook.EventWorkflowRun, RunID: fork.ID}, t.TempDir()); !errors.Is(err, forge.ErrUntrusted) {
		t.Errorf("fork run: %v", err)
	}
	gh.Token = "wrong"
	if _, err := gh.Poll(t.Context(), 1); !errors.Is(err, forge.ErrForgeAPI) {
		t.Errorf("bad token: %v", err)
	}
}
