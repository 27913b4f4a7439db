package lab

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A descriptor the caller left open without close-on-exec (as flock(1)
// leaves its lock) does not reach a process the lab starts.
func TestCloseInheritedOnExec(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd) // Dup's copy is inheritable, like flock(1)'s lock
	probe := func() bool {
		out, err := exec.Command("sh", "-c", "test -e /proc/self/fd/"+strconv.Itoa(fd)+" && echo open || echo closed").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)) == "open"
	}
	if !probe() {
		t.Fatal("setup: the duplicated descriptor was not inherited to begin with")
	}
	if err := CloseInheritedOnExec(); err != nil {
		t.Fatal(err)
	}
	if probe() {
		t.Fatalf("descriptor %d still reaches a child", fd)
	}
}
