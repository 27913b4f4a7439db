// Package packaging holds the files of tandem's own Debian package: the
// agent's systemd unit, the sample configuration (a conffile), the
// copyright file and the manual page. They are embedded so that
// `tandem package --self` works from any directory.
package packaging

import (
	_ "embed"
	"strings"
)

// Unit is /usr/lib/systemd/system/tandem.service.
//
//go:embed tandem.service
var Unit []byte

// Config is /etc/tandem/tandem.toml.
//
//go:embed tandem.toml
var Config []byte

// Copyright is /usr/share/doc/tandem/copyright.
//
//go:embed copyright
var Copyright []byte

// LintianOverrides is /usr/share/lintian/overrides/tandem; each override
// carries its justification.
//
//go:embed lintian-overrides
var LintianOverrides []byte

// ManPage is tandem(1), installed gzipped.
//
//go:embed tandem.1
var ManPage []byte

//go:embed lab-deps.txt
var labDeps string

// LabDeps returns the Debian packages the lab needs on the host
// (lab-deps.txt, which `make deps` installs and CI uses).
func LabDeps() []string {
	var pkgs []string
	for _, line := range strings.Split(labDeps, "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line != "" {
			pkgs = append(pkgs, line)
		}
	}
	return pkgs
}
