package artifact

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/tandem-ha/tandem/internal/debversion"
)

// DefaultMaxSize is the default cap on a release .deb (256 MiB).
const DefaultMaxSize = 256 << 20

// Policy is what a node accepts. The zero MaxSize means DefaultMaxSize.
type Policy struct {
	MaxSize  int64
	Packages []string            // packages the cluster runs; empty allows none
	Arch     string              // the node's dpkg architecture, e.g. amd64
	Keys     []ed25519.PublicKey // pinned signing keys; when set a signature is required
}

// Expect is what the pipeline published next to the .deb.
type Expect struct {
	SHA256    string // hex, from ParseChecksum (or the generic webhook)
	Signature []byte // the .sig file, nil when none was published
}

// Release describes a verified .deb.
type Release struct {
	SHA256  string // lowercase hex
	Size    int64
	Control Control
}

// VerifyFile checks the .deb at path: its size, its digest against
// want.SHA256, the signature when keys are pinned, then its control fields
// against the policy (package and architecture; see Newer for the version).
func (p Policy) VerifyFile(path string, want Expect) (Release, error) {
	f, err := os.Open(path)
	if err != nil {
		return Release{}, fmt.Errorf("open artifact: %w", err)
	}
	defer f.Close()
	return p.Verify(f, want)
}

// Verify is VerifyFile on an open file: it reads f twice, once to hash,
// then from the start for the control file.
func (p Policy) Verify(f io.ReadSeeker, want Expect) (Release, error) {
	max := p.MaxSize
	if max <= 0 {
		max = DefaultMaxSize
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, max+1))
	if err != nil {
		return Release{}, fmt.Errorf("read artifact: %w", err)
	}
	if n > max {
		return Release{}, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	digest := hex.EncodeToString(h.Sum(nil))
	if !hexDigestRe.MatchString(want.SHA256) {
		return Release{}, fmt.Errorf("%w: no valid published SHA-256 to check against (got %q)", ErrChecksum, want.SHA256)
	}
	if !strings.EqualFold(digest, want.SHA256) {
		return Release{}, fmt.Errorf("%w: the file's is %s, the published one %s", ErrChecksum, digest, strings.ToLower(want.SHA256))
	}
	if len(p.Keys) > 0 {
		if want.Signature == nil {
			return Release{}, fmt.Errorf("%w: signing keys are pinned but no signature was published", ErrSignature)
		}
		if err := VerifySignature(want.Signature, digest, p.Keys); err != nil {
			return Release{}, err
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Release{}, fmt.Errorf("rewind artifact: %w", err)
	}
	c, err := ReadControl(f)
	if err != nil {
		return Release{}, err
	}
	rel := Release{SHA256: digest, Size: n, Control: c}
	return rel, p.Allow(c)
}

// Allow checks the control fields: a package the cluster runs, built for
// this node's architecture (or all), with a valid Debian version.
func (p Policy) Allow(c Control) error {
	if !slices.Contains(p.Packages, c.Package) {
		return fmt.Errorf("%w: package %s is not one the cluster runs (%v)", ErrNotAllowed, c.Package, p.Packages)
	}
	if c.Architecture != "all" && c.Architecture != p.Arch {
		return fmt.Errorf("%w: %s is built for %s, this node is %s", ErrNotAllowed, c.Package, c.Architecture, p.Arch)
	}
	if _, err := debversion.Parse(c.Version); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// Newer checks that version is newer than running (the installed version,
// "" when none is installed). A forced deploy skips this check.
func Newer(version, running string) error {
	if running == "" {
		return nil
	}
	c, err := debversion.Compare(version, running)
	if err != nil {
		return err
	}
	if c <= 0 {
		return fmt.Errorf("%w: %s is not newer than %s (use --force to deploy it anyway)", ErrNotNewer, version, running)
	}
	return nil
}
