package lab

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// CloseInheritedOnExec marks every descriptor above stderr close-on-exec.
// The lab starts daemons (nspawn, the forwarder, the fake forge) that
// outlive the command; without this they would keep whatever the caller
// left open, such as a CI step's pipe or a flock(1) lock, and hold it for
// as long as the lab is up. Go passes only stdin, stdout, stderr and
// ExtraFiles on purpose, so nothing tandem means to pass is lost.
func CloseInheritedOnExec() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return nil
	}
	// Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list open descriptors: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		unix.CloseOnExec(fd)
	}
	return nil
}
