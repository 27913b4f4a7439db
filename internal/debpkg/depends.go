package debpkg

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/pyproject"
)

// DHPythonFallback is dh-python's mapping of distribution names to Debian
// packages (package dh-python): "Django python3-django", one a line. It
// is what dh_python3 itself uses for a requirement without a pydist file.
const DHPythonFallback = "/usr/share/dh-python/dist/cpython3_fallback"

// ParseDistMap reads dh-python's fallback format: a distribution name and
// a Debian relation per line, comments with '#'. Keys are PEP 503
// normalised.
func ParseDistMap(r io.Reader) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		dist, rel, ok := strings.Cut(line, " ")
		if !ok || strings.TrimSpace(rel) == "" {
			continue
		}
		m[pyproject.NormalizeName(dist)] = strings.TrimSpace(rel)
	}
	return m, sc.Err()
}

// LoadDistMap reads dh-python's mapping from path.
func LoadDistMap(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseDistMap(f)
}

// knownEpochs are epochs of Debian's python3-* packages, for when the
// build machine does not have the package installed to ask dpkg.
var knownEpochs = map[string]string{"python3-django": "3:"}

// DebianNames resolves PyPI names to Debian packages: the project's own
// [tool.tandem] debian-names first, then dh-python's mapping.
type DebianNames struct {
	Overrides map[string]string
	Dist      map[string]string
	// Epoch gives a package's version epoch ("3:"); nil uses knownEpochs.
	Epoch func(pkg string) string
}

// Lookup returns the Debian package(s) for a PyPI project name and the
// epoch of the first; ok is false when neither mapping knows it.
func (d DebianNames) Lookup(name string) (pkgs []string, epoch string, ok bool) {
	n := pyproject.NormalizeName(name)
	for k, v := range d.Overrides {
		if pyproject.NormalizeName(k) == n {
			pkgs = strings.Fields(v)
			return pkgs, d.epoch(pkgs), len(pkgs) > 0
		}
	}
	rel, ok := d.Dist[n]
	if !ok {
		return nil, "", false
	}
	pkg, _, _ := strings.Cut(rel, " ")
	return []string{pkg}, d.epoch([]string{pkg}), true
}

func (d DebianNames) epoch(pkgs []string) string {
	if len(pkgs) == 0 {
		return ""
	}
	if d.Epoch != nil {
		return d.Epoch(pkgs[0])
	}
	return knownEpochs[pkgs[0]]
}

// Guess is Lookup's package, else Debian's usual python3-NAME, for hints.
func (d DebianNames) Guess(name string) string {
	if pkgs, _, ok := d.Lookup(name); ok {
		return pkgs[0]
	}
	return "python3-" + pyproject.NormalizeName(name)
}

// UnmappedError names the dependencies no mapping knows.
type UnmappedError struct{ Names []string }

func (e *UnmappedError) Error() string {
	var ex []string
	for _, n := range e.Names {
		ex = append(ex, fmt.Sprintf("%q = \"python3-...\"", n))
	}
	return fmt.Sprintf("no Debian package is known for the dependencies %s (neither [tool.tandem.debian-names] nor dh-python's mapping %s names one): add them to [tool.tandem.debian-names], e.g. %s, or build in venv mode",
		strings.Join(e.Names, ", "), DHPythonFallback, strings.Join(ex, ", "))
}

// MarkerEnv is the target system's marker environment (Debian 12's python).
func MarkerEnv(pyVersion string) map[string]string {
	return map[string]string{
		"python_version": pyVersion, "python_full_version": pyVersion + ".0",
		"os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
		"platform_python_implementation": "CPython", "implementation_name": "cpython",
		"platform_machine": "x86_64",
	}
}

