package debpkg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/pyproject"
)

// debianPython maps PEP 503 names whose Debian binary package is not simply
// python3-NAME. Extra packages (such as gunicorn's command) follow a space.
// The epoch is needed because Debian's version of some packages carries one.
var debianPython = map[string]struct {
	pkgs  []string
	epoch string
}{
	"django":              {[]string{"python3-django"}, "3:"},
	"gunicorn":            {[]string{"python3-gunicorn", "gunicorn"}, ""},
	"pyyaml":              {[]string{"python3-yaml"}, ""},
	"pillow":              {[]string{"python3-pil"}, ""},
	"beautifulsoup4":      {[]string{"python3-bs4"}, ""},
	"psycopg2-binary":     {[]string{"python3-psycopg2"}, ""},
	"python-dateutil":     {[]string{"python3-dateutil"}, ""},
	"python-dotenv":       {[]string{"python3-dotenv"}, ""},
	"pyjwt":               {[]string{"python3-jwt"}, ""},
	"attrs":               {[]string{"python3-attr"}, ""},
	"scikit-learn":        {[]string{"python3-sklearn"}, ""},
	"pyopenssl":           {[]string{"python3-openssl"}, ""},
	"opencv-python":       {[]string{"python3-opencv"}, ""},
	"mysqlclient":         {[]string{"python3-mysqldb"}, ""},
	"pyserial":            {[]string{"python3-serial"}, ""},
	"pymongo":             {[]string{"python3-pymongo"}, ""},
	"protobuf":            {[]string{"python3-protobuf"}, ""},
	"msgpack":             {[]string{"python3-msgpack"}, ""},
	"markdown":            {[]string{"python3-markdown"}, ""},
	"djangorestframework": {[]string{"python3-djangorestframework"}, ""},
	"typing-extensions":   {[]string{"python3-typing-extensions"}, ""},
	"uvicorn":             {[]string{"python3-uvicorn"}, ""},
}

// DebianName returns the Debian binary package(s) for a PyPI project name,
// honouring the project's own [tool.tandem.debian-names] first.
func DebianName(name string, overrides map[string]string) (pkgs []string, epoch string) {
	n := pyproject.NormalizeName(name)
	for k, v := range overrides {
		if pyproject.NormalizeName(k) == n {
			return strings.Fields(v), ""
		}
	}
	if m, ok := debianPython[n]; ok {
		return m.pkgs, m.epoch
	}
	return []string{"python3-" + n}, ""
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
func SystemDepends(reqs []pyproject.Requirement, overrides map[string]string, pyVersion string) (deps, notes []string) {
	env := MarkerEnv(pyVersion)
	seen := map[string]bool{}
	for _, r := range reqs {
		if r.Marker != nil && (r.Marker.Mentions("extra") || !r.Marker.Eval(env)) {
			notes = append(notes, fmt.Sprintf("%s: skipped (marker does not apply to Debian's python %s)", r.Raw, pyVersion))
			continue
		}
		if r.URL != "" {
			notes = append(notes, fmt.Sprintf("%s: direct URL ignored; the Debian package is used", r.Raw))
		}
		pkgs, epoch := DebianName(r.Name, overrides)
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
	return deps, notes
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
