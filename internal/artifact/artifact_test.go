package artifact

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestParseChecksum(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("B", 64)
	tests := []struct {
		name, text, file, want, err string
	}{
		{"sha256sum", a + "  pysite_0.2.0_amd64.deb\n" + strings.ToLower(b) + "  other.deb\n", "pysite_0.2.0_amd64.deb", a, ""},
		{"binary mode", b + " *pysite.deb\n", "pysite.deb", strings.ToLower(b), ""},
		{"path in file", a + "  dist/pysite.deb\n", "pysite.deb", a, ""},
		{"path asked", a + "  pysite.deb\n", "/tmp/x/pysite.deb", a, ""},
		{"bare digest", a + "\n", "pysite.deb", a, ""},
		{"bare digest, spaces", "  " + a + "  \n\n", "", a, ""},
		{"comment", "# made by CI\n" + a + "  pysite.deb\n", "pysite.deb", a, ""},
		{"same twice", a + "  pysite.deb\n" + a + "  pysite.deb\n", "pysite.deb", a, ""},
		{"conflict", a + "  pysite.deb\n" + b + "  pysite.deb\n", "pysite.deb", "", "2 different digests"},
		{"missing", a + "  other.deb\n", "pysite.deb", "", "no line for pysite.deb"},
		{"empty", "\n", "pysite.deb", "", "empty"},
		{"md5", "d41d8cd98f00b204e9800998ecf8427e  pysite.deb\n", "pysite.deb", "", "line 1 does not start with a 64-digit hex"},
		{"no name", a + "   \n", "pysite.deb", a, ""},
		{"garbage", "<html>404</html>", "pysite.deb", "", "line 1"},
		{"tag form", "SHA256 (dist/pysite.deb) = " + a + "\n", "pysite.deb", a, ""},
		{"tag form, bad", "SHA256 (pysite.deb) " + a + "\n", "pysite.deb", "", "SHA256 (<file>)"},
		{"tag form, other hash", "MD5 (pysite.deb) = d41d8cd98f00b204e9800998ecf8427e\n", "pysite.deb", "", "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChecksum([]byte(tc.text), tc.file)
			if tc.err != "" {
				if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseChecksum = %q, %v; want ErrChecksum containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseChecksum = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	pubText, privText, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubText + "\n")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privText)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) || FormatPublicKey(pub) != pubText {
		t.Fatal("the generated private key does not match the public key")
	}
	for _, tc := range []struct{ in, want string }{
		{"", "expected ed25519:"},
		{"rsa:AAAA", "expected ed25519:"},
		{"ed25519:!!!", "not base64"},
		{"ed25519:" + base64.StdEncoding.EncodeToString(make([]byte, 31)), "31 bytes"},
		{privText, "this is a private key"},
	} {
		if _, err := ParsePublicKey(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePublicKey(%q) = %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), privText) {
			t.Errorf("the error repeats the private key: %v", err)
		}
	}
	if _, err := ParsePrivateKey(pubText); err == nil {
		t.Error("ParsePrivateKey accepted a public key")
	}
}

func TestSignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	digest := digestOf([]byte("a .deb"))
	sig, err := Sign(priv, digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(sig, digest, []ed25519.PublicKey{other, pub}); err != nil {
		t.Fatalf("VerifySignature(rotated keys) = %v", err)
	}
	if err := VerifySignature(sig, strings.ToUpper(digest), []ed25519.PublicKey{pub}); err != nil {
		t.Fatalf("VerifySignature(uppercase digest) = %v", err)
	}
	for name, tc := range map[string]struct {
		sig    []byte
		digest string
		keys   []ed25519.PublicKey
	}{
		"other file":  {sig, digestOf([]byte("another .deb")), []ed25519.PublicKey{pub}},
		"other key":   {sig, digest, []ed25519.PublicKey{other}},
		"no keys":     {sig, digest, nil},
		"not base64":  {[]byte("%%%"), digest, []ed25519.PublicKey{pub}},
		"short":       {[]byte(base64.StdEncoding.EncodeToString(make([]byte, 63))), digest, []ed25519.PublicKey{pub}},
		"raw message": {[]byte(base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte(digest)))), digest, []ed25519.PublicKey{pub}},
	} {
		if err := VerifySignature(tc.sig, tc.digest, tc.keys); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: VerifySignature = %v, want ErrSignature", name, err)
		}
	}
	if _, err := Sign(priv, "abc"); err == nil {
		t.Error("Sign accepted a digest that is not hex SHA-256")
	}
}

func TestVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	deb := makeDeb(t, pysiteControl, ".xz")
	digest := digestOf(deb)
	sig, _ := Sign(priv, digest)
	policy := Policy{Packages: []string{"pysite"}, Arch: "amd64"}
	signed := policy
	signed.Keys = []ed25519.PublicKey{pub}
	allArch := makeDeb(t, strings.Replace(pysiteControl, "amd64", "all", 1), "")
	tests := []struct {
		name   string
		policy Policy
		data   []byte
		want   Expect
		err    error
	}{
		{"ok", policy, deb, Expect{SHA256: digest}, nil},
		{"ok signed", signed, deb, Expect{SHA256: digest, Signature: sig}, nil},
		{"arch all", policy, allArch, Expect{SHA256: digestOf(allArch)}, nil},
		{"uppercase published digest", policy, deb, Expect{SHA256: strings.ToUpper(digest)}, nil},
		{"wrong checksum", policy, deb, Expect{SHA256: digestOf([]byte("x"))}, ErrChecksum},
		{"no checksum", policy, deb, Expect{}, ErrChecksum},
		{"unsigned with keys", signed, deb, Expect{SHA256: digest}, ErrSignature},
		{"bad signature", signed, deb, Expect{SHA256: digest, Signature: []byte(base64.StdEncoding.EncodeToString(make([]byte, 64)))}, ErrSignature},
		{"too large", Policy{MaxSize: 100, Packages: []string{"pysite"}, Arch: "amd64"}, deb, Expect{SHA256: digest}, ErrTooLarge},
		{"other package", Policy{Packages: []string{"othersite"}, Arch: "amd64"}, deb, Expect{SHA256: digest}, ErrNotAllowed},
		{"other arch", Policy{Packages: []string{"pysite"}, Arch: "arm64"}, deb, Expect{SHA256: digest}, ErrNotAllowed},
		{"not a deb", policy, []byte("hello"), Expect{SHA256: digestOf([]byte("hello"))}, ErrCorrupt},
		{"bad version", policy, makeDeb(t, strings.Replace(pysiteControl, "0.2.0-1", "v0.2", 1), ""), Expect{}, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "bad version" {
				tc.want.SHA256 = digestOf(tc.data)
			}
			rel, err := tc.policy.VerifyFile(writeFile(t, tc.data), tc.want)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("VerifyFile = %+v, %v; want %v", rel, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rel.SHA256 != digestOf(tc.data) || rel.Size != int64(len(tc.data)) || rel.Control.Package != "pysite" {
				t.Errorf("VerifyFile = %+v", rel)
			}
		})
	}
}

func TestNewer(t *testing.T) {
	for _, tc := range []struct {
		version, running string
		err              error
	}{
		{"0.2.0-1", "", nil},
		{"0.2.0-1", "0.1.9-3", nil},
		{"1:0.1", "0.9", nil},
		{"0.2.0", "0.2.0", ErrNotNewer},
		{"0.2.0~rc1", "0.2.0", ErrNotNewer},
		{"0.1.0", "0.2.0", ErrNotNewer},
	} {
		if err := Newer(tc.version, tc.running); !errors.Is(err, tc.err) || tc.err == nil && err != nil {
			t.Errorf("Newer(%q, %q) = %v, want %v", tc.version, tc.running, err, tc.err)
		}
	}
	if err := Newer("v1", "1.0"); err == nil {
		t.Error("Newer accepted an invalid version")
	}
}

