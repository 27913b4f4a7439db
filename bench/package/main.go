// Command package is `make bench-package`: it times building
// examples/pysite with `tandem package` and with Debian's dh-virtualenv
// (dpkg-buildpackage, offline, on the same project and machine, in the same
// run) and prints each build, the medians and their ratio. It is a
// benchmark, not a test: it prints figures and fails only if a build fails.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	tandem := flag.String("tandem", "bin/tandem", "tandem binary")
	runs := flag.Int("runs", 5, "builds per tool")
	project := flag.String("project", "examples/pysite", "Python project to package")
	debian := flag.String("debian", "bench/package/debian", "debian/ directory for the dh-virtualenv build")
	flag.Parse()
	if err := run(*tandem, *project, *debian, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench-package:", err)
		os.Exit(1)
	}
}

type sample struct {
	took time.Duration
	sum  string
	size int64
}

func run(tandem, project, debian string, runs int) error {
	tandem, _ = filepath.Abs(tandem)
	if _, err := os.Stat(tandem); err != nil {
		return fmt.Errorf("%s: %w (run make build)", tandem, err)
	}
	dhv := true
	for _, tool := range []string{"dpkg-buildpackage", "dh_virtualenv", "dh"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("dh-virtualenv side skipped: %s not found (apt-get install dh-virtualenv debhelper dpkg-dev)\n", tool)
			dhv = false
			break
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("bench-package: %s, %d builds each, interleaved, on %s\n", project, runs, host)
	var tk, dh []sample
	for i := 1; i <= runs; i++ {
		s, err := buildTandem(tandem, project)
		if err != nil {
			return err
		}
		tk = append(tk, s)
		fmt.Printf("  run %d  tandem package  %8.2fs  %7d bytes  sha256 %s\n", i, s.took.Seconds(), s.size, s.sum[:16])
		if dhv {
			s, err := buildDHV(project, debian)
			if err != nil {
				return err
			}
			dh = append(dh, s)
			fmt.Printf("  run %d  dh-virtualenv   %8.2fs  %7d bytes  sha256 %s\n", i, s.took.Seconds(), s.size, s.sum[:16])
		}
	}
	mt := median(tk)
	fmt.Printf("\n%-16s %10s %10s %14s\n", "tool", "median", "size", "reproducible")
	fmt.Printf("%-16s %9.2fs %10d %14v\n", "tandem package", mt.Seconds(), tk[0].size, identical(tk))
	if dhv {
		md := median(dh)
		fmt.Printf("%-16s %9.2fs %10d %14v\n", "dh-virtualenv", md.Seconds(), dh[0].size, identical(dh))
		fmt.Printf("\nspeed-up: tandem package is %.1fx faster than dh-virtualenv (goal: >= 10x)\n", md.Seconds()/mt.Seconds())
	}
	return nil
}

func buildTandem(tandem, project string) (sample, error) {
	work, err := os.MkdirTemp("", "bench-tandem-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(work)
	src := filepath.Join(work, "pysite")
	if err := copyDir(project, src); err != nil {
		return sample{}, err
	}
	out := filepath.Join(work, "out")
	cmd := exec.Command(tandem, "package", src, "--version", "0.1.0-1", "--out", out)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		return sample{}, fmt.Errorf("tandem package: %v\n%s", err, b)
	}
	return finish(time.Since(start), filepath.Join(out, "pysite_0.1.0-1_all.deb"))
}

func buildDHV(project, debian string) (sample, error) {
	work, err := os.MkdirTemp("", "bench-dhv-")
	if err != nil {
		return sample{}, err
	}
	defer os.RemoveAll(work)
	src := filepath.Join(work, "pysite")
	if err := copyDir(project, src); err != nil {
		return sample{}, err
	}
	if err := copyDir(debian, filepath.Join(src, "debian")); err != nil {
		return sample{}, err
	}
	cmd := exec.Command("dpkg-buildpackage", "-us", "-uc", "-b")
	cmd.Dir = src
	// No index is reachable: pip must not try one (rules pass --no-index).
	cmd.Env = append(os.Environ(), "PIP_NO_INDEX=1", "DEB_BUILD_OPTIONS=nocheck")
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		return sample{}, fmt.Errorf("dpkg-buildpackage: %v\n%s", err, tailLines(b, 30))
	}
	took := time.Since(start)
	debs, _ := filepath.Glob(filepath.Join(work, "pysite_*.deb"))
	if len(debs) != 1 {
		return sample{}, fmt.Errorf("dh-virtualenv produced %d .deb files", len(debs))
	}
	return finish(took, debs[0])
}

func finish(took time.Duration, deb string) (sample, error) {
	data, err := os.ReadFile(deb)
	if err != nil {
		return sample{}, err
	}
	sum := sha256.Sum256(data)
	return sample{took: took, sum: hex.EncodeToString(sum[:]), size: int64(len(data))}, nil
}

func median(s []sample) time.Duration {
	d := make([]time.Duration, len(s))
	for i := range s {
		d[i] = s[i].took
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2
}

func identical(s []sample) bool {
	for _, x := range s[1:] {
		if x.sum != s[0].sum {
			return false
		}
	}
	return true
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && (d.Name() == "__pycache__" || strings.HasSuffix(d.Name(), ".egg-info") || (rel == "build")) {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, info.Mode().Perm())
	})
}

func tailLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
