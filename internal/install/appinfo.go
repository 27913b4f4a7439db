package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// AppMetaDir is where `tandem package` installs one JSON file per app
// package (the same path as debpkg.AppMetaDir; this package cannot import
// the packaging tooling).
const AppMetaDir = "/usr/share/tandem/apps"

// appMeta is the part of debpkg.AppMeta delivery needs. Field names are
// stable.
type appMeta struct {
	Package    string `json:"package"`
	Unit       string `json:"unit"`
	HealthPath string `json:"health_path,omitempty"`
}

// maxMeta bounds the app metadata file.
const maxMeta = 64 << 10

// AppInfo returns the systemd unit and health path `tandem package`
// recorded for pkg in /usr/share/tandem/apps/PKG.json. healthPath is ""
// when the app declared none (the gate then checks only the unit).
func AppInfo(pkg string) (unit, healthPath string, err error) {
	return appInfoIn(AppMetaDir, pkg)
}

func appInfoIn(dir, pkg string) (string, string, error) {
	if !pkgName.MatchString(pkg) || strings.Contains(pkg, ":") {
		return "", "", fmt.Errorf("app info of %q: not a Debian package name", pkg)
	}
	path := filepath.Join(dir, pkg+".json")
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("app info of %s: %s does not exist: is the package installed, and was it built with `tandem package`?", pkg, path)
	}
	if err != nil {
		return "", "", fmt.Errorf("app info of %s: %w", pkg, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMeta+1))
	if err != nil {
		return "", "", fmt.Errorf("app info of %s: read %s: %w", pkg, path, err)
	}
	if len(b) > maxMeta {
		return "", "", fmt.Errorf("app info of %s: %s is larger than %d bytes", pkg, path, maxMeta)
	}
	return parseAppMeta(b, pkg, path)
}

// parseAppMeta checks the metadata of pkg read from path.
func parseAppMeta(b []byte, pkg, path string) (string, string, error) {
	var m appMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return "", "", fmt.Errorf("app info of %s: %s: %w; rebuild the package with `tandem package`", pkg, path, err)
	}
	if m.Package != "" && m.Package != pkg {
		return "", "", fmt.Errorf("app info of %s: %s names package %q", pkg, path, m.Package)
	}
	if m.Unit == "" || strings.ContainsAny(m.Unit, "/ \t\n") || strings.HasPrefix(m.Unit, "-") {
		return "", "", fmt.Errorf("app info of %s: %s has no valid unit name (got %q)", pkg, path, m.Unit)
	}
	if m.HealthPath != "" && !strings.HasPrefix(m.HealthPath, "/") {
		return "", "", fmt.Errorf("app info of %s: %s: health_path %q must start with /", pkg, path, m.HealthPath)
	}
	return m.Unit, m.HealthPath, nil
}
