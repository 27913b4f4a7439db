// Package rsync carries Debian's rsync over the cluster's mutual-TLS
// streams: the files controller's transfer provider.
//
// A receiver pulls. Its agent runs the rsync client with -e pointing at
// 'tandem files pipe', a helper that hands rsync's stream to the agent
// over a root-only unix socket; the agent carries it over an mTLS stream
// to the source, whose agent checks the request and runs 'rsync --server
// --sender' on it. The source only ever reads; the receiver chooses its
// own destructive options (delete, quarantine). rsync writes every file to
// a temporary name and renames it into place, and keeps owner, mode and
// mtime (-a without hard links, ACLs or xattrs).
package rsync

import (
	"errors"
	"fmt"
	"strings"
)

// shortFlags are the single-letter options a receiving client may pass to
// its source's server: the archive set and a few harmless ones. None makes
// a sending server write anything.
const shortFlags = "blogDtprvzcxHSWnudR"

// ServerArgs checks the command line a receiving rsync asks its source to
// run (what rsync passes to its -e command after the host) and returns the
// command to run on the source for dir. Only a sending server is allowed,
// with the flags tandem's own client uses; the path the client named is
// replaced by dir, which the caller has checked is declared.
func ServerArgs(argv []string, dir string) ([]string, error) {
	if len(argv) < 5 || argv[0] != "rsync" || argv[1] != "--server" || argv[2] != "--sender" {
		return nil, errors.New("rsync: only 'rsync --server --sender ...' is served; the peer runs an incompatible tandem")
	}
	if dir == "" || !strings.HasPrefix(dir, "/") {
		return nil, fmt.Errorf("rsync: %q is not an absolute directory", dir)
	}
	opts := argv[3 : len(argv)-2]
	if argv[len(argv)-2] != "." {
		return nil, fmt.Errorf("rsync: unexpected argument %q before the path", argv[len(argv)-2])
	}
	out := []string{"rsync", "--server", "--sender"}
	sawShort := false
	for i := 0; i < len(opts); i++ {
		o := opts[i]
		switch {
		case strings.HasPrefix(o, "--"):
			name, val, hasVal := strings.Cut(o, "=")
			switch name {
			case "--timeout", "--bwlimit", "--compress-level":
				if !hasVal || !digits(val) {
					return nil, fmt.Errorf("rsync: %s needs a number", name)
				}
				out = append(out, o)
			case "--numeric-ids", "--partial":
				if hasVal {
					return nil, fmt.Errorf("rsync: %s takes no value", name)
				}
				out = append(out, o)
			case "--backup-dir":
				// A receiver's option, sent along by rsync: dropped, with
				// its value, which names a path on the receiver.
				if !hasVal {
					i++
					if i >= len(opts) {
						return nil, errors.New("rsync: --backup-dir without a value")
					}
				}
			default:
				return nil, fmt.Errorf("rsync: option %s is not served", name)
			}
		case strings.HasPrefix(o, "-") && len(o) > 1:
			if sawShort {
				return nil, errors.New("rsync: more than one group of short options")
			}
			sawShort = true
			flags, caps, hasCaps := strings.Cut(o[1:], "e")
			for _, r := range flags {
				if !strings.ContainsRune(shortFlags, r) {
					return nil, fmt.Errorf("rsync: option -%c is not served", r)
				}
			}
			if hasCaps {
				for _, r := range caps {
					if !(r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
						return nil, fmt.Errorf("rsync: bad capability string %q", caps)
					}
				}
			}
			out = append(out, o)
		default:
			return nil, fmt.Errorf("rsync: unexpected argument %q", o)
		}
	}
	return append(out, ".", strings.TrimSuffix(dir, "/")+"/"), nil
}

func digits(s string) bool {
	if s == "" || len(s) > 12 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
