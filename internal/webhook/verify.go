package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// verifyHexHMAC checks the first of the named headers that is present: a
// hex HMAC-SHA256 of the body, with or without a "sha256=" prefix.
func verifyHexHMAC(s Secrets, h http.Header, body []byte, headers ...string) error {
	for _, name := range headers {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		got, err := hex.DecodeString(strings.TrimPrefix(v, "sha256="))
		if err != nil || len(got) != sha256.Size {
			return fmt.Errorf("%w: %s is not a hex SHA-256 HMAC", ErrBadSignature, name)
		}
		for _, sec := range s.list {
			m := hmac.New(sha256.New, sec.raw)
			m.Write(body)
			if hmac.Equal(m.Sum(nil), got) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s does not match (check the webhook's secret)", ErrBadSignature, name)
	}
	return fmt.Errorf("%w: no %s header (set a secret on the forge's webhook)", ErrBadSignature, strings.Join(headers, " or "))
}

// verifyGitLab prefers GitLab's Standard Webhooks signature, sent when the
// hook has a signing token; a signed delivery is never accepted on its
// token alone. Else X-Gitlab-Token, which GitLab sends in plaintext.
func verifyGitLab(s Secrets, h http.Header, body []byte, now time.Time, tol time.Duration) error {
	if h.Get("Webhook-Signature") != "" {
		return verifyStandard(s, h, body, now, tol)
	}
	token := h.Get("X-Gitlab-Token")
	if token == "" {
		return fmt.Errorf("%w: no X-Gitlab-Token or webhook-signature header (set the hook's secret token)", ErrBadSignature)
	}
	// Hashing first makes the comparison's time independent of the
	// lengths too; every secret is compared, so timing does not tell which.
	got := sha256.Sum256([]byte(token))
	match := 0
	for _, sec := range s.list {
		want := sha256.Sum256(sec.raw)
		match |= subtle.ConstantTimeCompare(want[:], got[:])
	}
	if match != 1 {
		return fmt.Errorf("%w: X-Gitlab-Token does not match", ErrBadSignature)
	}
	return nil
}

// verifyStandard checks a Standard Webhooks delivery: the signature first,
// so that ErrStale means an authentic but late (or clock-skewed) delivery.
func verifyStandard(s Secrets, h http.Header, body []byte, now time.Time, tol time.Duration) error {
	id, ts, sigs := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("%w: a Standard Webhooks delivery needs webhook-id, webhook-timestamp and webhook-signature headers", ErrBadSignature)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp %q is not Unix seconds", ErrBadSignature, ts)
	}
	var keys [][]byte
	for _, sec := range s.list {
		if sec.key != nil {
			keys = append(keys, sec.key)
		}
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no whsec_ secret is configured for Standard Webhooks signatures", ErrBadSignature)
	}
	var want [][]byte
	for _, sig := range strings.Fields(sigs) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		if !ok {
			continue // other schemes (v1a ed25519) are not configured here
		}
		if raw, err := base64.StdEncoding.DecodeString(b64); err == nil && len(raw) == sha256.Size {
			want = append(want, raw)
		}
	}
	if len(want) == 0 {
		return fmt.Errorf("%w: webhook-signature holds no v1,<base64 HMAC-SHA256> signature", ErrBadSignature)
	}
	ok := false
	for _, key := range keys {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id + "." + ts + "."))
		m.Write(body)
		sum := m.Sum(nil)
		for _, w := range want {
			if hmac.Equal(sum, w) {
				ok = true
			}
		}
	}
	if !ok {
		return fmt.Errorf("%w: webhook-signature does not match (check the whsec_ secret)", ErrBadSignature)
	}
	sent := time.Unix(secs, 0)
	if skew := now.Sub(sent); skew > tol || skew < -tol {
		return fmt.Errorf("%w: sent at %s, %s from now (allowed ±%s; check both clocks)", ErrStale, sent.UTC().Format(time.RFC3339), skew.Round(time.Second), tol)
	}
	return nil
}

// SignStandard makes a Standard Webhooks signature header value for a
// delivery: tandem's outbound notifications, the lab's fake forge and tests.
// key is the decoded secret (the bytes after whsec_).
func SignStandard(key []byte, id string, ts time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return timestamp, "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// SignHex makes a GitHub-style "sha256=<hex>" signature of body.
func SignHex(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
