package debpkg

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const examplePysite = "../../examples/pysite"

var testEpoch = time.Unix(1700000000, 0).UTC()

// needPython skips unless Debian's python3 can build the example: venv,
// pip, setuptools and wheel, and gunicorn for the service check.
func needPython(t *testing.T) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import setuptools, wheel, gunicorn, pip, venv").CombinedOutput()
	if err != nil {
		testenv.Missing(t, "Debian python3 with python3-venv, python3-pip, python3-setuptools, python3-wheel and python3-gunicorn is needed: %v %s", err, out)
	}
}

// copyProject copies a project directory to dst (a fresh directory).
func copyProject(t *testing.T, src, dst string) string {
	t.Helper()
	if err := copyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func buildExample(t *testing.T, dir string, mod func(*Options)) *Result {
	t.Helper()
	opt := Options{Dir: dir, OutDir: filepath.Join(t.TempDir(), "out"), Version: "1.2.3", Epoch: testEpoch, WorkDir: t.TempDir()}
	if mod != nil {
		mod(&opt)
	}
	res, err := BuildPython(context.Background(), opt)
	if err != nil {
		t.Fatalf("BuildPython: %v", err)
	}
	return res
}

// debEntry is one member of a package's data or control archive.
type debEntry struct {
	hdr  *tar.Header
	data []byte
}

// readDeb extracts a .deb's control and data members with dpkg-deb.
func readDeb(t *testing.T, path string) (control, data map[string]debEntry, order []string) {
	t.Helper()
	testenv.NeedCommand(t, "dpkg-deb", "dpkg")
	read := func(flag string) (map[string]debEntry, []string) {
		out, err := exec.Command("dpkg-deb", flag, path).Output()
		if err != nil {
			t.Fatalf("dpkg-deb %s %s: %v", flag, path, err)
		}
		m := map[string]debEntry{}
		var names []string
		tr := tar.NewReader(bytes.NewReader(out))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			name := strings.TrimPrefix(h.Name, ".")
			m[name] = debEntry{h, b}
			names = append(names, name)
		}
		return m, names
	}
	control, _ = read("--ctrl-tarfile")
	data, order = read("--fsys-tarfile")
	return control, data, order
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test ./internal/debpkg -run %s -update to accept):\n--- got\n%s\n--- want\n%s", name, t.Name(), got, want)
	}
}

func TestGoldenPysite(t *testing.T) {
	needPython(t)
	dir := copyProject(t, examplePysite, filepath.Join(t.TempDir(), "pysite"))
	res := buildExample(t, dir, nil)
	if filepath.Base(res.Path) != "pysite_1.2.3_all.deb" || res.Package != "pysite" || res.Architecture != "all" {
		t.Errorf("result = %+v", res)
	}
	control, data, order := readDeb(t, res.Path)
	for _, c := range []string{"/control", "/conffiles", "/preinst", "/postinst", "/prerm", "/postrm"} {
		golden(t, "pysite/"+strings.TrimPrefix(c, "/"), control[c].data)
	}
	golden(t, "pysite/pysite.service", data["/usr/lib/systemd/system/pysite.service"].data)
	golden(t, "pysite/copyright", data["/usr/share/doc/pysite/copyright"].data)
	golden(t, "pysite/lintian-overrides", data["/usr/share/lintian/overrides/pysite"].data)
	golden(t, "pysite/app.json", data["/usr/share/tandem/apps/pysite.json"].data)
	var listing strings.Builder
	for _, name := range order {
		h := data[name].hdr
		fmt.Fprintf(&listing, "%s %s/%s %s", fs.FileMode(h.Mode).Perm(), h.Uname, h.Gname, name)
		if h.Linkname != "" {
			fmt.Fprintf(&listing, " -> %s", h.Linkname)
		}
		listing.WriteByte('\n')
	}
	golden(t, "pysite/contents", []byte(listing.String()))
	for _, x := range []string{"/preinst", "/postinst", "/prerm", "/postrm"} {
		s := string(control[x].data)
		if !strings.HasPrefix(s, "#!/bin/sh\n") || !strings.Contains(s, "\nset -e\n") || control[x].hdr.Mode&0o111 == 0 {
			t.Errorf("%s must be an executable /bin/sh script with set -e", x)
		}
	}
}

