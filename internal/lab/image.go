package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Suite is the Debian release of the base image.
const Suite = "bookworm"

// imageRecipe is bumped whenever customizeImage changes, so the cache key
// changes with it.
const imageRecipe = 1

// ImagePackages is what every lab node has installed. Changing the list
// changes the cache key, so the image is rebuilt.
var ImagePackages = []string{
	"systemd", "systemd-sysv", "dbus", "libpam-systemd",
	"iproute2", "nftables", "iputils-ping", "procps", "curl", "ca-certificates",
	"openssh-server", "python3", "python3-venv", "python3-gunicorn", "gunicorn",
	"keepalived", "adduser", "less",
	// [[files]] replication, and lsyncd to compare it with (make bench-files).
	"rsync", "lsyncd",
}

// MaskedUnits are units masked in the image because they cannot run in a
// container. bookworm boots to "running" under nspawn without masking any,
// so the list is empty; it is kept so the README and the image agree.
var MaskedUnits = []string{}

// imageKey is the cache key: the suite, recipe and sorted package list.
func imageKey(suite string, pkgs []string, recipe int) string {
	h := sha256.New()
	fmt.Fprintf(h, "suite=%s\nrecipe=%d\n", suite, recipe)
	for _, p := range slices.Sorted(slices.Values(pkgs)) {
		fmt.Fprintf(h, "pkg=%s\n", p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ImagePath returns where the base image for the current package list lives
// under cacheDir.
func ImagePath(cacheDir string) string {
	return filepath.Join(cacheDir, Suite+"-"+imageKey(Suite, ImagePackages, imageRecipe))
}

// imageReady reports whether a complete image exists at dir. Builds are
// renamed into place only when complete, so existence is enough; the marker
// guards against a directory made by hand.
func imageReady(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "etc", "tandem-lab-image"))
	return err == nil
}

// EnsureImage returns the cached base image, building it first if needed.
// Concurrent callers wait on a lock; an interrupted build leaves only a
// temporary directory that the next build removes.
// inUse tells which older images a lab still needs, so they are not pruned.
func EnsureImage(ctx context.Context, cacheDir, mirror string, progress io.Writer, inUse func(dir string) bool) (string, error) {
	dir := ImagePath(cacheDir)
	if imageReady(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create image cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("lock image cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock image cache: %w", err)
	}
	if imageReady(dir) { // built by someone else while we waited
		return dir, nil
	}
	if err := CheckPrereqs(true); err != nil {
		return "", err
	}
	// Leftovers of interrupted builds.
	old, _ := filepath.Glob(filepath.Join(cacheDir, ".build-*"))
	for _, o := range old {
		_ = unmountAll(o)
		_ = os.RemoveAll(o)
	}
	if mirror == "" {
		mirror = HostMirror()
	}
	if mirror == "" {
		return "", errNoMirror
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return "", fmt.Errorf("create image build dir: %w", err)
	}
	defer func() {
		// debootstrap mounts /proc and /sys in the target; never recurse into them.
		_ = unmountAll(tmp)
		_ = os.RemoveAll(tmp)
	}()
	start := time.Now()
	p := &stageWriter{w: progress, start: start}
	p.stage("building the lab's base image (Debian %s, first time only) from %s", Suite, mirror)
	root := filepath.Join(tmp, "root")
	logPath := filepath.Join(cacheDir, "build.log")
	if err := debootstrap(ctx, root, mirror, logPath, p); err != nil {
		return "", err
	}
	p.stage("customizing the image")
	if err := customizeImage(root); err != nil {
		return "", fmt.Errorf("customize image: %w", err)
	}
	// Only a hand-made directory can be here (builds rename complete images).
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("replace incomplete image %s: %w", dir, err)
	}
	if err := os.Rename(root, dir); err != nil {
		return "", fmt.Errorf("install image: %w", err)
	}
	p.stage("base image ready at %s", dir)
	pruneImages(cacheDir, dir, inUse, p)
	return dir, nil
}

// pruneImages removes the base images that an older tandem built (each
// about 350 MB) once a new one is in place, except those inUse says a lab
// still boots its nodes from. It runs under the cache lock.
func pruneImages(cacheDir, keep string, inUse func(dir string) bool, p *stageWriter) {
	dirs, _ := filepath.Glob(filepath.Join(cacheDir, Suite+"-*"))
	for _, d := range dirs {
		switch {
		case d == keep:
		case inUse(d):
			p.stage("keeping the old base image %s: a lab still uses it ('tandem lab down' it to free the space)", d)
		default:
			if err := os.RemoveAll(d); err != nil {
				p.stage("could not remove the old base image %s: %v", d, err)
				continue
			}
			p.stage("removed the old base image %s", d)
		}
	}
}

