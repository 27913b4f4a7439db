package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafePath refuses to send from or write into a path that someone
// other than root could have redirected.
var ErrUnsafePath = errors.New("unsafe path")

// maxLinks bounds the symlinks followed while checking a path (the
// kernel's own limit is 40).
const maxLinks = 40

// checkLinks refuses path when any symlink on the way to it, the last
// component included, is not owned by root. rsync runs as root on both
// sides and follows these: a link the app's user made (it can usually
// write the directory that holds the declared path, or the quarantine
// beside it) would point root's rsync at /etc, to send it or to write
// uploads into it. A declared path that is a link the administrator made
// (owned by root) is followed as usual. Components that do not exist yet
// are fine: rsync creates them as directories.
func checkLinks(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: %q is not absolute", ErrUnsafePath, path)
	}
	resolved := "/"
	rest := strings.Split(strings.Trim(filepath.Clean(path), "/"), "/")
	links := 0
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		if comp == "" || comp == "." {
			continue
		}
		next := filepath.Join(resolved, comp) // resolved has no links: ".." is lexical
		fi, err := os.Lstat(next)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnsafePath, path, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 {
			owner := -1
			if ok {
				owner = int(st.Uid)
			}
			return fmt.Errorf("%w: %s is a symlink owned by uid %d, not root, on the way to %s; if you made it, 'chown -h root: %s'", ErrUnsafePath, next, owner, path, next)
		}
		if links++; links > maxLinks {
			return fmt.Errorf("%w: too many symlinks on the way to %s", ErrUnsafePath, path)
		}
		target, err := os.Readlink(next)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnsafePath, path, err)
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(strings.Trim(target, "/"), "/"), rest...)
	}
	return nil
}
