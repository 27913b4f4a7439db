package debpkg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tandem-ha/tandem/internal/prereq"
	"github.com/tandem-ha/tandem/internal/pyproject"
)

// DefaultVenvParent is where venv-mode packages install their virtualenv
// by default: /usr/lib/NAME, as Debian policy wants for a package's
// private files. [tool.tandem] venv-dir = "/opt/venvs/NAME" gives
// dh-virtualenv's location instead.
const DefaultVenvParent = "/usr/lib"

// The venv must work at its final path (/usr/lib/NAME or
// /opt/venvs/NAME): pip writes that path into pyvenv.cfg, activate scripts
// and the shebangs of entry points. Two ways to get there, both ending in
// the same bytes:
//
//   - namespace (only for a venv under /opt): python and pip run in a
//     private mount namespace where a staging directory is bind-mounted
//     over /opt, so the venv is really built at /opt/venvs/NAME while the
//     host's /opt is untouched. Root gets a plain mount namespace; other
//     users a user namespace.
//   - relocate: the venv is built at STAGE/opt/venvs/NAME and every file
//     mentioning the staging path is rewritten (as dh-virtualenv does),
//     with RECORD hashes updated. Used where namespaces are not allowed,
//     e.g. in unprivileged CI containers.
//
// "auto" tries the namespace first. Either way, the finished tree is
// searched for any build path, and a leftover fails the build.

func (b *build) finalVenv() string {
	if d := b.proj.Tandem.VenvDir; d != "" {
		return d
	}
	return DefaultVenvParent + "/" + b.name
}

// stagedVenv is where the venv is staged in the work directory.
func (b *build) stagedVenv() string {
	return filepath.Join(b.work, "stage", filepath.FromSlash(b.finalVenv()))
}

// nsCmd wraps argv so that it runs with stageOpt mounted on /opt.
func nsCmd(ctx context.Context, stageOpt string, argv ...string) *exec.Cmd {
	script := `set -e; mount --make-rprivate /; mount --bind "$1" /opt; shift; exec "$@"`
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, "sh", stageOpt}, argv...)...)
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr
	return cmd
}

// chooseIsolation picks namespace or relocate.
func (b *build) chooseIsolation(ctx context.Context, stageOpt string) (string, error) {
	switch b.opt.Isolation {
	case "relocate":
		return "relocate", nil
	case "namespace", "auto":
	default:
		return "", &BuildError{Msg: fmt.Sprintf("isolation %q: use auto, namespace or relocate", b.opt.Isolation)}
	}
	if !strings.HasPrefix(b.finalVenv(), "/opt/") {
		if b.opt.Isolation == "namespace" {
			return "", &BuildError{Msg: fmt.Sprintf("--isolation namespace builds the venv under /opt only; %s is built with --isolation relocate (or set venv-dir = \"/opt/venvs/%s\" in [tool.tandem])", b.finalVenv(), b.name)}
		}
		return "relocate", nil
	}
	// Inputs under /opt would be hidden by the bind mount.
	var blocked []string
	for _, p := range []string{b.work, b.opt.Wheels, b.opt.Python} {
		if p == "" {
			continue
		}
		abs, _ := filepath.Abs(p)
		if abs == "/opt" || strings.HasPrefix(abs, "/opt/") {
			blocked = append(blocked, abs)
		}
	}
	var why string
	if len(blocked) > 0 {
		why = "build inputs are under /opt: " + strings.Join(blocked, ", ")
	} else if st, err := os.Stat("/opt"); err != nil || !st.IsDir() {
		why = "/opt does not exist"
	} else {
		cmd := nsCmd(ctx, stageOpt, "/bin/true")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return "namespace", nil
		}
		why = fmt.Sprintf("mount namespace not available: %v %s", err, strings.TrimSpace(string(out)))
	}
	if b.opt.Isolation == "namespace" {
		return "", &prereq.Error{What: "cannot build the venv at its final path: " + why, Fix: "use --isolation relocate"}
	}
	b.log.Info("building the venv in a staging path and relocating it", "reason", why)
	return "relocate", nil
}