func debootstrap(ctx context.Context, root, mirror, logPath string, p *stageWriter) error {
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create build log: %w", err)
	}
	defer logf.Close()
	args := []string{"--variant=minbase", "--include=" + strings.Join(ImagePackages, ","), Suite, root, mirror}
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	// On cancel, let debootstrap unmount what it mounted in the target.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start debootstrap: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			p.debootstrapLine(line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("debootstrap failed (full log in %s; its end: %s): %w", logPath, tailFile(logPath, 5), err)
	}
	return nil
}

// customizeImage turns a fresh debootstrap into a lab node template.
func customizeImage(root string) error {
	files := map[string]string{
		// Each node regenerates its own SSH host keys on first boot.
		"etc/systemd/system/ssh.service.d/tandem-lab.conf": "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n",
		// Packages installed in tests should pull in only what they depend on.
		"etc/apt/apt.conf.d/90tandem-lab": "APT::Install-Recommends \"false\";\n",
		"etc/tandem-lab-image":            fmt.Sprintf("suite=%s\nrecipe=%d\nkey=%s\n", Suite, imageRecipe, imageKey(Suite, ImagePackages, imageRecipe)),
		"etc/machine-id":                  "",
	}
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	// The hostname is set per node at boot.
	if err := os.Remove(filepath.Join(root, "etc/hostname")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, u := range MaskedUnits {
		l := filepath.Join(root, "etc/systemd/system", u)
		_ = os.Remove(l)
		if err := os.Symlink("/dev/null", l); err != nil {
			return fmt.Errorf("mask %s: %w", u, err)
		}
	}
	// Drop the downloaded .debs; they only take space in every reader's cache.
	debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		_ = os.Remove(d)
	}
	return nil
}

// errNoMirror says how to name a mirror when the host's apt sources have none.
var errNoMirror = fmt.Errorf("building the lab's base image needs a Debian %s mirror, and the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d) name none with the main component: pass --mirror URL to 'tandem lab up' or configure apt sources", Suite)

// HostMirror returns the host's bookworm mirror from its apt sources, or ""
// when they name none.
func HostMirror() string {
	var texts []string
	for _, pat := range []string{"/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		files, _ := filepath.Glob(pat)
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil {
				texts = append(texts, string(b))
			}
		}
	}
	for _, t := range texts {
		if m := parseMirror(t, Suite); m != "" {
			return m
		}
	}
	return ""
}

// parseMirror finds the URI of the first "deb" source for suite with the main
// component, in either one-line or deb822 format.
func parseMirror(text, suite string) string {
	// deb822 stanzas are separated by blank lines; a one-line file has no
	// "Key:" lines, so both can be scanned in one pass.
	var stanza map[string]string
	flush := func() string {
		defer func() { stanza = nil }()
		if stanza == nil {
			return ""
		}
		if !hasWord(stanza["types"], "deb") || !hasWord(stanza["suites"], suite) || !hasWord(stanza["components"], "main") {
			return ""
		}
		if strings.EqualFold(strings.TrimSpace(stanza["enabled"]), "no") {
			return ""
		}
		if f := strings.Fields(stanza["uris"]); len(f) > 0 && validMirror(f[0]) {
			return f[0]
		}
		return ""
	}
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" {
			if m := flush(); m != "" {
				return m
			}
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.ContainsAny(k, " \t[") {
			if stanza == nil {
				stanza = map[string]string{}
			}
			stanza[strings.ToLower(k)] = strings.TrimSpace(v)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options: [arch=amd64 signed-by=...]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) >= 3 && f[1] == suite && hasWord(strings.Join(f[2:], " "), "main") && validMirror(f[0]) {
			return f[0]
		}
	}
	return flush()
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

func validMirror(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "file:/")
}

// stageWriter prints progress: stage lines with the elapsed time, and
// debootstrap's own lines thinned out so a build shows life without flooding.
type stageWriter struct {
	w        io.Writer
	start    time.Time
	lastVerb string
	lastAt   time.Time
}

func (s *stageWriter) stage(format string, a ...any) {
	if s.w == nil {
		return
	}
	fmt.Fprintf(s.w, "[%5.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, a...))
}

func (s *stageWriter) debootstrapLine(line string) {
	msg, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			s.stage("debootstrap: %s", line)
		}
		return
	}
	verb, _, _ := strings.Cut(msg, " ")
	if verb == "Validating" { // every Retrieving has one; they add nothing
		return
	}
	now := time.Now()
	// Print each new phase, and within a phase one line every 5 s.
	if verb != s.lastVerb || now.Sub(s.lastAt) >= 5*time.Second {
		s.stage("debootstrap: %s", msg)
		s.lastVerb, s.lastAt = verb, now
	}
}

// tailFile returns the last n lines of a file, joined by " | ".
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