// failingReader returns some bytes, then an error, like a connection or a
// disk that fails midway.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	deb := nfpmDeb(t, "pysite", "0.2.0", "amd64")
	digest, err := s.Put(bytes.NewReader(deb), 0, digestOf(deb))
	if err != nil || digest != digestOf(deb) {
		t.Fatalf("Put = %q, %v", digest, err)
	}
	if s.Path(digest) != filepath.Join(dir, "sha256", digest+".deb") {
		t.Errorf("Path = %s", s.Path(digest))
	}
	f, err := s.Open(digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, deb) {
		t.Fatal("Open returned other content")
	}
	if info, _ := os.Stat(s.Path(digest)); info.Mode().Perm() != 0o644 {
		t.Errorf("stored mode = %v, want 0644", info.Mode().Perm())
	}
	// Put again is harmless.
	if d2, err := s.Put(bytes.NewReader(deb), 0, ""); err != nil || d2 != digest {
		t.Fatalf("second Put = %q, %v", d2, err)
	}

	failures := []struct {
		name string
		r    io.Reader
		max  int64
		want string
		err  error
	}{
		{"read fails midway", &failingReader{n: 5000, err: errors.New("connection reset")}, 0, "connection reset", nil},
		{"too large", bytes.NewReader(deb), 10, "more than 10 bytes", ErrTooLarge},
		{"digest mismatch", strings.NewReader("not the deb"), 0, "expected " + digest, ErrChecksum},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			want := ""
			if tc.err == ErrChecksum {
				want = digest
			}
			_, err := s.Put(tc.r, tc.max, want)
			if err == nil || !strings.Contains(err.Error(), tc.want) || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("Put = %v, want an error containing %q", err, tc.want)
			}
			if tc.err == nil && !strings.Contains(err.Error(), filepath.Join(dir, "sha256")) {
				t.Errorf("the error does not name the path: %v", err)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "sha256"))
			if len(entries) != 1 {
				t.Errorf("a failed Put left files behind: %v", entries)
			}
		})
	}
	if _, err := s.Open("../../etc/passwd"); err == nil {
		t.Error("Open accepted a path")
	}
}

// fullDisk writes limit bytes to the real temporary file, then fails the
// way a full file system does.
type fullDisk struct {
	*os.File
	limit int
}

func (f *fullDisk) Write(p []byte) (int, error) {
	if len(p) > f.limit {
		n, _ := f.File.Write(p[:f.limit])
		f.limit = 0
		return n, syscall.ENOSPC
	}
	f.limit -= len(p)
	return f.File.Write(p)
}

func TestStorePutFullDisk(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.createTemp = func(dir, pattern string) (tempFile, error) {
		f, err := os.CreateTemp(dir, pattern)
		return &fullDisk{File: f, limit: 1000}, err
	}
	_, err = s.Put(bytes.NewReader(make([]byte, 100_000)), 0, "")
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), filepath.Join(dir, "sha256", ".put-")) {
		t.Fatalf("Put on a full disk = %v, want ENOSPC naming the file", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "sha256")); len(entries) != 0 {
		t.Fatalf("a failed Put left %v", entries)
	}
}

func TestStoreListAndPrune(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var digests []string // oldest first
	for i := range 8 {
		d, err := s.Put(strings.NewReader(strings.Repeat("x", i+1)), 0, "")
		if err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Hour)
		if err := os.Chtimes(s.Path(d), at, at); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	stale := filepath.Join(filepath.Dir(s.Path(digests[0])), ".put-123.tmp")
	os.WriteFile(stale, []byte("partial"), 0o600)
	os.Chtimes(stale, base, base)
	list, err := s.List()
	if err != nil || len(list) != 8 || list[0].SHA256 != digests[7] || list[7].SHA256 != digests[0] || list[7].Size != 1 {
		t.Fatalf("List = %+v, %v; want 8, newest first, without the temporary file", list, err)
	}
	removed, err := s.Prune(3, []string{strings.ToUpper(digests[1])}, base.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Kept: the newest three (7, 6, 5) and the pinned 1.
	wantRemoved := []string{digests[4], digests[3], digests[2], digests[0]}
	if strings.Join(removed, ",") != strings.Join(wantRemoved, ",") {
		t.Errorf("Prune removed %v, want %v", removed, wantRemoved)
	}
	list, _ = s.List()
	if len(list) != 4 {
		t.Errorf("after Prune List = %+v, want 4 entries", list)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("Prune left an hour-old temporary file")
	}
	if removed, _ := s.Prune(0, nil, base); len(removed) != 0 {
		t.Errorf("Prune(default 5) with 4 releases removed %v", removed)
	}
}
