package forge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/webhook"
)

var actionKinds = []webhook.Source{webhook.GitLab, webhook.GitHub, webhook.Gitea, webhook.Forgejo}

var rules = webhook.Rules{Branches: []string{"main"}, Tags: []string{"v*"}, Job: "package"}

// deliveryFor is the webhook delivery a forge would send for b.
func deliveryFor(kind webhook.Source, b fakeBuild) webhook.Delivery {
	d := webhook.Delivery{Source: kind, ID: "d-1", Project: "site/pysite", Ref: b.Ref, Commit: b.SHA, Status: "success"}
	switch kind {
	case webhook.GitLab:
		d.Event, d.PipelineID, d.ProjectID, d.RefKind = webhook.EventPipeline, b.ID, 42, webhook.RefBranch
		if b.Tag {
			d.RefKind = webhook.RefTag
		}
	case webhook.Forgejo:
		d.Event, d.RunID = webhook.EventActionRun, b.ID
	default:
		d.Event, d.RunID = webhook.EventWorkflowRun, b.ID
	}
	return d
}

// TestConformance runs one table against every forge kind's fake.
func TestConformance(t *testing.T) {
	tests := []struct {
		name    string
		build   func(t *testing.T, b *fakeBuild)
		src     func(s *Source)
		deliver func(d *webhook.Delivery)
		skip    []webhook.Source
		want    error // sentinel; nil = success
		check   func(t *testing.T, b Build)
	}{
		{name: "success", check: func(t *testing.T, b Build) {
			if b.Ref != "main" || b.RefKind != webhook.RefBranch || b.Project != "site/pysite" || b.WebURL == "" || len(b.Commit) != 40 {
				t.Errorf("build = %+v", b)
			}
			if b.Expect.Signature != nil {
				t.Errorf("signature %q without a .sig", b.Expect.Signature)
			}
		}},
		{name: "signature published", build: func(t *testing.T, b *fakeBuild) { b.Arts[0].Zip = goodZip(t, true) }, check: func(t *testing.T, b Build) {
			if string(b.Expect.Signature) != "c2lnbmF0dXJl\n" {
				t.Errorf("signature = %q", b.Expect.Signature)
			}
		}},
		{name: "tag", build: func(t *testing.T, b *fakeBuild) { b.Ref, b.Tag = "v0.2.0", true }, check: func(t *testing.T, b Build) {
			if b.Ref != "v0.2.0" || b.RefKind != webhook.RefTag {
				t.Errorf("ref %q %q, want tag v0.2.0", b.Ref, b.RefKind)
			}
		}},
		{name: "failed", build: func(t *testing.T, b *fakeBuild) { b.Status = "failed" }, want: ErrNotSuccessful},
		{name: "running", build: func(t *testing.T, b *fakeBuild) { b.Status = "running" }, want: ErrNotSuccessful},
		{name: "branch not allowed", build: func(t *testing.T, b *fakeBuild) { b.Ref = "feature" }, want: ErrRefNotAllowed},
		{name: "tag not allowed", build: func(t *testing.T, b *fakeBuild) { b.Ref, b.Tag = "nightly", true }, want: ErrRefNotAllowed},
		{name: "pull request", build: func(t *testing.T, b *fakeBuild) {
			b.Event = "pull_request"
		}, want: ErrUntrusted},
		{name: "fork", build: func(t *testing.T, b *fakeBuild) { b.HeadRepo = "mallory/pysite" }, skip: []webhook.Source{webhook.GitLab, webhook.Gitea}, want: ErrUntrusted},
		{name: "bad token", src: func(s *Source) { s.Token = "wrong" }, want: ErrForgeAPI, check: nil},
		{name: "unknown id", deliver: func(d *webhook.Delivery) { d.PipelineID, d.RunID = 999, 999 }, want: ErrForgeAPI},
		{name: "no checksum", build: func(t *testing.T, b *fakeBuild) {
			b.Arts[0].Zip = makeZip(t, entry{"dist/" + debFile, debBody})
		}, want: ErrNoArtifact},
		{name: "two debs", build: func(t *testing.T, b *fakeBuild) {
			b.Arts[0].Zip = makeZip(t, entry{"dist/a.deb", "a"}, entry{"dist/b.deb", "b"}, entry{"dist/a.deb.sha256", sum("a")})
		}, want: ErrNoArtifact},
		{name: "zip slip", build: func(t *testing.T, b *fakeBuild) {
			b.Arts[0].Zip = makeZip(t, entry{"../../etc/" + debFile, debBody}, entry{"../../etc/" + debFile + ".sha256", sum(debBody)})
		}, want: ErrBadArchive},
		{name: "too large", src: func(s *Source) { s.MaxSize = 10 }, want: ErrTooLarge},
		{name: "no artifact of that name", src: func(s *Source) { s.Rules.Job = "docs" }, want: ErrNoArtifact},
		{name: "commit differs from the webhook", deliver: func(d *webhook.Delivery) { d.Commit = strings.Repeat("f", 40) }, want: ErrUntrusted},
		{name: "delivery of another project", deliver: func(d *webhook.Delivery) { d.Project, d.ProjectID = "mallory/pysite", 7 }, want: ErrUntrusted},
	}
	for _, kind := range actionKinds {
		t.Run(string(kind), func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if slices.Contains(tt.skip, kind) {
						t.Skipf("%s has no such case", kind)
					}
					f := newFakeForge(t, kind)
					b := fakeBuild{ID: 100, Ref: "main", Arts: []fakeArt{{ID: 1000, Name: "package", Zip: goodZip(t, false)}}}
					if kind == webhook.GitLab {
						b.Arts = append(b.Arts, fakeArt{ID: 999, Name: "test"}) // a job without artifacts
					}
					if tt.build != nil {
						tt.build(t, &b)
					}
					if kind == webhook.GitLab && b.Event == "pull_request" {
						b.Event = "merge_request_event"
					}
					f.add(b)
					src := f.source(rules)
					if tt.src != nil {
						tt.src(&src)
					}
					d := deliveryFor(kind, b)
					if tt.deliver != nil {
						tt.deliver(&d)
					}
					dir := t.TempDir()
					got, err := src.Fetch(t.Context(), d, dir)
					if tt.want != nil {
						if !errors.Is(err, tt.want) {
							t.Fatalf("Fetch error = %v, want %v", err, tt.want)
						}
						if tt.name == "bad token" {
							var ae *APIError
							if !errors.As(err, &ae) || ae.Status != 401 || !strings.Contains(err.Error(), "api_token_file") {
								t.Errorf("error %v: want a 401 APIError naming api_token_file", err)
							}
						}
						if tt.name == "unknown id" && !strings.Contains(err.Error(), "status 404") {
							t.Errorf("error %v lacks status 404", err)
						}
						entries, _ := os.ReadDir(dir)
						if len(entries) != 0 {
							t.Errorf("a failed Fetch left %v in dir", entries)
						}
						return
					}
					if err != nil {
						t.Fatalf("Fetch: %v", err)
					}
					if got.DebPath != filepath.Join(dir, debFile) {
						t.Errorf("DebPath = %s", got.DebPath)
					}
					if data, err := os.ReadFile(got.DebPath); err != nil || string(data) != debBody {
						t.Errorf("deb content %q, %v", data, err)
					}
					if got.Expect.SHA256 != sum(debBody) {
						t.Errorf("Expect.SHA256 = %s", got.Expect.SHA256)
					}
					if entries, _ := os.ReadDir(dir); len(entries) != 1 {
						t.Errorf("dir holds %v, want only the .deb", entries)
					}
					if tt.check != nil {
						tt.check(t, got)
					}
				})
			}
		})
	}
}

