package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Join tokens look like
//
//	tandem1.<ca-hash-hex>.<id>.<secret>
//
// ca-hash-hex is the 64 hex digits of the CA's SHA-256 public-key hash (the
// part of CA.Hash after "sha256:"), id is 6 to 8 characters and secret 32,
// both from [a-z0-9]. The id names the token in the replicated state, which
// keeps only a SHA-256 of the secret.
const (
	TokenPrefix    = "tandem1"
	tokenIDLen     = 6
	tokenIDMaxLen  = 8
	tokenSecretLen = 32
	tokenAlphabet  = "abcdefghijklmnopqrstuvwxyz0123456789"
)

// ErrTokenFormat is wrapped by every ParseToken error.
var ErrTokenFormat = errors.New("malformed join token")

// Token is a parsed join token.
type Token struct {
	CAHash string // "sha256:<hex>"
	ID     string
	Secret string
}

// NewToken creates a token pinning the CA with hash caHash ("sha256:<hex>").
func NewToken(caHash string) (Token, error) {
	if _, err := parseHashHex(strings.TrimPrefix(caHash, HashPrefix)); err != nil || !strings.HasPrefix(caHash, HashPrefix) {
		return Token{}, fmt.Errorf("new token: CA hash %q is not sha256:<64 hex digits>", caHash)
	}
	id, err := randomString(tokenIDLen)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(tokenSecretLen)
	if err != nil {
		return Token{}, err
	}
	return Token{CAHash: strings.ToLower(caHash), ID: id, Secret: secret}, nil
}

// String returns the token in its printed form.
func (t Token) String() string {
	return TokenPrefix + "." + strings.TrimPrefix(t.CAHash, HashPrefix) + "." + t.ID + "." + t.Secret
}

// SecretHash is what the replicated state stores instead of the secret.
func (t Token) SecretHash() string { return HashSecret(t.Secret) }

// HashSecret returns the hex SHA-256 of a token secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ParseToken parses a printed join token. Errors wrap ErrTokenFormat, say
// which part is wrong, and never echo the secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, fmt.Errorf("%w: empty (want %s.<ca-hash>.<id>.<secret>, as printed by tandem init or tandem token create)", ErrTokenFormat, TokenPrefix)
	}
	parts := strings.Split(s, ".")
	if parts[0] != TokenPrefix {
		return Token{}, fmt.Errorf("%w: it must start with %q (is it a token from another tool or a newer tandem?)", ErrTokenFormat, TokenPrefix+".")
	}
	if len(parts) < 4 {
		return Token{}, fmt.Errorf("%w: truncated: want 4 dot-separated fields %s.<ca-hash>.<id>.<secret>, got %d", ErrTokenFormat, TokenPrefix, len(parts))
	}
	if len(parts) > 4 {
		return Token{}, fmt.Errorf("%w: want 4 dot-separated fields %s.<ca-hash>.<id>.<secret>, got %d", ErrTokenFormat, TokenPrefix, len(parts))
	}
	hash, err := parseHashHex(parts[1])
	if err != nil {
		return Token{}, fmt.Errorf("%w: CA hash: %v", ErrTokenFormat, err)
	}
	id, secret := parts[2], parts[3]
	if len(id) < tokenIDLen || len(id) > tokenIDMaxLen || !inAlphabet(id) {
		return Token{}, fmt.Errorf("%w: id %q: want %d-%d characters from a-z and 0-9", ErrTokenFormat, id, tokenIDLen, tokenIDMaxLen)
	}
	if len(secret) != tokenSecretLen {
		return Token{}, fmt.Errorf("%w: secret has %d characters, want %d (truncated when copied?)", ErrTokenFormat, len(secret), tokenSecretLen)
	}
	if !inAlphabet(secret) {
		return Token{}, fmt.Errorf("%w: secret: want only a-z and 0-9", ErrTokenFormat)
	}
	return Token{CAHash: HashPrefix + hash, ID: id, Secret: secret}, nil
}

func parseHashHex(h string) (string, error) {
	if len(h) != 2*sha256.Size {
		return "", fmt.Errorf("has %d characters, want %d hex digits", len(h), 2*sha256.Size)
	}
	h = strings.ToLower(h)
	if _, err := hex.DecodeString(h); err != nil {
		return "", errors.New("not hexadecimal")
	}
	return h, nil
}

func inAlphabet(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune(tokenAlphabet, r) {
			return false
		}
	}
	return true
}

// randomString returns n characters from tokenAlphabet, uniformly.
func randomString(n int) (string, error) {
	const limit = 256 - 256%len(tokenAlphabet) // reject bytes that would bias the modulo
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("random token: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, tokenAlphabet[int(b)%len(tokenAlphabet)])
			}
		}
	}
	return string(out), nil
}
