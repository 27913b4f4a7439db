package artifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/klauspost/compress/zstd"
	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/ulikunitz/xz"
)

const pysiteControl = "Package: pysite\nVersion: 0.2.0-1\nArchitecture: amd64\nMaintainer: Dev <dev@mail.example>\nDescription: the site\n a longer description\n .\n of two lines\n"

// arMember is one member of a test ar archive.
type arMember struct {
	name string
	data []byte
}

// makeAr writes a common-format ar archive as dpkg-deb does.
func makeAr(members ...arMember) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.name, 0, 0, 0, "100644", len(m.data))
		b.Write(m.data)
		if len(m.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func makeTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, name := range []string{"./", "./md5sums", "./control", "./postinst"} {
		body, ok := files[name]
		if !ok {
			continue
		}
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, kind string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch kind {
	case "":
		return data
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case ".zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	}
	return b.Bytes()
}

// makeDeb builds a .deb by hand with the given control file and control
// archive compression.
func makeDeb(t testing.TB, control, comp string) []byte {
	t.Helper()
	ctl := compress(t, comp, makeTar(t, map[string]string{"./": "", "./md5sums": "", "./control": control}))
	return makeAr(
		arMember{"debian-binary", []byte("2.0\n")},
		arMember{"control.tar" + comp, ctl},
		arMember{"data.tar.gz", compress(t, ".gz", makeTar(t, nil))},
	)
}

// nfpmDeb builds a real package the way `tandem package` does.
func nfpmDeb(t testing.TB, name, version, arch string) []byte {
	t.Helper()
	info := nfpm.WithDefaults(&nfpm.Info{
		Name: name, Arch: arch, Platform: "linux", Version: version, VersionSchema: "none",
		Maintainer: "Dev <dev@mail.example>", Description: "test package", MTime: time.Unix(1700000000, 0),
	})
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := pkgr.Package(info, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReadControl(t *testing.T) {
	for _, comp := range []string{"", ".gz", ".xz", ".zst"} {
		t.Run("control.tar"+comp, func(t *testing.T) {
			c, err := ReadControl(bytes.NewReader(makeDeb(t, pysiteControl, comp)))
			if err != nil {
				t.Fatal(err)
			}
			if c.Package != "pysite" || c.Version != "0.2.0-1" || c.Architecture != "amd64" {
				t.Errorf("ReadControl = %+v", c)
			}
			if c.Fields["Description"] != "the site\na longer description\n.\nof two lines" {
				t.Errorf("Description = %q", c.Fields["Description"])
			}
		})
	}
	t.Run("nfpm", func(t *testing.T) {
		c, err := ReadControl(bytes.NewReader(nfpmDeb(t, "pysite", "1:0.3.0~rc1-2", "arm64")))
		if err != nil {
			t.Fatal(err)
		}
		if c.Package != "pysite" || c.Version != "1:0.3.0~rc1-2" || c.Architecture != "arm64" {
			t.Errorf("ReadControl(nfpm) = %+v", c)
		}
	})
}

func TestReadControlRejects(t *testing.T) {
	good := makeDeb(t, pysiteControl, ".gz")
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"not ar", []byte("PK\x03\x04 this is a zip file"), "no ar archive signature"},
		{"truncated header", good[:30], "truncated ar header"},
		{"truncated control", good[:200], "control.tar"},
		{"no members", []byte("!<arch>\n"), "debian-binary"},
		{"wrong first member", makeAr(arMember{"control.tar", nil}), "not debian-binary"},
		{"format 3", makeAr(arMember{"debian-binary", []byte("3.0\n")}), "expected 2.0"},
		{"no control", makeAr(arMember{"debian-binary", []byte("2.0\n")}), "no control.tar"},
		{"data first", makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"data.tar.gz", nil}), "before control.tar"},
		{"bzip2 control", makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"control.tar.bz2", nil}), "unknown control archive"},
		{"gzip garbage", makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"control.tar.gz", []byte("not gzip")}), "control.tar.gz"},
		{"no control file", makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"control.tar", makeTar(t, map[string]string{"./md5sums": ""})}), "no ./control"},
		{"no version", makeDeb(t, "Package: pysite\nArchitecture: amd64\n", ""), "Version"},
		{"bad size", []byte("!<arch>\ndebian-binary   0           0     0     100644  -5        `\n"), "bad size"},
		{"bad terminator", []byte("!<arch>\ndebian-binary   0           0     0     100644  4         XX2.0\n"), "terminator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadControl(bytes.NewReader(tc.data))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadControl = %v, want ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
	// Every truncation of a real package fails cleanly until the control
	// archive is complete (the data archive is not read: Verify checks the
	// whole file's digest first).
	real := nfpmDeb(t, "pysite", "0.2.0", "amd64")
	for n := 0; n < len(real); n++ {
		_, err := ReadControl(bytes.NewReader(real[:n]))
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadControl(first %d bytes) = %v, wraps no ErrCorrupt", n, err)
		}
		if err == nil && n < 8+60+4+60 {
			t.Fatalf("ReadControl accepted the first %d bytes", n)
		}
	}
}

