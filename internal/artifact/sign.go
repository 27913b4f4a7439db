package artifact

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

const (
	publicPrefix  = "ed25519:"
	privatePrefix = "ed25519-private:"
	signedPrefix  = "tandem-release-v1 sha256:"
)

// ParsePublicKey reads a key pinned in the configuration:
// "ed25519:<base64 of the 32-byte public key>".
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(s, publicPrefix)
	if !ok {
		if strings.HasPrefix(s, privatePrefix) {
			return nil, fmt.Errorf("this is a private key: pin the public key (ed25519:...) that `tandem release keygen` printed")
		}
		return nil, fmt.Errorf("signing key %q: expected ed25519:<base64 of 32 bytes>", abbreviate(s))
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("signing key %q: the part after ed25519: is not base64: %v", abbreviate(s), err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("signing key %q: %d bytes, an ed25519 public key has %d", abbreviate(s), len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// ParsePrivateKey reads "ed25519-private:<base64 of the 32-byte seed>", as
// GenerateKey writes it (kept in a CI secret, never in tandem's config).
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), privatePrefix)
	if !ok {
		return nil, fmt.Errorf("private signing key: expected ed25519-private:<base64 of 32 bytes>")
	}
	seed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("private signing key: the part after ed25519-private: must be the base64 of a %d-byte seed", ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// FormatPublicKey writes a public key in the form ParsePublicKey reads.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return publicPrefix + base64.StdEncoding.EncodeToString(pub)
}

// GenerateKey makes a new key pair in the text forms above.
func GenerateKey() (public, private string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate ed25519 key: %w", err)
	}
	return FormatPublicKey(pub), privatePrefix + base64.StdEncoding.EncodeToString(priv.Seed()), nil
}

// Sign returns the .sig file for a .deb whose SHA-256 is digest (hex).
func Sign(priv ed25519.PrivateKey, digest string) ([]byte, error) {
	if !hexDigestRe.MatchString(digest) {
		return nil, fmt.Errorf("sign: %q is not a hex SHA-256", digest)
	}
	sig := ed25519.Sign(priv, signedMessage(digest))
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n"), nil
}

// VerifySignature checks a .sig file against the digest (hex) and the
// pinned keys: any one key may have signed (rotation).
func VerifySignature(sigFile []byte, digest string, keys []ed25519.PublicKey) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no signing key is pinned", ErrSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sigFile)))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: the .sig file must hold the base64 of a %d-byte ed25519 signature", ErrSignature, ed25519.SignatureSize)
	}
	msg := signedMessage(digest)
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w: made by none of the %d pinned keys (or the .deb was changed)", ErrSignature, len(keys))
}

func signedMessage(digest string) []byte {
	return []byte(signedPrefix + strings.ToLower(digest))
}

// abbreviate keeps errors short and never echoes a long secret-like value.
func abbreviate(s string) string {
	if len(s) > 24 {
		return s[:20] + "..."
	}
	return s
}
