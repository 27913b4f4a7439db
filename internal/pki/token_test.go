package pki

import (
	"errors"
	"strings"
	"testing"
)

const testHash = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestTokenRoundTrip(t *testing.T) {
	tok, err := NewToken(testHash)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok.ID) != 6 || len(tok.Secret) != 32 || !inAlphabet(tok.ID+tok.Secret) {
		t.Errorf("NewToken() = id %q secret %q; want 6 and 32 chars of [a-z0-9]", tok.ID, tok.Secret)
	}
	s := tok.String()
	if !strings.HasPrefix(s, "tandem1."+testHash[7:]+".") {
		t.Errorf("String() = %q; want tandem1.<hash>.…", s)
	}
	got, err := ParseToken("  " + s + "\n")
	if err != nil || got != tok {
		t.Errorf("ParseToken(String()) = %+v, %v; want %+v", got, err, tok)
	}
	if len(tok.SecretHash()) != 64 || tok.SecretHash() == tok.Secret {
		t.Errorf("SecretHash() = %q", tok.SecretHash())
	}
	other, _ := NewToken(testHash)
	if other.ID == tok.ID && other.Secret == tok.Secret {
		t.Error("two NewToken calls returned the same token")
	}
	if _, err := NewToken("md5:abc"); err == nil {
		t.Error("NewToken(bad hash) = nil error")
	}
}

func TestParseTokenErrors(t *testing.T) {
	hash := testHash[7:]
	secret := strings.Repeat("a", 32)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"wrong prefix", "K10" + hash + "::server:abc", "must start with"},
		{"newer version", "tandem2." + hash + ".abcdef." + secret, "must start with"},
		{"truncated", "tandem1." + hash + ".abcdef", "truncated"},
		{"too many fields", "tandem1." + hash + ".abcdef." + secret + ".x", "4 dot-separated fields"},
		{"short hash", "tandem1." + hash[:60] + ".abcdef." + secret, "CA hash: has 60 characters"},
		{"non-hex hash", "tandem1." + strings.Repeat("z", 64) + ".abcdef." + secret, "CA hash: not hexadecimal"},
		{"short id", "tandem1." + hash + ".abc." + secret, "id \"abc\""},
		{"upper-case id", "tandem1." + hash + ".ABCDEF." + secret, "id \"ABCDEF\""},
		{"truncated secret", "tandem1." + hash + ".abcdef." + secret[:20], "secret has 20 characters"},
		{"bad secret chars", "tandem1." + hash + ".abcdef." + strings.Repeat("A", 32), "secret: want only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in)
			if !errors.Is(err, ErrTokenFormat) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseToken(%q) error = %v; want ErrTokenFormat mentioning %q", tt.in, err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), strings.Repeat("A", 32)) {
				t.Errorf("error %q echoes the secret", err)
			}
		})
	}
	// Upper-case hex in the hash is accepted and normalised.
	got, err := ParseToken("tandem1." + strings.ToUpper(hash) + ".abcdef." + secret)
	if err != nil || got.CAHash != testHash {
		t.Errorf("ParseToken(upper-case hash) = %+v, %v; want hash %s", got, err, testHash)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("tandem1." + testHash[7:] + ".abcdef." + strings.Repeat("a", 32))
	f.Add("tandem1...")
	f.Add("tandem1." + testHash[7:] + ".abcdefgh." + strings.Repeat("z9", 16))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrTokenFormat) {
				t.Fatalf("ParseToken(%q) error %v does not wrap ErrTokenFormat", s, err)
			}
			return
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("ParseToken(%q).String() = %q does not round-trip: %+v, %v", s, tok.String(), again, err)
		}
		if !strings.HasPrefix(tok.CAHash, HashPrefix) || len(tok.Secret) != 32 {
			t.Fatalf("ParseToken(%q) = %+v: malformed fields accepted", s, tok)
		}
	})
}