// TestPollConformance: Poll finds the newest successful builds on allowed
// refs, and a polled delivery fetches.
func TestPollConformance(t *testing.T) {
	for _, kind := range actionKinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFakeForge(t, kind)
			art := func(id int64) []fakeArt { return []fakeArt{{ID: id * 10, Name: "package", Zip: goodZip(t, false)}} }
			pr := "pull_request"
			if kind == webhook.GitLab {
				pr = "merge_request_event"
			}
			f.add(fakeBuild{ID: 101, Ref: "main", Arts: art(101)})
			f.add(fakeBuild{ID: 102, Ref: "feature", Arts: art(102)})
			f.add(fakeBuild{ID: 103, Ref: "main", Status: "failed", Arts: art(103)})
			f.add(fakeBuild{ID: 104, Ref: "v1.0", Tag: true, Arts: art(104)})
			f.add(fakeBuild{ID: 105, Ref: "main", Event: pr, Arts: art(105)})
			f.add(fakeBuild{ID: 106, Ref: "main", Arts: art(106)})
			src := f.source(rules)
			ds, err := src.Poll(t.Context(), 10)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, d := range ds {
				ids = append(ids, d.ID)
			}
			want := []string{"poll:" + string(kind) + ":106", "poll:" + string(kind) + ":104", "poll:" + string(kind) + ":101"}
			if !slices.Equal(ids, want) {
				t.Fatalf("Poll = %v, want %v", ids, want)
			}
			if ds[1].RefKind != webhook.RefTag || ds[0].RefKind != webhook.RefBranch || ds[0].Source != kind || ds[0].Commit == "" {
				t.Errorf("polled deliveries %+v", ds[:2])
			}
			b, err := src.Fetch(t.Context(), ds[0], t.TempDir())
			if err != nil || b.Ref != "main" {
				t.Fatalf("Fetch of a polled delivery: %+v, %v", b, err)
			}
			if ds, err := src.Poll(t.Context(), 1); err != nil || len(ds) != 1 || ds[0].ID != want[0] {
				t.Errorf("Poll(1) = %v, %v", ds, err)
			}
			bad := src
			bad.Token = "wrong"
			if _, err := bad.Poll(t.Context(), 5); !errors.Is(err, ErrForgeAPI) {
				t.Errorf("Poll with a bad token: %v", err)
			}
		})
	}
}