func TestParseControl(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"continuation first", " x\nPackage: a\n", "continues no field"},
		{"no colon", "Package a\n", "not \"Field: value\""},
		{"duplicate", "Package: a\nPackage: b\nVersion: 1\nArchitecture: all\n", "twice"},
		{"multi-line version", "Package: a\nVersion: 1\n 2\nArchitecture: all\n", "single-line Version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseControl([]byte(tc.text))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseControl = %v, want %q", err, tc.want)
			}
		})
	}
	c, err := ParseControl([]byte("Package: a\nVersion: 1.0\nArchitecture: all\n\nPackage: ignored\n"))
	if err != nil || c.Package != "a" {
		t.Fatalf("ParseControl(two paragraphs) = %+v, %v", c, err)
	}
}

func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pysite_0.2.0-1_amd64.deb")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestXZDictionaryCap(t *testing.T) {
	ctl := compress(t, ".xz", makeTar(t, map[string]string{"./control": pysiteControl}))
	if err := checkXZ(ctl); err != nil {
		t.Fatalf("checkXZ(our own xz) = %v", err)
	}
	// Ask for a 4 GiB dictionary in the block header's LZMA2 properties.
	huge := bytes.Clone(ctl)
	i := bytes.Index(huge[12:], []byte{0x21, 0x01})
	if i < 0 {
		t.Fatal("no LZMA2 filter flags in the block header")
	}
	huge[12+i+2] = 40
	deb := makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"control.tar.xz", huge})
	_, err := ReadControl(bytes.NewReader(deb))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "dictionary") {
		t.Fatalf("ReadControl(4 GiB dictionary) = %v, want the dictionary refused", err)
	}
	// A second stream appended is refused, not decoded.
	two := append(bytes.Clone(ctl), ctl...)
	if err := checkXZ(two); err == nil {
		t.Error("checkXZ accepted two concatenated streams")
	}
	for n := range len(ctl) {
		if err := checkXZ(ctl[:n]); err == nil {
			t.Fatalf("checkXZ accepted the first %d of %d bytes", n, len(ctl))
		}
	}
}

// TestReadControlDpkgDeb reads packages built by dpkg-deb itself, with each
// control compression it offers (xz is its default).
func TestReadControlDpkgDeb(t *testing.T) {
	testenv.NeedCommand(t, "dpkg-deb", "dpkg")
	for _, comp := range []string{"xz", "gzip", "zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
				t.Fatal(err)
			}
			ctl := strings.Replace(pysiteControl, "Architecture: amd64", "Architecture: all", 1)
			if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(ctl), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "p.deb")
			cmd := exec.Command("dpkg-deb", "--root-owner-group", "-Z"+comp, "--build", root, out)
			if b, err := cmd.CombinedOutput(); err != nil {
				if comp == "zstd" && strings.Contains(string(b), "zstd") {
					t.Skipf("this dpkg-deb has no zstd: %s", b)
				}
				t.Fatalf("dpkg-deb: %v\n%s", err, b)
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			c, err := ReadControl(f)
			if err != nil || c.Package != "pysite" || c.Version != "0.2.0-1" || c.Architecture != "all" {
				t.Fatalf("ReadControl = %+v, %v", c, err)
			}
		})
	}
}
