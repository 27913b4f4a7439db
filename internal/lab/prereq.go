package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// PrereqError reports a missing prerequisite and how to fix it.
type PrereqError struct {
	Missing string // what is missing, e.g. "systemd-nspawn"
	Fix     string // the command or step that fixes it
}

func (e *PrereqError) Error() string {
	return fmt.Sprintf("the lab needs %s: %s", e.Missing, e.Fix)
}

// aptFix is the one command that installs every package the lab needs.
const aptFix = "run 'apt-get install debootstrap systemd-container iproute2 nftables util-linux' (or 'make deps')"

// tools maps each host binary to the Debian package that ships it.
var tools = []struct{ bin, pkg string }{
	{"systemd-nspawn", "systemd-container"},
	{"ip", "iproute2"},
	{"nft", "nftables"},
	{"nsenter", "util-linux"},
	{"mount", "mount"},
}

// checkPrereqs verifies everything the lab needs on the host. needImage is
// false when the base image is already cached, so debootstrap is optional.
func checkPrereqs(needImage bool, euid int, lookPath func(string) (string, error), stat func(string) (os.FileInfo, error), filesystems string) error {
	if euid != 0 {
		return &PrereqError{Missing: "root", Fix: "run it as root (for example with sudo)"}
	}
	var missing []string
	all := tools
	if needImage {
		all = append(all, struct{ bin, pkg string }{"debootstrap", "debootstrap"})
	}
	for _, t := range all {
		if _, err := lookPath(t.bin); err != nil {
			missing = append(missing, t.bin+" (package "+t.pkg+")")
		}
	}
	if len(missing) > 0 {
		return &PrereqError{Missing: strings.Join(missing, ", "), Fix: aptFix}
	}
	if _, err := stat("/proc/self/ns/net"); err != nil {
		return &PrereqError{Missing: "network namespace support", Fix: "use a kernel built with CONFIG_NET_NS=y, and do not run inside a container that hides /proc/self/ns"}
	}
	if !strings.Contains(filesystems, "\toverlay\n") {
		return &PrereqError{Missing: "overlayfs", Fix: "run 'modprobe overlay' or use a kernel with CONFIG_OVERLAY_FS"}
	}
	return nil
}

// CheckPrereqs verifies the host can run a lab; needImage asks for
// debootstrap too.
func CheckPrereqs(needImage bool) error {
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return &PrereqError{Missing: "/proc", Fix: "mount /proc"}
	}
	return checkPrereqs(needImage, os.Geteuid(), exec.LookPath, os.Stat, string(fs))
}

// IsPrereq reports whether err is (or wraps) a PrereqError.
func IsPrereq(err error) bool {
	var p *PrereqError
	return errors.As(err, &p)
}