// TestGitHubRedirectDropsToken: the artifact zip redirects to another host,
// which must not see the token.
func TestGitHubRedirectDropsToken(t *testing.T) {
	f := newFakeForge(t, webhook.GitHub)
	f.add(fakeBuild{ID: 7, Ref: "main", Arts: []fakeArt{{ID: 70, Name: "package", Zip: goodZip(t, false)}}})
	if _, err := f.source(rules).Fetch(t.Context(), deliveryFor(webhook.GitHub, *f.builds[7]), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if len(f.blobAuth) != 1 || f.blobAuth[0] != "" {
		t.Fatalf("the storage host was sent credentials %q", f.blobAuth)
	}
}

// TestGiteaRedirectDropsToken: Gitea redirects to a signed URL on its own
// host; the signature is the credential there.
func TestGiteaRedirectDropsToken(t *testing.T) {
	f := newFakeForge(t, webhook.Gitea)
	f.add(fakeBuild{ID: 7, Ref: "main", Arts: []fakeArt{{ID: 70, Name: "package", Zip: goodZip(t, false)}}})
	if _, err := f.source(rules).Fetch(t.Context(), deliveryFor(webhook.Gitea, *f.builds[7]), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if len(f.blobAuth) != 1 || f.blobAuth[0] != "" {
		t.Fatalf("the signed URL was sent credentials %q", f.blobAuth)
	}
}

func TestGitLabRedirectDropsToken(t *testing.T) {
	f := newFakeForge(t, webhook.GitLab)
	f.redirectGitLab = true
	f.add(fakeBuild{ID: 7, Ref: "main", Arts: []fakeArt{{ID: 70, Name: "package", Zip: goodZip(t, false)}}})
	if _, err := f.source(rules).Fetch(t.Context(), deliveryFor(webhook.GitLab, *f.builds[7]), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if len(f.blobAuth) != 1 || f.blobAuth[0] != "" {
		t.Fatalf("the CDN was sent credentials %q", f.blobAuth)
	}
}

// TestPagination: the artifact or job is on a later page.
func TestPagination(t *testing.T) {
	for _, kind := range actionKinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFakeForge(t, kind)
			b := fakeBuild{ID: 5, Ref: "main"}
			for i := range 120 {
				b.Arts = append(b.Arts, fakeArt{ID: int64(1 + i), Name: "other", Zip: makeZip(t, entry{"x", "y"})})
			}
			b.Arts = append(b.Arts, fakeArt{ID: 500, Name: "package", Zip: goodZip(t, false)})
			f.add(b)
			got, err := f.source(rules).Fetch(t.Context(), deliveryFor(kind, b), t.TempDir())
			if err != nil || got.Expect.SHA256 != sum(debBody) {
				t.Fatalf("Fetch = %+v, %v", got, err)
			}
		})
	}
}

