// Package labforge is the lab's fake forge: one HTTP server that answers the
// GitLab and GitHub API endpoints tandem's delivery uses (a pipeline's or
// run's status, its jobs or artifacts, the artifact archive, and the list of
// successful builds the poll fallback reads), shaped as the forges document
// them, and that sends their webhooks (GitLab's Pipeline Hook, GitHub's
// workflow_run).
//
// Its state lives in a directory (forge.json plus one zip per artifact), so
// the server process `tandem lab up` starts in the lab's client namespace
// and a later `tandem lab push` in another process share it: Publish adds a
// build, the server sees it on its next request.
//
// URLs, relative to the server's base (e.g. http://10.77.0.2:8080):
//
//	/api/v4/...          GitLab, PRIVATE-TOKEN (or Authorization: Bearer)
//	/gh/repos/...        GitHub (API base .../gh), Authorization: Bearer or token
//	/api/v1/repos/...    Gitea/Forgejo, the GitHub-shaped actions endpoints, Authorization: token
//	/blob/KEY            where a GitHub artifact download redirects (served on
//	                     a second listener, as GitHub's storage is another host);
//	                     it refuses a request that still carries Authorization
package labforge

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
)

// Config is what a forge is set up with once; it is stored in forge.json.
type Config struct {
	// BaseURL is where the API listener answers, e.g. http://10.77.0.2:8080;
	// it appears in web_url, artifacts_url and archive_download_url fields.
	BaseURL string `json:"base_url"`
	// BlobURL is where artifact downloads redirect, e.g. http://10.77.0.2:8081.
	// Empty: BaseURL (the blob handler is then mounted on the API listener).
	BlobURL string `json:"blob_url,omitempty"`
	// Token is the API token every API request must carry.
	Token string `json:"token"`
	// GitLabProjectID and GitLabProject identify the GitLab project, which the
	// API accepts either as its numeric ID or its URL-encoded path.
	GitLabProjectID int64  `json:"gitlab_project_id"`
	GitLabProject   string `json:"gitlab_project"`
	// GitHubRepo is "owner/name" of the GitHub (and Gitea) repository.
	GitHubRepo string `json:"github_repo"`
	// GitLabSecret is the webhook's secret token (X-Gitlab-Token);
	// GitHubSecret signs GitHub's X-Hub-Signature-256.
	GitLabSecret string `json:"gitlab_secret"`
	GitHubSecret string `json:"github_secret"`
	// SigningKey is the lab's private release key (ed25519-private:...),
	// SigningPublic its public half, which the cluster pins.
	SigningKey    string `json:"signing_key"`
	SigningPublic string `json:"signing_public"`
}

// Defaults for a lab forge.
const (
	DefaultGitLabProjectID = 7
	DefaultProject         = "site/pysite"
	// JobName is the GitLab job and the GitHub artifact that hold the .deb.
	JobName = "package"
)

