package artifact

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func FuzzReadControl(f *testing.F) {
	for _, comp := range []string{"", ".gz", ".xz", ".zst"} {
		f.Add(makeDeb(f, pysiteControl, comp))
	}
	f.Add(nfpmDeb(f, "pysite", "0.2.0", "amd64"))
	f.Add([]byte("!<arch>\ndebian-binary   0           0     0     1       4         `\n2.0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ReadControl(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error wraps no ErrCorrupt: %v", err)
			}
			return
		}
		if c.Package == "" || c.Version == "" || c.Architecture == "" {
			t.Fatalf("accepted a control file without required fields: %+v", c)
		}
	})
}

func FuzzParseControl(f *testing.F) {
	f.Add([]byte(pysiteControl))
	f.Add([]byte("Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseControl(data)
		if err == nil && (c.Package == "" || strings.Contains(c.Version, "\n")) {
			t.Fatalf("accepted %q as %+v", data, c)
		}
	})
}

func FuzzParseChecksum(f *testing.F) {
	a := strings.Repeat("a", 64)
	f.Add([]byte(a+"  pysite.deb\n"), "pysite.deb")
	f.Add([]byte(a+" *dist/pysite.deb\n"+a+"  x\n"), "pysite.deb")
	f.Add([]byte(a), "")
	f.Fuzz(func(t *testing.T, text []byte, name string) {
		d, err := ParseChecksum(text, name)
		if err != nil {
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("error wraps no ErrChecksum: %v", err)
			}
			return
		}
		if !hexDigestRe.MatchString(d) || strings.ToLower(d) != d {
			t.Fatalf("returned %q, not a lowercase hex SHA-256", d)
		}
		if !bytes.Contains(bytes.ToLower(text), []byte(d)) {
			t.Fatalf("returned %q, which is not in the input", d)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	pub, priv, _ := GenerateKey()
	f.Add(pub)
	f.Add(priv)
	f.Add("ed25519:AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err == nil && len(k) != 32 {
			t.Fatalf("accepted a %d-byte key from %q", len(k), s)
		}
		if err != nil && len(s) > 24 && strings.Contains(err.Error(), s) {
			t.Fatalf("the error repeats the whole input: %v", err)
		}
	})
}

// FuzzVerifySignature: a .sig file comes from the CI's artifacts, so it
// is untrusted. No input panics, and only the genuine signature verifies:
// any other file verifying would let a leaked CI token ship code.
func FuzzVerifySignature(f *testing.F) {
	pub, priv, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	key, _ := ParsePublicKey(pub)
	sk, _ := ParsePrivateKey(priv)
	digest := strings.Repeat("ab", 32)
	good, err := Sign(sk, digest)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("\n"))
	f.Add([]byte(strings.Repeat("A", 88)))
	f.Add(append([]byte(" \t"), good...))
	f.Fuzz(func(t *testing.T, sig []byte) {
		err := VerifySignature(sig, digest, []ed25519.PublicKey{key})
		if err == nil && !bytes.Equal(bytes.TrimSpace(sig), bytes.TrimSpace(good)) {
			// ed25519 signatures are not malleable (RFC 8032 checks S < L),
			// so another encoding of the same bytes is the only other way in.
			raw, derr := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sig)))
			want, _ := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(good)))
			if derr != nil || !bytes.Equal(raw, want) {
				t.Fatalf("a signature other than the genuine one verified: %q", sig)
			}
		}
		if err != nil && !errors.Is(err, ErrSignature) {
			t.Fatalf("error does not wrap ErrSignature: %v", err)
		}
	})
}
