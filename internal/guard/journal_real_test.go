package guard

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRealJournal follows the machine's own journal through journalctl
// when journald runs here (it does on a Debian host; not in every
// container): lines sent with systemd-cat under an identifier of the
// test's own reach a jail that reads that identifier.
func TestRealJournal(t *testing.T) {
	if _, err := os.Stat("/run/systemd/journal/stdout"); err != nil {
		t.Skip("no journald on this machine")
	}
	cat, err := exec.LookPath("systemd-cat")
	if err != nil {
		t.Skip("no systemd-cat")
	}
	if _, err := exec.LookPath("journalctl"); err != nil {
		t.Skip("no journalctl")
	}
	id := fmt.Sprintf("tandem-guard-test-%d", os.Getpid())
	_, d := startEngine(t, Config{
		Filters: []FilterSpec{{Name: "t", FailRegex: []string{`Invalid user .* from <HOST> port \d+$`}}},
		Jails:   []JailConfig{{Name: "t", Filter: "t", JournalIdentifiers: []string{id}, MaxRetry: 2, FindTime: time.Minute, BanTime: time.Minute}},
	})
	time.Sleep(500 * time.Millisecond) // journalctl starts following
	for range 2 {
		cmd := exec.Command(cat, "-t", id)
		cmd.Stdin = strings.NewReader("Invalid user 10.0.0.5 from 203.0.113.77 port 22\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("systemd-cat: %v: %s", err, out)
		}
	}
	d.wait(t, netip.MustParseAddr("203.0.113.77"))
}