// NewConfig returns a Config for a forge at baseURL (blobs at blobURL) with
// fresh random secrets, token and signing key.
func NewConfig(baseURL, blobURL string) (Config, error) {
	c := Config{BaseURL: baseURL, BlobURL: blobURL, GitLabProjectID: DefaultGitLabProjectID,
		GitLabProject: DefaultProject, GitHubRepo: DefaultProject}
	var err error
	if c.Token, err = randomHex(20); err != nil {
		return c, err
	}
	if c.GitLabSecret, err = randomHex(24); err != nil {
		return c, err
	}
	if c.GitHubSecret, err = randomHex(24); err != nil {
		return c, err
	}
	if c.SigningPublic, c.SigningKey, err = artifact.GenerateKey(); err != nil {
		return c, fmt.Errorf("forge signing key: %w", err)
	}
	return c, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Pipeline is one GitLab pipeline with its single package job.
type Pipeline struct {
	ID      int64     `json:"id"`
	IID     int64     `json:"iid"`
	JobID   int64     `json:"job_id"`
	Ref     string    `json:"ref"`
	Tag     bool      `json:"tag"`
	SHA     string    `json:"sha"`
	Status  string    `json:"status"` // success, failed, running, ...
	Source  string    `json:"source"` // push, merge_request_event, ...
	Created time.Time `json:"created"`
	// Artifact is the zip's file name in the forge directory ("" = none).
	Artifact     string `json:"artifact,omitempty"`
	ArtifactSize int64  `json:"artifact_size,omitempty"`
}

// Run is one GitHub workflow run with its single artifact.
type Run struct {
	ID         int64     `json:"id"`
	RunNumber  int64     `json:"run_number"`
	ArtifactID int64     `json:"artifact_id"`
	HeadBranch string    `json:"head_branch"` // a branch or a tag name, as GitHub reports it
	HeadSHA    string    `json:"head_sha"`
	Event      string    `json:"event"`      // push, pull_request, ...
	Conclusion string    `json:"conclusion"` // success, failure, ...
	HeadRepo   string    `json:"head_repo"`  // a fork's owner/name for a fork run
	Created    time.Time `json:"created"`
	Artifact   string    `json:"artifact,omitempty"`
	// ArtifactSize and ArtifactDigest ("sha256:...") describe the zip.
	ArtifactSize   int64  `json:"artifact_size,omitempty"`
	ArtifactDigest string `json:"artifact_digest,omitempty"`
	// BlobKey names the run's artifact on the blob listener.
	BlobKey string `json:"blob_key,omitempty"`
}

// Hook is a webhook the forge built (and may send again: a replay).
type Hook struct {
	ID     string      `json:"id"` // the delivery ID it carries
	Source string      `json:"source"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
	// Build is the pipeline or run ID the hook announces.
	Build int64     `json:"build"`
	Made  time.Time `json:"made"`
}

// State is forge.json.
type State struct {
	Config    Config     `json:"config"`
	NextID    int64      `json:"next_id"`
	Pipelines []Pipeline `json:"pipelines"`
	Runs      []Run      `json:"runs"`
	// Hooks are the webhooks built so far, oldest first (the last few).
	Hooks []Hook `json:"hooks"`
}

// maxHooks bounds the hooks kept for replay.
const maxHooks = 50

// Forge is a handle on a forge directory. Every call reads the directory
// again, so several processes may share one forge.
type Forge struct {
	dir string
	now func() time.Time
}

// ErrNoForge is returned by Open for a directory Init never set up.
var ErrNoForge = errors.New("no forge set up in this directory")

func statePath(dir string) string { return filepath.Join(dir, "forge.json") }

// Init sets up a forge in dir with c, unless one is already there, and
// returns a handle on it and its (possibly existing) configuration.
func Init(dir string, c Config) (*Forge, Config, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, c, fmt.Errorf("forge directory: %w", err)
	}
	f := &Forge{dir: dir, now: time.Now}
	var out Config
	err := f.update(func(s *State) error {
		if s.Config.Token == "" {
			if c.Token == "" || c.BaseURL == "" {
				return errors.New("forge config needs a token and a base URL (use NewConfig)")
			}
			s.Config, s.NextID = c, 1000
		}
		out = s.Config
		return nil
	})
	if err != nil {
		return nil, c, err
	}
	return f, out, nil
}

// Open returns a handle on the forge set up in dir.
func Open(dir string) (*Forge, error) {
	f := &Forge{dir: dir, now: time.Now}
	if _, err := f.State(); err != nil {
		return nil, err
	}
	return f, nil
}

// Dir returns the forge's directory.
func (f *Forge) Dir() string { return f.dir }

// State reads forge.json.
func (f *Forge) State() (*State, error) {
	b, err := os.ReadFile(statePath(f.dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("forge in %s: %w (is the lab up? 'tandem lab up' sets it up)", f.dir, ErrNoForge)
	}
	if err != nil {
		return nil, fmt.Errorf("read forge state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", statePath(f.dir), err)
	}
	return &s, nil
}

// Config returns the forge's configuration.
func (f *Forge) Config() (Config, error) {
	s, err := f.State()
	if err != nil {
		return Config{}, err
	}
	return s.Config, nil
}

// update runs fn on the state under an exclusive lock and writes it back
// atomically: a reader sees the old or the new file, never half of one.
func (f *Forge) update(fn func(*State) error) error {
	lock, err := os.OpenFile(filepath.Join(f.dir, "forge.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock forge: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock forge: %w", err)
	}
	s := &State{}
	if cur, err := f.State(); err == nil {
		s = cur
	} else if !errors.Is(err, ErrNoForge) {
		return err
	}
	if err := fn(s); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode forge state: %w", err)
	}
	return writeAtomic(statePath(f.dir), b, 0o600)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func randomKey() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