func (b *build) installVenv(ctx context.Context) error {
	stageRoot := filepath.Join(b.work, "stage")
	stageOpt := filepath.Join(stageRoot, "opt")
	stageVenv := b.stagedVenv()
	if err := os.MkdirAll(stageVenv, 0o755); err != nil {
		return err
	}
	iso, err := b.chooseIsolation(ctx, stageOpt)
	if err != nil {
		return err
	}
	b.iso = iso
	venv := stageVenv
	run := func(argv ...string) ([]byte, error) { return b.run(ctx, argv...) }
	if iso == "namespace" {
		venv = b.finalVenv()
		run = func(argv ...string) ([]byte, error) {
			cmd := nsCmd(ctx, stageOpt, argv...)
			cmd.Env = b.buildEnv()
			cmd.Dir = b.work
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			b.log.Debug("ran in namespace", "argv", strings.Join(argv, " "), "err", err)
			return out.Bytes(), err
		}
	}
	venvArgs := []string{b.opt.Python, "-m", "venv", "--without-pip"}
	if b.proj.Tandem.SystemSitePackages {
		venvArgs = append(venvArgs, "--system-site-packages")
	}
	venvArgs = append(venvArgs, venv)
	if out, err := run(venvArgs...); err != nil {
		if strings.Contains(string(out), "ensurepip") || strings.Contains(string(out), "No module named venv") {
			return &prereq.Error{What: "python3 -m venv does not work here", Fix: "apt-get install python3-venv", Output: tail(string(out), 10)}
		}
		return fmt.Errorf("create venv: %w: %s", err, tail(string(out), 10))
	}
	pip := []string{b.opt.Python, "-m", "pip", "--python", venv + "/bin/python", "install", "--no-compile", "--no-warn-script-location"}
	switch {
	case b.opt.Wheels != "":
		w, err := filepath.Abs(b.opt.Wheels)
		if err != nil {
			return err
		}
		if st, err := os.Stat(w); err != nil || !st.IsDir() {
			return &BuildError{Msg: fmt.Sprintf("--wheels %s: not a directory of wheels", b.opt.Wheels)}
		}
		pip = append(pip, "--no-index", "--find-links", w)
		if b.opt.IndexURL != "" {
			pip = append(pip[:len(pip)-3], "--index-url", b.opt.IndexURL, "--find-links", w)
		}
	case b.opt.IndexURL != "":
		pip = append(pip, "--index-url", b.opt.IndexURL)
	default:
		pip = append(pip, "--no-index")
	}
	pip = append(pip, b.wheel)
	out, err := run(pip...)
	if err != nil {
		if strings.Contains(string(out), "no such option: --python") {
			return &prereq.Error{What: "pip is too old (needs --python, pip >= 22.3)", Fix: "use Debian 12's python3-pip"}
		}
		return b.pipFailure(ctx, out)
	}
	if err := b.normalizeVenv(stageVenv, venv); err != nil {
		return err
	}
	if b.proj.Tandem.SystemSitePackages {
		// Dependencies pip found in the system's site-packages are not in
		// the venv: the target needs the same Debian packages.
		inVenv := map[string]bool{}
		dists, _ := filepath.Glob(filepath.Join(stageVenv, "lib", "python*", "site-packages", "*.dist-info"))
		for _, d := range dists {
			name, _, _ := strings.Cut(filepath.Base(d), "-")
			inVenv[pyproject.NormalizeName(name)] = true
		}
		var fromSystem []pyproject.Requirement
		for _, r := range b.proj.Dependencies {
			if !inVenv[r.Normalized()] {
				fromSystem = append(fromSystem, r)
			}
		}
		names, err := b.debianNames(ctx)
		if err != nil {
			return err
		}
		deps, notes, err := SystemDepends(fromSystem, names, b.pyVer)
		for _, n := range notes {
			b.log.Info("dependency", "note", n)
		}
		if err != nil {
			return &BuildError{Msg: "pyproject.toml: project.dependencies: " + err.Error()}
		}
		b.sysDepends = deps
	}
	files, err := treeFiles(stageVenv, b.finalVenv())
	if err != nil {
		return err
	}
	relativeSymlinks(files)
	b.files = append(b.files, files...)
	b.depends = append(b.depends, pythonDepends("venv", b.pyVer, "")...)
	b.depends = append(b.depends, b.sysDepends...)
	b.arch = "all"
	if hasELF(stageVenv) {
		b.arch = debianArch()
	}
	return nil
}

