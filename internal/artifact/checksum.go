// Package artifact verifies release .deb files and keeps them in a
// content-addressed store: size cap, SHA-256 against the checksum the
// pipeline published, an optional ed25519 signature by a key pinned in the
// configuration, and the .deb's own control fields (package, architecture,
// a newer version), read without dpkg.
//
// The signature format (written by Sign, checked by Verify): the .sig file
// holds one line, the standard base64 of the 64-byte ed25519 signature of
// the message
//
//	"tandem-release-v1 sha256:" + lowercase hex SHA-256 of the .deb
//
// Signing the digest, not the file, lets the verifier hash the file once
// while streaming it; the prefix keeps the signature from being valid for
// anything but a tandem release. Keys are written "ed25519:<base64 of the
// 32-byte public key>" and "ed25519-private:<base64 of the 32-byte seed>".
package artifact

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"
)

// Sentinel errors; the errors of Verify and the parsers wrap one.
var (
	ErrTooLarge   = errors.New("artifact is larger than the limit")
	ErrChecksum   = errors.New("artifact SHA-256 does not match")
	ErrSignature  = errors.New("artifact signature is not valid")
	ErrCorrupt    = errors.New("not a valid .deb")
	ErrNotAllowed = errors.New("package may not be deployed here")
	ErrNotNewer   = errors.New("package is not newer than the running version")
)

var hexDigestRe = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// ParseChecksum finds the SHA-256 of the file called name in a published
// checksum file: sha256sum's output ("<hex>  <name>" or "<hex> *<name>"
// lines; a path is matched by its base name), its --tag form
// ("SHA256 (<name>) = <hex>"), or a bare hex digest alone. The digest is
// returned in lowercase hex.
func ParseChecksum(text []byte, name string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var found []string
	lines := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines++
		digest, file, hasName := strings.Cut(line, " ")
		if rest, ok := strings.CutPrefix(line, "SHA256 ("); ok {
			i := strings.LastIndex(rest, ") = ")
			if i < 0 {
				return "", fmt.Errorf("%w: checksum line %d: expected \"SHA256 (<file>) = <hex>\"", ErrChecksum, n)
			}
			file, digest, hasName = rest[:i], rest[i+len(") = "):], true
		}
		if !hexDigestRe.MatchString(digest) {
			return "", fmt.Errorf("%w: checksum line %d does not start with a 64-digit hex SHA-256 (expected \"<hex>  <file>\" as sha256sum prints)", ErrChecksum, n)
		}
		if !hasName {
			found = append(found, strings.ToLower(digest))
			continue
		}
		file = strings.TrimPrefix(strings.TrimLeft(file, " "), "*")
		if file == "" {
			return "", fmt.Errorf("%w: checksum line %d has no file name after the digest", ErrChecksum, n)
		}
		if name != "" && (file == name || path.Base(file) == path.Base(name)) {
			found = append(found, strings.ToLower(digest))
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("%w: checksum file: %v", ErrChecksum, err)
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1 && allSame(found):
		return found[0], nil
	case len(found) > 1:
		return "", fmt.Errorf("%w: the checksum file gives %s %d different digests", ErrChecksum, name, len(found))
	case lines == 0:
		return "", fmt.Errorf("%w: the checksum file is empty", ErrChecksum)
	}
	return "", fmt.Errorf("%w: the checksum file has no line for %s", ErrChecksum, name)
}

func allSame(s []string) bool {
	for _, v := range s[1:] {
		if v != s[0] {
			return false
		}
	}
	return true
}

// FileSHA256 streams the file at path through SHA-256 and returns the
// digest in lowercase hex.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
