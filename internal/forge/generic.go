package forge

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// maxSig bounds a downloaded .sig file.
const maxSig = 4 << 10

// fetchGeneric downloads the .deb a generic (Standard Webhooks) delivery
// announced, or an operator named with `tandem deploy URL --sha256`. The
// delivery was signed with the source's secret (or came from the
// operator), so its SHA-256 is what the .deb must hash to; the URL is only
// where to get it.
func (c *conn) fetchGeneric(ctx context.Context, d webhook.Delivery, dir string) (Build, error) {
	rel := d.Release
	if rel == nil {
		return Build{}, fmt.Errorf("%w: the generic delivery has no release", ErrNoArtifact)
	}
	digest := strings.ToLower(rel.SHA256)
	if b, err := hex.DecodeString(digest); err != nil || len(b) != 32 {
		return Build{}, fmt.Errorf("%w: release sha256 %q is not 64 hex digits", ErrNoArtifact, rel.SHA256)
	}
	kind := webhook.RefUnknown
	switch rel.RefType {
	case "branch":
		kind = webhook.RefBranch
	case "tag":
		kind = webhook.RefTag
	}
	if c.s.Project != "" && rel.Project != "" && !strings.EqualFold(rel.Project, c.s.Project) {
		return Build{}, fmt.Errorf("%w: the release is of project %s, the source is configured for %s", ErrUntrusted, rel.Project, c.s.Project)
	}
	b := Build{Ref: rel.Ref, Commit: strings.ToLower(rel.Commit), Project: rel.Project, WebURL: redact(rel.URL)}
	var err error
	// A release announced by a webhook always names its ref (the intake
	// requires it) and must be allowed; an operator's `tandem deploy URL`
	// names none and is not subject to the source's ref rules.
	if rel.Ref != "" {
		if b.RefKind, err = settleRef(c.s.Rules, rel.Ref, kind, "release "+rel.Package+" "+rel.Version); err != nil {
			return Build{}, err
		}
	}
	u, err := httpURL(rel.URL, "url")
	if err != nil {
		return Build{}, err
	}
	name := path.Base(u.Path)
	if !debName.MatchString(name) {
		ver := rel.Version // without the epoch
		if i := strings.IndexByte(ver, ':'); i >= 0 {
			ver = rel.Version[i+1:]
		}
		name = rel.Package + "_" + ver + ".deb"
		if !debName.MatchString(name) {
			name = "release.deb" // the control file names it; Verify reads that
		}
	}
	out := filepath.Join(dir, name)
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return Build{}, fmt.Errorf("fetch: %w (give Fetch an empty directory)", err)
	}
	_, err = c.download(ctx, u.String(), false, f, c.s.maxSize())
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("fetch: write %s: %w", out, cerr)
	}
	if err != nil {
		os.Remove(out)
		return Build{}, err
	}
	b.DebPath, b.Expect = out, artifact.Expect{SHA256: digest}
	if rel.SignatureURL != "" {
		su, err := httpURL(rel.SignatureURL, "signature_url")
		if err != nil {
			os.Remove(out)
			return Build{}, err
		}
		if b.Expect.Signature, err = c.small(ctx, su.String(), maxSig); err != nil {
			os.Remove(out)
			return Build{}, fmt.Errorf("signature of release %s %s: %w", rel.Package, rel.Version, err)
		}
	}
	return b, nil
}

// httpURL checks a URL from a delivery.
func httpURL(raw, field string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: release %s %q is not an http(s) URL", ErrNoArtifact, field, redact(raw))
	}
	return u, nil
}

// small downloads a small file into memory.
func (c *conn) small(ctx context.Context, rawURL string, max int64) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := c.download(ctx, rawURL, false, &buf, max); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
