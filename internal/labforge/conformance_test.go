package labforge_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/forge"
	"github.com/tandem-ha/tandem/internal/labforge"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// TestForgeClientAgainstFake runs delivery's forge client (internal/forge)
// against the lab's fake forge, the way the lab uses them together: a
// build published with its webhook is verified and parsed by the intake,
// then fetched through the API; the poll finds it without a webhook; and
// what must be refused is refused.
func TestForgeClientAgainstFake(t *testing.T) {
	dir := t.TempDir()
	var f *labforge.Forge
	var c labforge.Config
	api := httptest.NewServer(nil)
	blob := httptest.NewServer(nil)
	defer api.Close()
	defer blob.Close()
	var err error
	if c, err = labforge.NewConfig(api.URL, strings.Replace(blob.URL, "127.0.0.1", "localhost", 1)); err != nil {
		t.Fatal(err)
	}
	if f, c, err = labforge.Init(dir, c); err != nil {
		t.Fatal(err)
	}
	api.Config.Handler, blob.Config.Handler = f.Handler(nil), f.Handler(nil)

	debPath := filepath.Join(t.TempDir(), "pysite_0.2.0_all.deb")
	if err := os.WriteFile(debPath, []byte("!<arch>\na deb's bytes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := webhook.Rules{Branches: []string{"main"}, Tags: []string{"v*"}, Job: labforge.JobName}
	sources := map[string]forge.Source{
		labforge.SourceGitLab: {Kind: webhook.GitLab, APIURL: api.URL + "/api/v4", Token: c.Token, Project: c.GitLabProject, Rules: rules},
		labforge.SourceGitHub: {Kind: webhook.GitHub, APIURL: api.URL + "/gh", Token: c.Token, Project: c.GitHubRepo, Rules: rules},
	}
	secrets := map[string]string{labforge.SourceGitLab: c.GitLabSecret, labforge.SourceGitHub: c.GitHubSecret}
	kinds := map[string]webhook.Source{labforge.SourceGitLab: webhook.GitLab, labforge.SourceGitHub: webhook.GitHub}

	tests := []struct {
		name   string
		source string
		b      labforge.Build
		o      labforge.DebOptions
		err    error // from Fetch
	}{
		{"gitlab", labforge.SourceGitLab, labforge.Build{Ref: "main"}, labforge.DebOptions{SigningKey: c.SigningKey}, nil},
		{"github", labforge.SourceGitHub, labforge.Build{Ref: "main"}, labforge.DebOptions{SigningKey: c.SigningKey}, nil},
		{"gitlab tag", labforge.SourceGitLab, labforge.Build{Ref: "v0.2.0", Tag: true}, labforge.DebOptions{}, nil},
		{"gitlab branch not allowed", labforge.SourceGitLab, labforge.Build{Ref: "dev"}, labforge.DebOptions{}, forge.ErrRefNotAllowed},
		{"github failed run", labforge.SourceGitHub, labforge.Build{Ref: "main", Status: "failure"}, labforge.DebOptions{}, forge.ErrNotSuccessful},
		{"github fork", labforge.SourceGitHub, labforge.Build{Ref: "main", Event: "pull_request", HeadRepo: "fork/pysite"}, labforge.DebOptions{}, forge.ErrUntrusted},
		{"gitlab no checksum", labforge.SourceGitLab, labforge.Build{Ref: "main"}, labforge.DebOptions{NoChecksum: true}, forge.ErrNoArtifact},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			files, digest, err := labforge.DebFiles(debPath, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			tc.b.Source, tc.b.Files = tc.source, files
			pub, err := f.Publish(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			// The delivery as the intake would have it; a failed or
			// disallowed build is irrelevant there, so build it by hand.
			var d webhook.Delivery
			if tc.err == nil {
				h, err := f.MakeHook(tc.source, pub.ID, labforge.HookOptions{})
				if err != nil {
					t.Fatal(err)
				}
				sec, _ := webhook.ParseSecrets([]byte(secrets[tc.source]), "test")
				in := webhook.Intake{Source: kinds[tc.source], Secrets: sec, Rules: rules}
				if d, err = in.Receive(h.Header, h.Body, time.Now()); err != nil {
					t.Fatalf("intake: %v", err)
				}
			} else {
				d = webhook.Delivery{Source: kinds[tc.source], ID: "x", Project: labforge.DefaultProject, Ref: pub.Ref,
					Commit: pub.Commit, Status: "success", RefKind: webhook.RefBranch}
				if tc.source == labforge.SourceGitLab {
					d.PipelineID, d.JobID, d.Event = pub.ID, pub.Artifact, webhook.EventPipeline
				} else {
					d.RunID, d.Event, d.RefKind = pub.ID, webhook.EventWorkflowRun, webhook.RefUnknown
				}
			}
			out := t.TempDir()
			b, err := sources[tc.source].Fetch(ctx, d, out)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Fetch: %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				t.Logf("refused: %v", err)
				return
			}
			got, err := os.ReadFile(b.DebPath)
			want, _ := os.ReadFile(debPath)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("fetched .deb %s differs (%v)", b.DebPath, err)
			}
			if b.Expect.SHA256 != digest || b.Commit != pub.Commit || b.Ref != pub.Ref {
				t.Errorf("build %+v, want sha256 %s commit %s ref %s", b, digest, pub.Commit, pub.Ref)
			}
			if (tc.o.SigningKey != "") != (b.Expect.Signature != nil) {
				t.Errorf("signature %q, signed %v", b.Expect.Signature, tc.o.SigningKey != "")
			}
			// The poll lists it, newest first, under its own ID.
			polled, err := sources[tc.source].Poll(ctx, 5)
			if err != nil {
				t.Fatalf("Poll: %v", err)
			}
			if len(polled) == 0 || polled[0].Commit != pub.Commit {
				t.Errorf("Poll = %+v, want the build %s first", polled, pub.Commit)
			}
		})
	}
}
