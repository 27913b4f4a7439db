package labforge

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
)

// Sources a build can be published to.
const (
	SourceGitLab = "gitlab"
	SourceGitHub = "github"
)

// File is one entry of an artifact archive.
type File struct {
	Name string // path inside the zip, e.g. dist/pysite_0.2.0_amd64.deb
	Data []byte
}

// Build describes a build to publish as a finished pipeline (GitLab) or
// workflow run (GitHub).
type Build struct {
	Source string // SourceGitLab or SourceGitHub
	Ref    string // branch or tag name; "main" when empty
	Tag    bool   // Ref is a tag
	Commit string // 40 hex; a random one when empty
	// Status is the outcome: "success" when empty, else e.g. "failed"
	// (GitLab) or "failure" (GitHub).
	Status string
	// Event is what triggered it: "push" when empty; e.g. "pull_request"
	// (GitHub) or "merge_request_event" (GitLab).
	Event string
	// HeadRepo is the repository a GitHub run built, for a fork's run;
	// empty means the forge's own repository.
	HeadRepo string
	// Files are the artifact archive's entries; none means no artifact.
	Files []File
}

// Published says where a build went.
type Published struct {
	Source string `json:"source"`
	// ID is the pipeline (GitLab) or run (GitHub) ID.
	ID int64 `json:"id"`
	// Artifact is the GitLab job or the GitHub artifact holding the files.
	Artifact int64  `json:"artifact"`
	Commit   string `json:"commit"`
	Ref      string `json:"ref"`
	Tag      bool   `json:"tag,omitempty"`
	Status   string `json:"status"`
	// WebURL is the pipeline's or run's page.
	WebURL string `json:"web_url"`
}

// Publish records b as a finished build with its artifact archive.
func (f *Forge) Publish(b Build) (Published, error) {
	if b.Ref == "" {
		b.Ref = "main"
	}
	if b.Event == "" {
		b.Event = "push"
	}
	if b.Commit == "" {
		c, err := randomHex(20)
		if err != nil {
			return Published{}, err
		}
		b.Commit = c
	}
	var zipData []byte
	if len(b.Files) > 0 {
		var err error
		if zipData, err = zipFiles(b.Files, f.now()); err != nil {
			return Published{}, err
		}
	}
	var out Published
	err := f.update(func(s *State) error {
		id := s.NextID
		s.NextID += 2
		name := ""
		if zipData != nil {
			name = fmt.Sprintf("artifact-%d.zip", id+1)
			if err := writeAtomic(filepath.Join(f.dir, name), zipData, 0o600); err != nil {
				return err
			}
		}
		now := f.now().UTC()
		switch b.Source {
		case SourceGitLab:
			status := b.Status
			if status == "" {
				status = "success"
			}
			p := Pipeline{ID: id, IID: int64(len(s.Pipelines) + 1), JobID: id + 1, Ref: b.Ref, Tag: b.Tag,
				SHA: b.Commit, Status: status, Source: b.Event, Created: now, Artifact: name, ArtifactSize: int64(len(zipData))}
			s.Pipelines = append(s.Pipelines, p)
			out = Published{Source: b.Source, ID: p.ID, Artifact: p.JobID, Commit: p.SHA, Ref: p.Ref, Tag: p.Tag,
				Status: p.Status, WebURL: gitlabPipelineURL(s.Config, p.ID)}
		case SourceGitHub:
			concl := b.Status
			if concl == "" {
				concl = "success"
			}
			r := Run{ID: id, RunNumber: int64(len(s.Runs) + 1), ArtifactID: id + 1, HeadBranch: b.Ref, HeadSHA: b.Commit,
				Event: b.Event, Conclusion: concl, HeadRepo: b.HeadRepo, Created: now, Artifact: name, ArtifactSize: int64(len(zipData))}
			if zipData != nil {
				sum := sha256.Sum256(zipData)
				r.ArtifactDigest = "sha256:" + hex.EncodeToString(sum[:])
				key, err := randomKey()
				if err != nil {
					return err
				}
				r.BlobKey = key
			}
			s.Runs = append(s.Runs, r)
			out = Published{Source: b.Source, ID: r.ID, Artifact: r.ArtifactID, Commit: r.HeadSHA, Ref: r.HeadBranch, Tag: b.Tag,
				Status: r.Conclusion, WebURL: githubRunURL(s.Config, r.ID)}
		default:
			return fmt.Errorf("publish: unknown source %q: use %s or %s", b.Source, SourceGitLab, SourceGitHub)
		}
		return nil
	})
	return out, err
}

func zipFiles(files []File, now time.Time) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: now})
		if err != nil {
			return nil, fmt.Errorf("artifact zip: %w", err)
		}
		if _, err := w.Write(f.Data); err != nil {
			return nil, fmt.Errorf("artifact zip: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("artifact zip: %w", err)
	}
	return buf.Bytes(), nil
}

// DebOptions shape the files DebFiles publishes next to a .deb.
type DebOptions struct {
	// SigningKey ("ed25519-private:...") signs the .deb into a .sig; empty
	// publishes no signature.
	SigningKey string
	// Checksum, when set, is published instead of the .deb's real SHA-256
	// (a wrong checksum).
	Checksum string
	// NoChecksum leaves the .sha256 out.
	NoChecksum bool
}

// DebFiles returns the archive entries `tandem ci init` pipelines publish
// for the .deb at path: dist/NAME.deb, dist/NAME.deb.sha256 (sha256sum's
// output) and, when signing, dist/NAME.deb.sig. It also returns the .deb's
// real SHA-256.
func DebFiles(path string, o DebOptions) ([]File, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("publish %s: %w", path, err)
	}
	base := filepath.Base(path)
	if !strings.HasSuffix(base, ".deb") {
		return nil, "", fmt.Errorf("publish %s: not a .deb file", path)
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	files := []File{{Name: "dist/" + base, Data: data}}
	if !o.NoChecksum {
		published := digest
		if o.Checksum != "" {
			published = o.Checksum
		}
		files = append(files, File{Name: "dist/" + base + ".sha256", Data: []byte(published + "  " + base + "\n")})
	}
	if o.SigningKey != "" {
		priv, err := artifact.ParsePrivateKey(o.SigningKey)
		if err != nil {
			return nil, "", fmt.Errorf("publish %s: %w", path, err)
		}
		sig, err := artifact.Sign(priv, digest)
		if err != nil {
			return nil, "", fmt.Errorf("publish %s: %w", path, err)
		}
		files = append(files, File{Name: "dist/" + base + ".sig", Data: sig})
	}
	return files, digest, nil
}