func TestGitLabJobs(t *testing.T) {
	f := newFakeForge(t, webhook.GitLab)
	f.add(fakeBuild{ID: 9, Ref: "main", Arts: []fakeArt{
		{ID: 90, Name: "package", Zip: makeZip(t, entry{"old.deb", "x"})}, // an earlier try
		{ID: 93, Name: "package", Zip: goodZip(t, false)},                 // the retry
		{ID: 94, Name: "package", Status: "failed", Zip: goodZip(t, false)},
		{ID: 95, Name: "lint"},
	}})
	b := *f.builds[9]
	src := f.source(rules)

	if got, err := src.Fetch(t.Context(), deliveryFor(webhook.GitLab, b), t.TempDir()); err != nil || got.Expect.SHA256 != sum(debBody) {
		t.Fatalf("newest try of the job: %+v, %v", got, err)
	}
	// The webhook named the job: it is checked against the pipeline.
	d := deliveryFor(webhook.GitLab, b)
	d.JobID = 93
	if _, err := src.Fetch(t.Context(), d, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	d.JobID = 94
	if _, err := src.Fetch(t.Context(), d, t.TempDir()); !errors.Is(err, ErrNotSuccessful) {
		t.Errorf("failed job: %v", err)
	}
	// A Job Hook delivery.
	j := webhook.Delivery{Source: webhook.GitLab, Event: webhook.EventJob, Project: "id:42", ProjectID: 42, JobID: 93, PipelineID: 9, Ref: "main", Commit: b.SHA}
	if got, err := src.Fetch(t.Context(), j, t.TempDir()); err != nil || got.Ref != "main" || got.Commit != b.SHA {
		t.Fatalf("job delivery: %+v, %v", got, err)
	}
	j.PipelineID = 8
	if _, err := src.Fetch(t.Context(), j, t.TempDir()); !errors.Is(err, ErrUntrusted) {
		t.Errorf("job of another pipeline: %v", err)
	}
	// No job configured: the one job with artifacts... there are two names.
	any := src
	any.Rules.Job = ""
	f.builds[9].Arts[3].Zip = goodZip(t, false)
	if _, err := any.Fetch(t.Context(), deliveryFor(webhook.GitLab, b), t.TempDir()); !errors.Is(err, ErrNoArtifact) || !strings.Contains(err.Error(), "set job") {
		t.Errorf("two jobs with artifacts and no job configured: %v", err)
	}
	// Numeric project configured.
	num := src
	num.Project = "42"
	if _, err := num.Fetch(t.Context(), deliveryFor(webhook.GitLab, b), t.TempDir()); err != nil {
		t.Errorf("numeric project: %v", err)
	}
	d = deliveryFor(webhook.GitLab, b)
	d.ProjectID = 43
	if _, err := num.Fetch(t.Context(), d, t.TempDir()); !errors.Is(err, ErrUntrusted) {
		t.Errorf("delivery of project 43 to project 42: %v", err)
	}
}

func TestGiteaPushFindsRun(t *testing.T) {
	for _, kind := range []webhook.Source{webhook.Gitea, webhook.Forgejo} {
		t.Run(string(kind), func(t *testing.T) {
			f := newFakeForge(t, kind)
			f.add(fakeBuild{ID: 11, Ref: "main", SHA: strings.Repeat("a", 40), Status: "failed"})
			f.add(fakeBuild{ID: 12, Ref: "main", SHA: strings.Repeat("a", 40), Arts: []fakeArt{{ID: 120, Name: "package", Zip: goodZip(t, false)}}})
			d := webhook.Delivery{Source: kind, Event: webhook.EventPush, Project: "site/pysite", Ref: "main", RefKind: webhook.RefBranch, Commit: strings.Repeat("a", 40)}
			got, err := f.source(rules).Fetch(t.Context(), d, t.TempDir())
			if err != nil || got.Commit != d.Commit {
				t.Fatalf("push delivery: %+v, %v", got, err)
			}
			d.Commit = strings.Repeat("b", 40)
			if _, err := f.source(rules).Fetch(t.Context(), d, t.TempDir()); !errors.Is(err, ErrNotSuccessful) {
				t.Errorf("push without a run yet: %v", err)
			}
		})
	}
}

func TestForgejoWithoutArtifactsAPI(t *testing.T) {
	f := newFakeForge(t, webhook.Forgejo)
	f.noArtifactsAPI = true
	f.add(fakeBuild{ID: 3, Ref: "main", Arts: []fakeArt{{ID: 30, Name: "package", Zip: goodZip(t, false)}}})
	_, err := f.source(rules).Fetch(t.Context(), deliveryFor(webhook.Forgejo, *f.builds[3]), t.TempDir())
	if !errors.Is(err, ErrForgeAPI) || !strings.Contains(err.Error(), "lack the actions artifacts API") || !strings.Contains(err.Error(), "generic source") {
		t.Fatalf("error %v does not say Forgejo lacks the API", err)
	}
}

func TestExpiredArtifact(t *testing.T) {
	f := newFakeForge(t, webhook.GitHub)
	f.add(fakeBuild{ID: 3, Ref: "main", Arts: []fakeArt{{ID: 30, Name: "package", Zip: goodZip(t, false), Expired: true}}})
	_, err := f.source(rules).Fetch(t.Context(), deliveryFor(webhook.GitHub, *f.builds[3]), t.TempDir())
	if !errors.Is(err, ErrNoArtifact) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired artifact: %v", err)
	}
}