func TestPackageHygiene(t *testing.T) {
	needPython(t)
	work := t.TempDir()
	dir := copyProject(t, examplePysite, filepath.Join(t.TempDir(), "pysite"))
	res := buildExample(t, dir, func(o *Options) { o.WorkDir = work })
	_, data, _ := readDeb(t, res.Path)
	for name, e := range data {
		if strings.Contains(name, "__pycache__") || strings.HasSuffix(name, ".pyc") {
			t.Errorf("bytecode in package: %s", name)
		}
		if e.hdr.Uname != "root" || e.hdr.Gname != "root" {
			t.Errorf("%s owned by %s:%s", name, e.hdr.Uname, e.hdr.Gname)
		}
		if !e.hdr.ModTime.Equal(testEpoch) {
			t.Errorf("%s mtime %v, want SOURCE_DATE_EPOCH %v", name, e.hdr.ModTime, testEpoch)
		}
		for _, p := range []string{work, dir, os.TempDir() + "/"} {
			if bytes.Contains(e.data, []byte(p)) || strings.Contains(e.hdr.Linkname, p) {
				t.Errorf("%s contains build path %s", name, p)
			}
		}
	}
	cfg := string(data["/usr/lib/pysite/pyvenv.cfg"].data)
	if !strings.Contains(cfg, "command = /usr/bin/python3 -m venv --without-pip --system-site-packages /usr/lib/pysite\n") ||
		!strings.Contains(cfg, "include-system-site-packages = true") {
		t.Errorf("pyvenv.cfg:\n%s", cfg)
	}
	unit := string(data["/usr/lib/systemd/system/pysite.service"].data)
	for _, want := range []string{
		"\nExecStart=/usr/lib/pysite/bin/python -m gunicorn pysite.wsgi:application ", "\nUser=pysite\n",
		"\nNoNewPrivileges=yes\n", "\nPrivateTmp=yes\n", "\nProtectSystem=strict\n", "\nReadWritePaths=/var/lib/pysite\n",
		"\nCapabilityBoundingSet=\n", "\nEnvironmentFile=-/etc/pysite/pysite.env\n", "\nEnvironment=TANDEM_APP_VERSION=1.2.3\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
}

func TestReproducibleFromTwoDirectories(t *testing.T) {
	needPython(t)
	a := copyProject(t, examplePysite, filepath.Join(t.TempDir(), "a", "pysite"))
	b := copyProject(t, examplePysite, filepath.Join(t.TempDir(), "elsewhere", "deeper", "pysite-copy"))
	ra := buildExample(t, a, nil)
	rb := buildExample(t, b, nil)
	if ra.SHA256 != rb.SHA256 || ra.Size != rb.Size {
		t.Errorf("two builds differ: %s (%d bytes) vs %s (%d bytes)", ra.SHA256, ra.Size, rb.SHA256, rb.Size)
	}
	sum, err := os.ReadFile(ra.SHA256Path)
	if err != nil || string(sum) != ra.SHA256+"  pysite_1.2.3_all.deb\n" {
		t.Errorf(".sha256 file = %q, %v", sum, err)
	}
	// Relocating a venv built elsewhere gives the same bytes as building it
	// at its final path in a mount namespace.
	rr := buildExample(t, a, func(o *Options) { o.Isolation = "relocate" })
	if rr.SHA256 != ra.SHA256 {
		t.Errorf("relocated build %s differs from the default build %s", rr.SHA256, ra.SHA256)
	}
	// A venv under /opt (dh-virtualenv's place) can also be built at its
	// final path in a mount namespace: the same bytes as relocating it.
	for _, d := range []string{a, b} {
		pp := filepath.Join(d, "pyproject.toml")
		data, err := os.ReadFile(pp)
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.Replace(data, []byte("[tool.tandem]\n"), []byte("[tool.tandem]\nvenv-dir = \"/opt/venvs/pysite\"\n"), 1)
		if err := os.WriteFile(pp, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ro := buildExample(t, a, func(o *Options) { o.Isolation = "relocate" })
	if err := exec.Command("unshare", "--mount", "true").Run(); err == nil || os.Geteuid() == 0 {
		rn := buildExample(t, b, func(o *Options) { o.Isolation = "namespace" })
		if rn.SHA256 != ro.SHA256 {
			t.Errorf("namespace build %s differs from the relocated build %s", rn.SHA256, ro.SHA256)
		}
	}
	_, data, _ := readDeb(t, ro.Path)
	if _, ok := data["/opt/venvs/pysite/bin/python"]; !ok {
		t.Error("venv-dir = /opt/venvs/pysite: no /opt/venvs/pysite/bin/python in the package")
	}
	control, _, _ := readDeb(t, ro.Path)
	if !strings.Contains(string(control["/postrm"].data), "mkdir -m 0755 /opt") {
		t.Error("postrm of a package in /opt does not put /opt back")
	}
}

func TestSystemMode(t *testing.T) {
	needPython(t)
	dir := copyProject(t, examplePysite, filepath.Join(t.TempDir(), "pysite"))
	res := buildExample(t, dir, func(o *Options) { o.Mode = "system" })
	control, data, _ := readDeb(t, res.Path)
	ctl := string(control["/control"].data)
	if !strings.Contains(ctl, "\nDepends: python3 (>= 3.11), python3-gunicorn (>= 20.1), adduser\n") {
		t.Errorf("control:\n%s", ctl)
	}
	if _, ok := data["/usr/lib/python3/dist-packages/pysite/app.py"]; !ok {
		t.Error("app code not in dist-packages")
	}
	for name := range data {
		if strings.HasPrefix(name, "/opt") {
			t.Errorf("system mode ships %s", name)
		}
	}
	unit := string(data["/usr/lib/systemd/system/pysite.service"].data)
	if !strings.Contains(unit, "\nExecStart=/usr/bin/python3 -m gunicorn pysite.wsgi:application") {
		t.Errorf("unit:\n%s", unit)
	}
	if !strings.Contains(string(control["/prerm"].data), "\tpy3clean -p pysite\n") || !strings.Contains(string(control["/postinst"].data), "\tpy3compile -p pysite\n") {
		t.Error("the scripts do not compile the app's bytecode on configure and remove it on remove as dh_python3's do")
	}
}

// makeWheel builds a tiny project into a wheel with Debian's setuptools,
// offline, for tests of --wheels.
func makeWheel(t *testing.T, wheels, name, body string, files map[string]string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), name)
	files["pyproject.toml"] = body
	for p, content := range files {
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", wheels, src)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1", "PIP_DISABLE_PIP_VERSION_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pip wheel %s: %v\n%s", name, err, out)
	}
}

