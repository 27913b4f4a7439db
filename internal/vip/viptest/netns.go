package viptest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

// IP runs the ip command and returns its output; it fails t on error.
func IP(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NetnsPair makes two private namespaces joined by a veth pair (va in A,
// vb in B) with base addresses, and removes them when the test ends. The
// host namespace is never touched: the pair is created inside A.
func NetnsPair(t *testing.T) (pathA, pathB string) {
	t.Helper()
	testenv.NeedRoot(t, "to create network namespaces")
	testenv.NeedCommand(t, "ip", "iproute2")
	n := rand.Uint32()
	a := fmt.Sprintf("tandem-vipt-%d-%d-a", os.Getpid(), n)
	b := fmt.Sprintf("tandem-vipt-%d-%d-b", os.Getpid(), n)
	for _, ns := range []string{a, b} {
		IP(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("remove netns %s: %v: %s", ns, err, out)
			}
		})
	}
	IP(t, "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
	IP(t, "-n", a, "addr", "add", "10.77.0.1/24", "dev", "va")
	IP(t, "-n", b, "addr", "add", "10.77.0.2/24", "dev", "vb")
	for _, x := range [][2]string{{a, "va"}, {b, "vb"}, {a, "lo"}, {b, "lo"}} {
		IP(t, "-n", x[0], "link", "set", x[1], "up")
	}
	// Until linkwatch activates the qdisc, a fresh veth drops what it sends.
	for _, x := range [][2]string{{a, "va"}, {b, "vb"}} {
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(IP(t, "-n", x[0], "link", "show", x[1]), "state UP") {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not come up", x[1])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return "/run/netns/" + a, "/run/netns/" + b
}