func TestGeneric(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		switch r.URL.Path {
		case "/dl/" + debFile, "/download":
			w.Write([]byte(debBody))
		case "/dl/" + debFile + ".sig":
			w.Write([]byte("c2ln\n"))
		case "/big.sig":
			w.Write([]byte(strings.Repeat("x", maxSig+1)))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	rel := func() *webhook.Release {
		return &webhook.Release{Package: "pysite", Version: "1:0.2.0-1", URL: srv.URL + "/dl/" + debFile, SHA256: sum(debBody),
			SignatureURL: srv.URL + "/dl/" + debFile + ".sig", Ref: "main", RefType: "branch", Project: "site/pysite"}
	}
	src := Source{Kind: webhook.Generic, Rules: rules, HTTP: srv.Client(), Token: "never-sent"}
	tests := []struct {
		name  string
		edit  func(r *webhook.Release)
		src   func(s *Source)
		want  error
		check func(t *testing.T, b Build)
	}{
		{name: "ok", check: func(t *testing.T, b Build) {
			if filepath.Base(b.DebPath) != debFile || b.Expect.SHA256 != sum(debBody) || string(b.Expect.Signature) != "c2ln\n" || b.RefKind != webhook.RefBranch {
				t.Errorf("build %+v", b)
			}
		}},
		{name: "URL not naming a .deb", edit: func(r *webhook.Release) { r.URL = srv.URL + "/dl/" + debFile + "?x=1"; r.SignatureURL = "" }},
		{name: "tag by pattern, type unknown", edit: func(r *webhook.Release) { r.Ref, r.RefType = "v2", "" }, check: func(t *testing.T, b Build) {
			if b.RefKind != webhook.RefTag {
				t.Errorf("kind %q", b.RefKind)
			}
		}},
		{name: "ref not allowed", edit: func(r *webhook.Release) { r.Ref = "dev" }, want: ErrRefNotAllowed},
		{name: "operator's tandem deploy URL: no ref, no rules", src: func(s *Source) { s.Rules = webhook.Rules{} }, edit: func(r *webhook.Release) {
			*r = webhook.Release{URL: srv.URL + "/dl/" + debFile + "?token=x", SHA256: sum(debBody)}
		}, check: func(t *testing.T, b Build) {
			if filepath.Base(b.DebPath) != debFile || b.Ref != "" || b.Expect.SHA256 != sum(debBody) {
				t.Errorf("build %+v", b)
			}
		}},
		{name: "URL naming no .deb", src: func(s *Source) { s.Rules = webhook.Rules{} }, edit: func(r *webhook.Release) {
			*r = webhook.Release{URL: srv.URL + "/download?id=3", SHA256: sum(debBody)}
		}, check: func(t *testing.T, b Build) {
			if filepath.Base(b.DebPath) != "release.deb" {
				t.Errorf("saved as %s", b.DebPath)
			}
		}},
		{name: "bad digest", edit: func(r *webhook.Release) { r.SHA256 = "abc" }, want: ErrNoArtifact},
		{name: "not http", edit: func(r *webhook.Release) { r.URL = "file:///etc/passwd" }, want: ErrNoArtifact},
		{name: "404", edit: func(r *webhook.Release) { r.URL = srv.URL + "/dl/missing.deb" }, want: ErrForgeAPI},
		{name: "too large", src: func(s *Source) { s.MaxSize = 5 }, want: ErrTooLarge},
		{name: "signature too large", edit: func(r *webhook.Release) { r.SignatureURL = srv.URL + "/big.sig" }, want: ErrTooLarge},
		{name: "other project", src: func(s *Source) { s.Project = "site/other" }, want: ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rel()
			if tt.edit != nil {
				tt.edit(r)
			}
			s := src
			if tt.src != nil {
				tt.src(&s)
			}
			dir := t.TempDir()
			b, err := s.Fetch(t.Context(), webhook.Delivery{Source: webhook.Generic, Event: webhook.EventRelease, Release: r}, dir)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("error %v, want %v", err, tt.want)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("left %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(b.DebPath); string(data) != debBody {
				t.Errorf("deb %q", data)
			}
			if tt.check != nil {
				tt.check(t, b)
			}
		})
	}
	for _, a := range seen {
		if a != "" {
			t.Errorf("the generic source sent credentials %q", a)
		}
	}
	if ds, err := src.Poll(t.Context(), 5); err != nil || ds != nil {
		t.Errorf("generic Poll = %v, %v", ds, err)
	}
}

