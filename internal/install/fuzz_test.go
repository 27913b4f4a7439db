package install

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseStatus: dpkg-query output never panics the parser, and a
// version is returned only for an installed status.
func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{
		"install ok installed\t0.2.0-1\n",
		"install reinstreq half-installed\t0.2.0-1\n",
		"deinstall ok config-files\t0.1.0-1\nunknown ok not-installed\t\n",
		"\t\n", "a b c\td\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		v, err := parseStatus(out)
		if err != nil && v != "" {
			t.Fatalf("version %q with error %v", v, err)
		}
		// The version is the field after the tab, trimmed.
		if v != "" && (v != strings.TrimSpace(v) || !strings.Contains(string(out), v)) {
			t.Fatalf("version %q not a trimmed field of the output", v)
		}
	})
}

// FuzzParseShow: systemctl show output and health bodies never panic.
func FuzzParseShow(f *testing.F) {
	f.Add([]byte("ActiveState=active\nSubState=running\nActiveEnterTimestamp=Sat 2026-11-28 18:00:00.123456 UTC\n"))
	f.Add([]byte("ActiveEnterTimestamp=@1795870800.5\nActiveState=failed\nLoadState=not-found"))
	f.Add([]byte(`{"status":"ok","version":"0.2.0"}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		u, err := parseShow(out, "x.service")
		if err == nil && u.Active == "" {
			t.Fatal("no error without an ActiveState")
		}
		bodyVersion(out)
		if _, _, err := parseAppMeta(out, "pysite", "p.json"); err != nil && errors.Unwrap(err) == nil && !strings.Contains(err.Error(), "pysite") {
			t.Fatalf("error does not name the package: %v", err)
		}
	})
}