// SystemDepends turns [project].dependencies into Debian relations for
// "system" mode. Requirements whose marker is false on the target, or that
// belong to an extra, are dropped. notes explains anything that could not be
// translated exactly.
// Dependencies no mapping knows are returned together as an
// *UnmappedError.
func SystemDepends(reqs []pyproject.Requirement, names DebianNames, pyVersion string) (deps, notes []string, err error) {
	env := MarkerEnv(pyVersion)
	seen := map[string]bool{}
	var unmapped []string
	for _, r := range reqs {
		if r.Marker != nil && (r.Marker.Mentions("extra") || !r.Marker.Eval(env)) {
			notes = append(notes, fmt.Sprintf("%s: skipped (marker does not apply to Debian's python %s)", r.Raw, pyVersion))
			continue
		}
		if r.URL != "" {
			notes = append(notes, fmt.Sprintf("%s: direct URL ignored; the Debian package is used", r.Raw))
		}
		pkgs, epoch, ok := names.Lookup(r.Name)
		if !ok {
			unmapped = append(unmapped, r.Name)
			continue
		}
		if pkgs[0] == "python3" {
			notes = append(notes, fmt.Sprintf("%s: part of Python itself in Debian", r.Raw))
			continue
		}
		var rels []string
		for _, s := range r.Specifiers {
			rr, note := specToDebian(s, epoch)
			if note != "" {
				notes = append(notes, fmt.Sprintf("%s: %s", r.Raw, note))
			}
			rels = append(rels, rr...)
		}
		add := func(d string) {
			if !seen[d] {
				deps = append(deps, d)
				seen[d] = true
			}
		}
		if len(rels) == 0 {
			add(pkgs[0])
		}
		for _, rel := range rels {
			add(fmt.Sprintf("%s (%s)", pkgs[0], rel))
		}
		// Secondary packages (e.g. gunicorn's command) take no version.
		for _, p := range pkgs[1:] {
			add(p)
		}
	}
	if len(unmapped) > 0 {
		return deps, notes, &UnmappedError{Names: unmapped}
	}
	return deps, notes, nil
}

// specToDebian translates one PEP 440 clause into Debian relations. Debian
// revisions ("-1") and repacks ("+dfsg") sort after the upstream version, so
// "<= V" becomes "<< V.~" (which admits 2.0-1 and 2.0+dfsg-1 but not 2.0.1),
// and "< V" becomes "<< V~" (which also rejects V's pre-releases).
func specToDebian(s pyproject.Specifier, epoch string) ([]string, string) {
	v := s.Version
	if strings.HasSuffix(v, ".*") {
		base := strings.TrimSuffix(v, ".*")
		dv, err := FromPEP440(base)
		if err != nil {
			return nil, "version not translatable, dropped"
		}
		next, ok := bumpLast(base)
		if !ok {
			return nil, "wildcard not translatable, dropped"
		}
		if s.Op == "!=" {
			return nil, "exclusion cannot be expressed in Depends, dropped"
		}
		dn, _ := FromPEP440(next)
		return []string{">= " + epoch + dv + "~", "<< " + epoch + dn + "~"}, ""
	}
	dv, err := FromPEP440(v)
	if err != nil {
		return nil, fmt.Sprintf("version %q not translatable, dropped", v)
	}
	ev := epoch + dv
	switch s.Op {
	case ">=":
		return []string{">= " + ev}, ""
	case ">":
		return []string{">= " + ev + ".~"}, ""
	case "<":
		return []string{"<< " + ev + "~"}, ""
	case "<=":
		return []string{"<< " + ev + ".~"}, ""
	case "==", "===":
		return []string{">= " + ev, "<< " + ev + ".~"}, ""
	case "~=":
		parts := strings.Split(v, ".")
		if len(parts) < 2 {
			return []string{">= " + ev}, "~= needs two components, upper bound dropped"
		}
		next, ok := bumpLast(strings.Join(parts[:len(parts)-1], "."))
		if !ok {
			return []string{">= " + ev}, "upper bound dropped"
		}
		dn, _ := FromPEP440(next)
		return []string{">= " + ev, "<< " + epoch + dn + "~"}, ""
	case "!=":
		return nil, "exclusion cannot be expressed in Depends, dropped"
	}
	return nil, "operator " + s.Op + " not translatable, dropped"
}

// bumpLast increments the last numeric component: "1.4" -> "1.5".
func bumpLast(v string) (string, bool) {
	parts := strings.Split(v, ".")
	n, err := strconv.Atoi(parts[len(parts)-1])
	if err != nil {
		return "", false
	}
	parts[len(parts)-1] = strconv.Itoa(n + 1)
	return strings.Join(parts, "."), true
}

// pythonDepends is the interpreter relation. A venv links against one
// minor version of /usr/bin/python3, so it is pinned to it; system mode
// only needs the lower bound from requires-python (or the build's minor).
func pythonDepends(mode, pyVersion, requiresPython string) []string {
	if mode == "venv" {
		major, minor, _ := strings.Cut(pyVersion, ".")
		m, _ := strconv.Atoi(minor)
		return []string{"python3 (>= " + pyVersion + ")", fmt.Sprintf("python3 (<< %s.%d)", major, m+1)}
	}
	for _, clause := range strings.Split(requiresPython, ",") {
		clause = strings.TrimSpace(clause)
		if v, ok := strings.CutPrefix(clause, ">="); ok {
			return []string{"python3 (>= " + strings.TrimSpace(v) + ")"}
		}
	}
	return []string{"python3"}
}
