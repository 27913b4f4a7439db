package forge

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/tandem-ha/tandem/internal/artifact"
)

// maxEntries bounds the entries of an artifact archive.
const maxEntries = 1000

// debName is a file name a .deb may be written under in the target
// directory: no path, no leading dot.
var debName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9+._~-]*\.deb$`)

// unpacked is what an artifact archive held.
type unpacked struct {
	DebPath string
	Expect  artifact.Expect
}

// extractFrom finds, in the archive, exactly one .deb and its checksum
// (<name>.deb.sha256, else SHA256SUMS beside it) and optional signature
// (<name>.deb.sig), and writes the .deb into dir under its base name. The
// .deb is bounded by max bytes however well it compresses; any entry with
// an absolute path, a ".." element or a backslash makes the archive unsafe.
// Nothing else is written, so no entry can land outside dir.
func extractFrom(zr *zip.Reader, dir string, max int64) (unpacked, error) {
	if len(zr.File) > maxEntries {
		return unpacked{}, fmt.Errorf("%w: %d entries, more than %d", ErrBadArchive, len(zr.File), maxEntries)
	}
	byName := map[string]*zip.File{}
	var debs []string
	for _, f := range zr.File {
		name := f.Name
		if err := safeEntry(name); err != nil {
			return unpacked{}, err
		}
		if strings.HasSuffix(name, "/") || f.FileInfo().IsDir() || !f.Mode().IsRegular() {
			continue // directories, symlinks and devices are never read
		}
		name = path.Clean(name)
		if _, dup := byName[name]; dup {
			return unpacked{}, fmt.Errorf("%w: %q appears twice", ErrBadArchive, name)
		}
		byName[name] = f
		if strings.HasSuffix(name, ".deb") {
			debs = append(debs, name)
		}
	}
	switch len(debs) {
	case 0:
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) > 10 {
			names = append(names[:10], "…")
		}
		return unpacked{}, fmt.Errorf("%w: the archive holds no .deb (it has %v): does the job publish dist/*.deb as its artifact?", ErrNoArtifact, names)
	case 1:
	default:
		sort.Strings(debs)
		return unpacked{}, fmt.Errorf("%w: the archive holds %d .deb files %v; publish exactly one", ErrNoArtifact, len(debs), debs)
	}
	deb := debs[0]
	base := path.Base(deb)
	if !debName.MatchString(base) {
		return unpacked{}, fmt.Errorf("%w: .deb file name %q is not a plain package file name", ErrBadArchive, base)
	}

	// The checksum: <deb>.sha256 beside it, else SHA256SUMS beside it.
	sumFile := byName[deb+".sha256"]
	if sumFile == nil {
		sumFile = byName[path.Join(path.Dir(deb), "SHA256SUMS")]
	}
	if sumFile == nil {
		return unpacked{}, fmt.Errorf("%w: the archive has %s but no %s.sha256 (or SHA256SUMS) beside it: publish the sha256sum output with the .deb", ErrNoArtifact, deb, base)
	}
	sumText, err := readSmall(sumFile)
	if err != nil {
		return unpacked{}, err
	}
	digest, err := artifact.ParseChecksum(sumText, base)
	if err != nil {
		return unpacked{}, fmt.Errorf("%w: %s: %v", ErrBadArchive, sumFile.Name, err)
	}
	exp := artifact.Expect{SHA256: digest}
	if sig := byName[deb+".sig"]; sig != nil {
		if exp.Signature, err = readSmall(sig); err != nil {
			return unpacked{}, err
		}
	}

	f := byName[deb]
	if f.UncompressedSize64 > uint64(max) {
		return unpacked{}, fmt.Errorf("%w: %s is %d bytes, the limit is %d (max_size)", ErrTooLarge, deb, f.UncompressedSize64, max)
	}
	out := filepath.Join(dir, base)
	if err := writeEntry(f, out, max); err != nil {
		return unpacked{}, err
	}
	return unpacked{DebPath: out, Expect: exp}, nil
}

// safeEntry refuses entry names that could point outside a directory.
func safeEntry(name string) error {
	bad := name == "" || strings.ContainsAny(name, "\\\x00") || path.IsAbs(name) || filepath.IsAbs(name) || filepath.VolumeName(name) != ""
	if !bad {
		for el := range strings.SplitSeq(name, "/") {
			if el == ".." {
				bad = true
				break
			}
		}
	}
	if bad {
		return fmt.Errorf("%w: unsafe entry name %q", ErrBadArchive, name)
	}
	return nil
}

// readSmall reads a checksum or signature entry, at most maxSideFile bytes.
func readSmall(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > maxSideFile {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than a checksum or signature file can be", ErrBadArchive, f.Name, f.UncompressedSize64)
	}
	r, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadArchive, f.Name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxSideFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadArchive, f.Name, err)
	}
	if len(b) > maxSideFile {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadArchive, f.Name, maxSideFile)
	}
	return b, nil
}

// writeEntry decompresses f into a new file at out, at most max bytes;
// on failure nothing is left at out.
func writeEntry(f *zip.File, out string, max int64) (err error) {
	r, err := f.Open()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, f.Name, err)
	}
	defer r.Close()
	w, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("fetch: %s already exists: give Fetch an empty directory", out)
	}
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer func() {
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("fetch: write %s: %w", out, cerr)
		}
		if err != nil {
			os.Remove(out)
		}
	}()
	n, err := io.Copy(w, io.LimitReader(r, max+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("fetch: write %s: %w", out, err)
		}
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, f.Name, err)
	}
	if n > max {
		return fmt.Errorf("%w: %s unpacks to more than %d bytes (max_size)", ErrTooLarge, f.Name, max)
	}
	return nil
}
