package forge

import (
	"archive/zip"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openZip(t testing.TB, b []byte) *zip.Reader {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return zr
}

func TestExtract(t *testing.T) {
	deb := "dist/" + debFile
	big := strings.Repeat("\x00", 1<<20) // compresses to almost nothing
	symlink := func(t testing.TB) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		h := &zip.FileHeader{Name: "dist/evil.deb"}
		h.SetMode(fs.ModeSymlink | 0o777)
		w, _ := zw.CreateHeader(h)
		w.Write([]byte("/etc/shadow"))
		for _, e := range []entry{{deb, debBody}, {deb + ".sha256", sum(debBody)}} {
			w, _ := zw.Create(e.name)
			w.Write([]byte(e.body))
		}
		zw.Close()
		return buf.Bytes()
	}
	many := func(t testing.TB) []byte {
		var files []entry
		for i := range maxEntries + 1 {
			files = append(files, entry{strings.Repeat("d/", 1) + string(rune('a'+i%26)) + strings.Repeat("x", i/26), ""})
		}
		return makeZip(t, files...)
	}
	tests := []struct {
		name string
		zip  func(t testing.TB) []byte
		max  int64
		want error
		msg  string
		sig  bool
	}{
		{name: "ci init layout", zip: func(t testing.TB) []byte { return goodZip(t, false) }},
		{name: "with signature", zip: func(t testing.TB) []byte { return goodZip(t, true) }, sig: true},
		{name: "flat (GitHub upload-artifact of dist/)", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{debFile, debBody}, entry{debFile + ".sha256", sum(debBody) + " *" + debFile + "\n"})
		}},
		{name: "SHA256SUMS beside it", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{deb, debBody}, entry{"dist/SHA256SUMS", sum("other") + "  other.deb.sig\n" + sum(debBody) + "  " + debFile + "\n"})
		}},
		{name: "tag-style checksum", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{deb, debBody}, entry{deb + ".sha256", "SHA256 (" + debFile + ") = " + sum(debBody) + "\n"})
		}},
		{name: "symlinks are never read", zip: symlink},
		{name: "no deb", zip: func(t testing.TB) []byte { return makeZip(t, entry{"README", "x"}) }, want: ErrNoArtifact, msg: "holds no .deb"},
		{name: "checksum elsewhere only", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{deb, debBody}, entry{"other/" + debFile + ".sha256", sum(debBody)})
		}, want: ErrNoArtifact, msg: ".sha256"},
		{name: "checksum names another file", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{deb, debBody}, entry{deb + ".sha256", sum(debBody) + "  other.deb\n"})
		}, want: ErrBadArchive},
		{name: "absolute path", zip: func(t testing.TB) []byte { return makeZip(t, entry{"/etc/x.deb", "x"}) }, want: ErrBadArchive, msg: "unsafe"},
		{name: "dot-dot", zip: func(t testing.TB) []byte { return makeZip(t, entry{"dist/../../x.deb", "x"}) }, want: ErrBadArchive},
		{name: "backslash", zip: func(t testing.TB) []byte { return makeZip(t, entry{`..\x.deb`, "x"}) }, want: ErrBadArchive},
		{name: "duplicate", zip: func(t testing.TB) []byte { return makeZip(t, entry{deb, "a"}, entry{"dist//" + debFile, "b"}) }, want: ErrBadArchive, msg: "twice"},
		{name: "odd deb name", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{"dist/.hidden.deb", "x"}, entry{"dist/.hidden.deb.sha256", sum("x")})
		}, want: ErrBadArchive},
		{name: "bomb", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{deb, big}, entry{deb + ".sha256", sum(big)})
		}, max: 1000, want: ErrTooLarge},
		{name: "huge checksum file", zip: func(t testing.TB) []byte {
			return makeZip(t, entry{deb, debBody}, entry{deb + ".sha256", strings.Repeat(" ", maxSideFile+1)})
		}, want: ErrBadArchive},
		{name: "too many entries", zip: many, want: ErrBadArchive, msg: "entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			dir := t.TempDir()
			got, err := extractFrom(openZip(t, tt.zip(t)), dir, max)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("error %v, want %v containing %q", err, tt.want, tt.msg)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("left %v behind", entries)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.DebPath != filepath.Join(dir, debFile) || got.Expect.SHA256 != sum(debBody) || (got.Expect.Signature != nil) != tt.sig {
				t.Errorf("got %+v", got)
			}
		})
	}
}

// TestExtractBombLyingHeader: a header that understates the size is still
// cut at max.
func TestExtractBombLyingHeader(t *testing.T) {
	big := strings.Repeat("A", 4096)
	b := makeZip(t, entry{debFile, big}, entry{debFile + ".sha256", sum(big)})
	zr := openZip(t, b)
	for _, f := range zr.File {
		if f.Name == debFile {
			f.UncompressedSize64 = 10
		}
	}
	if _, err := extractFrom(zr, t.TempDir(), 100); err == nil {
		t.Fatal("a 4 KiB entry passed a 100-byte limit")
	}
}