// normalizeVenv makes the staged venv independent of where and when it
// was built. builtAt is the path the venv had while pip ran.
func (b *build) normalizeVenv(dir, builtAt string) error {
	final := b.finalVenv()
	if err := cleanBytecode(dir); err != nil {
		return err
	}
	// An empty include/ is venv boilerplate nothing uses.
	_ = os.Remove(filepath.Join(dir, "include", "python"+b.pyVer))
	_ = os.Remove(filepath.Join(dir, "include"))

	changed := map[string]bool{}
	// pip records where the app's wheel came from (a temporary path).
	dists, _ := filepath.Glob(filepath.Join(dir, "lib", "python*", "site-packages", "*.dist-info"))
	for _, d := range dists {
		du := filepath.Join(d, "direct_url.json")
		if _, err := os.Stat(du); err == nil {
			if err := os.Remove(du); err != nil {
				return err
			}
			changed[du] = true
		}
	}
	// pyvenv.cfg's "command" line records the build command; write the
	// one that would have built this venv in place.
	cfgPath := filepath.Join(dir, "pyvenv.cfg")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return fmt.Errorf("venv has no pyvenv.cfg: %w", err)
	}
	cmd := b.opt.Python + " -m venv --without-pip"
	if b.proj.Tandem.SystemSitePackages {
		cmd += " --system-site-packages"
	}
	cmd += " " + final
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(cfg), "\n"), "\n") {
		if strings.HasPrefix(l, "command = ") {
			l = "command = " + cmd
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(cfgPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if builtAt != final {
		if err := relocate(dir, builtAt, final, changed); err != nil {
			return err
		}
	}
	if err := fixRecords(dists, changed); err != nil {
		return err
	}
	// The project is built from a copy inside the work directory, so the
	// work directory is the build path that could leak (short paths such
	// as the project's own would also match unrelated text).
	return checkNoBuildPaths(dir, []string{mustAbs(b.work)})
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// relocate rewrites from -> to in every text file of dir. Entry-point
// scripts that pip wrote with the /bin/sh trampoline (used for long
// shebangs) get the plain shebang pip writes for a short path.
func relocate(dir, from, to string, changed map[string]bool) error {
	fromB, toB := []byte(from), []byte(to)
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, fromB) {
			return nil
		}
		if bytes.IndexByte(data, 0) >= 0 {
			return &BuildError{Msg: fmt.Sprintf("%s is a binary file containing the build path %s; it cannot be relocated: build as root or where user namespaces are allowed (--isolation namespace)", p, from)}
		}
		tramp := []byte("#!/bin/sh\n'''exec' \"" + from + "/bin/python\" \"$0\" \"$@\"\n' '''\n")
		if bytes.HasPrefix(data, tramp) {
			data = append([]byte("#!"+to+"/bin/python\n"), data[len(tramp):]...)
		}
		data = bytes.ReplaceAll(data, fromB, toB)
		info, err := d.Info()
		if err != nil {
			return err
		}
		changed[p] = true
		return os.WriteFile(p, data, info.Mode().Perm())
	})
}

// fixRecords updates the RECORD of each dist for files changed or removed
// after pip installed them, keeping every other line byte for byte.
func fixRecords(dists []string, changed map[string]bool) error {
	for _, d := range dists {
		recPath := filepath.Join(d, "RECORD")
		rec, err := os.ReadFile(recPath)
		if err != nil {
			continue
		}
		site := filepath.Dir(d)
		var out []string
		modified := false
		for _, line := range strings.SplitAfter(string(rec), "\n") {
			if strings.TrimSpace(line) == "" {
				out = append(out, line)
				continue
			}
			body := strings.TrimRight(line, "\r\n")
			eol := line[len(body):]
			rel := recordPath(body)
			full := filepath.Clean(filepath.Join(site, filepath.FromSlash(rel)))
			if !changed[full] {
				out = append(out, line)
				continue
			}
			modified = true
			data, err := os.ReadFile(full)
			if os.IsNotExist(err) {
				continue // removed: drop its line
			}
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			field := rel
			if strings.ContainsAny(rel, ",\"") {
				field = `"` + strings.ReplaceAll(rel, `"`, `""`) + `"`
			}
			out = append(out, field+",sha256="+base64.RawURLEncoding.EncodeToString(sum[:])+","+strconv.Itoa(len(data))+eol)
		}
		if modified {
			if err := os.WriteFile(recPath, []byte(strings.Join(out, "")), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// recordPath extracts the (possibly CSV-quoted) path field of a RECORD line.
func recordPath(line string) string {
	if strings.HasPrefix(line, `"`) {
		var b strings.Builder
		for i := 1; i < len(line); i++ {
			if line[i] == '"' {
				if i+1 < len(line) && line[i+1] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				break
			}
			b.WriteByte(line[i])
		}
		return b.String()
	}
	p, _, _ := strings.Cut(line, ",")
	return p
}

// checkNoBuildPaths fails when any file or symlink under dir mentions one
// of the build's own paths: the package would not be reproducible, and
// probably broken on the target.
func checkNoBuildPaths(dir string, paths []string) error {
	var needles [][]byte
	for _, p := range paths {
		if p != "" && p != "/" {
			needles = append(needles, []byte(p))
		}
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var data []byte
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			data = []byte(l)
		case d.Type().IsRegular():
			if data, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return nil
		}
		for _, n := range needles {
			if bytes.Contains(data, n) {
				rel, _ := filepath.Rel(dir, p)
				return &BuildError{Msg: fmt.Sprintf("%s contains the build path %s; the package would not work or not be reproducible", rel, n)}
			}
		}
		return nil
	})
}

// relativeSymlinks makes absolute symlinks relative where the link and
// its target share the top-level directory (Debian policy 10.5; lintian's
// absolute-symlink-in-top-level-folder), e.g. a venv's bin/python3 ->
// /usr/bin/python3 in /usr/lib/NAME.
func relativeSymlinks(files []File) {
	top := func(p string) string {
		t, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
		return t
	}
	for i, f := range files {
		if !strings.HasPrefix(f.Symlink, "/") || top(f.Symlink) != top(f.Dest) {
			continue
		}
		if rel, err := filepath.Rel(filepath.Dir(f.Dest), f.Symlink); err == nil {
			files[i].Symlink = rel
		}
	}
}
