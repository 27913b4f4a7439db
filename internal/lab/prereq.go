package lab

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"

	"github.com/tandem-ha/tandem/internal/prereq"
	"github.com/tandem-ha/tandem/packaging"
)

// tools maps each host binary to the Debian package that ships it; every
// package is in packaging/lab-deps.txt (a test checks).
var tools = []struct{ bin, pkg string }{
	{"systemd-nspawn", "systemd-container"},
	{"ip", "iproute2"},
	{"nft", "nftables"},
	{"nsenter", "util-linux"},
	{"mount", "mount"},
}

// aptFix names the command that installs pkgs.
func aptFix(pkgs []string) string {
	return "run 'apt-get install " + strings.Join(pkgs, " ") + "' (or 'make deps', which installs everything in packaging/lab-deps.txt)"
}

// checkPrereqs verifies everything the lab needs on the host. needImage is
// false when the base image is already cached, so debootstrap is optional.
func checkPrereqs(needImage bool, euid int, lookPath func(string) (string, error), stat func(string) (os.FileInfo, error), filesystems string) error {
	if euid != 0 {
		return &prereq.Error{What: "the lab needs root", Fix: "run it as root (for example with sudo)"}
	}
	var missing, pkgs []string
	all := tools
	if needImage {
		all = append(all, struct{ bin, pkg string }{"debootstrap", "debootstrap"})
	}
	for _, t := range all {
		if _, err := lookPath(t.bin); err != nil {
			missing = append(missing, t.bin+" (package "+t.pkg+")")
			pkgs = append(pkgs, t.pkg)
		}
	}
	if len(missing) > 0 {
		return &prereq.Error{What: "the lab needs " + strings.Join(missing, ", "), Fix: aptFix(pkgs)}
	}
	if _, err := stat("/proc/self/ns/net"); err != nil {
		return &prereq.Error{What: "the lab needs network namespace support", Fix: "use a kernel built with CONFIG_NET_NS=y, and do not run inside a container that hides /proc/self/ns"}
	}
	if !strings.Contains(filesystems, "\toverlay\n") {
		return &prereq.Error{What: "the lab needs overlayfs", Fix: "run 'modprobe overlay' or use a kernel with CONFIG_OVERLAY_FS"}
	}
	return nil
}

// CheckPrereqs verifies the host can run a lab; needImage asks for
// debootstrap too.
func CheckPrereqs(needImage bool) error {
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return &prereq.Error{What: "the lab needs /proc", Fix: "mount /proc"}
	}
	return checkPrereqs(needImage, os.Geteuid(), exec.LookPath, os.Stat, string(fs))
}

// missingPackages returns the packages of pkgs that dpkg-query does not
// report installed; status maps a package to its db:Status-Abbrev.
func missingPackages(pkgs []string, status map[string]string) []string {
	var missing []string
	for _, p := range pkgs {
		if !strings.HasPrefix(status[p], "ii") {
			missing = append(missing, p)
		}
	}
	return missing
}

// parseDpkgStatus reads "NAME STATUS" lines from dpkg-query.
func parseDpkgStatus(out []byte) map[string]string {
	st := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		name, abbrev, ok := strings.Cut(line, " ")
		if ok {
			name, _, _ = strings.Cut(name, ":") // drop an :arch qualifier
			st[name] = strings.TrimSpace(abbrev)
		}
	}
	return st
}

// CheckPackages verifies that every Debian package the lab needs
// (packaging/lab-deps.txt) is installed, so a missing one is named before
// minutes go into building and booting, not when the example site is
// packaged. Hosts without dpkg are not checked.
func CheckPackages(ctx context.Context) error {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		return nil
	}
	pkgs := packaging.LabDeps()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-query", append([]string{"-W", "-f", "${Package} ${db:Status-Abbrev}\n"}, pkgs...)...)
	cmd.Stdout = &out
	_ = cmd.Run() // exits 1 when a package is unknown; the output still lists the others
	if missing := missingPackages(pkgs, parseDpkgStatus(out.Bytes())); len(missing) > 0 {
		return &prereq.Error{What: "the lab needs the Debian packages " + strings.Join(missing, ", "), Fix: aptFix(missing)}
	}
	return nil
}
