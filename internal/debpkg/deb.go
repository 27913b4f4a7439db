// Package debpkg builds Debian packages with nfpm (used as a library): a
// Python web project becomes a .deb with a virtualenv or Debian's own
// python3-* packages, a hardened systemd unit, conffiles and maintainer
// scripts that follow debhelper's conventions. It also builds tandem's own
// .deb. Output is reproducible: same inputs and SOURCE_DATE_EPOCH give the
// same bytes.
package debpkg

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// File is one entry of the package's data.
type File struct {
	Dest     string      // absolute path on the target
	Source   string      // file on disk (regular files), or
	Data     []byte      // contents (generated files)
	Mode     fs.FileMode // permission bits
	Conffile bool        // listed in conffiles
	Symlink  string      // target, for a symlink
	Dir      bool        // an (empty) directory
}

// Spec is everything that goes into one .deb.
type Spec struct {
	Name        string
	Version     string // Debian version, possibly with an epoch
	Arch        string // Debian architecture ("all", "amd64")
	Maintainer  string
	Summary     string // one line
	Description string // extended description (may be several paragraphs)
	Section     string
	Priority    string
	Homepage    string
	Depends     []string
	Recommends  []string
	Files       []File
	Scripts     Scripts
	MTime       time.Time
	Compression string // gzip, xz, zstd or none
}

// Result describes a written package. Its JSON form is part of tandem's
// stable CLI output.
type Result struct {
	Package      string `json:"package"`
	Version      string `json:"version"`
	Architecture string `json:"architecture"`
	Path         string `json:"path"`
	SHA256       string `json:"sha256"`
	Size         int64  `json:"size"`
	SHA256Path   string `json:"sha256_path"`
}

// Filename is the conventional NAME_VERSION_ARCH.deb (epoch left out).
func (s *Spec) Filename() string {
	_, v := splitEpoch(s.Version)
	return fmt.Sprintf("%s_%s_%s.deb", s.Name, v, s.Arch)
}

