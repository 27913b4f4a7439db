package debpkg

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/packaging"
)

// SelfOptions configure BuildSelf.
type SelfOptions struct {
	Binary  string // the tandem executable to ship
	Version string // Debian version; "": derived from git in Dir
	// FallbackVersion is used when Version is "" and Dir is not in git.
	FallbackVersion string
	Dir             string // repository used for the version and time (default ".")
	OutDir          string
	Epoch           time.Time // zero: HEAD's commit time
	Compression     string
	WorkDir         string
	Progress        func(stage string, took time.Duration)
}

// SelfMaintainer maintains tandem's own package.
const SelfMaintainer = "The tandem authors <maintainers@tandem-ha.invalid>"

// BuildSelf builds tandem's own .deb: the binary, the agent's hardened
// unit, the sample configuration as a conffile, copyright, changelog and
// manual page, with the same writer as application packages.
func BuildSelf(ctx context.Context, opt SelfOptions) (*Result, error) {
	start := time.Now()
	if opt.Dir == "" {
		opt.Dir = "."
	}
	if opt.OutDir == "" {
		opt.OutDir = "dist"
	}
	if opt.Compression == "" {
		opt.Compression = "xz"
	}
	arch, err := elfArch(opt.Binary)
	if err != nil {
		return nil, &BuildError{Msg: fmt.Sprintf("--binary %s: %v", opt.Binary, err)}
	}
	gi, gitErr := ReadGit(ctx, opt.Dir)
	version := strings.TrimPrefix(opt.Version, "v")
	note := "Built by tandem package --self"
	switch {
	case version != "":
	case gitErr == nil:
		if version, err = gi.Version(""); err != nil {
			return nil, &BuildError{Msg: err.Error()}
		}
	default:
		version = strings.TrimPrefix(opt.FallbackVersion, "v")
	}
	if err := ValidateVersion(version); err != nil {
		return nil, &BuildError{Msg: fmt.Sprintf("%v; pass --self-version", err)}
	}
	if gitErr == nil {
		note += " from git g" + gi.SHA
	}
	mtime := opt.Epoch
	if mtime.IsZero() {
		if gitErr == nil {
			mtime = gi.CommitTime
		} else {
			mtime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		}
	}
	man, err := gzipBytes(packaging.ManPage)
	if err != nil {
		return nil, err
	}
	cl, err := RenderChangelog("tandem", version, SelfMaintainer, note+".", mtime)
	if err != nil {
		return nil, err
	}
	scripts, err := RenderScripts(ScriptParams{Package: "tandem", Unit: "tandem.service", PurgeDirs: []string{"/var/lib/tandem"}})
	if err != nil {
		return nil, err
	}
	spec := &Spec{
		Name:       "tandem",
		Version:    version,
		Arch:       arch,
		Maintainer: SelfMaintainer,
		Summary:    "fault-tolerant, continuously delivered home for a web site",
		Description: "tandem turns two or more Debian servers into a fault-tolerant home for a\n" +
			"web application: a floating IP held by exactly one healthy node, delivery\n" +
			"of the application as a Debian package with health-gated rolling installs\n" +
			"and automatic rollback, a host security baseline, cluster-wide bans of\n" +
			"brute-force sources and replication of uploaded files.\n" +
			"\n" +
			"Every node runs the same static binary; the agent runs as tandem.service.",
		Section:  "admin",
		Priority: "optional",
		Homepage: "https://github.com/tandem-ha/tandem",
		// [[files]] replication runs Debian's rsync; without [[files]] it
		// is not needed, so it is recommended rather than required.
		Recommends: []string{"rsync"},
		Files: []File{
			{Dest: "/usr/bin/tandem", Source: opt.Binary, Mode: 0o755},
			{Dest: "/usr/lib/systemd/system/tandem.service", Data: packaging.Unit, Mode: 0o644},
			{Dest: "/etc/tandem/tandem.toml", Data: packaging.Config, Mode: 0o644, Conffile: true},
			{Dest: "/usr/share/doc/tandem/copyright", Data: packaging.Copyright, Mode: 0o644},
			{Dest: "/usr/share/doc/tandem/" + changelogName(version), Data: cl, Mode: 0o644},
			{Dest: "/usr/share/man/man1/tandem.1.gz", Data: man, Mode: 0o644},
			{Dest: "/usr/share/lintian/overrides/tandem", Data: packaging.LintianOverrides, Mode: 0o644},
		},
		Scripts:     scripts,
		MTime:       mtime.UTC(),
		Compression: opt.Compression,
	}
	work := opt.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "tandem-self-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	if opt.Progress != nil {
		opt.Progress("prepare", time.Since(start))
	}
	start = time.Now()
	res, err := Write(spec, opt.OutDir, work)
	if err != nil {
		return nil, fmt.Errorf("write package: %w", err)
	}
	if opt.Progress != nil {
		opt.Progress("write .deb", time.Since(start))
	}
	return res, nil
}

// elfArch reads the Debian architecture of an executable.
func elfArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_386:
		return "i386", nil
	case elf.EM_ARM:
		return "armhf", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	}
	return "", fmt.Errorf("unsupported machine %v", f.Machine)
}