// TestRedirectToHTTPRefused: an https API never hands the download to
// plain http.
func TestRedirectToHTTPRefused(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("zip")) }))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/x", http.StatusFound)
	}))
	defer tlsSrv.Close()
	c := Source{Kind: webhook.GitHub, APIURL: tlsSrv.URL, Token: "t", Project: "o/r", HTTP: tlsSrv.Client()}.conn()
	_, err := c.get(t.Context(), tlsSrv.URL+"/repos/o/r/actions/artifacts/1/zip", true)
	if !errors.Is(err, ErrForgeAPI) || !strings.Contains(err.Error(), "https to http") {
		t.Fatalf("redirect to http: %v", err)
	}
	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/again", http.StatusFound) }))
	defer loop.Close()
	c = Source{Kind: webhook.GitHub, APIURL: loop.URL, Project: "o/r"}.conn()
	if _, err := c.get(t.Context(), loop.URL+"/x", true); !errors.Is(err, ErrForgeAPI) || !strings.Contains(err.Error(), "too many redirects") {
		t.Fatalf("redirect loop: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		s    Source
		want string
	}{
		{Source{Kind: webhook.GitLab, APIURL: "https://gitlab.example/api/v4", Project: "group/site"}, ""},
		{Source{Kind: webhook.GitLab, APIURL: "https://gitlab.example/api/v4", Project: "7"}, ""},
		{Source{Kind: webhook.GitHub, APIURL: "https://api.github.example", Project: "o/r"}, ""},
		{Source{Kind: webhook.Generic}, ""},
		{Source{Kind: webhook.GitHub, APIURL: "ftp://x", Project: "o/r"}, "must be an http(s) URL"},
		{Source{Kind: webhook.Gitea, APIURL: "https://gitea.example/api/v1", Project: "o"}, `must be "owner/repo"`},
		{Source{Kind: webhook.Forgejo, APIURL: "https://forgejo.example/api/v1"}, "project is required"},
		{Source{Kind: "svn"}, "unknown source type"},
		{Source{Kind: webhook.Generic, Rules: webhook.Rules{Tags: []string{"["}}}, "tag pattern"},
	}
	for _, tt := range tests {
		err := tt.s.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.s, err, tt.want)
		}
	}
}

func TestSourceRedactsToken(t *testing.T) {
	s := Source{Kind: webhook.GitHub, APIURL: "https://api.github.example", Token: "ghp_secret", Project: "o/r"}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "source", s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), buf.String()} {
		if strings.Contains(out, "ghp_secret") {
			t.Errorf("token printed: %s", out)
		}
		if !strings.Contains(out, "o/r") {
			t.Errorf("project missing: %s", out)
		}
	}
}

// TestRetry: a 502 or 429 from the API is tried again; a 404 is not.
func TestRetry(t *testing.T) {
	f := newFakeForge(t, webhook.GitHub)
	f.add(fakeBuild{ID: 7, Ref: "main", Arts: []fakeArt{{ID: 70, Name: "package", Zip: goodZip(t, false)}}})
	var calls int
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		switch {
		case calls == 1:
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case calls == 2:
			http.Error(w, "slow down", http.StatusTooManyRequests)
		default:
			f.api.Config.Handler.ServeHTTP(w, r)
		}
	}))
	defer flaky.Close()
	src := f.source(rules)
	src.APIURL = flaky.URL
	if _, err := src.Fetch(t.Context(), deliveryFor(webhook.GitHub, *f.builds[7]), t.TempDir()); err != nil {
		t.Fatalf("Fetch after a 502 and a 429: %v", err)
	}
	calls = 10
	d := deliveryFor(webhook.GitHub, *f.builds[7])
	d.RunID = 404
	before := len(f.apiPaths)
	if _, err := src.Fetch(t.Context(), d, t.TempDir()); !errors.Is(err, ErrForgeAPI) || len(f.apiPaths) != before+1 {
		t.Fatalf("404: %v after %d requests", err, len(f.apiPaths)-before)
	}
}