const tinyApp = `[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "tinyapp"
version = "0.2.0"
description = "Tiny app"
authors = [{name = "T", email = "t@example.org"}]
license = {text = "Apache-2.0"}
dependencies = ["tinydep>=1.0"]
[tool.tandem]
service = "tinyserve --port 8001"
`

func tinyProject(t *testing.T, app string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tinyapp")
	for p, c := range map[string]string{"pyproject.toml": app, "tinyapp/__init__.py": "X = 1\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestOfflineWheels(t *testing.T) {
	needPython(t)
	wheels := t.TempDir()
	makeWheel(t, wheels, "tinydep", `[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "tinydep"
version = "1.0.0"
[project.scripts]
tinyserve = "tinydep.cli:main"
`, map[string]string{"tinydep/__init__.py": "", "tinydep/cli.py": "def main():\n    return 0\n"})
	dir := tinyProject(t, tinyApp)

	var sums []string
	for _, iso := range []string{"auto", "relocate"} {
		res := buildExample(t, dir, func(o *Options) { o.Wheels = wheels; o.Isolation = iso; o.Version = "" })
		sums = append(sums, res.SHA256)
		if res.Version != "0.2.0" {
			t.Errorf("version = %q, want pyproject's 0.2.0 outside git", res.Version)
		}
		control, data, _ := readDeb(t, res.Path)
		if !strings.Contains(string(control["/control"].data), "Depends: python3 (>= 3.11), python3 (<< 3.12), adduser\n") {
			t.Errorf("control:\n%s", control["/control"].data)
		}
		script := data["/usr/lib/tinyapp/bin/tinyserve"]
		if !strings.HasPrefix(string(script.data), "#!/usr/lib/tinyapp/bin/python\n") || script.hdr.Mode&0o111 == 0 {
			t.Errorf("entry point script (%o):\n%s", script.hdr.Mode, script.data)
		}
		unit := string(data["/usr/lib/systemd/system/tinyapp.service"].data)
		if !strings.Contains(unit, `ExecStart=/usr/lib/tinyapp/bin/python -c "import sys, tinydep.cli; sys.argv[0] = \"tinyserve\"; sys.exit(tinydep.cli.main())" --port 8001`) {
			t.Errorf("unit:\n%s", unit)
		}
		// RECORD hashes must match the (possibly rewritten) files.
		var record []byte
		for name, e := range data {
			if strings.HasSuffix(name, "/tinydep-1.0.0.dist-info/RECORD") {
				record = e.data
			}
			if strings.HasSuffix(name, "direct_url.json") {
				t.Errorf("%s was not removed", name)
			}
		}
		site := "/usr/lib/tinyapp/lib/python3.11/site-packages/"
		checked := 0
		for _, line := range strings.Split(string(record), "\n") {
			f := strings.Split(strings.TrimSpace(line), ",")
			if len(f) != 3 || f[1] == "" {
				continue
			}
			e, ok := data[filepath.Clean(site+f[0])]
			if !ok {
				t.Errorf("RECORD lists %s, not in the package", f[0])
				continue
			}
			sum := sha256.Sum256(e.data)
			if f[1] != "sha256="+base64.RawURLEncoding.EncodeToString(sum[:]) || f[2] != fmt.Sprint(len(e.data)) {
				t.Errorf("RECORD entry %s does not match the file", f[0])
			}
			checked++
		}
		if checked < 3 {
			t.Errorf("only %d RECORD entries checked:\n%s", checked, record)
		}
		if ov := string(data["/usr/share/lintian/overrides/tinyapp"].data); !strings.Contains(ov, "unusual-interpreter") {
			t.Errorf("no justified override for the entry point's interpreter:\n%s", ov)
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("auto and relocate builds differ: %v", sums)
	}
}

func TestBuildErrors(t *testing.T) {
	needPython(t)
	empty := t.TempDir()
	for _, tc := range []struct {
		name    string
		dir     func() string
		opt     func(*Options)
		want    []string
		prereq  bool
		version string
	}{
		{name: "no pyproject", dir: func() string { return empty }, want: []string{"no pyproject.toml", "add a pyproject.toml"}},
		{name: "no name", dir: func() string {
			return tinyProject(t, strings.Replace(tinyApp, `name = "tinyapp"`, "", 1))
		}, want: []string{"project.name", "missing"}},
		{name: "no version", dir: func() string {
			return tinyProject(t, strings.Replace(tinyApp, `version = "0.2.0"`, "", 1))
		}, want: []string{"no version", "--version"}, version: "-"},
		{name: "no service", dir: func() string {
			return tinyProject(t, strings.Replace(tinyApp, `service = "tinyserve --port 8001"`, "", 1))
		}, want: []string{"tool.tandem.service", "gunicorn"}},
		{name: "unresolvable offline", dir: func() string { return tinyProject(t, tinyApp) },
			opt: func(o *Options) { o.Wheels = t.TempDir() }, want: []string{"tinydep", "cannot be resolved offline", "--wheels"}},
		{name: "unresolvable without wheels", dir: func() string { return tinyProject(t, tinyApp) },
			want: []string{"tinydep", "cannot be resolved offline", "--index-url", "python3-tinydep"}},
		{name: "service not in venv", dir: func() string {
			return tinyProject(t, strings.NewReplacer(`dependencies = ["tinydep>=1.0"]`, "", "tinyserve", "gunicorn").Replace(tinyApp))
		}, want: []string{`service command "gunicorn" does not exist in the venv`, "python3-gunicorn", "system-site-packages"}},
		{name: "no maintainer", dir: func() string {
			return tinyProject(t, strings.NewReplacer(`dependencies = ["tinydep>=1.0"]`, "", `authors = [{name = "T", email = "t@example.org"}]`, "", "tinyserve --port 8001", "python -m http.server").Replace(tinyApp))
		}, want: []string{"no maintainer", "[tool.tandem]"}},
		{name: "bad version", dir: func() string { return tinyProject(t, tinyApp) },
			version: "release-1", want: []string{"not a valid Debian version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := Options{Dir: tc.dir(), OutDir: t.TempDir(), Version: "1.0", Epoch: testEpoch}
			switch tc.version {
			case "-":
				opt.Version = ""
			case "":
			default:
				opt.Version = tc.version
			}
			if tc.opt != nil {
				tc.opt(&opt)
			}
			_, err := BuildPython(context.Background(), opt)
			var be *BuildError
			if !errors.As(err, &be) {
				t.Fatalf("err = %v (%T), want a BuildError", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestUnitVerifies runs systemd-analyze verify on the generated unit (with
// ExecStart pointed at an interpreter that exists on this machine).
func TestUnitVerifies(t *testing.T) {
	testenv.NeedCommand(t, "systemd-analyze", "systemd")
	unit := AppUnit{Name: "verifyme", Description: "d", Documentation: "https://example.org", DataDir: "/var/lib/verifyme",
		ExecStart: "/usr/bin/env true", Environment: map[string]string{"A": "b c"}, EnvFiles: []string{"/etc/verifyme/x.env"}}.Render()
	dir := t.TempDir()
	p := filepath.Join(dir, "verifyme.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s\n%s", err, out, unit)
	}
}

func TestUnitOverrides(t *testing.T) {
	u := AppUnit{Name: "x", Description: "d", DataDir: "/var/lib/x", ExecStart: "/bin/true",
		Overrides: map[string]string{"MemoryDenyWriteExecute": "", "SystemCallFilter": "@system-service @debug", "LimitNOFILE": "65536"}}.Render()
	if strings.Contains(u, "MemoryDenyWriteExecute") {
		t.Error("empty override did not remove the directive")
	}
	if strings.Count(u, "SystemCallFilter=") != 1 || !strings.Contains(u, "SystemCallFilter=@system-service @debug\n") {
		t.Errorf("override did not replace SystemCallFilter:\n%s", u)
	}
	if !strings.Contains(u, "LimitNOFILE=65536\n[Install]") && !strings.Contains(u, "LimitNOFILE=65536\n\n[Install]") {
		t.Errorf("new directive not appended to [Service]:\n%s", u)
	}
}

func TestRecordPath(t *testing.T) {
	for in, want := range map[string]string{
		"a/b.py,sha256=x,1":            "a/b.py",
		`"a,b.py",sha256=x,1`:          "a,b.py",
		`"say ""hi"".txt",sha256=x,1`:  `say "hi".txt`,
		"../../../bin/tool,sha256=x,3": "../../../bin/tool",
	} {
		if got := recordPath(in); got != want {
			t.Errorf("recordPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRelocateTrampoline(t *testing.T) {
	dir := t.TempDir()
	from := "/tmp/very/long/staging/path/opt/venvs/x"
	script := "#!/bin/sh\n'''exec' \"" + from + "/bin/python\" \"$0\" \"$@\"\n' '''\nimport sys\n"
	p := filepath.Join(dir, "tool")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin.so"), []byte("\x7fELF\x00"+from), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := map[string]bool{}
	err := relocate(dir, from, "/opt/venvs/x", changed)
	var be *BuildError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "binary file") {
		t.Errorf("relocating a binary with the path: %v", err)
	}
	os.Remove(filepath.Join(dir, "bin.so"))
	if err := relocate(dir, from, "/opt/venvs/x", changed); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "#!/opt/venvs/x/bin/python\nimport sys\n" || !changed[p] {
		t.Errorf("relocated script:\n%s", got)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v", st.Mode())
	}
}

func TestCopyrightAndChangelog(t *testing.T) {
	c := RenderCopyright(CopyrightParams{Name: "x", Year: 2024, Holders: []string{"A", "B"}, License: ResolveLicense("GPL-3.0-or-later", nil)})
	for _, want := range []string{"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n", "Copyright: 2024 A\n           2024 B\n", "License: GPL-3+\n", "/usr/share/common-licenses/GPL-3"} {
		if !strings.Contains(c, want) {
			t.Errorf("copyright lacks %q:\n%s", want, c)
		}
	}
	c = RenderCopyright(CopyrightParams{Name: "x", Year: 2024, License: ResolveLicense("MIT", []LicenseFile{{Path: "LICENSE", Text: "Line one\n\nLine two\n"}})})
	if !strings.HasSuffix(c, "License: Expat\n Line one\n .\n Line two\n") {
		t.Errorf("license text block:\n%s", c)
	}
	gz, err := RenderChangelog("x", "1.0", "A <a@example.org>", "Note.", testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := RenderChangelog("x", "1.0", "A <a@example.org>", "Note.", testEpoch)
	if !bytes.Equal(gz, again) {
		t.Error("changelog gzip is not deterministic")
	}
	if changelogName("1.0") != "changelog.gz" || changelogName("1.0-1") != "changelog.Debian.gz" || changelogName("2:1.0-1") != "changelog.Debian.gz" {
		t.Error("changelogName")
	}
}

func TestWriteRejectsBadSpecs(t *testing.T) {
	for _, s := range []Spec{
		{Name: "x", Version: "v1", Arch: "all", Maintainer: "A <a@example.org>"},
		{Name: "x", Version: "1.0", Arch: "all", Maintainer: "nobody"},
		{Name: "x", Version: "1.0", Arch: "all", Maintainer: "A <a@example.org>", Files: []File{{Dest: "/a", Data: []byte("1")}, {Dest: "/a", Data: []byte("2")}}},
	} {
		if _, err := Write(&s, t.TempDir(), t.TempDir()); err == nil {
			t.Errorf("Write(%+v) succeeded", s)
		}
	}
}

// TestExampleUnitTests runs examples/pysite's own tests, so that CI covers
// the example the lab serves.
func TestExampleUnitTests(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		testenv.Missing(t, "needs /usr/bin/python3 (Debian package python3)")
	}
	cmd := exec.Command("/usr/bin/python3", "-m", "unittest", "discover", "-s", "tests")
	cmd.Dir = examplePysite
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Errorf("python3 -m unittest in examples/pysite: %v\n%s", err, out)
	}
}
