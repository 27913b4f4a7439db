// Package confine runs a program that may read only one directory tree
// besides the system's programs and libraries, with Linux's Landlock.
//
// File replication serves the holder's files with Debian's rsync running
// as root. The receiving peer drives that rsync: it sends it filter rules,
// and a "merge FILE" rule makes rsync open FILE and echo a line of it
// back. Confined, the serving rsync can open nothing outside the declared
// directory but what any process may read (programs, libraries,
// /etc/passwd), so a compromised peer cannot read /etc/shadow or the
// cluster's keys through it. It also may write nowhere and open no TCP
// connection.
package confine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// Supported reports the kernel's Landlock ABI version, 0 when the kernel
// has no Landlock (or it is not among the enabled LSMs): then Exec runs
// the program unconfined.
func Supported() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}

// systemDirs hold the programs and libraries a confined program runs from.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"}

// systemFiles are what rsync reads besides its libraries: the loader's
// cache, and the user and group names it maps owners to.
var systemFiles = []string{"/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime"}

// Exec replaces this process with argv, confined to reading dir (and the
// system's programs and libraries), writing nothing and connecting
// nowhere. It returns only on error. On a kernel without Landlock it runs
// argv unconfined (Supported tells beforehand).
func Exec(dir string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("confine: no command")
	}
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("confine: %q is not an absolute path", dir)
	}
	// Looked up before the restriction, which may hide PATH's directories.
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("confine: %w", err)
	}
	rules := []landlock.Rule{
		landlock.RODirs(systemDirs...).IgnoreIfMissing(),
		landlock.ROFiles(systemFiles...).IgnoreIfMissing(),
		landlock.RWFiles("/dev/null").IgnoreIfMissing(),
		landlock.RODirs(dir),
	}
	// BestEffort: the newest rights this kernel knows; none without
	// Landlock. Restrict sets no_new_privs, so nothing the program runs
	// can regain rights through a setuid binary.
	if err := landlock.V5.BestEffort().Restrict(rules...); err != nil {
		return fmt.Errorf("confine %s to %s: %w", prog, dir, err)
	}
	if err := syscall.Exec(prog, argv, os.Environ()); err != nil {
		return fmt.Errorf("confine: run %s: %w", prog, err)
	}
	return nil
}
