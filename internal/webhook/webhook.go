// Package webhook is delivery's intake of forge webhooks: it verifies a
// delivery's signature or token, then parses its payload into one
// normalized Delivery and applies the source's ref rules. Everything here is
// a pure function of (headers, body, now): no I/O, no clock, no logging, so
// the HTTP handler, `tandem webhook test` and the fuzzers share one path.
//
// Sources and what authenticates them:
//
//	gitlab   webhook-signature (Standard Webhooks, when GitLab's signing
//	         token is set) else X-Gitlab-Token, compared in constant time
//	github   X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>
//	gitea    X-Gitea-Signature: <hex HMAC-SHA256(secret, body)>, else
//	         X-Hub-Signature-256 (Gitea sends both)
//	forgejo  X-Forgejo-Signature, else X-Gitea-Signature, else
//	         X-Hub-Signature-256
//	generic  Standard Webhooks: webhook-id, webhook-timestamp (within
//	         Tolerance of now), webhook-signature "v1,<base64>" (several,
//	         space-separated) over "id.timestamp.body", whsec_ secrets
//
// Errors wrap one of the sentinels below so the HTTP layer can map them:
// ErrBadSignature and ErrStale to 401, ErrTooLarge to 413, ErrMalformed to
// 400 and ErrIrrelevant to 200 with the reason.
package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// Sentinel errors; every error of this package wraps exactly one.
var (
	ErrBadSignature = errors.New("webhook signature or token does not match any configured secret")
	ErrStale        = errors.New("webhook timestamp is outside the allowed clock skew")
	ErrTooLarge     = errors.New("webhook body is larger than the limit")
	ErrMalformed    = errors.New("webhook payload is malformed")
	ErrIrrelevant   = errors.New("webhook event does not call for a deploy")
)

// MaxBody is the largest body accepted (1 MiB). Read at most MaxBody+1
// bytes (see ReadBody) so an oversized body is detected, not truncated.
const MaxBody = 1 << 20

// Tolerance is the default allowed skew between a Standard Webhooks
// timestamp and now, in both directions.
const Tolerance = 5 * time.Minute

// Source names a kind of sender.
type Source string

// The sources this package understands.
const (
	GitLab  Source = "gitlab"
	GitHub  Source = "github"
	Gitea   Source = "gitea"
	Forgejo Source = "forgejo"
	Generic Source = "generic"
)

// Sources lists every known source, for configuration checks and help.
var Sources = []Source{GitLab, GitHub, Gitea, Forgejo, Generic}

// ParseSource checks a configured source name.
func ParseSource(s string) (Source, error) {
	if slices.Contains(Sources, Source(s)) {
		return Source(s), nil
	}
	return "", fmt.Errorf("unknown webhook source %q: use one of gitlab, github, gitea, forgejo, generic", s)
}

// Intake verifies, parses and filters the deliveries of one configured
// source. The zero Tolerance means the default (5 minutes).
type Intake struct {
	Source    Source
	Secrets   Secrets
	Rules     Rules
	Tolerance time.Duration
}

// Validate checks a configured intake when the configuration is loaded,
// so a source that could never verify a delivery is refused at start.
func (in Intake) Validate() error {
	if _, err := ParseSource(string(in.Source)); err != nil {
		return err
	}
	if in.Secrets.Len() == 0 {
		return fmt.Errorf("webhook source %s has no secret: point it at a file with one secret per line", in.Source)
	}
	if in.Source == Generic {
		for _, sec := range in.Secrets.list {
			if sec.key == nil {
				return fmt.Errorf("webhook source generic needs Standard Webhooks secrets written whsec_<base64>, one per line")
			}
		}
	}
	if in.Tolerance < 0 {
		return fmt.Errorf("webhook source %s: the timestamp tolerance must not be negative", in.Source)
	}
	return in.Rules.Validate()
}

// Receive is the whole intake of one delivery: size check, Verify, Parse,
// then the rules. On ErrIrrelevant the returned Delivery holds whatever was
// parsed, so the caller can log and answer it.
func (in Intake) Receive(h http.Header, body []byte, now time.Time) (Delivery, error) {
	if err := in.Verify(h, body, now); err != nil {
		return Delivery{}, err
	}
	d, err := Parse(in.Source, h, body, in.Rules.Job)
	if err != nil {
		return d, err
	}
	if err := in.Rules.Check(d); err != nil {
		return d, err
	}
	return d, nil
}

// Verify authenticates a delivery before anything reads its body as JSON.
func (in Intake) Verify(h http.Header, body []byte, now time.Time) error {
	if len(body) > MaxBody {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(body), MaxBody)
	}
	if in.Secrets.Len() == 0 {
		return fmt.Errorf("%w: no secret is configured for source %s", ErrBadSignature, in.Source)
	}
	tol := in.Tolerance
	if tol <= 0 {
		tol = Tolerance
	}
	switch in.Source {
	case GitLab:
		return verifyGitLab(in.Secrets, h, body, now, tol)
	case GitHub:
		return verifyHexHMAC(in.Secrets, h, body, "X-Hub-Signature-256")
	case Gitea:
		return verifyHexHMAC(in.Secrets, h, body, "X-Gitea-Signature", "X-Hub-Signature-256")
	case Forgejo:
		return verifyHexHMAC(in.Secrets, h, body, "X-Forgejo-Signature", "X-Gitea-Signature", "X-Hub-Signature-256")
	case Generic:
		return verifyStandard(in.Secrets, h, body, now, tol)
	}
	return fmt.Errorf("%w: unknown source %q", ErrBadSignature, in.Source)
}

// HTTPStatus maps an intake error to the status the forge should get:
// 202 is the caller's once the delivery is committed; 200 for an
// irrelevant event (so forges do not disable the hook), 401 for a bad or
// stale signature, 413 for an oversized body, 400 for a malformed payload.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusAccepted
	case errors.Is(err, ErrIrrelevant):
		return http.StatusOK
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrStale):
		return http.StatusUnauthorized
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
