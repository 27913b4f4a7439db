package webhook

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// standardPrefix marks a Standard Webhooks secret: base64 after it.
const standardPrefix = "whsec_"

// Secrets are the secrets of one source that are active at once: a
// delivery verifies if any of them matches, so a secret is rotated by
// adding the new one, switching the forge, then removing the old one.
// Its String, GoString and LogValue never show the secrets.
type Secrets struct {
	list []secret
}

type secret struct {
	raw []byte // as configured: the HMAC key for GitHub/Gitea/Forgejo, the GitLab token
	key []byte // for a whsec_ secret, the decoded Standard Webhooks key; else nil
}

// ParseSecrets reads secrets one per line, as the caller loaded them from
// a file (never inline in the config). Blank lines and lines starting with
// '#' are skipped; surrounding spaces are trimmed. A "whsec_" secret must be
// valid base64 after its prefix. origin (e.g. the file's path) names the
// input in errors; the secrets themselves never appear in an error.
func ParseSecrets(text []byte, origin string) (Secrets, error) {
	var s Secrets
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sec := secret{raw: []byte(line)}
		if b64, ok := strings.CutPrefix(line, standardPrefix); ok {
			key, err := base64.StdEncoding.DecodeString(b64)
			if err != nil || len(key) == 0 {
				return Secrets{}, fmt.Errorf("%s line %d: a %s secret must be base64 after the prefix (as the forge shows it, e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)", origin, n, standardPrefix)
			}
			sec.key = key
		}
		s.list = append(s.list, sec)
	}
	if err := sc.Err(); err != nil {
		return Secrets{}, fmt.Errorf("%s: %w", origin, err)
	}
	if len(s.list) == 0 {
		return Secrets{}, fmt.Errorf("%s holds no secret: put one secret per line (blank lines and # comments are skipped)", origin)
	}
	return s, nil
}

// Len is the number of active secrets.
func (s Secrets) Len() int { return len(s.list) }

// String redacts: it shows only how many secrets there are.
func (s Secrets) String() string { return fmt.Sprintf("[%d secrets redacted]", len(s.list)) }

// GoString redacts too, so %#v cannot print a secret.
func (s Secrets) GoString() string { return s.String() }

// LogValue redacts for slog.
func (s Secrets) LogValue() slog.Value { return slog.StringValue(s.String()) }

// ReadBody reads a request body up to MaxBody. A longer body returns an
// error wrapping ErrTooLarge (answer 413) without reading further.
func ReadBody(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read webhook body: %w", err)
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxBody)
	}
	return body, nil
}
