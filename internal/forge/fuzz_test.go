package forge

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// FuzzExtract: any archive either yields exactly one .deb inside dir, or an
// error wrapping a sentinel, and never writes outside dir.
func FuzzExtract(f *testing.F) {
	f.Add(goodZip(f, true))
	f.Add(makeZip(f, entry{"../x.deb", "x"}, entry{"../x.deb.sha256", sum("x")}))
	f.Add(makeZip(f, entry{"a.deb", "a"}, entry{"SHA256SUMS", sum("a") + "  a.deb\n"}))
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Fuzz(func(t *testing.T, b []byte) {
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		parent := t.TempDir()
		dir := filepath.Join(parent, "out")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := extractFrom(zr, dir, 1<<16)
		if err != nil {
			if !errors.Is(err, ErrBadArchive) && !errors.Is(err, ErrNoArtifact) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
		} else if filepath.Dir(got.DebPath) != dir || len(got.Expect.SHA256) != 64 {
			t.Fatalf("extracted %+v", got)
		}
		top, _ := os.ReadDir(parent)
		if len(top) != 1 {
			t.Fatalf("wrote outside dir: %v", top)
		}
		inside, _ := os.ReadDir(dir)
		if err == nil && len(inside) != 1 || err != nil && len(inside) != 0 {
			t.Fatalf("dir holds %v (err %v)", inside, err)
		}
	})
}

// FuzzParseGitLab: GitLab API answers never panic the parsers.
func FuzzParseGitLab(f *testing.F) {
	f.Add([]byte(`{"id":1,"status":"success","ref":"main","sha":"ab","tag":false,"source":"push","web_url":"u"}`))
	f.Add([]byte(`[{"id":2,"name":"package","status":"success","artifacts_file":{"filename":"a.zip","size":3},"pipeline":{"id":1}}]`))
	f.Add([]byte(`{"id":2,"commit":{"id":"AB"},"pipeline":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := parseGitLabPipeline(b); err == nil {
			if p.ID <= 0 {
				t.Fatal("pipeline without id accepted")
			}
			untrustedPipeline(p)
		} else if !errors.Is(err, ErrForgeAPI) {
			t.Fatal(err)
		}
		if j, err := parseGitLabJob(b); err == nil {
			j.commit()
			j.hasArtifacts()
		}
		if js, err := parseGitLabJobs(b); err == nil {
			pickJob(js, "", "p")
			pickJob(js, "package", "p")
		}
	})
}

// FuzzParseActions: GitHub, Gitea and Forgejo API answers never panic the
// parsers, and a run is successful only as each forge spells success.
func FuzzParseActions(f *testing.F) {
	f.Add([]byte(`{"id":1,"status":"completed","conclusion":"success","head_branch":"main","head_sha":"AB","event":"push","repository":{"full_name":"o/r"},"head_repository":{"full_name":"o/r"}}`))
	f.Add([]byte(`{"id":1,"status":"success","prettyref":"v1","commit_sha":"ab","event_payload":"{\"ref\":\"refs/tags/v1\"}","is_fork_pull_request":false}`))
	f.Add([]byte(`{"id":1,"status":"completed","conclusion":"success","head_branch":"","path":"b.yml@refs/tags/v1"}`))
	f.Add([]byte(`{"total_count":1,"workflow_runs":[{"id":3}],"artifacts":[{"id":4,"name":"package","size_in_bytes":5}]}`))
	f.Add([]byte(`[{"id":4,"name":"package","expired":true}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, kind := range []webhook.Source{webhook.GitHub, webhook.Gitea, webhook.Forgejo} {
			if r, err := parseRun(b, kind); err == nil {
				if r.Success && r.State != "completed/success" && !(kind != webhook.GitHub && r.State == "success") {
					t.Fatalf("%s run with state %q counted as success", kind, r.State)
				}
				(&conn{s: Source{Kind: kind, Project: "o/r"}}).trusted(r, "run")
				settleRef(webhook.Rules{Branches: []string{"main"}, Tags: []string{"v*"}}, r.Ref, r.RefKind, "run")
			}
			parseRuns(b, kind)
		}
		if arts, _, err := parseArtifacts(b); err == nil {
			pickArtifact(arts, "", "run")
			pickArtifact(arts, "package", "run")
		}
	})
}
