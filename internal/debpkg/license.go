package debpkg

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// LicenseFile is one license file of the project, by its path relative to
// the project.
type LicenseFile struct {
	Path string
	Text string
}

// LicenseParagraph is a stand-alone License paragraph of the copyright file.
type LicenseParagraph struct {
	Name string // DEP-5 short name
	Text string // full text, or a reference to /usr/share/common-licenses
}

// CopyrightLicense is what the copyright file says about the license.
type CopyrightLicense struct {
	Expr       string             // DEP-5 License field of "Files: *"
	Text       string             // the text under it (single license)
	Paragraphs []LicenseParagraph // one per name, for an expression
}

// DEP5Expr maps a PEP 639 (SPDX) license expression to DEP-5 syntax:
// "MIT OR Apache-2.0" is "Expat or Apache-2.0", "GPL-2.0-or-later WITH
// Classpath-exception-2.0" is "GPL-2+ with Classpath-exception-2.0
// exception". It returns the expression and the license names in it.
func DEP5Expr(spdx string) (string, []string) {
	fields := strings.Fields(strings.NewReplacer("(", " ", ")", " ").Replace(spdx))
	var out, names []string
	for i := 0; i < len(fields); i++ {
		switch strings.ToUpper(fields[i]) {
		case "AND", "OR":
			out = append(out, strings.ToLower(fields[i]))
		case "WITH":
			if i+1 < len(fields) {
				out = append(out, "with", fields[i+1], "exception")
				i++
			}
		default:
			n := debianLicenseName(fields[i])
			out = append(out, n)
			names = append(names, n)
		}
	}
	return strings.Join(out, " "), names
}

// commonLicenseText is the reference Debian uses for a license whose text
// is in /usr/share/common-licenses ("" when it is not there).
func commonLicenseText(name string) string {
	for spdx, file := range commonLicenses {
		if debianLicenseName(spdx) == name || spdx == name {
			return "On Debian systems, the complete text of this license can be found in\n/usr/share/common-licenses/" + file + "."
		}
	}
	return ""
}

// ResolveLicense decides the copyright file's License fields from the
// SPDX expression (possibly "") and the project's license files. A license
// Debian ships in /usr/share/common-licenses is referenced, never copied
// (lintian's copyright-not-using-common-license-*).
func ResolveLicense(spdx string, files []LicenseFile) CopyrightLicense {
	if spdx == "" {
		for _, f := range files {
			if g := guessSPDX("", f.Text); g != "other" {
				spdx = g
				break
			}
		}
	}
	if spdx == "" {
		if len(files) == 0 {
			return CopyrightLicense{Expr: "other", Text: "No license was declared in pyproject.toml ([project].license)."}
		}
		spdx = "other"
	}
	expr, names := DEP5Expr(spdx)
	textFor := func(name string) string {
		if c := commonLicenseText(name); c != "" {
			return c
		}
		belongs := func(f LicenseFile, n string) bool {
			base := strings.ToLower(path.Base(f.Path))
			alias := map[string]string{"Expat": "mit"}[n]
			return strings.Contains(base, strings.ToLower(n)) || (alias != "" && strings.Contains(base, alias)) ||
				strings.EqualFold(guessSPDX("", f.Text), n)
		}
		var picked, unclaimed []LicenseFile
		for _, f := range files {
			if belongs(f, name) {
				picked = append(picked, f)
				continue
			}
			other := false
			for _, n := range names {
				other = other || (n != name && belongs(f, n))
			}
			if !other {
				unclaimed = append(unclaimed, f)
			}
		}
		if len(picked) == 0 {
			picked = unclaimed
		}
		var parts []string
		for _, f := range picked {
			parts = append(parts, strings.TrimRight(f.Text, "\n\t "))
		}
		if len(parts) == 0 {
			return "See the " + name + " license; its text was not found in the project."
		}
		return strings.Join(parts, "\n\n")
	}
	if len(names) <= 1 {
		return CopyrightLicense{Expr: expr, Text: textFor(expr)}
	}
	cl := CopyrightLicense{Expr: expr}
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			cl.Paragraphs = append(cl.Paragraphs, LicenseParagraph{Name: n, Text: textFor(n)})
		}
	}
	return cl
}

// FindLicenseFiles expands PEP 639 license-files globs (or, when there
// are none, the legacy license = {file = ...} and the usual LICENSE*,
// LICENCE*, COPYING*, NOTICE* and AUTHORS* names) in the project dir.
func FindLicenseFiles(dir string, globs []string, legacy string) ([]LicenseFile, error) {
	patterns := globs
	if len(patterns) == 0 {
		if legacy != "" {
			patterns = []string{legacy}
		} else {
			patterns = []string{"LICEN[CS]E*", "COPYING*", "NOTICE*"}
		}
	}
	var rels []string
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if skipSource(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel = filepath.ToSlash(rel)
		for _, pat := range patterns {
			if globMatch(pat, rel) && !seen[rel] {
				seen[rel] = true
				rels = append(rels, rel)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(rels)
	var out []LicenseFile
	for _, r := range rels {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(r)))
		if err != nil {
			return nil, err
		}
		out = append(out, LicenseFile{Path: r, Text: string(data)})
	}
	return out, nil
}

// globMatch matches a PEP 639 glob: path.Match per segment, where "**"
// matches any number of segments.
func globMatch(pattern, name string) bool {
	return matchSegs(strings.Split(pattern, "/"), strings.Split(name, "/"))
}

func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if matchSegs(pat[1:], name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, err := path.Match(pat[0], name[0]); err != nil || !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