// Write packages spec into outDir and writes NAME.deb.sha256 next to it.
// tmp is a scratch directory for generated files.
func Write(spec *Spec, outDir, tmp string) (*Result, error) {
	if err := ValidateVersion(spec.Version); err != nil {
		return nil, err
	}
	if err := ValidateMaintainer(spec.Maintainer); err != nil {
		return nil, err
	}
	gen := filepath.Join(tmp, "generated")
	if err := os.MkdirAll(gen, 0o755); err != nil {
		return nil, err
	}
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(gen, name)
		return p, os.WriteFile(p, data, 0o644)
	}
	var contents files.Contents
	seen := map[string]bool{}
	sorted := append([]File(nil), spec.Files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Dest < sorted[j].Dest })
	for i, f := range sorted {
		if seen[f.Dest] {
			return nil, fmt.Errorf("two files for %s in the package", f.Dest)
		}
		seen[f.Dest] = true
		fi := &files.ContentFileInfo{Owner: "root", Group: "root", Mode: f.Mode, MTime: spec.MTime}
		c := &files.Content{Destination: f.Dest, FileInfo: fi}
		switch {
		case f.Dir:
			c.Type = files.TypeDir
			if fi.Mode == 0 {
				fi.Mode = 0o755
			}
		case f.Symlink != "":
			c.Type, c.Source = files.TypeSymlink, f.Symlink
			fi.Mode = 0o777
		default:
			c.Type, c.Source = files.TypeFile, f.Source
			if f.Conffile {
				c.Type = files.TypeConfig
			}
			if f.Source == "" {
				p, err := write(fmt.Sprintf("f%05d", i), f.Data)
				if err != nil {
					return nil, err
				}
				c.Source = p
			}
			if fi.Mode == 0 {
				fi.Mode = 0o644
			}
			st, err := os.Stat(c.Source)
			if err != nil {
				return nil, fmt.Errorf("package file %s: %w", f.Dest, err)
			}
			fi.Size = st.Size()
		}
		contents = append(contents, c)
	}
	var scripts nfpm.Scripts
	for _, s := range []struct {
		text string
		dst  *string
		name string
	}{{spec.Scripts.PreInst, &scripts.PreInstall, "preinst"}, {spec.Scripts.PostInst, &scripts.PostInstall, "postinst"}, {spec.Scripts.PreRm, &scripts.PreRemove, "prerm"}, {spec.Scripts.PostRm, &scripts.PostRemove, "postrm"}} {
		if s.text == "" {
			continue
		}
		p, err := write(s.name, []byte(s.text))
		if err != nil {
			return nil, err
		}
		*s.dst = p
	}
	epoch, version := splitEpoch(spec.Version)
	desc := spec.Summary
	if spec.Description != "" {
		desc += "\n" + spec.Description
	}
	info := &nfpm.Info{
		Name:            spec.Name,
		Arch:            spec.Arch,
		Platform:        "linux",
		Version:         version,
		VersionSchema:   "none",
		Section:         spec.Section,
		Priority:        spec.Priority,
		Maintainer:      spec.Maintainer,
		Description:     desc,
		Homepage:        spec.Homepage,
		MTime:           spec.MTime,
		DisableGlobbing: true,
		Overridables: nfpm.Overridables{
			Depends:    spec.Depends,
			Recommends: spec.Recommends,
			Contents:   contents,
			Scripts:    scripts,
			Deb:        nfpm.Deb{Compression: spec.Compression},
		},
	}
	if epoch > 0 {
		info.Epoch = fmt.Sprint(epoch)
	}
	info = nfpm.WithDefaults(info)
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	path := filepath.Join(outDir, spec.Filename())
	tmpOut, err := os.CreateTemp(outDir, ".tandem-deb-*")
	if err != nil {
		return nil, fmt.Errorf("create output file: %w", err)
	}
	defer os.Remove(tmpOut.Name())
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmpOut, h)}
	if err := pkgr.Package(info, cw); err != nil {
		tmpOut.Close()
		return nil, fmt.Errorf("nfpm: %w", err)
	}
	if err := tmpOut.Chmod(0o644); err != nil {
		tmpOut.Close()
		return nil, err
	}
	if err := tmpOut.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmpOut.Name(), path); err != nil {
		return nil, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	sumPath := path + ".sha256"
	if err := os.WriteFile(sumPath, []byte(sum+"  "+filepath.Base(path)+"\n"), 0o644); err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(path)
	absSum, _ := filepath.Abs(sumPath)
	return &Result{Package: spec.Name, Version: spec.Version, Architecture: spec.Arch, Path: abs, SHA256: sum, Size: cw.n, SHA256Path: absSum}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// treeFiles lists a staged directory tree as package files under dest,
// keeping permissions (normalised to 0755/0644), symlinks and empty
// directories.
func treeFiles(root, dest string) ([]File, error) {
	var out []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		target := filepath.ToSlash(filepath.Join(dest, rel))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, File{Dest: target, Symlink: l})
		case d.IsDir():
			ents, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			if len(ents) == 0 {
				out = append(out, File{Dest: target, Dir: true, Mode: 0o755})
			}
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			mode := fs.FileMode(0o644)
			if info.Mode()&0o111 != 0 {
				mode = 0o755
			}
			out = append(out, File{Dest: target, Source: p, Mode: mode})
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, d.Type())
		}
		return nil
	})
	return out, err
}

// lintianOverrides renders /usr/share/lintian/overrides/NAME: every
// override is preceded by the comment that justifies it.
func lintianOverrides(pkg string, overrides []lintianOverride) []byte {
	var b strings.Builder
	for i, o := range overrides {
		if i > 0 {
			b.WriteByte('\n')
		}
		for _, l := range strings.Split(o.why, "\n") {
			b.WriteString("# " + l + "\n")
		}
		fmt.Fprintf(&b, "%s: %s\n", pkg, o.tag)
	}
	return []byte(b.String())
}

type lintianOverride struct{ tag, why string }
